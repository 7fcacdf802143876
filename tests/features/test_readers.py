"""What analysts reach for, on the layout the README documents: a layer folder
(``{set}/layer={layer}``, with ``split=`` partitions) read by pandas, pyarrow datasets,
DuckDB and Polars; and the exact files of one commit (``open_set(...).files``) for a read
that no run in progress can disturb."""

import duckdb
import numpy as np
import pandas as pd
import polars as pl
import pyarrow.dataset as ds
import pytest

from tlfs import features
from tlfs.features import layout
from tlfs.features.codecs import CODECS
from tlfs.features.manifest import commit
from tlfs.features.schema import shard_table
from tlfs.features.writer import write_shard
from tests.features.test_store import make_set


@pytest.fixture(params=CODECS)
def committed(tmp_path, request):
    """A committed set in each codec (features/codecs.py): every reader reads each."""
    store, root, manifest, matrix = make_set(tmp_path, codec=request.param)
    commit(root, manifest)
    return store, root, matrix


def as_sorted(ids, rows):
    order = np.argsort(np.asarray(ids, dtype=object).astype(str))
    return [str(i) for i in np.asarray(ids)[order]], np.asarray(rows, dtype=np.float32)[order]


READERS = {
    "pandas": lambda folder: pd.read_parquet(folder),
    "pyarrow": lambda folder: ds.dataset(folder, format="parquet", partitioning="hive").to_table().to_pandas(),
    "duckdb": lambda folder: duckdb.sql(f"select * from read_parquet('{folder}/*/*.parquet', hive_partitioning = true)").df(),
    "polars": lambda folder: pl.read_parquet(f"{folder}/**/*.parquet", hive_partitioning=True).to_pandas(),
}


@pytest.mark.parametrize("reader", READERS)
def test_each_reader_gets_the_committed_rows_of_a_layer_folder_with_their_split(committed, reader):
    store, root, matrix = committed
    frame = READERS[reader](layout.partition_uri(root, "l1", "train").rsplit("/", 1)[0])
    assert len(frame) == 4 and set(frame["split"]) == {"train"}
    ids, rows = as_sorted(frame["image_id"], [np.asarray(v, np.float32) for v in frame["features"]])
    expected_ids, expected = as_sorted([f"train/a/{i}.png" for i in range(4)], matrix)
    assert ids == expected_ids
    np.testing.assert_array_equal(rows, expected.astype(np.float16).astype(np.float32))


@pytest.mark.parametrize("reader", ["pandas", "duckdb", "polars"])
def test_the_files_of_one_commit_ignore_a_run_in_progress(tmp_path, reader):
    store, root, manifest, matrix = make_set(tmp_path)
    commit(root, manifest)
    # a run in progress has written a shard of its own plan into the same folder
    write_shard(layout.shard_uri(root, "l1", "train", "r" * 16, 0),
                shard_table(["train/a/new.png"], np.zeros(1), ["a"], np.ones((1, 3), np.float32)))
    assert len(READERS[reader](f"{root}/layer=l1")) == 5  # the folder shows it
    files = features.open_set("ds", "bb", store=store).files("l1", "train")
    read = {"pandas": lambda: pd.read_parquet(files),
            "duckdb": lambda: duckdb.sql(f"select * from read_parquet({files!r})").df(),
            "polars": lambda: pl.read_parquet(files).to_pandas()}[reader]()
    assert sorted(read["image_id"]) == [f"train/a/{i}.png" for i in range(4)]
