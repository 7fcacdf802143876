"""Extraction as three steps, callable without Airflow (the DAG maps the middle one):

1. :func:`plan` indexes the dataset, fixes the shards and saves ``plan.json`` in the
   set's staging area;
2. :func:`extract_shard` runs one shard's images through the ONNX session and writes
   one Parquet file per layer, atomically, plus a small result record; a shard whose
   result and files are already there is not recomputed;
3. :func:`commit` checks every shard and the counts, and publishes the manifest: a new
   version of the set (features/versions.py).

A plan builds on the set's newest version where it can (pipeline/incremental.py): its
unchanged images' features are reused, only new and changed images are extracted.

:func:`run` does all three in one process, with a progress bar.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import itertools
import json
import time
from concurrent.futures import ThreadPoolExecutor
from collections import defaultdict
from dataclasses import dataclass
from typing import Callable, Iterator

import numpy as np

from tlfs.features import layout, versions
from tlfs.features.layout import ORIGINAL
from tlfs.features.errors import PlanReplaced, StoreError
from tlfs.features.leases import Lease, LeaseTerms, hold, replaced_message, require_plan, translate_missing
from tlfs.features.lock import commit_lock
from tlfs.features.manifest import publish
from tlfs.features.schema import shard_table
from tlfs.features.storage import atomic_write_json, fs_path, is_local, read_json, sha256_bytes
from tlfs.features.versions import Retention
from tlfs.features.writer import write_shard
from tlfs.models.artifact import Artifact
from tlfs.models.variants import with_variants
from tlfs.models.runtime import check_layers, open_session, require_cuda
from tlfs.models.session import TapSession, resolve_runtime
from tlfs.pipeline.dataset_index import DatasetIndex, Entry
from tlfs.pipeline.datasets import build_index
from tlfs.pipeline.decode import Decoder
from tlfs.pipeline.incremental import DERIVE, REUSE, diff, fingerprints_digest, load_base
from tlfs.pipeline.plan import ExtractionRequest, Plan, Shard
from tlfs.pipeline.inference import assemble, gather_shard
from tlfs.pipeline.views import check_views
from tlfs.pipeline.errors import PipelineError
from tlfs.pipeline.lineage import code_version

MAX_OPEN_BUCKETS = 8  # distinct image sizes batched separately before a forced flush


def plan(request: ExtractionRequest, log: Callable[[str], None] = print) -> Plan:
    """Export (or reuse) the backbone, index the dataset and fix the shards. Nothing is
    written to the set: :func:`save_plan` does, under a lease."""
    r = request
    artifact = _artifact(r.backbone, r.model_store, r.weights, r.random_weights, log)
    layers = check_layers(artifact, list(r.layers) if r.layers else None)
    started = time.perf_counter()
    index = build_index(r.dataset, list(r.sources), splits=list(r.splits) if r.splits else None, limit=r.limit,
                        cache_dir=r.cache_dir)
    log(f"indexed {len(index.entries)} images of {r.dataset} ({', '.join(index.splits())}) in {time.perf_counter() - started:.1f}s")
    set_uri = layout.set_uri(r.store, r.dataset, artifact.version)
    layer_dims = {layer: artifact.card["layers"][layer] for layer in layers}
    base = load_base(set_uri, r.runtime, layer_dims, r.views, log) if r.incremental else None
    if base is None:
        shards, entries = cut_shards(index, r.shard_size)
        origins: dict[int, dict] = {}
        changes = {"base_version": None, "added": len(index.entries), "changed": 0, "removed": None, "reused": 0}
    else:
        increment = diff(index, base)
        new_shards, new_entries = cut_shards(DatasetIndex(index.name, index.sources, index.classes, increment.new_entries),
                                             r.shard_size, first=len(increment.shards))
        shards, entries, origins = increment.shards + new_shards, {**increment.entries, **new_entries}, increment.origins
        changes = increment.changes
        unchanged = _unchanged_base(set_uri, base, increment, index, r)
        if unchanged is not None:
            log(f"nothing changed since version {base.version}: its plan {base.plan_id} is this run's")
            return unchanged
        log(f"against version {base.version}: {changes['added']} images new, {changes['changed']} changed, "
            f"{changes['removed']} removed, {changes['reused']} reused ({changes['shards_reused']} shards as they are, "
            f"{changes['shards_derived']} copied without their removed or changed rows)")
    changes["extracted"] = sum(s.images for s in shards if s.number not in origins)
    identity = {
        "version": artifact.version,
        "runtime": r.runtime.identity(),  # one set never mixes CPU and GPU, fp32 and fp16 shards
        "layers": layers,
        "sources": [s.checksum for s in index.sources],
        "ids": hashlib.sha256("\n".join(e.image_id for e in index.entries).encode("utf-8", "surrogateescape")).hexdigest(),
        "shards": [s.to_json() for s in shards],
        **({"views": list(r.views)} if r.views != (ORIGINAL,) else {}),  # unchanged ids for plans of one view
        **({"base": base.plan_id, "fingerprints": fingerprints_digest(index.entries),
            "origins": {str(n): o["kind"] for n, o in origins.items()}} if base else {}),
    }
    return Plan(
        plan_id=hashlib.sha256(json.dumps(identity, sort_keys=True).encode()).hexdigest()[:16],
        dataset=r.dataset,
        set_uri=set_uri,
        artifact=artifact,
        layers=tuple(layers),
        splits=tuple(index.splits()),
        limit=r.limit,
        runtime=r.runtime,
        shard_size=r.shard_size,
        cache_dir=r.cache_dir,
        shards=tuple(shards),
        sources=tuple(index.sources),
        classes=tuple(index.classes),
        index_rejects=tuple(index.rejects),
        views=r.views,
        base=base.to_json() if base else None,
        origins=origins,
        changes=changes,
        entries=entries,
    )


def _unchanged_base(set_uri: str, base, increment, index: DatasetIndex, r: ExtractionRequest) -> Plan | None:
    """The base version's own plan, if this run asks for exactly what it holds: the same
    images with the same fingerprints, from the same sources (then a scheduled run over
    an unchanged source writes nothing, and its commit adds no version)."""
    c = increment.changes
    if c["added"] or c["changed"] or c["removed"] or c["shards_derived"] or len(increment.shards) != len(base.shards):
        return None
    base_plan = load_plan(set_uri, base.plan_id)
    same = ([s.checksum for s in base_plan.sources] == [s.checksum for s in index.sources]
            and list(base_plan.index_rejects) == list(index.rejects) and base_plan.limit == r.limit)
    if not same:
        return None
    return dataclasses.replace(base_plan, changes={**c, "extracted": 0})


def cut_shards(index: DatasetIndex, shard_size: int, first: int = 0) -> tuple[list[Shard], dict[int, list[Entry]]]:
    """Each split's images (in the index's order, which follows the sources') in shards
    of at most ``shard_size``. Where a source can only be streamed (a compressed tar),
    shards follow its own bounds: it starts a shard of its own, so that no shard streams
    through a compressed archive for a few of its images. Sources read by offset, row
    group or file (folders, zips, uncompressed tars, Parquet) are cut anywhere."""
    shards: list[Shard] = []
    entries: dict[int, list[Entry]] = {}
    for split in index.splits():
        in_split = [e for e in index.entries if e.split == split]
        bounds = [0]
        for run_start, run_stop in _source_runs(in_split):
            streamed = in_split[run_start].offset < 0 and index.sources[in_split[run_start].source].format in STREAMED
            if streamed and run_start > bounds[-1] and run_stop - bounds[-1] > shard_size:
                bounds.append(run_start)  # close the open shard where this archive begins
            while run_stop - bounds[-1] > shard_size:
                bounds.append(bounds[-1] + shard_size)
        bounds.append(len(in_split))
        for start, stop in zip(bounds, bounds[1:]):
            entries[first + len(shards)] = in_split[start:stop]
            shards.append(Shard(first + len(shards), split, start, stop))
    return shards, entries


STREAMED = ("imagefolder-tar", "webdataset-tar")  # compressed ones: read from their start


def _source_runs(entries: list[Entry]) -> list[tuple[int, int]]:
    runs: list[tuple[int, int]] = []
    for i, e in enumerate(entries):
        if runs and entries[runs[-1][0]].source == e.source:
            runs[-1] = (runs[-1][0], i + 1)
        else:
            runs.append((i, i + 1))
    return runs


def save_plan(p: Plan, held: Lease) -> None:
    """Write each shard's entries, then ``plan.json``, into the set's staging; ``held``
    is the caller's lease on it."""
    assert held.plan_id == p.plan_id, "the lease must be on the plan being saved"
    def write(number: int) -> None:
        atomic_write_json(layout.entries_uri(p.set_uri, p.plan_id, number), p.entries_json(number))

    def reuse(number: int) -> None:  # done already
        atomic_write_json(_result_uri(p, number), _reused_record(p, number))

    fs, _ = fs_path(p.set_uri)
    reused = [n for n, origin in p.origins.items() if origin["kind"] == REUSE]
    # an object store's requests overlap; a local disk's writes stay in order (the crash tests replay them)
    with ThreadPoolExecutor(max_workers=1 if is_local(fs) else 16, thread_name_prefix="tlfs-plan") as pool:
        list(pool.map(write, range(len(p.shards))))
        list(pool.map(reuse, reused))
    atomic_write_json(layout.plan_uri(p.set_uri, p.plan_id), p.to_json())


def plan_task(request: ExtractionRequest, lease: LeaseTerms = LeaseTerms(), log: Callable[[str], None] = print) -> Plan:
    """Planning as a task of its own (a DAG's): the plan is saved under a lease that
    lingers ``lease.linger`` seconds, so that its shard tasks, queued, still find it."""
    p = plan(request, log)
    with hold(p.set_uri, p.plan_id, lease, plan_must_exist=False) as held:
        save_plan(p, held)
    return p


def _artifact(backbone: str, model_store: str, weights: str | None, random_weights: bool, log) -> Artifact:
    from tlfs.models.artifact import read_card
    from tlfs.models.names import BACKBONES

    if backbone not in BACKBONES:
        card = read_card(f"{model_store.rstrip('/')}/{backbone}")
        if card is None:
            raise PipelineError(f"{backbone!r} is neither a backbone ({', '.join(BACKBONES)}) nor an exported version in {model_store}")
        if weights or random_weights:
            raise PipelineError(f"{backbone} is an exported version: it has its weights; drop --weights/--random-weights")
        log(f"using exported version {backbone}" + (f" (fine-tuned from {card['parent']['version']})" if card.get("parent") else ""))
        return with_variants(Artifact(f"{model_store.rstrip('/')}/{backbone}", card), log)
    from tlfs.models.export import export  # torch: needed only here, not by shard workers

    return export(backbone, model_store, weights=weights, random_weights=random_weights, log=log)


def load_plan(set_uri: str, plan_id: str) -> Plan:
    """The saved plan; each shard's entries are read when a task asks for them."""
    def read_entries(number: int) -> list:
        try:
            return read_json(layout.entries_uri(set_uri, plan_id, number))
        except FileNotFoundError:
            raise PlanReplaced(replaced_message(set_uri, plan_id)) from None

    try:
        return Plan.from_json(read_json(layout.plan_uri(set_uri, plan_id)), read_entries)
    except FileNotFoundError:
        raise PlanReplaced(replaced_message(set_uri, plan_id)) from None


def _result_uri(p: Plan, number: int) -> str:
    return layout.record_uri(p.set_uri, p.plan_id, number)


def _reused_record(p: Plan, number: int) -> dict:
    """The record of a shard reused as it is: the base's, its files untouched."""
    return {**p.origins[number]["record"], "shard": number, "reused": True, "seconds": 0.0}


def _result_complete(p: Plan, result: dict) -> bool:
    fs, _ = fs_path(p.set_uri)
    for info in result["files"].values():
        found = versions.locate(p.set_uri, info["path"])  # staged, moved into place, or retired
        try:
            if found is None or fs.size(fs_path(found)[1]) != info["bytes"]:
                return False
        except FileNotFoundError:
            return False
    return True


def shard_done(p: Plan, number: int) -> dict | None:
    """The shard's result record, if it and every file it names are there."""
    try:
        result = read_json(_result_uri(p, number))
    except FileNotFoundError:
        return None
    return result if _result_complete(p, result) else None


@dataclass
class ShardOutputs:
    """One shard's pooled features, in the order of its entries, before writing."""

    number: int
    entries: list[Entry]
    kept: list[Entry]
    matrices: dict[tuple[str, str], np.ndarray]  # (view, layer) -> float16 [kept, width]
    rejects: list[dict]
    started: float
    infer_seconds: float = 0.0  # batching and the session's runs


def extract_shard(
    p: Plan,
    number: int,
    session: TapSession | None = None,
    threads: int | None = None,
    progress: Callable[[int], None] | None = None,
    decode_workers: int = 0,
) -> dict:
    """Extract shard ``number`` of plan ``p`` on the plan's runtime (device, precision);
    returns its result record."""
    if not 0 <= number < len(p.shards):
        raise PipelineError(f"plan {p.plan_id} has shards 0..{len(p.shards) - 1}, not {number}")
    return run_shards(p, [number], session, threads, progress, decode_workers=decode_workers)[0]


def run_shards(
    p: Plan,
    numbers: list[int],
    session: TapSession | None = None,
    threads: int | None = None,
    progress: Callable[[int], None] | None = None,
    check: Callable[[], None] = lambda: None,
    decode_workers: int = 0,
    decoder: Decoder | None = None,
    derive: bool = True,
) -> list[dict]:
    """The one extraction runner (``tlfs extract``, a DAG's shard task, a repair): the
    result records of shards ``numbers`` of plan ``p``, in shard order. A shard whose
    record and files are already there is skipped (marked ``skipped``); the others are
    inferred, and written on a background thread while the next one is inferred (at most
    one shard waits to be written, so host memory stays bounded). ``check`` runs before
    each shard (a lease check: stop at once, saying why, if the plan was removed); the
    session is opened only when a shard needs it. Images are decoded by ``decoder`` (by
    default one of ``decode_workers`` processes, see pipeline/decode.py), one for all the
    shards. A shard an incremental plan derives from the base version is copied from the
    base's files (``derive``), or extracted from its images if those files are damaged."""
    results: list[dict] = []
    if derive:
        copied = set()
        for number in [n for n in numbers if n in p.origins and shard_done(p, n) is None]:
            check()
            derived = derive_shard(p, number)
            if derived is not None:  # else its base files are damaged: extracted from its images below
                copied.add(number)
                results.append(derived)
                if progress:
                    progress(derived["read"])
        numbers = [n for n in numbers if n not in copied]
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="tlfs-write") as writer, \
            (contextlib.nullcontext(decoder) if decoder else Decoder(decode_workers, p.runtime.device)) as decoder:
        pending = None
        stream: Iterator | None = None  # one decoding pipeline through every shard still to compute
        streamed: set[int] = set()
        later: list[int] = []
        for i, number in enumerate(numbers):
            check()
            done = shard_done(p, number)
            if stream is None and done is None:
                # from the first shard to compute on, the readers and decoders never wait at a shard's end
                streamed = {number} | {n for n in numbers[i + 1:] if shard_done(p, n) is None}
                stream = decoder.decoded_parts(p.sources, [p.shard_entries(n) for n in numbers if n in streamed],
                                               p.input_size, p.cache_dir)
            if done is not None:
                if number in streamed:  # finished meanwhile by another run of the plan: its images pass by
                    for _ in itertools.islice(stream, len(p.shard_entries(number))):
                        pass
                if progress:
                    progress(done["read"])
                results.append({**done, "skipped": True})
                continue
            if number not in streamed:  # its files vanished since the stream began: after it
                later.append(number)
                continue
            session = session or open_session(p.artifact, list(p.layers), p.runtime, threads=threads)
            outputs = compute_shard(p, number, session, stream, progress)
            if pending is not None:
                results.append(pending.result())
            pending = writer.submit(write_shard_outputs, p, outputs)
        if pending is not None:
            results.append(pending.result())
        if later:
            results.extend(run_shards(p, later, session, threads, progress, check, decoder=decoder, derive=derive))
    return sorted(results, key=lambda r: r["shard"])


def derive_shard(p: Plan, number: int) -> dict | None:
    """Shard ``number`` copied from the base version's files of the shard it comes from,
    keeping only the rows of its entries (reused as they are: the whole record). None if
    a base file is missing or damaged: then the shard is extracted from its images."""
    origin = p.origins[number]
    if origin["kind"] == REUSE:
        record = _reused_record(p, number)
        if not _result_complete(p, record):
            return None
        atomic_write_json(_result_uri(p, number), record)
        return record
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq
    import io

    started = time.perf_counter()
    keep = pa.array(sorted(e.image_id for e in p.shard_entries(number)), pa.string())
    split = p.shards[number].split
    files, written = {}, None
    with translate_missing(p.set_uri, p.plan_id):
        for key, info in origin["files"].items():
            found = versions.locate(p.set_uri, info["path"])
            if found is None:
                return None
            fs, path = fs_path(found)
            data = fs.cat_file(path)
            if sha256_bytes(data) != info["sha256"]:
                return None
            table = pq.read_table(io.BytesIO(data))
            table = table.filter(pc.is_in(table.column("image_id"), value_set=keep))
            layer, view = info.get("layer", key), info.get("view", ORIGINAL)
            relative = layout.shard_path(layer, split, p.plan_id, number, view)
            done = write_shard(layout.staged_uri(p.set_uri, p.plan_id, relative), table)
            files[key] = {"path": relative, "rows": done.rows, "bytes": done.bytes, "sha256": done.sha256,
                          **({"layer": layer, "view": view} if view != ORIGINAL else {})}
            written = done.rows
        record = {"shard": number, "split": split, "read": len(p.shard_entries(number)), "written": written,
                  "rejected": len(origin["rejects"]), "rejects": origin["rejects"], "files": files, "derived": True,
                  "seconds": round(time.perf_counter() - started, 3), "write_seconds": 0.0, "infer_seconds": 0.0}
        if record["read"] != record["written"] + record["rejected"]:
            return None  # the base's rows do not match its records: extract the images again
        atomic_write_json(_result_uri(p, number), record)
    return record


def extract_shard_task(set_uri: str, plan_id: str, number: int, threads: int | None = None,
                       lease: LeaseTerms = LeaseTerms(), decode_workers: int = 0) -> dict:
    """One shard as a task of its own: under a lease on the plan."""
    return extract_shards_task(set_uri, plan_id, [number], threads, lease, decode_workers)[0]


def extract_shards_task(set_uri: str, plan_id: str, numbers: list[int], threads: int | None = None,
                        lease: LeaseTerms = LeaseTerms(), decode_workers: int = 0) -> list[dict]:
    """A group of shards as a task of its own (a DAG's mapped task): under a lease on the
    plan, checked before each shard and at the end."""
    with hold(set_uri, plan_id, lease) as held:
        p = load_plan(set_uri, plan_id)
        bad = [n for n in numbers if not 0 <= n < len(p.shards)]
        if bad:
            raise PipelineError(f"plan {p.plan_id} has shards 0..{len(p.shards) - 1}, not {bad[0]}")
        results = run_shards(p, numbers, threads=threads, check=held.check, decode_workers=decode_workers)
        held.check()
        return results


def compute_shard(p: Plan, number: int, session: TapSession, decoded: Iterator,
                  progress: Callable[[int], None] | None = None) -> ShardOutputs:
    """Run one shard through the session; its images are the next ones of ``decoded``
    (:meth:`Decoder.decoded`'s stream, which may run on through the next shards)."""
    entries = p.shard_entries(number)
    batch_size = p.runtime.batch_size
    started = time.perf_counter()

    parts: dict[str, list[dict[str, np.ndarray]]] = {view: [] for view in p.views}
    positions: list[np.ndarray] = []
    rejects: list[dict] = []
    buckets: dict[tuple, list[tuple[int, np.ndarray]]] = {}

    infer_seconds = 0.0

    def flush(shape: tuple) -> None:
        nonlocal infer_seconds
        flushing = time.perf_counter()
        items = buckets.pop(shape)
        for view, batch in assemble([image for _, image in items], p.views).items():
            parts[view].append(session.run(batch))
        positions.append(np.array([pos for pos, _ in items]))
        infer_seconds += time.perf_counter() - flushing
        if progress:
            progress(len(items))

    for position, (_, entry, image, reason) in enumerate(itertools.islice(decoded, len(entries))):
        assert entry is entries[position], "the decoded stream must follow the shard's entries"
        if image is None:
            rejects.append({"image_id": entry.image_id, "source": p.sources[entry.source].uri, "reason": reason})
            if progress:
                progress(1)
            continue
        bucket = buckets.setdefault(image.shape, [])
        bucket.append((position, image))
        if len(bucket) >= batch_size:
            flush(image.shape)
        elif len(buckets) > MAX_OPEN_BUCKETS:
            flush(max(buckets, key=lambda k: len(buckets[k])))
    for shape in list(buckets):
        flush(shape)

    order = np.argsort(np.concatenate(positions), kind="stable") if positions else np.zeros(0, int)
    kept = [entries[i] for i in (np.concatenate(positions)[order] if positions else [])]
    matrices = {(view, layer): matrix for view in p.views
                for layer, matrix in gather_shard(parts[view], positions, p.layer_dims).items()}
    return ShardOutputs(number, entries, kept, matrices, rejects, started, infer_seconds)


def write_shard_outputs(p: Plan, out: ShardOutputs) -> dict:
    """One Parquet file per layer, atomically, then the shard's result record."""
    with translate_missing(p.set_uri, p.plan_id):
        return _write_shard_outputs(p, out)


def _write_shard_outputs(p: Plan, out: ShardOutputs) -> dict:
    ids = [e.image_id for e in out.kept]
    labels = np.array([p.label_of(e.label_name) for e in out.kept], dtype=np.int16)
    names = [e.label_name for e in out.kept]
    split = p.shards[out.number].split
    files = {}
    writing = time.perf_counter()
    for (view, layer), matrix in out.matrices.items():
        relative = layout.shard_path(layer, split, p.plan_id, out.number, view)
        # into the plan's staging: the commit moves it into the layer= folder (features/versions.py)
        written = write_shard(layout.staged_uri(p.set_uri, p.plan_id, relative), shard_table(ids, labels, names, matrix))
        key = layer if view == ORIGINAL else f"{view}/{layer}"
        files[key] = {"path": relative, "rows": written.rows, "bytes": written.bytes, "sha256": written.sha256,
                      **({"layer": layer, "view": view} if view != ORIGINAL else {})}
    result = {
        "shard": out.number,
        "split": split,
        "read": len(out.entries),
        "written": len(ids),
        "rejected": len(out.rejects),
        "rejects": out.rejects,
        "files": files,
        "seconds": round(time.perf_counter() - out.started, 3),
        "write_seconds": round(time.perf_counter() - writing, 3),  # Parquet encoding + atomic write
        "infer_seconds": round(out.infer_seconds, 3),  # batching + inference
    }
    atomic_write_json(_result_uri(p, out.number), result)
    return result


def commit(p: Plan, results: list[dict] | None = None, log: Callable[[str], None] = print,
           retention: Retention = Retention()) -> dict:
    """Under the set's commit lock: check that the plan is still there and every shard's
    files are (``results``: the shards' records, as the run that made them holds them;
    by default read back from staging), then publish the manifest as the set's next
    version (none if the newest already holds exactly these rows: ``unchanged``), and
    apply ``retention``."""
    with commit_lock(p.set_uri):
        require_plan(p.set_uri, p.plan_id)
        given = {r["shard"]: r for r in results} if results is not None else None
        checked = []
        for number in range(len(p.shards)):
            result = given.get(number) if given is not None else shard_done(p, number)
            if result is None or not _result_complete(p, result):
                raise PipelineError(f"cannot commit {p.set_uri}: shard {number} is not extracted (plan {p.plan_id}), "
                                    "or its files are damaged or were removed; run the extraction again "
                                    "(it re-extracts only what is missing)")
            checked.append(result)
        try:
            committed = publish(p.set_uri, _manifest(p, checked), retention, check=lambda: require_plan(p.set_uri, p.plan_id))
        except PlanReplaced:
            raise
        except StoreError as exc:  # a file vanished after the check above
            raise PipelineError(f"cannot commit {p.set_uri}: {exc}; run the extraction again "
                                "(it re-extracts only what is missing)") from None
    if committed.get("unchanged"):
        log(f"{p.set_uri} is unchanged: version {committed['version']} already holds these {committed['rows']} rows")
        return committed
    log(f"committed version {committed['version']} of {p.set_uri}: {committed['rows']} rows, "
        f"{len(committed['shards'])} shard files, {len(committed['rejects'])} rejected; " + describe_changes(committed["changes"]))
    return committed


def describe_changes(changes: dict) -> str:
    """One line: what a version changed against its base."""
    if changes.get("base_version") is None:
        return f"{changes.get('extracted', changes.get('added'))} images extracted (nothing reused)"
    return (f"against version {changes['base_version']}: {changes['added']} new, {changes['changed']} changed, "
            f"{changes['removed']} removed, {changes['reused']} reused; {changes.get('extracted')} extracted")


def commit_task(set_uri: str, plan_id: str, results: list[dict] | None = None, lease: LeaseTerms = LeaseTerms(),
                log: Callable[[str], None] = print, retention: Retention = Retention()) -> dict:
    """The commit as a task of its own (after a DAG's shard tasks, whose records it is
    handed): under a lease on the plan."""
    with hold(set_uri, plan_id, lease):
        return commit(load_plan(set_uri, plan_id), results, log=log, retention=retention)


def _manifest(p: Plan, results: list[dict]) -> dict:
    """The manifest of plan ``p`` from its shards' records."""
    counts = {split: {"read": 0, "written": 0, "rejected": 0} for split in p.splits}
    rejects = [{"image_id": r.image_id, "source": r.source, "reason": r.reason} for r in p.index_rejects]
    for r in p.index_rejects:  # refused while indexing: read, and rejected
        split = r.image_id.split("/")[0]
        if split in counts:
            counts[split]["read"] += 1
            counts[split]["rejected"] += 1
    shards = []
    for result in results:
        c = counts[result["split"]]
        c["read"] += result["read"]
        c["written"] += result["written"]
        c["rejected"] += result["rejected"]
        rejects.extend(result["rejects"])
        for layer, info in result["files"].items():  # info names layer and view where not the original
            shards.append({"layer": layer, "split": result["split"], "shard": result["shard"], **info})
    card = p.artifact.card
    manifest = {
        "dataset": p.dataset,
        "backbone": p.backbone,
        "backbone_version": p.backbone_version,
        "plan_id": p.plan_id,
        "layers": p.layer_dims,
        "views": list(p.views),
        "splits": list(p.splits),
        "classes": list(p.classes),
        "rows": sum(c["written"] for c in counts.values()),
        "counts": counts,
        "changes": p.changes,
        "shards": shards,
        "rejects": rejects,
        "lineage": {
            "onnx_sha256": card["onnx_sha256"],
            "runtime": p.runtime.to_json(),  # device, provider, precision, batch, fixed shapes
            "onnx_file_sha256": (card["onnx_sha256"] if p.runtime.precision == "fp32"
                                 else card["variants"][p.runtime.precision]["sha256"]),
            "model_uri": p.artifact.uri,
            "weights": card["weights"],
            "parent": card.get("parent"),
            "sources": [{"uri": s.uri, "format": s.format, "checksum": s.checksum, "images": s.images} for s in p.sources],
            "limit": p.limit,
            "base": p.base,  # the version whose unchanged images were reused
            "preprocessing": {
                **card["preprocessing"],
                "decode": "Pillow to RGB (alpha over white, 16-bit scaled); images larger than the input size "
                "resized on CPU with Pillow's antialiased bilinear to input_size x input_size",
                "feature_dtype": "float16",
            },
            "code": code_version(),
        },
    }
    return manifest


def verify(set_uri: str, repair: bool = False, device: str | None = None, log: Callable[[str], None] = print) -> dict:
    """Check every shard of a committed set against the manifest's checksums; with
    ``repair``, re-extract only the shards with a damaged file, on the set's own runtime
    (a ``device`` other than the set's is refused: a set never mixes them), and commit
    again."""
    from tlfs.features.manifest import damaged_shards, read_manifest

    started = time.perf_counter()
    manifest = read_manifest(set_uri)
    bad = damaged_shards(set_uri, manifest)
    report = {
        "set_uri": set_uri,
        "shard_files": len(manifest["shards"]),
        "bad": [{"path": b["path"], "shard": b["shard"], "reason": b["reason"]} for b in bad],
        "seconds": round(time.perf_counter() - started, 2),
        "repaired": [],
    }
    if bad and repair:
        numbers = sorted({b["shard"] for b in bad})
        with hold(set_uri, manifest["plan_id"]) as held:
            p = load_plan(set_uri, manifest["plan_id"])
            if device and device != p.runtime.device:
                raise PipelineError(f"{set_uri} was extracted on {p.runtime.device} ({p.runtime.precision}); repairing it "
                                    f"on {device} would mix devices in one set: repair with --device {p.runtime.device}, "
                                    "or extract it anew on the other device")
            fs, _ = fs_path(set_uri)
            for damaged in bad:  # its new file takes the same name
                found = versions.locate(set_uri, damaged["path"])
                if found is not None:
                    fs.rm(fs_path(found)[1])
            for number in numbers:
                _, path = fs_path(_result_uri(p, number))
                if fs.exists(path):
                    fs.rm(path)  # forget the record, so the shard is extracted again
                log(f"re-extracting shard {number}")
                run_shards(p, [number], derive=False)  # from its images, not from a possibly damaged base file
                held.check()
            commit(p, log=log)
        report["repaired"] = numbers
        report["bad_after_repair"] = len(damaged_shards(set_uri, read_manifest(set_uri)))
    return report


def vacuum(set_uri: str, retention: Retention) -> dict:
    """``tlfs vacuum``: under the commit lock, drop the versions ``retention`` does not
    keep and delete the files only they used (never a file of a kept version, nor of a
    version a live run builds on)."""
    from tlfs.features.manifest import read_manifest, vacuum as vacuum_set

    with commit_lock(set_uri):
        return vacuum_set(set_uri, read_manifest(set_uri), retention)


def run(
    dataset: str,
    sources: list[str],
    backbone: str,
    store: str,
    model_store: str,
    layers: list[str] | None = None,
    splits: list[str] | None = None,
    limit: int | None = None,
    device: str = "cpu",
    batch_size: int | None = None,
    shard_size: int = 2500,
    threads: int | None = None,
    precision: str | None = None,
    weights: str | None = None,
    random_weights: bool = False,
    cache_dir: str | None = None,
    show_progress: bool = True,
    log: Callable[[str], None] = print,
    lease: LeaseTerms = LeaseTerms(),
    session: TapSession | None = None,
    decode_workers: int = 0,
    decoder: Decoder | None = None,
    views: list[str] | None = None,
    incremental: bool = True,
    retention: Retention = Retention(),
) -> dict:
    """Plan, extract every shard, commit; returns a summary with timings. The run holds a
    lease on its plan throughout (see features/leases.py). ``session``: an open one of
    the same runtime (a benchmark's, warmed), instead of opening one. ``decode_workers``:
    processes decoding images (0: one per core on a GPU, a quarter of them on the CPU; 1:
    none, on the reading thread); or
    ``decoder``, a started one (a benchmark's). ``views``: besides the original, e.g.
    ``["flip"]`` (pipeline/views.py). ``incremental``: reuse the newest version's
    unchanged images (pipeline/incremental.py); False extracts every image again.
    ``retention``: which older versions the commit keeps readable."""
    started = time.perf_counter()
    runtime = resolve_runtime(device, precision, batch_size)
    if runtime.device == "cuda":
        require_cuda()  # before any work
    request = ExtractionRequest(dataset, tuple(sources), backbone, store, model_store, _tuple(layers), _tuple(splits), limit,
                                shard_size, runtime, weights, random_weights, cache_dir, check_views(views), incremental)
    p = plan(request, log)
    with hold(p.set_uri, p.plan_id, LeaseTerms(lease.ttl), plan_must_exist=False) as held:
        save_plan(p, held)
        with contextlib.nullcontext(decoder) if decoder else Decoder(decode_workers, runtime.device) as own_or_given:
            return _run_plan(p, held, threads, show_progress, started, log, session, own_or_given, retention)


def _tuple(values: list[str] | None) -> tuple[str, ...] | None:
    return tuple(values) if values else None


def _run_plan(p: Plan, held: Lease, threads: int | None, show_progress: bool, started: float,
              log: Callable[[str], None], session: TapSession | None, decoder: Decoder,
              retention: Retention = Retention()) -> dict:
    if session is not None and session.runtime.identity() != p.runtime.identity():
        raise PipelineError(f"the session runs {session.runtime.identity()}, the plan {p.runtime.identity()}")
    planned = time.perf_counter()  # the session opens when a shard needs it (none may: all reused)
    total = p.images
    from tqdm import tqdm

    bytes_written = 0
    write_seconds = 0.0
    infer_seconds = 0.0
    skipped = 0
    with tqdm(total=total, unit="img", desc=f"extract {p.dataset}", disable=not show_progress, mininterval=1.0) as bar:
        results = run_shards(p, [shard.number for shard in p.shards], session, threads, progress=bar.update,
                             check=held.check, decoder=decoder)
    for result in results:
        skipped += bool(result.get("skipped")) and not result.get("reused")
        bytes_written += sum(f["bytes"] for f in result["files"].values())
        write_seconds += result.get("write_seconds", 0.0)
        infer_seconds += result.get("infer_seconds", 0.0)
    extracted = time.perf_counter()
    held.check()
    manifest = commit(p, results, log=log, retention=retention)
    finished = time.perf_counter()
    extract_seconds = extracted - planned
    computed = p.changes.get("extracted", total)
    return {
        "set_uri": p.set_uri,
        "backbone_version": p.backbone_version,
        "plan_id": p.plan_id,
        "version": manifest["version"],
        "unchanged": bool(manifest.get("unchanged")),
        "changes": p.changes,  # images added / changed / removed / reused against the base version
        "views": list(p.views),
        "rows": manifest["rows"],
        "counts": manifest["counts"],
        "rejected": len(manifest["rejects"]),
        "shards": len(p.shards),
        "shards_skipped": skipped,
        "shards_reused": sum(o["kind"] == REUSE for o in p.origins.values()),
        "shards_derived": sum(o["kind"] == DERIVE for o in p.origins.values()),
        "images_extracted": computed,
        "plan_seconds": round(planned - started, 2),
        "extract_seconds": round(extract_seconds, 2),
        "commit_seconds": round(finished - extracted, 2),
        "images_per_second": round(computed / extract_seconds, 1) if extract_seconds > 0 and computed else None,
        "parquet_bytes": bytes_written,
        "parquet_mb_per_second": round(bytes_written / 1e6 / extract_seconds, 2) if extract_seconds > 0 else None,
        "parquet_write_seconds": round(write_seconds, 2),
        "parquet_write_mb_per_second": round(bytes_written / 1e6 / write_seconds, 1) if write_seconds > 0 else None,
        "infer_seconds": round(infer_seconds, 2),
        "decode_workers": decoder.workers,
        "read_seconds": round(decoder.stats.read_seconds, 2),  # waiting on the sources
        "decode_seconds": round(decoder.stats.decode_seconds, 2),  # CPU seconds, summed over the workers
    }
