#!/usr/bin/env python3
"""What the commit of an incremental run costs, against the set's size.

    .venv/bin/python scripts/commit-bench.py --images 10000 --images 100000 --work /tmp/tlfs-commit

For each size N: a set of N small JPEGs is extracted (EfficientNet-Lite0's real layer
widths, inference replaced by ``tlfs bench --host-only``'s trivial session, so that only
the host side runs), then a source of N/100 new images is added and extracted again,
and that run's commit alone is timed, with the bytes this process read while it ran
(``/proc/self/io`` rchar: every read, the store's and any other, so an upper bound on
what the commit read of the store). ``--repeat R`` (default 5) restores the set as its
first version left it and times the incremental commit R times: the median is given,
with every time. Before each timed commit the page cache is flushed (``os.sync``), so
that the commit is not charged the kernel's writeback of the bench's own set-up (the
set's Parquet files were copied back a moment before; a scheduled run's base was
written hours before). Prints one JSON line per size; ``--sections`` adds the median
milliseconds of each of the commit's stages (``sections_ms``), ``--profile`` the last
commit's profile on stderr. ``--history K`` commits K incremental versions (each adding
1 %) before the timed one, so that the set has K + 1 versions the default retention keeps.
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import functools
import pstats
import sys
import io
import json
import os
import shutil
import statistics
import tarfile
import time
from pathlib import Path

import numpy as np
from PIL import Image

from tlfs.features.leases import LeaseTerms, hold
from tlfs.features.manifest import read_manifest
from tlfs.models.export import export
from tlfs.models.runtime import resolve_runtime
from tlfs.pipeline import extract
from tlfs.pipeline.bench import HostOnlySession
from tlfs.pipeline.extract import ExtractionRequest, RunOptions
from tlfs.pipeline.runner import Workers

BACKBONE = "efficientnet_lite0"


def write_tar(path: Path, images: int, prefix: str, seed: int) -> Path:
    if path.exists():
        return path
    rng = np.random.default_rng(seed)
    pool = []
    for _ in range(64):
        buffer = io.BytesIO()
        low = rng.integers(0, 255, (4, 4, 3), dtype=np.uint8)
        Image.fromarray(low).resize((32, 32), Image.Resampling.BICUBIC).save(buffer, "JPEG", quality=90)
        pool.append(buffer.getvalue())
    with tarfile.open(path, "w") as archive:
        for n in range(images):
            data = pool[n % len(pool)]
            info = tarfile.TarInfo(f"train/class{n % 10}/{prefix}{n:07d}.jpg")
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def read_bytes() -> int:
    with open("/proc/self/io") as f:
        return int(next(line for line in f if line.startswith("rchar:")).split()[1])


def parquet_bytes(manifest: dict) -> int:
    return sum(s["bytes"] for s in manifest["shards"])


# the commit's stages, timed with --sections: (module, function) pairs, and the listing
SECTIONS = (("tlfs.features.versions", ("settle", "record", "move_in", "retire_others", "vacuum")),
            ("tlfs.features.storage", ("atomic_write_bytes",)),
            ("tlfs.features.manifest", ("read_json_if_exists", "validate", "collect_garbage",
                                        "_remove_empty_folders", "live_plans", "live_bases", "drop_released")),
            ("tlfs.pipeline.commit", ("manifest_of", "gather_records", "require_plan", "publish")))


@contextlib.contextmanager
def timed_sections(seconds: dict):
    """Within it, each of :data:`SECTIONS` (and the set's listing, and fsspec's removals)
    adds its seconds to ``seconds``; the originals are put back after."""
    import importlib

    import fsspec.implementations.local as local

    from tlfs.features import versions

    def timed(label, fn):
        @functools.wraps(fn)
        def call(*args, **kwargs):
            started = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                seconds[label] = seconds.get(label, 0.0) + time.perf_counter() - started
        return call

    originals = [(importlib.import_module(module), name) for module, names in SECTIONS for name in names]
    originals += [(versions.Listing, "__init__"), (local.LocalFileSystem, "rm")]
    saved = [(owner, name, getattr(owner, name)) for owner, name in originals]
    for owner, name, fn in saved:
        label = "listing" if name == "__init__" else ("rm" if name == "rm" else f"{owner.__name__.rsplit('.', 1)[-1]}.{name}")
        setattr(owner, name, timed(label, fn))
    try:
        yield seconds
    finally:
        for owner, name, fn in saved:
            setattr(owner, name, fn)


def measure(images: int, work: Path, models: str, profile: bool = False, sections: bool = False,
            repeat: int = 5, history: int = 0) -> dict:
    folder = work / f"n{images}"
    folder.mkdir(parents=True, exist_ok=True)
    base = write_tar(folder / "base.tar", images, "a", 0)
    added = write_tar(folder / "added.tar", max(1, images // 100), "b", 1)
    store, first_version = folder / "store", folder / "store-v1"
    runtime = resolve_runtime("cpu")
    artifact = export(BACKBONE, models, log=lambda *_: None)
    session = HostOnlySession(runtime, dict(artifact.card["layers"]))
    shutil.rmtree(store, ignore_errors=True)
    shutil.rmtree(first_version, ignore_errors=True)
    first = extract.run(ExtractionRequest("bench", [str(base)], BACKBONE, str(store), models),
                        RunOptions(show_progress=False, session=session), log=lambda *_: None)
    sources = [str(base)]
    for k in range(history):  # earlier incremental versions, each adding 1 %, all kept by the default retention
        sources.append(str(write_tar(folder / f"history{k}.tar", max(1, images // 100), f"h{k}-", 100 + k)))
        extract.run(ExtractionRequest("bench", list(sources), BACKBONE, str(store), models),
                    RunOptions(show_progress=False, session=session), log=lambda *_: None)
    shutil.copytree(store, first_version)
    times, sections_each = [], []
    for attempt in range(repeat):
        if attempt:
            shutil.rmtree(store)
            shutil.copytree(first_version, store)
        request = ExtractionRequest("bench", [*sources, str(added)], BACKBONE, str(store), models)
        p = extract.plan(request, log=lambda *_: None)
        with hold(p.set_uri, p.plan_id, LeaseTerms(), plan_must_exist=False) as held:
            extract.save_plan(p, held)
            results = extract.run_shards(p, [s.number for s in p.shards], Workers(session), check=held.check)
            os.sync()
            profiler = cProfile.Profile() if profile and attempt == repeat - 1 else None
            spent: dict = {}
            with timed_sections(spent) if sections else contextlib.nullcontext():
                before, started = read_bytes(), time.perf_counter()
                if profiler:
                    profiler.enable()
                committed = extract.commit(p, results, log=lambda *_: None)
                seconds, read = time.perf_counter() - started, read_bytes() - before
            if profiler:
                profiler.disable()
                pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumulative").print_stats(25)
        times.append(seconds)
        sections_each.append(spent)
    manifest = read_manifest(p.set_uri)
    total = parquet_bytes(manifest)
    return {"images": images, "added": p.changes.added, "version": committed.version,
            "first_version_rows": first["rows"], "set_parquet_bytes": total,
            "commit_seconds": round(statistics.median(times), 4), "commit_seconds_each": [round(t, 4) for t in times],
            "commit_bytes_read": read, "commit_read_fraction": round(read / total, 4),
            **({"sections_ms": median_sections(sections_each)} if sections else {})}


def median_sections(each: list[dict]) -> dict:
    """Each section's median milliseconds over the repetitions, largest first."""
    labels = {label for spent in each for label in spent}
    medians = {label: statistics.median(spent.get(label, 0.0) for spent in each) * 1000 for label in labels}
    return {label: round(ms, 2) for label, ms in sorted(medians.items(), key=lambda kv: -kv[1])}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, action="append", required=True, help="set size; repeat for several")
    parser.add_argument("--work", default="/tmp/tlfs-commit-bench")
    parser.add_argument("--profile", action="store_true", help="the commit's profile on stderr")
    parser.add_argument("--sections", action="store_true", help="the milliseconds of each of the commit's stages")
    parser.add_argument("--repeat", type=int, default=5, help="timed commits per size (the median is given)")
    parser.add_argument("--history", type=int, default=0,
                        help="incremental versions committed before the timed one (each adding 1 %%), all kept")
    args = parser.parse_args()
    work = Path(args.work)
    models = str(work / "models")
    for images in args.images:
        print(json.dumps(measure(images, work, models, args.profile, args.sections, args.repeat, args.history)), flush=True)


if __name__ == "__main__":
    main()
