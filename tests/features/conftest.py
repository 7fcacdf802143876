"""moto's S3 server as a separate process on loopback: a real HTTP endpoint."""

import socket
import subprocess
import sys
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


