"""One page about a feature set (``tlfs report``): what it holds and what was rejected, what
the advisor makes of it and on what evidence, how each layer and each saved head transfers,
whether more labels would help and which images to label next, with the plots the steps
saved. One self-contained HTML file (the plots inlined), for a browser or to send on. It
reads what the set and its ``_heads/`` hold and refits nothing: a step not run yet is a
section saying which command runs it."""

from __future__ import annotations

import base64
import html
import io
import time
from dataclasses import dataclass
from typing import Callable

from tlfs.features import layout
from tlfs.features.reader import open_set
from tlfs.features.schema import read_parquet
from tlfs.features.storage import atomic_write_bytes, fs_path, read_bytes, read_bytes_if_exists, read_json
from tlfs.pipeline.errors import PipelineError
from tlfs.pipeline.image_decode import FULL_DEPTH, bit_depth_of, depth_said
from tlfs.pipeline.kept_checks import LABEL_ISSUES, NEAR_COPIES, KeptCheck, kept_check
from tlfs.pipeline.saved_heads import ranked_heads

REPORT_FILE = "report.html"  # beside the heads, where the fit_heads DAG leaves it
REJECTS_SHOWN = 50
QUEUE_SHOWN = 20
CONFUSIONS_SHOWN = 8  # the first head's most frequent mistakes, true class -> class taken for
CLASSES_SHOWN = 30  # the first head's classes, the worst first (every class is in its metrics.json)
MISTAKES_SHOWN = 10  # its surest mistakes on the test split
NEAR_COPIES_SHOWN = 10
LABEL_ISSUES_SHOWN = 20
STYLE = ("body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}"
         "table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:.2em .6em;text-align:left}"
         "td.n{text-align:right;font-variant-numeric:tabular-nums;white-space:nowrap}th{background:#f3f3f3}img{max-width:100%}"
         "pre{background:#f6f6f6;padding:.8em;white-space:pre-wrap}.best{font-weight:bold}.note{color:#666}"
         "table.glance th{text-align:left;white-space:nowrap}table.glance{font-size:1.05em}")


@dataclass(frozen=True)
class ReportRequest:
    dataset: str
    backbone: str
    store: str | None = None
    version: int | None = None  # of the set (None: the newest)


def report(request: ReportRequest, log: Callable[[str], None] = print) -> tuple[str, dict]:
    """``(the page's HTML, a summary)`` of the set's version asked for."""
    feature_set = open_set(request.dataset, request.backbone, request.store, version=request.version)
    heads = layout.heads_uri(feature_set.uri)
    files = _heads_files(heads)
    info = {"uri": feature_set.uri, **feature_set.manifest}
    summaries = ranked_heads(feature_set)  # the first: the head the fit_heads DAG ships and commands use by default
    first = summaries[0]["name"] if summaries else None
    advice = _advised(feature_set)
    near_copies, doubted = kept_check(files, NEAR_COPIES), kept_check(files, LABEL_ISSUES)
    sections = [  # (name, its HTML, its answer in a line for the top of the page, or None)
        ("The set", _the_set(info), None),
        ("Images", _images(info), _images_line(info)),
        ("What to do next", _advice(advice), _advice_line(advice)),
        ("Which layer transfers best", _sweep(files, request.dataset), None),
        ("Heads", _heads(summaries, request.dataset), _first_head_line(summaries)),
        ("Which backbone transfers best", *_backbones(request.store, feature_set)),
        ("Where the first head goes wrong", _mistakes(f"{heads}/{first}" if first else None, first), None),
        ("Is the test split honest?", _near_copies(near_copies, request.dataset, feature_set.version),
         _near_copies_line(near_copies)),
        ("Labels that look wrong", _label_issues(doubted, request.dataset, feature_set.version), _doubted_line(doubted)),
        ("Would more labels help?", *_curves(files, request.dataset)),
        ("Which images to label next", *_queue(files, heads, request.dataset)),
    ]
    glance = _glance([(name, line) for name, _, line in sections if line])
    title = f"{feature_set.dataset}: {feature_set.backbone_version}, version {feature_set.version}"
    made = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime())
    body = "".join(f"<h2 id='{_anchor(name)}'>{html.escape(name)}</h2>{content}" for name, content, _ in sections)
    page = (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{STYLE}</style></head><body><h1>{html.escape(title)}</h1>{glance}{body}"
            f"<p class='note'>Made {made} by <code>tlfs report --dataset {html.escape(feature_set.dataset)}</code> from "
            f"{html.escape(feature_set.uri)}; it reads what the set holds and refits nothing.</p></body></html>")
    summary = {"dataset": feature_set.dataset, "set_uri": feature_set.uri, "version": feature_set.version,
               "heads": len(summaries), "first_head": first, "plots": sorted(name for name in files if name.endswith(".png")),
               "bytes": len(page.encode())}
    log(f"report of {feature_set.uri} version {feature_set.version}: {len(summaries)} heads, "
        f"{len(summary['plots'])} plots")
    return page, summary


def write_report(request: ReportRequest, output: str | None = None, log: Callable[[str], None] = print) -> dict:
    """:func:`report`'s page written to ``output`` (any fsspec URI; default :func:`report_uri`)
    whole or not at all; its summary, with where it went."""
    page, summary = report(request, log)
    output = output or report_uri(summary["set_uri"])
    atomic_write_bytes(output, page.encode())
    return {**summary, "output": output}


def report_uri(set_uri: str) -> str:
    """Where a set's page lies unless asked otherwise: beside its heads."""
    return f"{layout.heads_uri(set_uri)}/{REPORT_FILE}"


def _heads_files(heads: str) -> dict[str, str]:
    """The files at the top of the set's ``_heads/`` (plots, sweep, queue) by name: their URIs."""
    fs, path = fs_path(heads)
    if not fs.exists(path):
        return {}
    protocol = heads.split("://", 1)[0] + "://" if "://" in heads else ""
    return {entry["name"].rsplit("/", 1)[1]: protocol + entry["name"] for entry in fs.ls(path, detail=True)
            if entry["type"] == "file"}


def _table(header: list[str] | None, rows: list[list], numeric: set[int] = frozenset(),
           marked: set[int] = frozenset()) -> str:
    """An HTML table (``header`` None: rows of a name and its value); ``numeric`` columns right
    aligned, ``marked`` rows in bold, every cell escaped."""
    head = "" if header is None else "<tr>" + "".join(f"<th>{html.escape(cell)}</th>" for cell in header) + "</tr>"
    body = "".join(
        f"<tr{' class=best' if number in marked else ''}>" + "".join(
            f"<td{' class=n' if column in numeric else ''}>{html.escape(_cell(cell))}</td>"
            for column, cell in enumerate(row)) + "</tr>"
        for number, row in enumerate(rows))
    return f"<table>{head}{body}</table>"


def _cell(value) -> str:
    if value is None:
        return "-"
    return f"{value:,}" if isinstance(value, int) and not isinstance(value, bool) else str(value)


def _plot(uri: str, alt: str) -> str:
    return _image(read_bytes(uri), alt)


def _image(png: bytes, alt: str) -> str:
    return f"<p><img alt='{html.escape(alt)}' src='data:image/png;base64,{base64.b64encode(png).decode()}'></p>"


def _missing(text: str, command: str) -> str:
    return f"<p class='note'>{html.escape(text)}: <code>{html.escape(command)}</code></p>"


def _accuracy(value) -> str | None:
    return None if value is None else f"{100 * value:.2f} %"


def _the_set(info: dict) -> str:
    lineage = info["lineage"]
    rows = [["feature set", info["uri"]], ["version", info.get("version", 1)],
            ["committed", info["committed_at"]], ["backbone version", info["backbone_version"]],
            ["weights", lineage["weights"]["source"]], ["precision", lineage["runtime"]["precision"]],
            ["layers", ", ".join(f"{layer} ({width}-d)" for layer, width in info["layers"].items())],
            ["views", ", ".join(info.get("views") or [layout.ORIGINAL])],
            ["classes", ", ".join(info["classes"])]]
    if (depth := bit_depth_of(lineage)) != FULL_DEPTH:
        rows.append(["decoded", depth_said(depth)])
    rows += [["source", f"{source['uri']} [{source['format']}], {source['images']:,} images"]
             for source in lineage["sources"]]
    return _table(None, rows)


def _images(info: dict) -> str:
    counts = [[split, c["read"], c["written"], c["rejected"]] for split, c in info["counts"].items()]
    page = _table(["split", "read", "written", "rejected"], counts, numeric={1, 2, 3})
    rejects = info["rejects"]
    if rejects:
        shown = [[r["image_id"], r["reason"]] for r in rejects[:REJECTS_SHOWN]]
        page += f"<p>{len(rejects):,} images rejected, each with its reason" + (
            f" (the first {REJECTS_SHOWN}; <code>tlfs describe --json</code> lists all)" if len(rejects) > REJECTS_SHOWN
            else "") + ":</p>" + _table(["image", "reason"], shown)
    return page


def _anchor(name: str) -> str:
    """A section's id, for links: its name in lower case, words joined by dashes."""
    return "-".join("".join(c for c in word if c.isalnum()) for word in name.lower().split())


def _glance(lines: list[tuple[str, str]]) -> str:
    """The page's first lines: a section's answer in a line, linked to the section."""
    cells = "".join(f"<tr><th><a href='#{_anchor(name)}'>{html.escape(name)}</a></th><td>{html.escape(text)}</td></tr>"
                    for name, text in lines)
    return f"<table class=glance>{cells}</table>"


def _images_line(info: dict) -> str:
    return (", ".join(f"{c['written']:,} {split}" for split, c in info["counts"].items())
            + f"; {len(info['rejects']):,} rejected")


def _advice_line(advice: dict | str) -> str | None:
    if isinstance(advice, str):
        return None
    action = advice["action"]
    detail = (f"{action['head']} on {action['layer']}" if action["do"] == "linear_classifier"
              else f"freeze {action['freeze']}, init {action['init']}")
    return f"{advice['case'].replace('_', ', ')}: {action['do'].replace('_', ' ')} ({detail})"


def _first_head_line(summaries: list[dict]) -> str | None:
    if not summaries:
        return None
    first = summaries[0]
    return (f"{first['name']}: {_accuracy(first['test_accuracy'])} on the test split "
            f"({_accuracy(first['validation_accuracy'])} on validation)")


def _near_copies_line(kept: KeptCheck | None) -> str | None:
    if kept is None:
        return None
    check = kept.summary
    return f"{check['near_copies']:,} {check['counted']} ({_accuracy(check['share'])})"


def _doubted_line(kept: KeptCheck | None) -> str | None:
    if kept is None:
        return None
    check = kept.summary
    return f"{check['issues']:,} of {check['images']:,} {check['split']} labels ({_accuracy(check['share'])}), to review"


def _advised(feature_set) -> dict | str:
    """The advisor's result, or why it could not say."""
    from tlfs.pipeline import advise

    try:
        return advise.advise(feature_set, advise.Thresholds(), log=lambda *_: None)
    except PipelineError as exc:
        return str(exc)


def _advice(advice: dict | str) -> str:
    from tlfs.pipeline import advise

    if isinstance(advice, str):
        return f"<p>The advisor could not say: {html.escape(advice)}</p>"
    return f"<pre>{html.escape(advise.describe(advice))}</pre>"


def _sweep(files: dict[str, str], dataset: str) -> str:
    if "sweep.json" not in files:
        return _missing("No layer sweep yet", f"tlfs sweep --dataset {dataset}")
    sweep = read_json(files["sweep.json"])
    validation = sweep.get("validation") or {}
    rows = [[layer, sweep["dims"].get(layer), _accuracy(validation.get(layer)), _accuracy(test)]
            for layer, test in sweep["layers"].items()]
    best = {n for n, row in enumerate(rows) if row[0] == sweep.get("best_layer")}
    page = (f"<p>The {html.escape(sweep['head'])} head on each layer; the best layer (bold) is chosen by "
            f"{html.escape(sweep.get('chosen_by', 'validation_accuracy').replace('_', ' '))}, never by the test split.</p>"
            + _table(["layer", "dims", "validation", "test"], rows, numeric={1, 2, 3}, marked=best))
    return page + (_plot(files["sweep.png"], "the layer sweep") if "sweep.png" in files else "")


def _heads(summaries: list[dict], dataset: str) -> str:
    if not summaries:
        return _missing("No saved heads yet", f"tlfs fit --dataset {dataset} --layer LAYER --head softmax|lightgbm|mlp")
    rows = [[h["name"], h["version"], "+".join(h["layers"]), "+".join(h["views"]), _accuracy(h["validation_accuracy"]),
             _accuracy(h["test_accuracy"]), _accuracy(h["test_balanced_accuracy"]),
             None if h["calibration_error"] is None else f"{h['calibration_error']:.4f}",
             None if h["classifier_bytes"] is None else f"{h['classifier_bytes'] / 1e6:.1f} MB"] for h in summaries]
    return ("<p>Every saved head, by validation accuracy, those fitted on this version first (the first in bold: "
            "of equals the simpler, as the fit_heads DAG ships and commands use by default); a shipped classifier is one "
            "ONNX file "
            "(<code>tlfs export-classifier</code>).</p>"
            + _table(["head", "fitted on version", "layers", "views", "validation", "test", "test balanced",
                      "calibration error", "classifier"], rows, numeric={1, 4, 5, 6, 7, 8}, marked={0}))


def _backbones(store: str | None, feature_set) -> tuple[str, str | None]:
    """The best current head of each backbone's set of this dataset, by validation accuracy,
    this set's in bold; where there are several, the best in a line."""
    from tlfs.features.reader import list_sets
    from tlfs.models.names import FAMILIES
    from tlfs.pipeline.saved_heads import head_board

    sets = list_sets(store)
    sets = sets[sets["dataset"] == feature_set.dataset]
    images = dict(zip(sets["backbone_version"].tolist(), sets["rows"].tolist()))
    board = head_board(store, feature_set.dataset)  # in the order of preference: each backbone's best comes first
    bests = board[board["current"] & ~board["balanced"]].drop_duplicates("backbone_version")
    rows = [[best.backbone_version, images[best.backbone_version], best.name, _accuracy(best.validation_accuracy),
             _accuracy(best.test_accuracy)] for best in bests.itertuples()]
    rows += [[version, count, None, None, None] for version, count in images.items()
             if version not in set(bests["backbone_version"])]  # no head fitted on its newest version: last
    page = _table(["backbone version", "images", "its best head", "validation", "test"], rows, numeric={1, 3, 4},
                  marked={n for n, row in enumerate(rows) if row[0] == feature_set.backbone_version})
    if len(rows) > 1:
        best = rows[0]
        return ("<p>Each backbone's set of this dataset, by its best head's validation accuracy (this set in bold); "
                "compare them where they hold the same images.</p>" + page,
                f"{best[0]}, of {len(rows)}: {best[2]} {best[3]} on validation" if best[2] else None)
    other = next(name for name in FAMILIES if not feature_set.backbone_version.startswith(f"{name}-"))
    return page + _missing("Only this backbone has features of this dataset; another to compare it with",
                           f"tlfs extract --dataset {feature_set.dataset} --backbone {other}"), None


def _mistakes(folder: str | None, name: str | None) -> str:
    """The first head's test figures class by class: each class's accuracy (the worst first)
    and what it is most often taken for, the most frequent confusions, how far its probability
    can be trusted, its surest mistakes and its confusion matrix."""
    if folder is None:
        return "<p class='note'>No saved heads yet (above).</p>"
    metrics = read_json(f"{folder}/metrics.json")
    matrix, classes = metrics.get("confusion_matrix"), metrics["classes"]
    if not matrix or not sum(map(sum, matrix)):
        return f"<p class='note'>{html.escape(name)} was scored on no test images.</p>"
    totals = [sum(row) for row in matrix]
    taken_for = [max((n, j) for j, n in enumerate(row) if j != i) for i, row in enumerate(matrix)]
    by_class = sorted(((row[i] / totals[i], i) for i, row in enumerate(matrix) if totals[i]))
    rows = [[classes[i], totals[i], _accuracy(share),
             f"{classes[taken_for[i][1]]} ({taken_for[i][0]:,})" if taken_for[i][0] else None]
            for share, i in by_class[:CLASSES_SHOWN]]
    rest = by_class[CLASSES_SHOWN:]
    balanced = metrics.get("test_balanced_accuracy")
    page = (f"<p>The {html.escape(name)} head on the test split's {sum(totals):,} images: "
            f"{_accuracy(metrics['test_accuracy'])} right" + (f", {_accuracy(balanced)} averaged over classes" if balanced
                                                              is not None else "")
            + (". Each class, the worst first," if not rest else f". The {CLASSES_SHOWN} worst of its {len(by_class)} "
               "classes,") + " and the class it is most often taken for:</p>"
            + _table(["class", "test images", "accuracy", "most often taken for"], rows, numeric={1, 2})
            + (f"<p class='note'>The other {len(rest)} classes: "
               + ("each test image right" if rest[0][0] == 1 else f"{_accuracy(rest[0][0])} right or better")
               + " (<code>metrics.json</code> beside the head holds every class's).</p>" if rest else ""))
    from tlfs.pipeline.fit import frequent_confusions

    confusions = frequent_confusions(matrix, CONFUSIONS_SHOWN)
    if confusions:
        page += ("<p>Its most frequent mistakes:</p>"
                 + _table(["true class", "taken for", "images", "share of the true class"],
                          [[classes[i], classes[j], n, _accuracy(n / totals[i])] for n, i, j in confusions],
                          numeric={2, 3}))
    page += _trust(metrics) + _surest_mistakes(folder)
    confusion = read_bytes_if_exists(f"{folder}/confusion.png")
    return page + (_image(confusion, f"{name}'s confusion matrix") if confusion else "")


def _trust(metrics: dict) -> str:
    rows = [[f"{float(threshold):g}", _accuracy(figures["share"]), _accuracy(figures["accuracy"])]
            for threshold, figures in (metrics.get("at_probability") or {}).items() if figures["accuracy"] is not None]
    if not rows:
        return ""
    error = metrics.get("calibration_error")
    return ("<p>How far its probability can be trusted: the test images it gives at least this probability, and how "
            "many of them it gets right (<code>tlfs predict --min-probability P</code> keeps those)"
            + (f"; calibration error {error:.4f}" if error is not None else "") + ":</p>"
            + _table(["probability at least", "share of the test images", "right among them"], rows, numeric={0, 1, 2}))


def _surest_mistakes(folder: str) -> str:
    uri = f"{folder}/test_predictions.parquet"
    data = read_bytes_if_exists(uri)
    if data is None:
        return ""
    predictions = read_parquet(io.BytesIO(data), columns=["image_id", "label_name", "predicted", "probability",
                                                          "correct"]).to_pandas()
    wrong = predictions[~predictions["correct"]].sort_values(["probability", "image_id"], ascending=[False, True])
    if wrong.empty:
        return ""
    rows = [[row.image_id, row.label_name, row.predicted, f"{row.probability:.3f}"]
            for row in wrong.head(MISTAKES_SHOWN).itertuples()]
    return (f"<p>Its surest mistakes ({len(wrong):,} test image{'' if len(wrong) == 1 else 's'} wrong in all; every prediction in "
            f"<code>{html.escape(uri)}</code>): a wrong label, an image of two classes, or a real blind spot.</p>"
            + _table(["image", "labelled", "taken for", "probability"], rows, numeric={3}))


def _near_copies(kept: KeptCheck | None, dataset: str, version: int) -> str:
    """The check the fit_heads DAG keeps (``tlfs duplicates --save``): how many test images have
    a near-copy in train, a head's accuracy with and without them, the closest pairs."""
    if kept is None:
        return _missing("No near-copy check kept (the fit_heads DAG's near_copies task keeps one)",
                        f"tlfs duplicates --dataset {dataset} --head HEAD --save")
    check = kept.summary
    page = (f"<p><b>{check['near_copies']:,} of {check['images']:,}</b> {html.escape(check['counted'])} "
            f"({_accuracy(check['share'])}){_of_version(check, version)}: the cosine similarity of their "
            f"{html.escape(check['layer'])} features at least {check['threshold']:g}; {check['other_label']:,} of them "
            "labelled as another class. A head has in effect seen a test image with a near-copy in its training "
            "images, so its test accuracy over them is an overestimate. The threshold was read off EfficientNet-Lite0's "
            "head features by eye; for another layer or backbone, look at the pairs where it cuts "
            f"(<code>tlfs duplicates --dataset {html.escape(dataset)} --show 16 --sheet pairs.png</code>).</p>")
    head = check.get("head")
    if head:
        page += _table(["head", "all test images", f"the {head['images_without']:,} without a near-copy",
                        f"the {check['near_copies']:,} near-copies"],
                       [[head["name"], _accuracy(head["all"]), _accuracy(head["without_near_copies"]),
                         _accuracy(head["on_near_copies"])]], numeric={1, 2, 3})
    sheet = _sheet(kept, "Where the threshold cuts: above, the least similar pairs it flags; below, the most similar it "
                   "does not (each image beside its nearest, read again from the sources)")
    if not check["near_copies"]:
        return page + sheet
    pairs = read_parquet(io.BytesIO(read_bytes(kept.table))).to_pandas()
    copies = pairs[pairs["near_copy"]]
    header = ["image", "labelled", f"nearest in {check['against']}", "labelled", "similarity"]

    def rows(chosen) -> list[list]:
        return [[row.image_id, row.label_name, row.nearest_id, row.nearest_label_name, f"{row.similarity:.4f}"]
                for row in chosen.head(NEAR_COPIES_SHOWN).itertuples()]

    page += "<p>The closest pairs:</p>" + _table(header, rows(copies), numeric={4})
    other = copies[copies["label_name"] != copies["nearest_label_name"]]
    if len(other):
        page += ("<p>The near-copies labelled as another class (a wrong label on one side, or two low-detail "
                 "images):</p>" + _table(header, rows(other), numeric={4}))
    return page + sheet


def _label_issues(kept: KeptCheck | None, dataset: str, version: int) -> str:
    """The check the fit_heads DAG keeps (``tlfs label-issues --save``): how many labels a head
    that never saw their images doubts, the commonest doubts, the most doubtful labels."""
    if kept is None:
        return _missing("No label check kept (the fit_heads DAG's label_issues task keeps one)",
                        f"tlfs label-issues --dataset {dataset} --save")
    check = kept.summary
    by = (f"a {html.escape(check['head'])} head on {html.escape('+'.join(check['layers']))} fitted on the other "
          f"{check['folds'] - 1} of {check['folds']} folds" if check.get("folds") else
          f"a {html.escape(check['head'])} head on {html.escape('+'.join(check['layers']))} fitted on the train split")
    page = (f"<p><b>{check['issues']:,} of {check['images']:,}</b> {html.escape(check['split'])} labels look wrong "
            f"({_accuracy(check['share'])}){_of_version(check, version)}: each image classified by {by}, which agree "
            f"with {_accuracy(check['held_out_accuracy'])} of the labels, and flagged by confident learning where that "
            "head is sure enough of another class. A list to review, not to drop images by: most flagged images are "
            "hard ones, rightly labelled.</p>")
    if check["commonest"]:
        page += ("<p>The commonest doubts:</p>"
                 + _table(["labelled", "looks like", "images"],
                          [[*pair.split(" -> ", 1), n] for pair, n in check["commonest"].items()], numeric={2}))
    issues = read_parquet(io.BytesIO(read_bytes(kept.table))).to_pandas()
    flagged = issues[issues["flagged"]].head(LABEL_ISSUES_SHOWN)
    if len(flagged):
        page += (f"<p>The {len(flagged)} most doubtful labels (all in <code>{html.escape(kept.table)}</code>):</p>"
                 + _table(["rank", "image", "labelled", "probability", "looks like", "probability"],
                          [[row.rank, row.image_id, row.label_name, f"{row.label_probability:.3f}", row.suggested,
                            f"{row.suggested_probability:.3f}"] for row in flagged.itertuples()], numeric={0, 3, 5}))
    return page + _sheet(kept, "The most doubtful labels, read again from the sources: each image's label, then the "
                         "class it looks like and that class's probability")


def _of_version(check: dict, version: int) -> str:
    return "" if check.get("version") == version else f" (checked on version {check.get('version')})"


def _sheet(kept: KeptCheck, caption: str) -> str:
    return f"<p>{html.escape(caption)}:</p>" + _plot(kept.sheet, caption) if kept.sheet else ""


def _curves(files: dict[str, str], dataset: str) -> tuple[str, str | None]:
    """The learning curves' plots; what a doubling of the labels last added, in a line."""
    plots = sorted(name for name in files if name.startswith("learning_curve-") and name.endswith(".png"))
    if not plots:
        return _missing("No learning curve yet", f"tlfs learning-curve --dataset {dataset}"), None
    gains = []
    for name in plots:
        curve = read_json(files[name[:-4] + ".json"]) if name[:-4] + ".json" in files else {}
        if curve.get("last_doubling_gain") is not None:
            gains.append(f"{100 * curve['last_doubling_gain']:+.1f} points ({curve['head']} on "
                         f"{'+'.join(curve['layers'])})")
    line = "a doubling of the labels last added " + ", ".join(gains) if gains else None
    return "".join(_plot(files[name], name[:-4]) for name in plots), line


def _queue(files: dict[str, str], heads: str, dataset: str) -> tuple[str, str | None]:
    """The labelling queue the fit_heads DAG saved, its first images and its sheet; its size in a line."""
    import pandas as pd

    if "label_next.csv" not in files:
        return _missing("No labelling queue saved (the fit_heads DAG saves one where its unlabelled param names "
                        "images)", f"tlfs label-next --dataset {dataset} IMAGES"), None
    queue = pd.read_csv(io.BytesIO(read_bytes(files["label_next.csv"])))
    rows = [[row.rank, row.image, f"{row.label} {row.probability:.3f}",
             None if pd.isna(row.runner_up) else f"{row.runner_up} {row.runner_up_probability:.3f}", f"{row.margin:.3f}"]
            for row in queue.head(QUEUE_SHOWN).itertuples()]
    page = (f"<p>The {len(queue):,} images the shipped head is least sure of, least sure first (the first "
            f"{min(QUEUE_SHOWN, len(queue))}; all in <code>{html.escape(heads)}/label_next.csv</code>):</p>"
            + _table(["rank", "image", "the head's class", "runner-up", "margin"], rows, numeric={0, 4}))
    return (page + (_plot(files["label_next.png"], "the images to label next") if "label_next.png" in files else ""),
            f"{len(queue):,} images the shipped head is least sure of, queued for a person to label")
