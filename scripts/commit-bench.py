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
with every time; the sizes take turns (one commit of each, R times over), so that the
machine's moods fall on each alike, and a last line gives each size's median against the
smallest's, the median of the paired ratios and the ratio of the minimums, for the wall time and for the process's CPU
time (``commit_cpu_seconds``: the commit's work without its waits on the disk, whose fsyncs
move the wall time by a few milliseconds from one commit to the next). Before each timed commit the page cache is flushed (``os.sync``), so
that the commit is not charged the kernel's writeback of the bench's own set-up (the
set's Parquet files were copied back a moment before; a scheduled run's base was
written hours before). Prints one JSON line per size (and the ratios); ``--sections`` adds the median
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
from dataclasses import dataclass, field
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


@dataclass
class Prepared:
    """One size's set, as its first version (and ``history``) left it, ready to be restored."""

    images: int
    store: Path
    first_version: Path
    sources: list[str]
    added: str
    session: HostOnlySession
    models: str
    times: list = field(default_factory=list)
    cpu_times: list = field(default_factory=list)  # the process's CPU time (user and system), waits on the disk left out
    sections: list = field(default_factory=list)


def prepare(images: int, work: Path, models: str, history: int = 0) -> Prepared:
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
    extract.run(ExtractionRequest("bench", [str(base)], BACKBONE, str(store), models),
                RunOptions(show_progress=False, session=session), log=lambda *_: None)
    sources = [str(base)]
    for k in range(history):  # earlier incremental versions, each adding 1 %, all kept by the default retention
        sources.append(str(write_tar(folder / f"history{k}.tar", max(1, images // 100), f"h{k}-", 100 + k)))
        extract.run(ExtractionRequest("bench", list(sources), BACKBONE, str(store), models),
                    RunOptions(show_progress=False, session=session), log=lambda *_: None)
    shutil.copytree(store, first_version)
    return Prepared(images, store, first_version, sources, str(added), session, models)


def link_parquet(source: str, target: str) -> None:
    """Restore one file of the set: a Parquet file by a hard link (the store never
    changes one in place: it writes a file once, then only renames or removes it), any
    other file by a copy (a lock, a lease or a version file may be rewritten)."""
    if source.endswith(".parquet"):
        os.link(source, target)
    else:
        shutil.copy2(source, target)


def time_commit(prepared: Prepared, profile: bool = False, sections: bool = False) -> dict:
    """Restore the set as prepared, plan and run the incremental extraction, and time its commit alone."""
    shutil.rmtree(prepared.store)
    shutil.copytree(prepared.first_version, prepared.store, copy_function=link_parquet)
    request = ExtractionRequest("bench", [*prepared.sources, prepared.added], BACKBONE, str(prepared.store), prepared.models)
    p = extract.plan(request, log=lambda *_: None)
    with hold(p.set_uri, p.plan_id, LeaseTerms(), plan_must_exist=False) as held:
        extract.save_plan(p, held)
        results = extract.run_shards(p, [s.number for s in p.shards], Workers(prepared.session), check=held.check)
        os.sync()
        profiler = cProfile.Profile() if profile else None
        spent: dict = {}
        with timed_sections(spent) if sections else contextlib.nullcontext():
            before, started, cpu = read_bytes(), time.perf_counter(), time.process_time()
            if profiler:
                profiler.enable()
            committed = extract.commit(p, results, log=lambda *_: None)
            seconds, read = time.perf_counter() - started, read_bytes() - before
            cpu = time.process_time() - cpu
        if profiler:
            profiler.disable()
            pstats.Stats(profiler, stream=sys.stderr).sort_stats("cumulative").print_stats(25)
    prepared.times.append(seconds)
    prepared.cpu_times.append(cpu)
    prepared.sections.append(spent)
    return {"plan": p, "committed": committed, "read": read}


def summary(prepared: Prepared, last: dict, sections: bool) -> dict:
    manifest = read_manifest(last["plan"].set_uri)
    total = parquet_bytes(manifest)
    times = prepared.times
    return {"images": prepared.images, "added": last["plan"].changes.added, "version": last["committed"].version,
            "set_parquet_bytes": total,
            "commit_seconds": round(statistics.median(times), 4), "commit_seconds_each": [round(t, 4) for t in times],
            "commit_cpu_seconds": round(statistics.median(prepared.cpu_times), 4),
            "commit_bytes_read": last["read"], "commit_read_fraction": round(last["read"] / total, 4),
            **({"sections_ms": median_sections(prepared.sections)} if sections else {})}


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
    sizes = [prepare(images, work, models, args.history) for images in args.images]
    last = {}
    for attempt in range(args.repeat):  # the sizes in turn, so that the machine's moods fall on each alike
        for prepared in sizes:
            last[prepared.images] = time_commit(prepared, args.profile and attempt == args.repeat - 1, args.sections)
    for prepared in sizes:
        print(json.dumps(summary(prepared, last[prepared.images], args.sections)), flush=True)
    if len(sizes) > 1:  # each size's median against the smallest's, and the median of the paired ratios
        smallest = sizes[0]
        print(json.dumps({"ratio_to": smallest.images, **{
            str(s.images): {**ratios(s.times, smallest.times), "cpu": ratios(s.cpu_times, smallest.cpu_times)}
            for s in sizes[1:]}}), flush=True)


def ratios(times: list[float], smallest: list[float]) -> dict:
    """One size's times against the smallest's: the ratio of their medians, the median of the paired ratios, and
    the ratio of their minimums (a shared machine's noise only adds time: the fastest commit of each size is the
    nearest to what the commit itself costs, as ``timeit`` reasons)."""
    return {"of_medians": round(statistics.median(times) / statistics.median(smallest), 3),
            "median_of_pairs": round(statistics.median(a / b for a, b in zip(times, smallest)), 3),
            "of_minimums": round(min(times) / min(smallest), 3)}


if __name__ == "__main__":
    main()
