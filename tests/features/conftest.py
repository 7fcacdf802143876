"""moto's S3 server as a separate process on loopback: a real HTTP endpoint."""

import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def listening(proc: subprocess.Popen, port: int) -> bool:
    """Whether ``proc`` itself (not whoever took the port meanwhile) listens on it."""
    import psutil

    try:
        process = psutil.Process(proc.pid)
        connections = process.net_connections("tcp") if hasattr(process, "net_connections") else process.connections("tcp")
    except psutil.NoSuchProcess:
        return False
    return any(c.status == psutil.CONN_LISTEN and c.laddr.port == port for c in connections)


def start_server(command: list[str], attempts: int = 5, timeout: float = 60) -> tuple[subprocess.Popen, int]:
    """Start a server on a free port, retrying on another port if the one chosen was
    taken between choosing it and binding it (another test, another process)."""
    for _ in range(attempts):
        port = free_port()
        proc = subprocess.Popen([*command, str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + timeout
        while proc.poll() is None and time.monotonic() < deadline:
            if listening(proc, port):
                return proc, port
            time.sleep(0.1)
        proc.kill()
        proc.wait(timeout=10)
    raise RuntimeError(f"{command[0]} did not start listening in {attempts} attempts")


@pytest.fixture
def s3_server(monkeypatch):
    pytest.importorskip("s3fs")
    server = Path(sys.executable).with_name("moto_server")
    if not server.exists():
        pytest.skip("moto[server] is not installed")
    proc, port = start_server([str(server), "-H", "127.0.0.1", "-p"])
    endpoint = f"http://127.0.0.1:{port}"
    for key, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
                       "AWS_ENDPOINT_URL": endpoint}.items():
        monkeypatch.setenv(key, value)
    import fsspec
    import s3fs

    s3fs.S3FileSystem.clear_instance_cache()  # no client of an earlier test's endpoint

    fsspec.filesystem("s3", skip_instance_cache=True).mkdir("tlfs-test")
    fsspec.config.conf.clear()
    yield endpoint
    s3fs.S3FileSystem.clear_instance_cache()
    proc.terminate()
    proc.wait(timeout=10)


class CountingClock:
    """The lock module's clock, counting each time a committer found the lock taken and
    waits to poll again: the test waits for polls, not for a span of time."""

    monotonic = staticmethod(time.monotonic)
    time = staticmethod(time.time)

    def __init__(self) -> None:
        self.polls = 0
        self._changed = threading.Condition()

    def sleep(self, seconds: float) -> None:
        with self._changed:
            self.polls += 1
            self._changed.notify_all()
        time.sleep(seconds)

    def wait_for_polls(self, count: int, unless=lambda: False, timeout: float = 120) -> bool:
        """True once ``count`` polls happened; False if ``unless()`` came true first."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self.polls < count and not unless() and time.monotonic() < deadline:
                self._changed.wait(0.05)
            return self.polls >= count


@pytest.fixture
def clock(monkeypatch) -> CountingClock:
    from tlfs.features import lock

    counting = CountingClock()
    monkeypatch.setattr(lock, "time", counting)
    return counting
