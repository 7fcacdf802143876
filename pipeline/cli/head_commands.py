"""``tlfs fit``, ``sweep``, ``heads``, ``predict`` and ``export-classifier``: heads fitted on a set, and their use."""

from __future__ import annotations

from tlfs.pipeline.config import Settings
from tlfs.pipeline.report import CLASSES_SHOWN
from tlfs.pipeline.cli.printing import absent, accuracy, log


def cmd_fit(args, settings: Settings) -> dict:
    from tlfs import features
    from tlfs.pipeline.fit import fit, frequent_confusions

    result = fit(features.open_set(args.dataset, args.backbone, store=settings.store), args.layer, args.head, log=log,
                 views=args.views, balanced=args.balanced)
    print(f"{args.head} on {'+'.join(result['layers'])}{' (balanced)' if result['balanced'] else ''}: test accuracy "
          f"{result['test_accuracy']:.4f}, balanced accuracy {result['test_balanced_accuracy']:.4f}  -> {result['saved_to']}")
    _print_per_class(result["per_class_accuracy"], result["saved_to"])
    confusions = frequent_confusions(result["confusion_matrix"], 3)
    if confusions:
        classes = result["classes"]
        print("  most often taken for another: " + ", ".join(f"{classes[i]} as {classes[j]} {n}" for n, i, j in confusions))
    for threshold, figures in result["at_probability"].items():
        if figures["accuracy"] is not None:
            print(f"  probability >= {threshold:<4}  {figures['share']:6.1%} of the test images, {figures['accuracy']:6.1%} of "
                  "them right")
    if result["calibration_error"] is not None:
        print(f"  calibration error {result['calibration_error']:.4f} (the gap between its probability and how often it "
              "is right)")
    return {k: result[k] for k in ("test_accuracy", "validation_accuracy", "test_balanced_accuracy",
                                   "validation_balanced_accuracy", "balanced", "head", "layers", "backbone_version", "saved_to")}


def _print_per_class(accuracies: dict[str, float | None], saved_to: str, shown: int = CLASSES_SHOWN) -> None:
    """Each class's test accuracy in the classes' order; of many classes, the ``shown`` worst."""
    scored = {name: acc for name, acc in accuracies.items() if acc is not None}
    if len(accuracies) <= shown:
        for name, acc in accuracies.items():
            print(f"  {name:>14}  {acc if acc is None else f'{acc:.3f}'}")
        return
    worst = sorted(scored, key=scored.get)
    for name in worst[:shown]:
        print(f"  {name:>14}  {scored[name]:.3f}")
    rest = worst[shown:]
    if rest:
        lowest = scored[rest[0]]
        print(f"  ... the {shown} worst of {len(accuracies)} classes; the other {len(rest)} "
              + ("each test image right" if lowest == 1 else f"{lowest:.3f} or better")
              + f" ({saved_to}/metrics.json holds every class's)")


def cmd_predict(args, settings: Settings) -> dict:
    from collections import Counter

    from tlfs.pipeline.predict import PredictRequest, predict, write_predictions

    predictions = predict(PredictRequest(args.dataset, args.backbone, tuple(args.images), args.head, settings.store,
                                         settings.device, settings.batch_size, args.min_probability, args.unfamiliar,
                                         args.neighbours, args.familiar_share, settings.decode_workers), log=log,
                          show_progress=not args.no_progress)
    if args.output:
        write_predictions(predictions, args.output)
    else:
        for p in predictions:
            print(f"{p.image}\t{p.label}\t{p.probability:.4f}" + ("" if p.sure else "\tunsure")
                  + ("\tunfamiliar" if p.familiar is False else "") if p.label is not None
                  else f"{p.image}\t-\t{p.reason}")
    return {"images": len(predictions), "classes": dict(Counter(p.label for p in predictions if p.label is not None)),
            "rejected": sum(p.label is None for p in predictions), "min_probability": args.min_probability,
            "unsure": sum(p.sure is False for p in predictions),
            **({"unfamiliar": sum(p.familiar is False for p in predictions)} if args.unfamiliar else {}),
            "output": args.output}


def cmd_export_classifier(args, settings: Settings) -> dict:
    from tlfs.pipeline.export_classifier import ClassifierRequest, export_classifier

    return export_classifier(ClassifierRequest(args.dataset, args.backbone, args.head, args.output, settings.store,
                                               unfamiliar=args.unfamiliar, neighbours=args.neighbours,
                                               familiar_share=args.familiar_share), log=log)


def cmd_heads(args, settings: Settings) -> dict:
    from tlfs.pipeline.saved_heads import head_board

    board = head_board(settings.store, args.dataset)
    if board.empty:
        print(f"no saved heads in {settings.store}{f' for {args.dataset}' if args.dataset else ''} (tlfs sweep or tlfs fit "
              "saves them)")
    else:
        print(f"{'dataset':<14} {'backbone version':<36} {'head':<24} {'validation':>10}  {'test':>6}  {'balanced':>8}  "
              f"{'calibration':>11}  views")
    for row in board.itertuples():
        line = (f"{row.dataset:<14} {row.backbone_version:<36} {row.name:<24} {accuracy(row.validation_accuracy):>10}  "
                f"{accuracy(row.test_accuracy):>6}  {accuracy(row.test_balanced_accuracy):>8}  "
                f"{accuracy(row.calibration_error):>11}  {'+'.join(row.views)}")
        if not row.current:
            line += f"  (fitted on version {row.version})"
        if not absent(row.classifier_bytes):
            line += f"  classifier.onnx {row.classifier_bytes / 1e6:.1f} MB"
        print(line + ("  <- best (by validation)" if row.best else "")
              + ("  <- best balanced (by validation balanced accuracy)" if row.best_balanced else ""))
    best, best_balanced = board[board["best"]], board[board["best_balanced"]]
    return {"heads": len(board), "best": {row.dataset: {"backbone_version": row.backbone_version, "head": row.name,
                                                        "validation_accuracy": row.validation_accuracy,
                                                        "test_accuracy": row.test_accuracy}
                                          for row in best.itertuples()},
            **({"best_balanced": {row.dataset: {"backbone_version": row.backbone_version, "head": row.name,
                                                "validation_balanced_accuracy": row.validation_balanced_accuracy,
                                                "test_balanced_accuracy": row.test_balanced_accuracy}
                                  for row in best_balanced.itertuples()}} if len(best_balanced) else {})}


def cmd_sweep(args, settings: Settings) -> dict:
    from tlfs import features
    from tlfs.pipeline.fit import sweep

    summary = sweep(features.open_set(args.dataset, args.backbone, store=settings.store), log=log, views=args.views,
                    balanced=args.balanced)
    balanced = summary["balanced_accuracy"]
    print(f"{'layer':>12}  {'dims':>6}  {'validation':>10}  {'test':>6}  {'balanced: validation':>20}  {'test':>6}")
    for layer, acc in summary["layers"].items():
        mark = f"  <- best (by {summary['chosen_by'].replace('_', ' ')})" if layer == summary["best_layer"] else ""
        print(f"{layer:>12}  {summary['dims'][layer]:>6}  {summary['validation'][layer]:>10.4f}  {acc:.4f}  "
              f"{balanced['validation'][layer]:>20.4f}  {balanced['test'][layer]:.4f}{mark}")
    print(f"saved sweep.json and sweep.png to {summary['saved_to']}")
    return {k: summary[k] for k in ("layers", "validation", "balanced_accuracy", "balanced", "best_layer", "chosen_by",
                                    "test_accuracy")}

