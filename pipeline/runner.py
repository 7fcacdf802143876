"""The shard runner: one plan's shards, by whoever drives it (``tlfs extract``, a DAG's
shard task, a repair), blind to who that is (it takes a ``check`` callable: the lease's).

From the first shard to compute on, one decoded stream runs through every shard still
to do (pipeline/decode_pool.py), the session runs on its own thread (pipeline/inference.py)
and the writer pool writes (pipeline/shard_writer.py): reading, decoding, batching,
inference and writing all overlap. A shard whose record and files are already there is
skipped; a shard an incremental plan reuses or derives is copied (pipeline/derivation.py).
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass, replace
from typing import Callable, Iterator

from tlfs.features import versions
from tlfs.features.leases import LeaseTerms, hold
from tlfs.models.runtime import available_cores
from tlfs.models.session import TapSession, open_session
from tlfs.pipeline.decode_pool import Decoder
from tlfs.pipeline.derivation import derive_shard
from tlfs.pipeline.errors import PipelineError
from tlfs.pipeline.inference import Inference, ShardBatches, shard_blocks
from tlfs.pipeline.plan import Plan
from tlfs.pipeline.planning import load_plan
from tlfs.pipeline.records import ShardRecord
from tlfs.pipeline.shard_writer import ShardWriter, writer_threads, writers_yield
from tlfs.pipeline.staging import shard_done

# The thread each host stage runs on (``tlfs bench --stages`` adds up the stages of one
# thread); None: a pool that scales with the cores.
STAGE_THREADS: dict[str, str | None] = {
    "read": "reading",  # sources stream in order
    "decode": None,  # decode processes
    "hand-over": "decode results",  # the process pool's result thread unpickles every image
    "batch assembly": "main",  # stacking, on the run's thread
    "output copy": "inference",  # out of the session's buffers, on the session's thread
    "gather": None,  # float16 and image order, in the writer pool
    "write": None,  # Parquet encoding, sha256, the atomic write, in the writer pool
    "record": "records",  # one thread saves each shard's record once its files are written
    "commit": "commit",  # once per run, under the set's lock
}


@dataclass(frozen=True)
class Workers:
    """What a run of shards computes with: an open ``session`` of the plan's runtime (else
    one is opened when a shard needs it, with ``threads`` intra-op threads shared out among
    ``sessions`` side by side; default: models/session.side_by_side), a started
    ``decoder`` (else one of ``decode_workers`` processes), and the writer pool's threads
    (``writers``; default: one per core, a quarter of them on the CPU, see pipeline/shard_writer.py)."""

    session: TapSession | None = None
    threads: int | None = None
    decoder: Decoder | None = None
    decode_workers: int = 0
    writers: int | None = None
    sessions: int | None = None
    writers_yield: bool | None = None

    def writer_pool(self, device: str) -> int:
        """The writer pool's threads for a run on ``device``: ``writers``, else the default."""
        return self.writers or writer_threads(available_cores(), device)

    def writers_below_decoding(self, device: str, decode_workers: int) -> bool:
        """Whether the writer threads run below decoding's priority: ``writers_yield``, else
        the default for ``device`` and ``decode_workers`` (pipeline/shard_writer.writers_yield)."""
        if self.writers_yield is not None:
            return self.writers_yield
        return writers_yield(decode_workers, available_cores(), device)


def run_shards(p: Plan, numbers: list[int], workers: Workers = Workers(), progress: Callable[[int], None] | None = None,
               check: Callable[[], None] = lambda: None, derive: bool = True,
               opened: Callable[[TapSession], None] | None = None) -> list[ShardRecord]:
    """The records of shards ``numbers`` of plan ``p``, in shard order. A shard whose
    record and files are already there is skipped (``skipped``); the others are inferred
    and written while the next ones are. ``check`` runs before each shard (a lease check:
    stop at once, saying why, if the plan was removed); the session is opened only when a
    shard needs it, and one decoder serves all the shards (``workers``). A shard an
    incremental plan derives from the base version is copied from the base's files
    (``derive``), or extracted from its images if those are damaged. ``opened`` is told of
    a session opened here (a run's summary gives the seconds it spent opening graphs)."""
    session, decoder = workers.session, workers.decoder
    records: list[ShardRecord] = []
    if derive:
        copied = set()
        # the base's shards looked up in one listing of the set, not two requests per file
        listing = versions.Listing(p.set_uri) if any(n in p.origins for n in numbers) else None
        for number in [n for n in numbers if n in p.origins]:
            done = shard_done(p, number, listing)
            if done is not None:  # reused as it is, or derived by an earlier run of the plan
                copied.add(number)
                records.append(done.with_(skipped=True))
                if progress:
                    progress(done.read)
                continue
            check()
            derived = derive_shard(p, number, listing)
            if derived is not None:  # else its base files are damaged: extracted from its images below
                copied.add(number)
                records.append(derived)
                if progress:
                    progress(derived.read)
        numbers = [n for n in numbers if n not in copied]
    with contextlib.ExitStack() as stack:
        decoder = decoder or stack.enter_context(Decoder(workers.decode_workers, p.runtime.device))
        writer = stack.enter_context(ShardWriter(p, workers.writer_pool(p.runtime.device),
                                                 workers.writers_below_decoding(p.runtime.device, decoder.workers)))
        batches: ShardBatches | None = None  # the run's batches, which may span shards; opened with the session
        written = []
        stream: Iterator | None = None  # one decoding pipeline through every shard still to compute
        streamed: set[int] = set()
        later: list[int] = []
        for i, number in enumerate(numbers):
            check()
            done = shard_done(p, number)
            if stream is None and done is None:
                # from the first shard to compute on, the readers and decoders never wait at a shard's end
                streamed = {number} | {n for n in numbers[i + 1:] if shard_done(p, n) is None}
                stream = decoder.blocks(p.sources, [p.shard_entries(n) for n in numbers if n in streamed],
                                        p.input_size, p.cache_dir, p.bit_depth)
            if done is not None:
                if number in streamed:  # finished meanwhile by another run of the plan: its images pass by
                    for _ in shard_blocks(stream, len(p.shard_entries(number))):
                        pass
                if progress:
                    progress(done.read)
                records.append(done.with_(skipped=True))
                continue
            if number not in streamed:  # its files vanished since the stream began: after it
                later.append(number)
                continue
            if batches is None:
                if session is None:
                    session = open_session(p.artifact, list(p.layers), p.runtime, threads=workers.threads,
                                           sessions=workers.sessions)
                    if opened:
                        opened(session)
                inference = stack.enter_context(Inference(session))
                batches = ShardBatches(p, inference, lambda out: written.append(writer.submit(out)), progress)
            batches.add(number, stream)
        if batches is not None:
            batches.finish()
        records.extend(future.result() for future in written)
    if later:
        records.extend(run_shards(p, later, replace(workers, session=session, decoder=decoder), progress, check, derive,
                                  opened if session is None else None))
    return sorted(records, key=lambda r: r.shard)


def extract_shard(p: Plan, number: int, session: TapSession | None = None, threads: int | None = None,
                  progress: Callable[[int], None] | None = None, decode_workers: int = 0) -> ShardRecord:
    """Extract shard ``number`` of plan ``p`` on the plan's runtime (device, precision)."""
    if not 0 <= number < len(p.shards):
        raise PipelineError(f"plan {p.plan_id} has shards 0..{len(p.shards) - 1}, not {number}")
    return run_shards(p, [number], Workers(session, threads, decode_workers=decode_workers), progress)[0]


def extract_shard_task(set_uri: str, plan_id: str, number: int, workers: Workers = Workers(),
                       lease: LeaseTerms = LeaseTerms()) -> dict:
    """One shard as a task of its own: under a lease on the plan; its record as JSON."""
    return extract_shards_task(set_uri, plan_id, [number], workers, lease)[0]


def extract_shards_task(set_uri: str, plan_id: str, numbers: list[int], workers: Workers = Workers(),
                        lease: LeaseTerms = LeaseTerms()) -> list[dict]:
    """A group of shards as a task of its own (a DAG's mapped task): under a lease on the
    plan, checked before each shard and at the end; their records as JSON (for the commit
    task, through Airflow's XCom)."""
    with hold(set_uri, plan_id, lease) as held:
        p = load_plan(set_uri, plan_id)
        bad = [n for n in numbers if not 0 <= n < len(p.shards)]
        if bad:
            raise PipelineError(f"plan {p.plan_id} has shards 0..{len(p.shards) - 1}, not {bad[0]}")
        records = run_shards(p, numbers, workers, check=held.check)
        held.check()
        return [r.to_json() for r in records]
