"""Where a run's process spends its CPU, thread by thread (Linux: ``/proc/self/task``).

A stage that one thread does whatever the cores (reading the sources, handing chunks to
the decode workers and taking them back, assembling batches) caps the whole pipeline at
that thread's rate; every such thread also takes the one GIL for its Python work. A
thread busy for most of a run's wall time is that run's bound, on any machine: this is
how ``tlfs bench --host-only`` shows it. A sampler thread reads each thread's CPU time
every ``interval`` seconds, so that a window of the run (the extraction, not the planning
before it) can be cut afterwards; a thread's CPU is known to within one interval. It
reads the machine's idle time too (``/proc/stat``): cores idle while a run has work are
time it lost waiting on itself (sessions waiting for each other, a queue gone dry).
"""

from __future__ import annotations

import os
import re
import threading
import time
from dataclasses import dataclass, field

TASKS = "/proc/self/task"
MACHINE = "/proc/stat"
_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


def role_of(thread: threading.Thread) -> str:
    """A thread's job, from its name: pool threads of one job share it (``tlfs-write_3``:
    ``tlfs-write``); the process pool's own threads are named for what they do."""
    if thread is threading.main_thread():
        return "run"
    kind = type(thread).__name__
    if kind == "_ExecutorManagerThread":
        return "decode-results"  # takes the workers' answers back (unpickling them)
    if thread.name == "QueueFeederThread":
        return "decode-feeder"  # sends the workers their chunks (pickling them)
    return re.sub(r"_\d+$", "", thread.name)


def _cpu_seconds(native_id: int) -> float | None:
    try:
        with open(f"{TASKS}/{native_id}/stat") as stat:
            fields = stat.read().rsplit(")", 1)[1].split()
    except (FileNotFoundError, ProcessLookupError, IndexError):
        return None
    return (int(fields[11]) + int(fields[12])) / _TICK  # utime + stime


def _machine_ticks() -> tuple[int, int] | None:
    """The machine's idle (idle and iowait) and total CPU ticks so far, all cores; None without ``/proc/stat``."""
    try:
        with open(MACHINE) as stat:
            ticks = [int(n) for n in stat.readline().split()[1:]]
    except (OSError, ValueError):
        return None
    return ticks[3] + ticks[4], sum(ticks[:8])  # user nice system idle iowait irq softirq steal (guests are in user)


@dataclass
class ThreadCPU:
    """``with ThreadCPU() as cpu: ...`` then :meth:`between` two ``time.perf_counter()``
    moments: each role's CPU seconds in that window. Empty where the system has no
    per-thread accounting (``available``)."""

    interval: float = 0.05
    samples: list[tuple[float, dict[int, tuple[str, float]]]] = field(default_factory=list)
    machine: list[tuple[float, tuple[int, int] | None]] = field(default_factory=list)  # (when, _machine_ticks())
    _stop: threading.Event = field(default_factory=threading.Event)
    _sampler: threading.Thread | None = None

    @property
    def available(self) -> bool:
        return os.path.isdir(TASKS)

    def __enter__(self) -> "ThreadCPU":
        if self.available:
            self._sample()
            self._sampler = threading.Thread(target=self._run, daemon=True, name="tlfs-thread-cpu")
            self._sampler.start()
        return self

    def __exit__(self, *exc) -> None:
        if self._sampler is not None:
            self._stop.set()
            self._sampler.join()
            self._sample()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self._sample()

    def _sample(self) -> None:
        now = time.perf_counter()
        seen = {}
        for thread in threading.enumerate():
            if thread.native_id is None or thread is self._sampler:
                continue
            seconds = _cpu_seconds(thread.native_id)
            if seconds is not None:
                seen[thread.native_id] = (role_of(thread), seconds)
        self.samples.append((now, seen))
        self.machine.append((now, _machine_ticks()))

    def _spent(self, start: float, end: float) -> tuple[float, dict[int, tuple[str, float]]]:
        """The wall seconds from the last sample at or before ``start`` to the first at or
        after ``end``, and each thread's role and CPU seconds in them (a thread born in
        between counts from 0; one that ended before ``end``: to its last sample)."""
        if not self.samples:
            return 0.0, {}
        first, before = next(((t, seen) for t, seen in reversed(self.samples) if t <= start), self.samples[0])
        last, latest = first, {}
        for t, seen in self.samples:
            if t < first:
                continue
            last = t
            latest.update(seen)
            if t >= end:
                break
        spent = {tid: (role, seconds - before.get(tid, (role, 0.0))[1]) for tid, (role, seconds) in latest.items()}
        return last - first, spent

    def between(self, start: float, end: float) -> dict[str, float]:
        """Each role's CPU seconds from ``start`` to ``end`` (to within a sample either side)."""
        roles: dict[str, float] = {}
        for role, seconds in self._spent(start, end)[1].values():
            if seconds > 0:
                roles[role] = roles.get(role, 0.0) + seconds
        return roles

    def busiest(self, start: float, end: float) -> tuple[str, float] | None:
        """The single thread busiest from ``start`` to ``end``, and its CPU over the wall
        time sampled (1.0: it never waited; that thread is the bound)."""
        span, spent = self._spent(start, end)
        if not spent or span <= 0:
            return None
        role, seconds = max(spent.values(), key=lambda role_seconds: role_seconds[1])
        return role, seconds / span

    def cores_idle(self, start: float, end: float) -> float | None:
        """The share of the machine's CPU time idle from ``start`` to ``end`` (to within a
        sample either side), all cores; None where the system does not say. A window past
        the samples (a run's timings rounded, its end a moment after the last sample) takes
        the nearest one."""
        if not self.machine:
            return None
        first = next((ticks for t, ticks in reversed(self.machine) if t <= start), self.machine[0][1])
        last = next((ticks for t, ticks in self.machine if t >= end), self.machine[-1][1])
        if first is None or last is None or last[1] <= first[1]:
            return None
        return (last[0] - first[0]) / (last[1] - first[1])
