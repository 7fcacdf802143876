"""Issue 16's figures on the full CIFAR-10 (EfficientNet-Lite0, all layers, this CPU):

1. extract everything (version 1); add a source of 600 new images (1%) and run again
   (version 2): its extraction time as a fraction of the first, and the rows reused;
2. replace 100 training images with other pictures and remove 100 (version 3): exactly
   those re-extracted and dropped, compared row for row, every layer and split, with a
   from-scratch extraction of the new sources;
3. version 1 read back after the two newer commits equals what version 1 was; then
   ``vacuum`` with a retention of 1: version 1's files are gone, the newest verifies.

    .venv/bin/python scripts/incremental-bench.py --source ../shared/data/cifar10/train.tar.gz \\
        --source ../shared/data/cifar10/test.tar.gz --work /tmp/tlfs-incremental

Prints one JSON line. Takes about two full extractions (~20 minutes on 2 cores).
"""

from __future__ import annotations

import argparse
import io
import json
import random
import shutil
import tarfile
import time
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps

from tlfs import features
from tlfs.features.versions import Retention
from tlfs.pipeline import extract
from tlfs.pipeline.extract import ExtractionRequest, RunOptions

BACKBONE = "efficientnet_lite0"


def mirrored_jpeg(data: bytes) -> bytes:
    out = io.BytesIO()
    ImageOps.mirror(Image.open(io.BytesIO(data)).convert("RGB")).save(out, "JPEG", quality=95)
    return out.getvalue()


def members(path: Path) -> list[tuple[tarfile.TarInfo, bytes]]:
    with tarfile.open(path, "r:*") as archive:
        return [(m, archive.extractfile(m).read() if m.isfile() else b"") for m in archive]


def write_tar(path: Path, items: list[tuple[str, bytes]]) -> Path:
    with tarfile.open(path, "w:gz") as archive:
        for name, data in items:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


LIMIT = {}


def run(sources: list[Path], store: Path, models: Path, **kw) -> tuple[dict, float]:
    started = time.perf_counter()
    kw = {**LIMIT, **kw}
    request = ExtractionRequest("cifar10", [str(s) for s in sources], BACKBONE, str(store), str(models), **kw)
    summary = extract.run(request, RunOptions(show_progress=False), log=lambda m: print(m, flush=True))
    return summary, time.perf_counter() - started


def all_rows(store: Path, **at) -> dict:
    handle = features.open_set("cifar10", BACKBONE, str(store), **at)
    return {(layer, split): handle.frame(layer, split) for layer in handle.layers for split in handle.splits}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--source", action="append", required=True, help="train.tar.gz, then test.tar.gz")
    parser.add_argument("--work", default="/tmp/tlfs-incremental")
    parser.add_argument("--limit", type=int, help="a sample per split, to try the script quickly (figures need all)")
    args = parser.parse_args()
    work = Path(args.work)
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    store, scratch, models = work / "store", work / "scratch", work / "models"
    train, test = (Path(s).resolve() for s in args.source)
    rng = random.Random(16)
    LIMIT.update({"limit": args.limit} if args.limit else {})

    first, first_wall = run([train, test], store, models)
    v1_rows = all_rows(store)

    # 1% more: 600 new training images (mirrored test images, 60 per class)
    test_items = [(m, d) for m, d in members(test) if m.isfile()]
    by_class: dict[str, list] = {}
    for m, d in test_items:
        by_class.setdefault(m.name.split("/")[1], []).append((m, d))
    new = [(f"train/{c}/extra-{i:04d}.jpg", mirrored_jpeg(d)) for c, items in sorted(by_class.items())
           for i, (_, d) in enumerate(items[:60])]
    extra = write_tar(work / "extra.tar.gz", new)
    second, second_wall = run([train, test, extra], store, models)

    # replace 100 training images with other pictures, remove 100 others
    train_items = [(m.name, d) for m, d in members(train) if m.isfile()]
    chosen = rng.sample(range(len(train_items)), 200)
    replaced, removed = set(chosen[:100]), set(chosen[100:])
    changed_train = write_tar(work / "train-changed.tar.gz", [
        (name, mirrored_jpeg(d) if i in replaced else d) for i, (name, d) in enumerate(train_items) if i not in removed])
    third, third_wall = run([changed_train, test, extra], store, models)

    scratch_summary, scratch_wall = run([changed_train, test, extra], scratch, models, incremental=False)
    newest, fresh = all_rows(store), all_rows(scratch)
    compared = equal = 0
    max_diff = 0.0
    for key, frame in fresh.items():
        ours = newest[key].set_index("image_id").loc[frame["image_id"]]
        assert list(ours.index) == list(frame["image_id"]), f"{key}: not the same images"
        a, b = np.stack(ours["features"]).astype(np.float32), np.stack(frame["features"]).astype(np.float32)
        compared += len(frame)
        equal += int((np.abs(a - b).max(axis=1) <= 2e-3 + 1e-2 * np.abs(b).max(axis=1)).sum())
        max_diff = max(max_diff, float(np.abs(a - b).max()))
    replaced_ids = {train_items[i][0] for i in replaced}
    removed_ids = {train_items[i][0] for i in removed}
    train_ids = set(newest[("head", "train")]["image_id"])

    old = all_rows(store, version=1)
    version1_equal = all(old[k]["image_id"].tolist() == v1_rows[k]["image_id"].tolist()
                         and np.stack(old[k]["features"]).tobytes() == np.stack(v1_rows[k]["features"]).tobytes()
                         for k in v1_rows)
    set_uri = third["set_uri"]
    retired_before = len(list(Path(set_uri, "_retired").rglob("*.parquet")))
    report = extract.vacuum(set_uri, Retention(versions=1, days=None))
    try:
        features.open_set("cifar10", BACKBONE, str(store), version=1)
        version1_gone = False
    except features.NotCommitted:
        version1_gone = True

    print(json.dumps({
        "first_extract_s": first["extract_seconds"], "first_wall_s": round(first_wall, 1),
        "second_extract_s": second["extract_seconds"], "second_wall_s": round(second_wall, 1),
        "second_plan_s": second["plan_seconds"], "second_commit_s": second["commit_seconds"],
        "second_vs_first_extract": round(second["extract_seconds"] / first["extract_seconds"], 4),
        "second_vs_first_wall": round(second_wall / first_wall, 4),
        "second_images_extracted": second["images_extracted"], "second_changes": second["changes"],
        "third_changes": third["changes"], "third_images_extracted": third["images_extracted"],
        "third_wall_s": round(third_wall, 1), "third_shards_derived": third["shards_derived"],
        "replaced_present": len(replaced_ids & train_ids), "removed_absent": len(removed_ids - train_ids),
        "scratch_wall_s": round(scratch_wall, 1), "rows_compared": compared, "rows_equal": equal,
        "max_abs_diff": max_diff, "version1_equal_after_two_commits": version1_equal,
        "vacuum": report, "retired_files_before_vacuum": retired_before,
        "retired_files_after_vacuum": len(list(Path(set_uri, "_retired").rglob("*.parquet"))),
        "version1_gone": version1_gone, "newest_verifies": extract.verify(set_uri)["bad"] == [],
        "versions": features.history("cifar10", BACKBONE, str(store))[["version", "rows", "added", "changed", "removed",
                                                                          "reused"]].to_dict("records"),
    }, default=str))


if __name__ == "__main__":
    main()
