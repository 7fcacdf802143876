"""The feature store and the model artifacts on s3://, against moto's S3 server
started as a separate process on loopback (a real HTTP endpoint, not a mock)."""

import socket
import subprocess
import sys
import time
from pathlib import Path

import pandas as pd
import pytest

import features
from pipeline import extract
from tests.conftest import folder_images, write_tar


@pytest.fixture
def s3_server(monkeypatch):
    pytest.importorskip("s3fs")
    server = Path(sys.executable).with_name("moto_server")
    if not server.exists():
        pytest.skip("moto[server] is not installed")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen([str(server), "-H", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    endpoint = f"http://127.0.0.1:{port}"
    for key, value in {"AWS_ACCESS_KEY_ID": "test", "AWS_SECRET_ACCESS_KEY": "test", "AWS_DEFAULT_REGION": "us-east-1",
                       "AWS_ENDPOINT_URL": endpoint}.items():
        monkeypatch.setenv(key, value)
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            break
        except OSError:
            time.sleep(0.2)
    import fsspec

    fsspec.filesystem("s3", skip_instance_cache=True).mkdir("tlfs-test")
    fsspec.config.conf.clear()
    yield endpoint
    proc.terminate()
    proc.wait(timeout=10)


def test_extract_commit_list_and_load_on_s3(s3_server, tmp_path, monkeypatch):
    import fsspec

    source = write_tar(tmp_path / "colors.tar.gz", folder_images(per_class=3))
    fs = fsspec.filesystem("s3", skip_instance_cache=True)
    fs.put_file(str(source), "tlfs-test/datasets/colors.tar.gz")
    store, models = "s3://tlfs-test/store", "s3://tlfs-test/models"
    summary = extract.run("colors", ["s3://tlfs-test/datasets/colors.tar.gz"], "efficientnet_lite0", store, models,
                          layers=["block15", "head"], shard_size=4, cache_dir=str(tmp_path / "cache"),
                          show_progress=False, log=lambda *_: None)
    assert summary["set_uri"].startswith("s3://tlfs-test/store/colors/")
    assert summary["counts"]["train"] == {"read": 9, "written": 9, "rejected": 0}

    listed = features.list_sets(store)
    assert listed.loc[0, "dataset"] == "colors" and listed.loc[0, "rows"] == 18
    frame = features.load("colors", "efficientnet_lite0", "head", "train", store)
    assert len(frame) == 9 and frame["features"].iloc[0].shape == (1280,)
    X, y, ids = features.load_matrix("colors", "efficientnet_lite0", "block15", "test", store)
    assert X.shape == (9, 320)
    plain = pd.read_parquet(f"{summary['set_uri']}/layer=head")  # pandas + s3fs, no tlfs code
    assert len(plain) == 18
    keys = fs.find("tlfs-test/models")
    assert any(k.endswith("model.onnx") for k in keys) and any(k.endswith("model_card.json") for k in keys)
    assert not [k for k in fs.find("tlfs-test/store") if k.endswith(".tmp")]
