"""The same images give the same features whichever format holds them: a folder, a
tar, many tars through a glob, WebDataset samples, a Parquet table, a CSV of labels."""

import numpy as np

from tests.conftest import folder_images, write_tar, write_tree
from tests.pipeline.sources.helpers import flattened, renamed, write_labels_csv, write_parquet_table, write_webdataset
from tlfs import features
from tests.extraction import run_extract

LAYERS = ["block2", "head"]


def test_features_are_identical_across_source_formats(tmp_path, lite0, models_root):
    files = folder_images(per_class=4)
    names = sorted(files)
    (tmp_path / "shards").mkdir()
    for part in range(4):
        write_tar(tmp_path / "shards" / f"part-{part:02d}.tar", {n: files[n] for n in names[part::4]}, "w")
    (tmp_path / "wds").mkdir()
    for split in ("train", "test"):
        write_webdataset(tmp_path / "wds" / f"{split}.tar", {n: files[n] for n in names if n.startswith(split)},
                         split_folder=False)
    sources = {
        "folder": ([str(write_tree(tmp_path / "tree", files))], lambda i: i),
        "tar": ([str(write_tar(tmp_path / "all.tar.gz", files))], lambda i: i),
        "sharded": ([str(tmp_path / "shards" / "part-*.tar")], lambda i: i),
        "webdataset": ([str(tmp_path / "wds" / "{train,test}.tar")], renamed),
        "parquet": ([str(write_parquet_table(tmp_path / "t.parquet", files, ["blue", "green", "red"]))], renamed),
        "csv": ([str(write_labels_csv(tmp_path / "csv", files))], flattened),
    }
    got = {}
    for name, (uris, _) in sources.items():
        store = str(tmp_path / f"store-{name}")
        summary = run_extract("colors", uris, "efficientnet_lite0", store, models_root, layers=LAYERS, shard_size=5,
                              batch_size=4, show_progress=False, log=lambda *_: None)
        assert summary["rows"] == len(files) and summary["rejected"] == 0, name
        got[name] = {(layer, split): features.load_matrix("colors", summary["backbone_version"], layer, split, store)
                     for layer in LAYERS for split in ("train", "test")}
    for name, (_, rename) in sources.items():
        for key, (X, y, ids) in got["folder"].items():
            Xo, yo, ido = got[name][key]
            position = {image_id: k for k, image_id in enumerate(ido)}
            order = [position[rename(i)] for i in ids]  # the same image, by its id in that format
            assert list(yo[order]) == list(y), (name, key)
            np.testing.assert_array_equal(Xo[order], X, err_msg=f"{name} {key}")
