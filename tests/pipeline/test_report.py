"""``tlfs report``: one self-contained HTML page about a set, from what it and its ``_heads/``
hold: its images and rejects, the advice, the sweep, the heads, the learning curves and the
queue to label, their plots inlined; a step not run yet names the command that runs it."""

import base64
import json
import re

import pandas as pd
import pytest

from tests.conftest import noisy_images, report_section, write_tree
from tests.extraction import run_extract
from tests.features.conftest import s3_server  # noqa: F401 - the fixture
from tlfs.features import open_set
from tlfs.pipeline import tasks
from tlfs.pipeline.cli import main
from tlfs.pipeline.report import ReportRequest, _mistakes, report
from tlfs.pipeline.saved_heads import head_summaries, preference

QUIET = dict(log=lambda *_: None)
BROKEN = "train/red/<torn&cut>.png"  # a reject whose id a page must escape


@pytest.fixture(scope="module")
def reported_set(tmp_path_factory, lite0, models_root):
    root = tmp_path_factory.mktemp("report")
    source = write_tree(root / "images", {**noisy_images(per_class=6, seed=3), BROKEN: b"\x89PNG\r\n\x1a\n cut"})
    store = str(root / "store")
    run_extract("reported", [str(source)], "efficientnet_lite0", store, models_root, show_progress=False, **QUIET)
    return store, root


def _plots(page: str) -> list[bytes]:
    return [base64.b64decode(data) for data in re.findall(r"src='data:image/png;base64,([A-Za-z0-9+/=]+)'", page)]


def test_before_any_fit_the_page_holds_the_set_its_rejects_and_the_advice_and_names_the_steps_to_run(reported_set):
    store, _ = reported_set
    page, summary = report(ReportRequest("reported", "efficientnet_lite0", store), **QUIET)
    assert page.startswith("<!doctype html>") and summary["heads"] == 0 and summary["plots"] == []
    assert "<td>train</td><td class=n>19</td><td class=n>18</td><td class=n>1</td>" in page  # read, written, rejected
    assert "train/red/&lt;torn&amp;cut&gt;.png" in page and "<torn" not in page  # the reject named, escaped
    assert "<pre>case: small, " in page  # the advisor's case and evidence
    for missing in ("No layer sweep yet: <code>tlfs sweep --dataset reported</code>", "No saved heads yet",
                    "No learning curve yet: <code>tlfs learning-curve --dataset reported</code>",
                    "No labelling queue saved", "No near-copy check kept", "No label check kept"):
        assert missing in page
    assert not _plots(page)
    # at a glance: what there is to say before any fit, each line linked to its section
    glance = page.split("<table class=glance>", 1)[1].split("</table>", 1)[0]
    assert re.findall(r"<a href='#([a-z-]+)'>", glance) == ["images", "what-to-do-next"]
    assert ("Only this backbone has features of this dataset; another to compare it with: <code>tlfs extract --dataset "
            "reported --backbone resnet50</code>") in report_section(page, "Which backbone transfers best")
    assert "<td>18 test, 18 train; 1 rejected</td>" in glance and "<td>small, different: linear classifier (" in glance


def test_after_the_fit_dags_steps_the_page_holds_the_sweep_heads_curve_and_queue_with_their_plots(reported_set):
    store, root = reported_set
    target = tasks.SetTarget("reported", "efficientnet_lite0", store, None)
    swept = tasks.sweep_layers(target, **QUIET)
    fitted = tasks.heads_on_best_layer(target, swept, ["softmax", "lightgbm"], **QUIET)
    shipped = tasks.ship_best_head(target, fitted, **QUIET)
    tasks.curve_on_best_layer(target, swept, **QUIET)
    pool = write_tree(root / "pool", {name.split("/", 1)[1]: data for name, data in noisy_images(seed=4).items()
                                      if name.startswith("test/")})
    tasks.choose_next_to_label(target, shipped["head"], [str(pool)], 7, **QUIET)
    checked = tasks.check_near_copies(target, shipped["head"], **QUIET)
    doubted = tasks.check_labels(target, **QUIET)

    page, summary = report(ReportRequest("reported", "efficientnet_lite0", store), **QUIET)
    feature_set = open_set("reported", "efficientnet_lite0", store=store)
    assert summary["heads"] >= 3 and summary["version"] == feature_set.version
    assert sorted(summary["plots"]) == sorted(["sweep.png", f"learning_curve-softmax-{swept['best_layer']}.png",
                                               "label_next.png", "near_copies.png"] + ["label_issues.png"] * doubted["sheet"])
    assert all(png.startswith(b"\x89PNG\r\n\x1a\n") for png in _plots(page))
    assert len(_plots(page)) == 5 + doubted["sheet"]  # + the first head's confusion matrix
    # the sweep: a row a layer, the best in bold
    for layer in feature_set.layers:
        assert f"<td>{layer}</td><td class=n>{feature_set.layers[layer]:,}</td>" in page
    assert f"<tr class=best><td>{swept['best_layer']}</td>" in page
    # the heads by validation accuracy, the first in bold; the queue's 7 images, least sure first
    assert re.search(r"<tr class=best><td>[a-z]+-[a-z0-9]+</td><td class=n>1</td>", page)
    assert "The 7 images the shipped head is least sure of" in page and page.count(str(pool)) >= 7
    assert "No " + "layer sweep yet" not in page and "No saved heads yet" not in page
    # where the first head goes wrong: the head the DAG would ship, its worst class first, its surest mistake
    first = min(head_summaries(feature_set.uri), key=lambda h: preference(h["head"], h["validation_accuracy"], h["validation_log_loss"]))
    assert summary["first_head"] == first["name"]
    folder = f"{feature_set.uri}/_heads/{first['name']}"
    metrics = json.loads(open(f"{folder}/metrics.json").read())
    wrong_section = report_section(page, "Where the first head goes wrong")
    worst = min(range(len(metrics["classes"])), key=lambda i: (metrics["per_class_accuracy"][metrics["classes"][i]], i))
    first_row = re.search(r"<th>most often taken for</th></tr><tr><td>([^<]+)</td><td class=n>(\d+)</td>", wrong_section)
    assert first_row.groups() == (metrics["classes"][worst], str(sum(metrics["confusion_matrix"][worst])))
    assert f"The {first['name']} head on the test split's {metrics['n_test']:,} images" in wrong_section
    predictions = pd.read_parquet(f"{folder}/test_predictions.parquet")
    mistakes = predictions[~predictions["correct"]].sort_values(["probability", "image_id"], ascending=[False, True])
    if len(mistakes):
        assert f"<td>{mistakes.iloc[0]['image_id']}</td>" in wrong_section
        assert f"{len(mistakes):,} test image{'' if len(mistakes) == 1 else 's'} wrong in all" in wrong_section
    trusted = {t: f for t, f in metrics["at_probability"].items() if f["accuracy"] is not None}
    assert ("How far its probability can be trusted" in wrong_section) == bool(trusted)  # no row without an image
    for threshold, figures in trusted.items():
        assert (f"<tr><td class=n>{float(threshold):g}</td><td class=n>{100 * figures['share']:.2f} %</td>"
                f"<td class=n>{100 * figures['accuracy']:.2f} %</td></tr>") in wrong_section
    assert "confusion matrix" in wrong_section
    # the near-copy check the DAG keeps, with the shipped head's accuracy without them
    honest = report_section(page, "Is the test split honest?")
    assert f"<b>{checked['near_copies']:,} of {checked['images']:,}</b> test images with a near-copy in train" in honest
    assert f"<tr><td>{shipped['head']}</td><td class=n>" in honest and "No near-copy check" not in page
    assert checked["sheet"] and "Where the threshold cuts" in honest and "<img alt='Where the threshold cuts" in honest
    doubts = report_section(page, "Labels that look wrong")
    assert f"<b>{doubted['issues']:,} of {doubted['images']:,}</b> train labels look wrong" in doubts
    assert f"on {swept['best_layer']} fitted on the other 4 of 5 folds" in doubts and "No label check" not in page
    # at a glance: each section's answer in a line, linked to it
    glance = page.split("<table class=glance>", 1)[1].split("</table>", 1)[0]
    links = re.findall(r"<a href='#([a-z-]+)'>", glance)
    assert links == ["images", "what-to-do-next", "heads", "is-the-test-split-honest", "labels-that-look-wrong",
                     "would-more-labels-help", "which-images-to-label-next"]  # one backbone: no line of its own
    assert all(f"<h2 id='{link}'>" in page for link in links)
    assert "<td>7 images the shipped head is least sure of, queued for a person to label</td>" in glance
    curve = json.loads(open(f"{feature_set.uri}/_heads/learning_curve-softmax-{swept['best_layer']}.json").read())
    if curve["last_doubling_gain"] is not None:
        assert f"a doubling of the labels last added {100 * curve['last_doubling_gain']:+.1f} points (softmax on" in glance
    assert f"<td>{first['name']}: {100 * first['test_accuracy']:.2f} % on the test split" in glance
    assert f"<td>{checked['near_copies']:,} test images with a near-copy in train (" in glance
    assert f"<td>{doubted['issues']:,} of {doubted['images']:,} train labels (" in glance


def test_tlfs_report_writes_the_page_beside_the_heads_or_where_output_says(reported_set, capsys, tmp_path):
    store, _ = reported_set
    assert main(["report", "--dataset", "reported", "--store", store]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["output"] == f"{summary['set_uri']}/_heads/report.html"
    with open(summary["output"]) as page:
        assert page.read().startswith("<!doctype html>")
    elsewhere = tmp_path / "out" / "reported.html"
    assert main(["report", "--dataset", "reported", "--store", store, "--version", "1", "--output", str(elsewhere)]) == 0
    assert json.loads(capsys.readouterr().out.strip().splitlines()[-1])["output"] == str(elsewhere)
    assert elsewhere.read_text().endswith("</html>")
    assert main(["report", "--dataset", "reported", "--store", store, "--version", "9"]) == 1
    assert "version 9" in capsys.readouterr().err


@pytest.mark.slow
def test_a_set_on_s3_gets_the_same_page_written_beside_its_heads_there(reported_set, s3_server, capsys):
    import fsspec

    store, _ = reported_set
    local, local_summary = report(ReportRequest("reported", "efficientnet_lite0", store), **QUIET)
    fs = fsspec.filesystem("s3")
    fs.put(store + "/", "tlfs-test/store/", recursive=True)
    assert main(["report", "--dataset", "reported", "--store", "s3://tlfs-test/store"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["output"] == f"{summary['set_uri']}/_heads/report.html" and summary["set_uri"].startswith("s3://")
    assert (summary["heads"], summary["plots"]) == (local_summary["heads"], local_summary["plots"])
    remote = fs.cat(summary["output"]).decode()
    assert _plots(remote) == _plots(local)
    strip = lambda page: re.sub(r"Made [^<]*<code>|/tmp/[^<' ]*|s3://tlfs-test/store[^<' ]*", "", page)
    assert strip(remote) == strip(local)


def test_the_fit_dags_checks_keep_their_files_beside_a_set_on_s3_and_its_page_shows_them(reported_set, s3_server, capsys):
    import fsspec

    store, _ = reported_set
    fs = fsspec.filesystem("s3")
    fs.put(store + "/", "tlfs-test/checked/", recursive=True)
    target = tasks.SetTarget("reported", "efficientnet_lite0", "s3://tlfs-test/checked", None)
    first = tasks.SetTarget("reported", "efficientnet_lite0", store, None)
    head = min(head_summaries(first.open().uri), key=lambda h: preference(h["head"], h["validation_accuracy"], h["validation_log_loss"]))["name"]
    near, doubted = tasks.check_near_copies(target, head, **QUIET), tasks.check_labels(target, **QUIET)
    heads = f"{target.open().uri}/_heads"
    assert near["saved_to"] == f"{heads}/near_copies.json" and doubted["saved_to"] == f"{heads}/label_issues.json"
    assert near["sheet"] and doubted["sheet"] == (doubted["issues"] > 0)  # sheets of images read from the sources
    for name, kept in (("near_copies", near), ("label_issues", doubted)):
        assert json.loads(fs.cat(f"{heads}/{name}.json")) == {k: v for k, v in kept.items() if k not in ("sheet", "saved_to")}
    page, _ = report(ReportRequest("reported", "efficientnet_lite0", "s3://tlfs-test/checked"), **QUIET)
    assert "Where the threshold cuts" in report_section(page, "Is the test split honest?")
    assert f"<b>{doubted['issues']:,} of {doubted['images']:,}</b>" in report_section(page, "Labels that look wrong")
    # kept again by hand without a sheet: the sheet on S3 goes with the check it showed
    assert main(["duplicates", "--dataset", "reported", "--store", "s3://tlfs-test/checked", "--save", "--show", "0"]) == 0
    capsys.readouterr()
    assert not fs.exists(f"{heads}/near_copies.png") and fs.exists(f"{heads}/near_copies.parquet")


def test_a_head_fitted_before_its_figures_were_recorded_or_scored_on_no_test_image_still_gets_its_section(tmp_path):
    old = tmp_path / "old"
    old.mkdir()
    (old / "metrics.json").write_text(json.dumps({
        "classes": ["a", "b", "c"], "test_accuracy": 0.5, "confusion_matrix": [[1, 1, 0], [0, 2, 2], [0, 0, 0]]}))
    section = _mistakes(str(old), "old")
    assert "6 images: 50.00 % right. Each class" in section  # no balanced accuracy recorded, none claimed
    assert "<tr><td>b</td><td class=n>4</td><td class=n>50.00 %</td><td>c (2)</td></tr>" in section
    a_row = "<tr><td>a</td><td class=n>2</td><td class=n>50.00 %</td><td>b (1)</td></tr>"
    assert section.index(a_row) < section.index("<tr><td>b</td><td class=n>4</td>")  # ties in the classes' order
    assert "<td>c</td><td class=n>0</td>" not in section  # a class with no test image has no accuracy to rank
    assert "<tr><td>b</td><td>c</td><td class=n>2</td><td class=n>50.00 %</td></tr>" in section
    assert "trusted" not in section and "surest" not in section and "<img" not in section  # not recorded: not shown
    (old / "metrics.json").write_text(json.dumps({"classes": ["a", "b"], "confusion_matrix": [[0, 0], [0, 0]]}))
    assert _mistakes(str(old), "old") == "<p class='note'>old was scored on no test images.</p>"


def test_of_many_classes_the_worst_are_listed_and_the_rest_summed_up(tmp_path):
    """A bird dataset's 200 classes made a table of 200 rows, most of them 100 %."""
    from tlfs.pipeline.report import CLASSES_SHOWN

    head = tmp_path / "head"
    head.mkdir()
    classes = [f"c{k:02d}" for k in range(40)]
    matrix = [[4 if i == j else 0 for j in range(40)] for i in range(40)]
    matrix[7][8], matrix[7][7] = 3, 1  # c07: 25 %, the worst
    (head / "metrics.json").write_text(json.dumps({"classes": classes, "test_accuracy": 0.98, "confusion_matrix": matrix}))
    section = _mistakes(str(head), "head")
    rows = section.split("most often taken for</th></tr>", 1)[1].split("</table>", 1)[0].count("<tr>")
    assert rows == CLASSES_SHOWN == 30 and f"The {CLASSES_SHOWN} worst of its 40 classes" in section
    assert section.index("<tr><td>c07</td>") < section.index("<tr><td>c00</td>")
    assert "The other 10 classes: each test image right (<code>metrics.json</code>" in section
    for k in range(9, 40):  # 31 more classes at 75 %: one of them is left out of the table
        matrix[k][0], matrix[k][k] = 1, 3
    (head / "metrics.json").write_text(json.dumps({"classes": classes, "test_accuracy": 0.8, "confusion_matrix": matrix}))
    assert "The other 10 classes: 75.00 % right or better" in _mistakes(str(head), "head")


def test_how_far_a_heads_probability_can_be_trusted_is_a_row_a_threshold_that_any_image_reaches(tmp_path):
    head = tmp_path / "head"
    head.mkdir()
    (head / "metrics.json").write_text(json.dumps({
        "classes": ["a", "b"], "test_accuracy": 0.75, "confusion_matrix": [[2, 0], [1, 1]], "calibration_error": 0.125,
        "at_probability": {"0.5": {"share": 1.0, "accuracy": 0.75}, "0.9": {"share": 0.25, "accuracy": 1.0},
                           "0.99": {"share": 0.0, "accuracy": None}}}))
    section = _mistakes(str(head), "head")
    assert "How far its probability can be trusted" in section and "calibration error 0.1250" in section
    assert ("<tr><td class=n>0.5</td><td class=n>100.00 %</td><td class=n>75.00 %</td></tr>"
            "<tr><td class=n>0.9</td><td class=n>25.00 %</td><td class=n>100.00 %</td></tr></table>") in section


def test_the_page_ranks_each_backbones_set_of_the_dataset_by_its_best_head(tmp_path, lite0, models_root):
    from tlfs.pipeline.fit import fit

    source = write_tree(tmp_path / "images", noisy_images(per_class=4, seed=5))
    store = str(tmp_path / "store")
    for random_weights in (False, True):  # two backbone versions of one dataset
        run_extract("two", [str(source)], "efficientnet_lite0", store, models_root, random_weights=random_weights,
                    show_progress=False, **QUIET)
    pretrained = open_set("two", "efficientnet_lite0", store=store)
    versions = sorted(path.name for path in (tmp_path / "store" / "two").iterdir())
    (random,) = [v for v in versions if v != pretrained.backbone_version]
    page, _ = report(ReportRequest("two", "efficientnet_lite0", store), **QUIET)
    section = report_section(page, "Which backbone transfers best")
    assert section.count("<tr") == 3 and f"<tr class=best><td>{pretrained.backbone_version}</td>" in section
    assert f"<tr><td>{random}</td><td class=n>24</td><td>-</td>" in section  # no head fitted on it yet
    fit(open_set("two", random, store=store), ["head"], "softmax", **QUIET)
    page = report(ReportRequest("two", "efficientnet_lite0", store), **QUIET)[0]
    section = report_section(page, "Which backbone transfers best")
    assert f"<td>{random}</td><td class=n>24</td><td>softmax-head</td>" in section
    best = re.search(r"<tr(?: class=best)?><td>([^<]+)</td><td class=n>24</td><td>([^<]+)</td><td class=n>([^<]+)</td>",
                     section).groups()  # the first row
    assert f"<a href='#which-backbone-transfers-best'>Which backbone transfers best</a></th><td>{best[0]}, of 2: " \
           f"{best[1]} {best[2]} on validation</td>" in page
    assert "Only this backbone" not in section
