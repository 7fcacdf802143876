"""The shard runner's shape: how many threads each host stage of ``tlfs extract`` gets
(read by ``tlfs bench --stages`` to mark which stages are serial)."""

from __future__ import annotations

import os

# the thread each host stage runs on (stages on one thread add up); None: a pool that scales with the cores
STAGE_THREADS: dict[str, str | None] = {
    "read": "reading", "decode": None, "hand-over": "main", "batch assembly": "main", "output copy": "main",
    "gather": "main", "write": "writer", "record": "writer", "commit": "commit",
}


def available_cores() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


def writer_threads(cores: int) -> int:
    """Threads encoding and writing shards."""
    return 1
