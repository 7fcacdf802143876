"""``tlfs backbones``, ``export``, ``extract``, ``finetune``, ``bench`` and ``verify``: the backbone and its features."""

from __future__ import annotations

import json
from dataclasses import fields

from tlfs.features.codecs import DEFAULT_CODEC
from tlfs.models.runtime import DEFAULT_BATCH, resolve_runtime
from tlfs.pipeline.image_decode import FULL_DEPTH
from tlfs.pipeline.stage_bench import STAGE_IMAGES
from tlfs.pipeline.dataset_sources import sources_for
from tlfs.pipeline.config import FinetuneConfig, Settings
from tlfs.pipeline.cli.printing import log


def cmd_backbones(args, settings: Settings) -> None:
    from tlfs.models import catalog

    if args.name:
        rows = [catalog.describe(args.name)]
    elif args.timm:
        rows = catalog.timm_models(args.timm)
    else:
        rows = catalog.named_backbones()
    if not rows:
        print(f"no timm model with pretrained weights matches {args.timm!r}")
        return None
    width = max([34, *(len(row["name"]) for row in rows)])
    print(f"{'backbone':<{width}} {'input':>5}  {'weights here':<12} {'weights from'}")
    for row in rows:
        print(f"{row['name']:<{width}} {row['input_size']:>5}  {'yes' if row['offline'] else 'no':<12} {row['weights_source']}")
        if row["layers"]:
            print(f"{'':<{width}} layers: {', '.join(row['layers'])}"
                  + (f"; ImageNet classifier on {row['imagenet_classifier']}" if args.name else ""))
    if not args.name and not args.timm:
        print(f"{'timm/<model>[.<tag>]':<{width}} {'its':>5}  {'if cached':<12} timm's pretrained config and the Hugging "
              "Face hub (tlfs backbones --timm 'PATTERN' lists them)")
    return None


def cmd_export(args, settings: Settings) -> dict:
    from tlfs.models.export import export

    artifact = export(args.backbone, settings.model_store, weights=args.weights, random_weights=args.random_weights, log=log)
    card = artifact.card
    print(f"{card['version']}  {artifact.onnx_uri}")
    for name, dim in card["layers"].items():
        p = card["parity"][name]
        print(f"  {name:>10}  {dim:>5}-d  parity max|diff| {p['max_abs_diff']:.2e}  cosine {p['cosine_similarity']:.8f}")
    return {"backbone_version": card["version"], "uri": artifact.uri, "onnx_sha256": card["onnx_sha256"], "parity": card["parity"]}


def _opening_parts(summary: dict) -> str:
    """`` (variant 1.6 s, session 0.4 s, ...)``: where the session's opening went, where it was measured by part."""
    parts = summary.get("session_open_parts") or {}
    if list(parts) in ([], ["session"]):  # the session alone: its seconds are the total already given
        return ""
    return f" ({', '.join(f'{name} {seconds} s' for name, seconds in parts.items())})"


def cmd_extract(args, settings: Settings) -> dict:
    from tlfs.pipeline import extract
    from tlfs.pipeline.extract import ExtractionRequest, RunOptions

    request = ExtractionRequest(
        args.dataset, sources_for(settings, args.dataset, args.sources, log), args.backbone, settings.store, settings.model_store,
        layers=args.layers, splits=args.splits, limit=args.limit, runtime=settings.runtime(), shard_size=settings.shard_size,
        codec=settings.codec, views=args.views, weights=args.weights, random_weights=args.random_weights,
        cache_dir=settings.cache_dir, incremental=not args.full, bit_depth=args.bit_depth)
    options = RunOptions(threads=settings.threads or None, sessions=settings.sessions or None,
                         decode_workers=settings.decode_workers, writers=settings.writers or None,
                         show_progress=not args.no_progress, lease=settings.lease_terms(), retention=settings.retention())
    summary = extract.run(request, options, log=log)
    codec = "" if summary["codec"] == DEFAULT_CODEC else f", this run's files in {summary['codec']}"
    print(f"features: {summary['set_uri']} version {summary['version']}"
          f"{' (unchanged)' if summary['unchanged'] else ''}  ({summary['rows']} rows, {summary['rejected']} rejected; "
          f"{_extracted(summary)}; Parquet {summary['parquet_bytes'] / 1e6:.1f} MB{codec}"
          + (f"; the session took {summary['session_open_seconds']} s to open{_opening_parts(summary)}"
             if summary["session_open_seconds"] else "")
          + ")")
    return summary


def _extracted(summary: dict) -> str:
    """What the run computed and how fast, with how busy the session and the writers were
    meanwhile (the one near 100 % bounds the run)."""
    extracted, computed = summary["images_extracted"], summary["images_computed"]
    if not summary["images_per_second"]:
        return f"{extracted} images extracted" + (", all by an earlier run of the plan" if extracted else "")
    busy = [f"{name} {summary[key]:.0%}" for name, key in (("the session", "session_busy"), ("the writers", "writers_busy"))
            if summary.get(key) is not None]
    # a run that resumes a plan computes only the shards an earlier run left: its rate is of those
    this_run = "" if computed == extracted else f", {computed} of them by this run,"
    return (f"{extracted} images extracted{this_run} at {summary['images_per_second']} images/s"
            + (f", busy: {', '.join(busy)}" if busy else ""))


def cmd_finetune(args, settings: Settings) -> dict:
    from tlfs.pipeline.finetune import FinetuneRequest, finetune

    if args.random_weights:
        raise SystemExit("tlfs finetune: use --from-scratch for random initialisation")
    config = FinetuneConfig(**{f.name: getattr(args, f.name) for f in fields(FinetuneConfig)})
    sources = sources_for(settings, args.dataset, args.sources, log)
    request = FinetuneRequest(args.dataset, sources, args.backbone, settings.model_store, config, limit=args.limit,
                              device=settings.device, cache_dir=settings.cache_dir, weights=args.weights,
                              bit_depth=args.bit_depth or FULL_DEPTH)
    result = finetune(request, restart=args.restart, show_progress=not args.no_progress, log=log)
    print(f"fine-tuned {args.backbone} on {args.dataset}: test accuracy {result['test_accuracy']:.4f} "
          f"(validation {result['validation_accuracy']:.4f}, {result['seconds']}s) -> {result['backbone_version']}")
    if args.extract:
        from tlfs import features
        from tlfs.models.backbones import get_spec
        from tlfs.models.finetune import classifier_layer
        from tlfs.pipeline import extract
        from tlfs.pipeline.extract import ExtractionRequest, RunOptions
        from tlfs.pipeline.fit import fit

        layer = classifier_layer(get_spec(args.backbone))
        request = ExtractionRequest(args.dataset, sources, result["backbone_version"], settings.store,
                                          settings.model_store, limit=args.limit, runtime=settings.runtime(),
                                          codec=settings.codec, cache_dir=settings.cache_dir, bit_depth=request.bit_depth)
        extracted = extract.run(request, RunOptions(show_progress=not args.no_progress, lease=settings.lease_terms()), log=log)
        head = fit(features.open_set(args.dataset, result["backbone_version"], store=settings.store), [layer], "softmax", log=log)
        print(f"features: {extracted['set_uri']}; softmax on {layer}: test accuracy {head['test_accuracy']:.4f}")
        result = {**result, "set_uri": extracted["set_uri"], "softmax_test_accuracy": head["test_accuracy"]}
    return {k: v for k, v in result.items() if k != "history"}


def cmd_bench(args, settings: Settings) -> dict:
    if args.host_only and args.stages:
        raise SystemExit("tlfs bench: give --host-only or --stages, not both")
    if args.rounds != 1 and (args.host_only or args.stages):
        raise SystemExit("tlfs bench: --rounds repeats the pipeline beside onnxruntime alone; "
                         "--host-only and --stages run once")
    if args.device_rate and not args.host_only:
        raise SystemExit("tlfs bench: --device-rate is for --host-only (a stand-in device instead of inference)")
    if args.host_only:
        return _bench_host_only(args, settings)
    if args.stages:
        return _bench_stages(args, settings)
    from tlfs.pipeline.bench import bench
    from tlfs.pipeline.plan import ExtractionRequest

    runtime = resolve_runtime(args.device, settings.precision or None, batch_size=args.batch_size,
                              bound_buffers=settings.bound_buffers or None)
    request = ExtractionRequest("bench", (), args.backbone, settings.store, settings.model_store, runtime=runtime,
                                weights=args.weights, random_weights=args.random_weights, shard_size=settings.shard_size,
                                codec=settings.codec)
    result = bench(request, args.images, settings.decode_workers, sessions=settings.sessions or None,
                   rounds=args.rounds, log=log)
    print(f"{args.backbone} on {args.device}, batch {result['batch_size']}, {result['images']} images, steady state:")
    print(f"  {'measurement':<42} images/s")
    rows = [("(a) PyTorch eager fp32", "torch_fp32"), ("(b) PyTorch fp16 channels_last", "torch_fp16"),
            ("(c) onnxruntime fp32, inference", "ort_fp32"), ("(c16) onnxruntime fp16, inference", "ort_fp16"),
            *([("(c8) onnxruntime int8, inference", "ort_int8")] if "ort_int8" in result else []),
            (f"(d) tlfs extract ({result['precision']}), files -> Parquet", "pipeline")]
    for label, key in rows:
        value = result[key]
        print(f"  {label:<42} {'n/a' if value is None else f'{value:,.1f}'}")
    print(f"  pipeline vs onnxruntime alone (mean of a run before and one after it): {result['pipeline_vs_ort']:.2f}x")
    if len(result["pipeline_vs_ort_rounds"]) > 1:
        print("    the round of the median ratio; every round's: "
              + ", ".join(f"{r:.3f}" for r in result["pipeline_vs_ort_rounds"]))
    if result["pipeline_session_vs_ort"] is not None:
        print(f"    = the session had a batch {result['pipeline_session_busy']:.1%} of the time"
              f" x its batches at {result['pipeline_session_vs_ort']:.3f}x onnxruntime alone's rate")
        print("      " + _idle_ends(result["pipeline_session_first_batch_seconds"],
                                    result["pipeline_session_after_last_batch_seconds"], result["pipeline_extract_seconds"]))
    if result["pipeline_writers_busy"] is not None:
        print(f"    the writer pool's {result['pipeline_writers']} threads wrote {result['pipeline_writers_busy']:.1%} of the time")
    print(f"  pipeline vs PyTorch fp32: {result['pipeline_vs_torch_fp32']:.2f}x")
    if result["pipeline_vs_torch_fp16"] is not None:
        print(f"  pipeline vs PyTorch fp16: {result['pipeline_vs_torch_fp16']:.2f}x")
    _print_threads(result["pipeline_thread_cpu_us_per_image"], result["pipeline_busiest_thread"],
                   result["pipeline_busiest_thread_busy"], result["pipeline_cores_idle"])
    return result


def _bench_request(args, settings: Settings, mode: str, batch_size: int | None = None):
    """The extraction a host-side bench (``mode``: --host-only, --stages) measures: the
    dataset's, on the CPU's runtime (no inference is run), in batches of ``--batch-size``,
    else ``batch_size``, else the CPU's."""
    from tlfs.pipeline.plan import ExtractionRequest

    if not args.dataset:
        raise SystemExit(f"tlfs bench: {mode} needs --dataset")
    return ExtractionRequest(args.dataset, sources_for(settings, args.dataset, args.sources, log), args.backbone, settings.store,
                             settings.model_store, layers=args.layers.split(",") if args.layers else None,
                             limit=args.limit, shard_size=settings.shard_size, codec=settings.codec,
                             runtime=resolve_runtime("cpu", batch_size=args.batch_size or batch_size),
                             cache_dir=settings.cache_dir)


def _bench_host_only(args, settings: Settings) -> dict:
    from tlfs.pipeline.bench import host_only

    # a stand-in GPU takes a GPU's batches
    request = _bench_request(args, settings, "--host-only", DEFAULT_BATCH["cuda"] if args.device_rate else None)
    result = host_only(request, settings.decode_workers, log=log, device_rate=args.device_rate)
    print(f"host side of tlfs extract on {args.dataset}, {result['images']} images, {result['decode_workers']} decode worker(s):")
    print(f"  reading and decoding alone       {result['decode_images_per_s']:>10,.1f} images/s")
    inference = f"a device of {args.device_rate:,.0f}/s" if args.device_rate else "no inference"
    print(f"  whole pipeline, {inference:<16} {result['host_images_per_s']:>10,.1f} images/s  "
          f"({result['host_vs_decode']:.2f}x reading and decoding)")
    if args.device_rate:
        print(f"  against the device: {result['host_vs_device']:.3f}x its rate; it had work {result['device_busy']:.1%} "
              f"of the extraction's time, {result['device_batches']} batches of {result['batch_size']}, "
              f"{result['device_padding']:.1%} of their rows padding")
        print("    " + _idle_ends(result["session_first_batch_seconds"], result["session_after_last_batch_seconds"],
                                  result["extract_seconds"]))
    print(f"  seconds: reading {result['read_seconds']}, decoding {result['decode_seconds']} (summed over workers), "
          f"batching {result['batch_seconds']}, writing {result['write_seconds']} (summed over the "
          f"{result['writers']} writer threads, busy {result['writers_busy']:.1%} of the time"
          f"{', below decoding' if result['writers_yield'] else ''})")
    _print_threads(result["thread_cpu_us_per_image"], result["busiest_thread"], result["busiest_thread_busy"],
                   result["cores_idle"])
    if result["decode_workers"] > 1 and result["decode_workers"] >= result["cores"] and not args.device_rate:
        print(f"  the {result['decode_workers']} decode workers take all {result['cores']} cores: the rest of the host side "
              "(Parquet encoding above all) shares them, so the ratio is bounded by `tlfs bench --stages`'s "
              "projected_vs_decode_ceiling; with cores to spare the rest runs beside the workers")
    return result


def _idle_ends(first: float | None, after_last: float | None, extract: float) -> str:
    """Where a run's session had no batch at its two ends, against the extraction's seconds:
    fixed costs, which a larger dataset spreads thinner."""
    if first is None or after_last is None or extract <= 0:
        return "the session ran no batch"
    return (f"of the extraction's {extract:.2f} s: {first:.3f} s before the session's first batch "
            f"({first / extract:.1%}), {after_last:.3f} s after its last ({after_last / extract:.1%}: the last shards' files)")


def _print_threads(cpu_us: dict[str, float], busiest: str | None, busy: float | None, idle: float | None) -> None:
    """Where the run's process spent its CPU while extracting, and the machine's idle share (bench.extract_watched)."""
    if cpu_us and busiest is not None:
        print("  CPU of the run's process an image, by thread (µs): " + ", ".join(f"{r} {us}" for r, us in cpu_us.items())
              + f"; busiest thread: {busiest}, {busy:.0%} of the extraction's wall time")
    if idle is not None:
        print(f"  the machine's cores idle {idle:.1%} of the extraction's time")


def _bench_stages(args, settings: Settings) -> dict:
    from tlfs.pipeline.stage_bench import stage_bench

    result = stage_bench(_bench_request(args, settings, "--stages"), args.images or STAGE_IMAGES, args.cores, log=log)
    print(f"host stages of tlfs extract: {result['backbone']} ({result['values_per_image']:,} values per image), "
          f"{result['images']:,} images of {result['dataset']}, one core each:")
    where = {name: f"{stage['thread']} thread" if stage["serial"] else "a pool (scales)"
             for name, stage in result["stages"].items()}
    width = max(len("runs on"), *map(len, where.values()))
    print(f"  {'stage':<26} {'images/s':>12}  {'runs on':<{width}} what")
    for name, stage in result["stages"].items():
        print(f"  {name:<26} {stage['images_per_s']:>12,.1f}  {where[name]:<{width}} {stage['what']}")
    print("  serial threads (their stages added up): "
          + ", ".join(f"{thread} {rate:,.1f}" for thread, rate in result["threads"].items()) + " images/s")
    print(f"  slowest serial thread: {result['serial_min_images_per_s']:,.1f} images/s (bound by {result['bound_by']})")
    print(f"  projected host side on {result['cores']} cores: {result['projected_images_per_s']:,.1f} images/s "
          f"(a projection from the stages above, not a measured run)")
    print(f"  every serial thread's stages on one core, one after another (their GIL shared at worst): "
          f"{result['serial_one_core_images_per_s']:,.1f} images/s")
    print(f"  projected decode ceiling on {result['cores']} cores (reading, decoding and hand-over alone, as "
          f"--host-only's first step): {result['decode_ceiling_images_per_s']:,.1f} images/s; the host side "
          f"{result['projected_vs_decode_ceiling']:.2f}x of it")
    return result


def cmd_verify(args, settings: Settings) -> dict:
    from tlfs import features
    from tlfs.pipeline.extract import verify

    set_uri, _ = features.find_set(args.dataset, args.backbone, settings.store)
    report = verify(set_uri, repair=args.repair, device=args.device, log=log)
    for bad in report["bad"]:
        print(f"BAD  {bad['path']}  (shard {bad['shard']}): {bad['reason']}")
    state = "repaired" if report["repaired"] else ("damaged" if report["bad"] else "ok")
    print(f"{state}: {len(report['bad'])} of {report['shard_files']} shard files bad in {set_uri} ({report['seconds']}s)")
    if report["bad"] and not report["repaired"]:
        print(json.dumps(report))
        raise SystemExit(1)
    return report

