"""The run's process's CPU by thread: what ``tlfs bench`` shows to find a serial bound."""

import threading
import time
from concurrent.futures import ThreadPoolExecutor

import pytest

from tlfs.pipeline.thread_cpu import ThreadCPU, role_of

pytestmark = pytest.mark.skipif(not ThreadCPU().available, reason="no per-thread CPU accounting (/proc/self/task)")


def _spin(seconds: float) -> None:
    until = time.thread_time() + seconds
    while time.thread_time() < until:
        pass


def test_a_busy_thread_is_charged_its_cpu_and_an_idle_one_nothing():
    with ThreadCPU(interval=0.02) as cpu, ThreadPoolExecutor(1, thread_name_prefix="tlfs-spin") as busy:
        idle = threading.Thread(target=time.sleep, args=(0.4,), name="tlfs-idle")
        idle.start()
        started = time.perf_counter()
        busy.submit(_spin, 0.3).result()
        ended = time.perf_counter()
        idle.join()
    roles = cpu.between(started, ended)
    assert 0.2 < roles["tlfs-spin"] < 0.5  # pool threads share their job's name, without the _0
    assert roles.get("tlfs-idle", 0.0) < 0.05
    role, busy_share = cpu.busiest(started, ended)
    assert role == "tlfs-spin" and 0.4 < busy_share <= 1.2


def test_work_before_the_window_is_not_charged_to_it():
    with ThreadCPU(interval=0.02) as cpu:
        _spin(0.3)  # the run thread, before the window (a run's planning)
        time.sleep(0.05)
        started = time.perf_counter()
        time.sleep(0.2)
        ended = time.perf_counter()
    assert cpu.between(started, ended).get("run", 0.0) < 0.1
    assert cpu.between(0.0, ended)["run"] > 0.2


def test_threads_are_named_for_their_job():
    assert role_of(threading.main_thread()) == "run"
    assert role_of(threading.Thread(name="tlfs-write_7")) == "tlfs-write"
    assert role_of(threading.Thread(name="QueueFeederThread")) == "decode-feeder"


def test_the_cores_idle_share_is_the_machines_idle_ticks_over_all_its_ticks_in_the_window(monkeypatch):
    from tlfs.pipeline import thread_cpu

    ticks = iter([(0, 0), (10, 100), (40, 200), (45, 300), (90, 400)])  # (idle, total) at each sample, all cores
    monkeypatch.setattr(thread_cpu, "_machine_ticks", lambda: next(ticks))
    cpu = ThreadCPU()
    for _ in range(5):
        cpu._sample()
    at = [t for t, _ in cpu.machine]
    # from the last sample at or before the start to the first at or after the end
    assert cpu.cores_idle(at[1], at[3]) == pytest.approx((45 - 10) / (300 - 100))
    assert cpu.cores_idle(at[1] + 1e-9, at[2]) == pytest.approx((40 - 10) / (200 - 100))
    assert cpu.cores_idle(at[0], at[4]) == pytest.approx(90 / 400)
    # a window a moment past the samples (a summary's rounded seconds) takes the nearest ones
    assert cpu.cores_idle(at[3], at[4] + 0.005) == pytest.approx((90 - 45) / (400 - 300))
    assert cpu.cores_idle(at[0] - 0.005, at[1]) == pytest.approx(10 / 100)


def test_a_real_window_has_an_idle_share_between_none_and_all():
    with ThreadCPU(interval=0.02) as cpu:
        started = time.perf_counter()
        _spin(0.1)
        ended = time.perf_counter()
    assert 0.0 <= cpu.cores_idle(started, ended) <= 1.0
