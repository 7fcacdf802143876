"""``tlfs duplicates``, ``similar``, ``label-issues``, ``label-next``, ``learning-curve``, ``map``, ``advise``
and ``report``: what a set's features say about the dataset."""

from __future__ import annotations

from tlfs.pipeline.learning_curve import WORTH_A_DOUBLING
from tlfs.pipeline.config import Settings
from tlfs.pipeline.cli.printing import log


def cmd_report(args, settings: Settings) -> dict:
    from tlfs.pipeline.report import ReportRequest, write_report

    summary = write_report(ReportRequest(args.dataset, args.backbone, settings.store, args.version), args.output,
                           log=log)
    print(f"report: {summary['output']}")
    return summary


def cmd_duplicates(args, settings: Settings) -> dict:
    from tlfs.pipeline.duplicates import KEPT_AS, DuplicatesRequest, find_duplicates, threshold_sheet
    from tlfs.pipeline.tables import write_table

    request = DuplicatesRequest(args.dataset, args.backbone, args.layer, args.split, args.against, args.threshold,
                                args.head, settings.store)
    pairs, summary = find_duplicates(request, log=log)
    print(f"{summary['near_copies']} of {summary['images']} {summary['counted']} (cosine similarity >= "
          f"{summary['threshold']} on {summary['layer']}), {summary['other_label']} of them of another class")
    for row in pairs.head(max(args.show, 0)).itertuples():
        print(f"  {row.similarity:.4f}  {row.image_id} ({row.label_name})  ~  {row.nearest_id} ({row.nearest_label_name})")
    if "head" in summary:
        head = summary["head"]
        parts = [(head["all"], f"all {summary['images']}"),
                 (head["without_near_copies"], f"the {head['images_without']} without a near-copy"),
                 (head["on_near_copies"], f"the {summary['near_copies']} near-copies")]
        print(f"{head['name']}: accuracy " + ", ".join(f"{value:.4f} on {what}" for value, what in parts if value is not None))
    if args.output:
        write_table(pairs, args.output)
    sheet = threshold_sheet(request, pairs, max(args.show, 1), log=log) if args.sheet else None
    if sheet:
        _write_file(args.sheet, sheet)
    return {**summary, "output": args.output, "sheet": args.sheet, "saved_to": _kept(args.save, KEPT_AS, pairs, summary,
                                                                                     sheet)}


def _kept(save: bool, name: str, table, summary: dict, sheet: bytes | None) -> str | None:
    """With ``--save``, the check kept beside the set's heads for ``tlfs report``: where its summary went."""
    if not save:
        return None
    from tlfs.pipeline.kept_checks import keep_check

    saved = keep_check(summary["feature_set"], name, table, summary, sheet)
    log(f"kept beside the heads: {saved}")
    return saved


def _write_file(uri: str, data: bytes) -> None:
    """``data`` written to ``uri``, local or any fsspec URI (a sheet of images)."""
    import fsspec

    with fsspec.open(uri, "wb") as f:
        f.write(data)


def cmd_similar(args, settings: Settings) -> dict:
    from tlfs.pipeline.similar import SimilarRequest, results_sheet, similar_images
    from tlfs.pipeline.tables import write_table

    request = SimilarRequest(args.dataset, args.backbone, tuple(args.images), tuple(args.id), args.layer,
                             tuple(args.split), args.k, settings.store, device=settings.device,
                             batch_size=settings.batch_size, decode_workers=settings.decode_workers)
    results = similar_images(request, log=log, show_progress=not args.no_progress)
    if args.output:
        write_table(results, args.output)
    else:
        for image, matches in results.groupby("image", sort=False):
            print(image)
            for row in matches.itertuples():
                print(f"  {row.rank}  {row.similarity:.4f}  {row.image_id} ({row.label_name})" if row.rank
                      else f"  -  {row.reason}")
    if args.sheet:
        _write_file(args.sheet, results_sheet(request, results, log=log))
    first = results[results["rank"] == 1]
    return {"images": int(results["image"].nunique()), "rejected": int((results["rank"] == 0).sum()),
            "layer": args.layer, "k": args.k, "nearest_labels": first["label_name"].value_counts().to_dict(),
            "output": args.output, "sheet": args.sheet}


def cmd_label_issues(args, settings: Settings) -> dict:
    from tlfs.pipeline.label_issues import KEPT_AS, LabelIssuesRequest, find_label_issues, issues_sheet
    from tlfs.pipeline.tables import write_table

    request = LabelIssuesRequest(args.dataset, args.backbone, tuple(args.layer), args.split, args.head, args.folds,
                                 tuple(args.views or ()), args.every, settings.store)
    issues, summary = find_label_issues(request, log=log)
    print(f"{summary['issues']} of {summary['images']} {summary['split']} labels look wrong ({summary['share']:.2%}); "
          f"the held-out {summary['head']} head agrees with {summary['held_out_accuracy']:.2%} of the labels")
    for row in issues.head(max(args.show, 0)).itertuples():
        print(f"  {row.rank:>4}  {row.image_id}  {row.label_name} ({row.label_probability:.3f})  ->  {row.suggested} "
              f"({row.suggested_probability:.3f})" + ("" if row.flagged else "  (not flagged)"))
    if args.output:
        write_table(issues, args.output)
    sheet = issues_sheet(request, issues, summary["layers"], log=log) if args.sheet else None
    if sheet:
        _write_file(args.sheet, sheet)
    return {**summary, "output": args.output, "sheet": args.sheet, "saved_to": _kept(args.save, KEPT_AS, issues, summary,
                                                                                     sheet)}


def cmd_label_next(args, settings: Settings) -> dict:
    from tlfs.pipeline.label_next import LabelNextRequest, chosen_sheet, label_next
    from tlfs.pipeline.tables import write_table

    request = LabelNextRequest(args.dataset, args.backbone, tuple(args.images), args.count, args.head, settings.store,
                               settings.device, settings.batch_size, cache=not args.no_cache,
                               decode_workers=settings.decode_workers, exclude=tuple(args.exclude))
    chosen, summary = label_next(request, log=log, show_progress=not args.no_progress)
    if args.output:
        write_table(chosen, args.output)
    else:
        for row in chosen.itertuples():
            print(f"{row.rank}\t{row.image}\t{row.label} {row.probability:.3f}"
                  + (f" or {row.runner_up} {row.runner_up_probability:.3f}" if row.runner_up else ""))
    if args.sheet:
        _write_file(args.sheet, chosen_sheet(chosen, summary))
    return {**summary, "output": args.output, "sheet": args.sheet}


def cmd_learning_curve(args, settings: Settings) -> dict:
    from tlfs.pipeline.learning_curve import LearningCurveRequest, learning_curve

    result = learning_curve(LearningCurveRequest(args.dataset, args.backbone, tuple(args.layer), args.head,
                                                 tuple(args.shares), args.repeats, tuple(args.views or ()), settings.store,
                                                 balanced=args.balanced), log=log)
    measure, spread_of = result["measure"], result["measure"].replace("accuracy", "std")
    print(f"{args.head} on {'+'.join(result['layers'])}: {'share':>6} {'images':>8} {'a class':>8} {'validation':>11} "
          f"{'test':>7}" + ("  (balanced accuracy)" if args.balanced else ""))
    for point in result["points"]:
        spread = (f"  ± {point[f'validation_{spread_of}']:.4f} / {point[f'test_{spread_of}']:.4f}"
                  if f"validation_{spread_of}" in point else "")
        print(f"{'':>{len(args.head) + len('+'.join(result['layers'])) + 5}}{point['share']:>6g} {point['images']:>8} "
              f"{point['per_class']:>8g} {point[f'validation_{measure}']:>11.4f} {point[f'test_{measure}']:>7.4f}{spread}")
    gain, gain_spread = result["last_doubling_gain"], result.get("last_doubling_gain_std")
    if gain is not None:
        print(f"a doubling of the images last added {gain * 100:+.2f}"
              + (f" ± {gain_spread * 100:.2f}" if gain_spread is not None else "")
              + f" points of validation {measure.replace('_', ' ')}"
              + (f"; more labels would likely still help (tlfs label-next --dataset {args.dataset} chooses which images "
                 "to label first)" if gain >= WORTH_A_DOUBLING else
                 "; the curve has flattened: more labels would add little to this head"))
    return {k: result[k] for k in ("dataset", "head", "layers", "balanced", "measure", "repeats", "points",
                                   "last_doubling_gain", "last_doubling_gain_std", "saved_to")}


def cmd_map(args, settings: Settings) -> dict:
    from tlfs.pipeline.feature_map import MapRequest, feature_map
    from tlfs.pipeline.tables import write_table

    points, summary = feature_map(MapRequest(args.dataset, args.backbone, tuple(args.layer), args.split, args.method,
                                             args.images, settings.store), log=log)
    silhouette = f"; the classes' silhouette {summary['silhouette']:.3f}" if summary["silhouette"] is not None else ""
    print(f"{summary['images']} {summary['split']} images on {'+'.join(summary['layers'])} by {summary['method']}"
          f"{silhouette} -> {summary['saved_to']}")
    if args.output:
        write_table(points, args.output)
    return {**summary, "output": args.output}


def cmd_advise(args, settings: Settings) -> dict:
    from tlfs import features
    from tlfs.pipeline import advise as advisor

    result = advisor.advise(features.open_set(args.dataset, args.backbone, store=settings.store),
                            advisor.Thresholds.given(args.large_per_class, args.similar_score), log=log)
    print(advisor.describe(result))
    return result

