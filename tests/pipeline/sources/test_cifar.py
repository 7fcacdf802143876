"""The CIFAR-10 python tarball as a source: its batches are verified and unpickled once
per run, however many shards the run has, and every image comes back as it is stored."""

import numpy as np

from tlfs.pipeline.sources import cifar
from tests.pipeline.test_indexing import cifar_tarball
from tests.extraction import run_extract


def test_a_run_reads_the_tarball_once_whatever_its_shards(tmp_path, lite0, models_root, monkeypatch):
    path, md5 = cifar_tarball(tmp_path / "cifar-10-python.tar.gz", per_batch=20)  # 40 train, 20 test images
    reads = []
    real = cifar._cifar_batches
    monkeypatch.setattr(cifar, "_cifar_batches", lambda uri, cache_dir: (reads.append(uri), real(uri, cache_dir))[1])
    summary = run_extract("cifar10", [f"{path}#md5={md5}"], "efficientnet_lite0", str(tmp_path / "store"), models_root,
                          layers=["head"], shard_size=5, decode_workers=1, show_progress=False, log=lambda *_: None)
    assert summary["shards"] == 12 and summary["rows"] == 60
    assert len(reads) == 2  # once to index it, once to read its images: not once per shard


def test_payloads_are_the_stored_pixels_in_the_order_asked(tmp_path):
    import pickle
    import tarfile

    from tlfs.pipeline.indexing import build_index, iter_payloads

    path, md5 = cifar_tarball(tmp_path / "cifar-10-python.tar.gz", per_batch=4)
    index = build_index("cifar10", [f"{path}#md5={md5}"])
    with tarfile.open(path) as archive:
        stored = {m.name.rsplit("/", 1)[1]: pickle.loads(archive.extractfile(m).read())
                  for m in archive.getmembers() if "batch" in m.name}
    wanted = list(reversed(index.entries))
    got = list(iter_payloads(index.sources, wanted))
    assert [e for e, _ in got] == wanted
    for entry, pixels in got:
        base, row = entry.member.split(":")
        expected = stored[base][b"data"][int(row)].reshape(3, 32, 32).transpose(1, 2, 0)
        assert pixels.shape == (32, 32, 3) and np.array_equal(pixels, expected)
