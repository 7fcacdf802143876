"""Extraction, the entry point: :func:`run` plans, extracts every shard and commits, in
one process, with a progress bar. Its steps, callable without Airflow (the DAG maps the
middle one), each in a module of its own:

1. planning (pipeline/planning.py): index the dataset, fix the shards, save the plan in
   the set's staging; against the set's newest version where it can build on it;
2. the shard runner (pipeline/runner.py): reading and decoding (pipeline/decode_pool.py),
   batched inference on its own thread (pipeline/inference.py), the writer pool
   (pipeline/shard_writer.py), copy-on-write of reused shards (pipeline/derivation.py);
3. the commit (pipeline/commit.py): the records checked against one listing of the set,
   the manifest published as the set's next version;

and looking after a set: verify and vacuum (pipeline/maintenance.py).
"""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field, replace
from typing import Callable

from tlfs.features.leases import LeaseTerms, hold
from tlfs.features.manifest import Published
from tlfs.features.versions import Retention
from tlfs.models.runtime import require_cuda
from tlfs.models.session import SessionUse, TapSession
from tlfs.pipeline.commit import commit, commit_task, describe_changes
from tlfs.pipeline.decode_pool import DecodeStats, Decoder
from tlfs.pipeline.errors import PipelineError
from tlfs.pipeline.incremental import DERIVE, REUSE
from tlfs.pipeline.maintenance import vacuum, verify
from tlfs.pipeline.plan import ExtractionRequest, Plan
from tlfs.pipeline.planning import cut_shards, load_plan, plan, plan_task, save_plan
from tlfs.pipeline.records import ShardRecord
from tlfs.pipeline.runner import Workers, extract_shard, extract_shard_task, extract_shards_task, run_shards

__all__ = ["ExtractionRequest", "RunOptions", "run", "plan", "plan_task", "save_plan", "load_plan", "cut_shards",
           "run_shards", "Workers", "extract_shard", "extract_shard_task", "extract_shards_task", "commit", "commit_task",
           "describe_changes", "verify", "vacuum"]


@dataclass(frozen=True)
class RunOptions:
    """How a run goes about it (not what it makes: that is the request)."""

    threads: int | None = None  # the session's intra-op threads
    sessions: int | None = None  # onnxruntime sessions side by side (default: models/session.side_by_side)
    decode_workers: int = 0  # 0: one per core on a GPU, a quarter of them on the CPU; 1: on the reading thread
    writers: int | None = None  # the writer pool's threads (default: one per core, a quarter of them on the CPU; at most 8)
    # the writer threads below decoding's priority (default: beside a GPU, where the decode workers leave cores free)
    writers_yield: bool | None = None
    show_progress: bool = True
    lease: LeaseTerms = field(default_factory=LeaseTerms)
    retention: Retention = field(default_factory=Retention)  # which older versions the commit keeps readable
    session: TapSession | None = None  # an open one of the same runtime (a benchmark's, warmed)
    decoder: Decoder | None = None  # a started one (a benchmark's)


def run(request: ExtractionRequest, options: RunOptions = RunOptions(), log: Callable[[str], None] = print) -> dict:
    """Plan, extract every shard, commit; returns a summary with timings. The run holds a
    lease on its plan throughout (see features/leases.py)."""
    started = time.perf_counter()
    if request.runtime.device == "cuda":
        require_cuda()  # before any work
    p = plan(request, log)
    with hold(p.set_uri, p.plan_id, LeaseTerms(options.lease.ttl), plan_must_exist=False) as held:
        save_plan(p, held)
        given = options.decoder
        with contextlib.nullcontext(given) if given else Decoder(options.decode_workers, p.runtime.device) as decoder:
            return _run_plan(p, held, options, decoder, started, log)


def _run_plan(p: Plan, held, options: RunOptions, decoder: Decoder, started: float, log: Callable[[str], None]) -> dict:
    session = options.session
    if session is not None and session.runtime.identity() != p.runtime.identity():
        raise PipelineError(f"the session runs {session.runtime.identity()}, the plan {p.runtime.identity()}")
    planned = time.perf_counter()  # the session opens when a shard needs it (none may: all reused)
    from tqdm import tqdm

    sessions = [session] if session is not None else []  # the one given, or the one the run opens
    # a given session or decoder may have served other runs: the summary gives this run's share
    used_before = SessionUse.of(session) if session is not None else SessionUse()
    decoded_before = replace(decoder.stats)
    if session is not None:
        session.busy.mark()
    with tqdm(total=p.images, unit="img", desc=f"extract {p.dataset}", disable=not options.show_progress,
              mininterval=1.0) as bar:
        workers = Workers(session, options.threads, decoder, writers=options.writers, sessions=options.sessions,
                          writers_yield=options.writers_yield)
        records = run_shards(p, [shard.number for shard in p.shards], workers, progress=bar.update, check=held.check,
                             opened=sessions.append)
    extracted = time.perf_counter()
    held.check()
    committed = commit(p, records, log=log, retention=options.retention)
    finished = time.perf_counter()
    session = sessions[0] if sessions else None
    used = SessionUse.of(session).since(used_before) if session is not None else SessionUse()
    ran = session is not None and session.busy.first_started is not None  # it ran a batch in this run
    timings = Timings(planned - started, extracted - planned, finished - extracted, used.opening, used.opening_parts,
                      used.busy, session.busy.first_started - planned if ran else None,
                      extracted - session.busy.last_ended if ran else None, decoder.stats.since(decoded_before))
    return summary(p, records, committed, decoder, workers.writer_pool(p.runtime.device), timings,
                   workers.writers_below_decoding(p.runtime.device, decoder.workers))


@dataclass(frozen=True)
class Timings:
    """A run's seconds: planning, extracting (inference and writing, overlapped), committing."""

    plan: float
    extract: float
    commit: float
    session_open: float = 0.0  # of the extraction: the session opening its graphs (on CUDA: cuDNN's search, captures)
    session_open_parts: dict[str, float] = field(default_factory=dict)  # the same by part (TapSession.opening_parts)
    session_busy: float = 0.0  # of the extraction: the session had a batch to compute (TapSession.busy)
    # where it had none: from the extraction's start to its first batch (its opening included, where it opened in
    # this run), and from its last batch's end to the extraction's end (the last shards' files); None: no batch
    session_first_batch: float | None = None
    session_after_last_batch: float | None = None
    decoding: DecodeStats = field(default_factory=DecodeStats)  # the run's reading and decoding (its decoder's share)


def summary(p: Plan, records: list[ShardRecord], committed: Published, decoder: Decoder, writers: int,
            seconds: Timings, writers_yield: bool) -> dict:
    """What a run did, with its timings (``tlfs extract``'s JSON line)."""
    plan_seconds, extract_seconds, commit_seconds = seconds.plan, seconds.extract, seconds.commit
    set_bytes = sum(f.bytes for r in records for f in r.files.values())
    # the rates are of the shards this run computed: not those reused, derived, or found done by an earlier run
    ran = [r for r in records if not (r.skipped or r.reused or r.derived)]
    bytes_written = sum(f.bytes for r in ran for f in r.files.values())
    write_seconds = sum(r.write_seconds for r in ran)
    images_computed = sum(r.read for r in ran)
    planned = p.changes.extracted if p.changes and p.changes.extracted is not None else p.images
    return {
        "set_uri": p.set_uri,
        "backbone_version": p.backbone_version,
        "plan_id": p.plan_id,
        "version": committed.version,
        "unchanged": committed.unchanged,
        "changes": p.changes.to_json() if p.changes else {},  # images added / changed / removed / reused against the base version
        "views": list(p.views),
        "rows": committed.rows,
        "counts": committed.counts,
        "rejected": committed.rejected,
        "shards": len(p.shards),
        "shards_skipped": sum(r.skipped and not r.reused for r in records),
        "shards_reused": sum(o["kind"] == REUSE for o in p.origins.values()),
        "shards_derived": sum(o["kind"] == DERIVE for o in p.origins.values()),
        "images_extracted": planned,  # the plan's: those not reused from the base version
        # of those, the ones this run read and computed (the rest: shards an earlier run of the plan finished)
        "images_computed": images_computed,
        "plan_seconds": round(plan_seconds, 2),
        "extract_seconds": round(extract_seconds, 2),
        "commit_seconds": round(commit_seconds, 2),
        "session_open_seconds": round(seconds.session_open, 2),  # in this run (a given session's earlier openings apart)
        "session_open_parts": {name: round(value, 2) for name, value in seconds.session_open_parts.items()},
        # the share of the extraction's wall time the session had a batch: below 1, it waited on the host side
        "session_busy": round(seconds.session_busy / extract_seconds, 3) if extract_seconds > 0 else None,
        "session_first_batch_seconds": _rounded(seconds.session_first_batch, 3),
        "session_after_last_batch_seconds": _rounded(seconds.session_after_last_batch, 3),
        "images_per_second": round(images_computed / extract_seconds, 1) if extract_seconds > 0 and images_computed else None,
        "parquet_bytes": set_bytes,  # the version's
        "codec": p.codec,  # of the files this run wrote (features/codecs.py)
        "parquet_mb_per_second": round(bytes_written / 1e6 / extract_seconds, 2) if extract_seconds > 0 else None,
        # the writer threads' work (not their waits for batches), summed over the files; its rate is one thread's
        "parquet_write_seconds": round(write_seconds, 2),
        "parquet_write_mb_per_second": round(bytes_written / 1e6 / write_seconds, 1) if write_seconds > 0 else None,
        "infer_seconds": round(sum(r.infer_seconds for r in ran), 2),
        "decode_workers": decoder.workers,
        "writers": writers,  # the writer pool's threads
        "writers_yield": writers_yield,  # they ran below decoding's priority (pipeline/shard_writer.writers_yield)
        # the share of the pool's time its threads wrote: near 1, the writers bound the run
        "writers_busy": round(write_seconds / (writers * extract_seconds), 3) if extract_seconds > 0 and writers else None,
        "read_seconds": round(seconds.decoding.read_seconds, 2),  # waiting on the sources
        "decode_seconds": round(seconds.decoding.decode_seconds, 2),  # CPU seconds, summed over the workers
    }


def _rounded(value: float | None, digits: int) -> float | None:
    return None if value is None else round(value, digits)
