"""Features of images outside a set (a pool waiting to be labelled), kept beside the set so
that scoring the pool again, with the head refitted after a round of labelling, runs only the
images added or changed since through the backbone.

    {set}/_pool/{view}-{layers}-{key}.parquet    image, fingerprint, kept_at, features (fixed_size_list<float16>)

One file per view and list of layers; ``key`` is a digest of what else makes the features (the
decoding rule and the precision), so a set recomputed another way never meets its old pool. An
image is found again by its URI and its fingerprint (what its filesystem lists of it: an
object's ETag, a local file's size and mtime, as incremental extraction compares images), so an
image edited or replaced is run again. An image a round does not list stays kept for
``STALE_DAYS`` after it was run (a look at one image leaves the pool's features be), then goes
with the next round that writes: a pool labelled and moved away is not kept forever. It is a cache: a file lost, unreadable or written by two rounds at once
costs a rerun of some images, never a wrong feature (they are the float16 values the set stores)."""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from tlfs.features import layout
from tlfs.features.schema import FEATURE_DTYPE, features_matrix, read_parquet
from tlfs.features.storage import atomic_write_bytes, digest_of, read_bytes

KEY_DIGITS = 16
STALE_DAYS = 30  # an image no round has listed, kept that long after it was run


@dataclass(frozen=True)
class PoolFeatures:
    """The cached features of one view and list of layers: ``rows[(image, fingerprint)]`` is a
    row of ``matrix`` (float16, as stored)."""

    uri: str
    rows: dict[tuple[str, str], int]
    matrix: np.ndarray
    kept_at: np.ndarray  # each row's time of being run (seconds since the epoch)

    def holds(self, keys: list[tuple[str, str]]) -> np.ndarray:
        """A mask over ``(image, fingerprint)`` keys: those cached."""
        return np.array([key in self.rows for key in keys], dtype=bool)

    def features(self, keys: list[tuple[str, str]]) -> np.ndarray:
        """The cached features of ``keys`` (each one :meth:`holds`), in order, as float32."""
        return self.matrix[[self.rows[key] for key in keys]].astype(np.float32)


def pool_uri(set_uri: str, view: str, layers: list[str], decode_rule: str, precision: str,
             graph: str | None = None) -> str:
    """Where the pool's features of ``view`` and ``layers`` are kept; ``graph``: the sha256 of
    an int8 set's graph (each model store quantizes its own), else None."""
    key = digest_of({"decode": decode_rule, "precision": precision, **({"graph": graph} if graph else {})}, KEY_DIGITS)
    return f"{layout.pool_uri(set_uri)}/{view}-{'+'.join(layers)}-{key}.parquet"


def read_pool(uri: str, width: int) -> tuple[PoolFeatures, str | None]:
    """``(the cached features at uri, why none could be read)``: an empty cache where there is no
    file yet (no reason), or where it cannot be read or holds other widths (the reason)."""
    empty = PoolFeatures(uri, {}, np.zeros((0, width), FEATURE_DTYPE), np.zeros(0, np.int64))
    try:
        data = read_bytes(uri)
    except FileNotFoundError:
        return empty, None
    except OSError as exc:
        return empty, f"{type(exc).__name__}: {exc}"
    try:
        table = read_parquet(pa.BufferReader(data))
        matrix = features_matrix(table["features"], FEATURE_DTYPE)
        if matrix.shape[1] != width:
            return empty, f"it holds {matrix.shape[1]} values an image, not {width}"
        keys = zip(table["image"].to_pylist(), table["fingerprint"].to_pylist())
        kept_at = table["kept_at"].to_numpy().astype(np.int64)
        return PoolFeatures(uri, {key: row for row, key in enumerate(keys)}, matrix, kept_at), None
    except (pa.ArrowException, KeyError) as exc:
        return empty, f"{type(exc).__name__}: {exc}"


def write_pool(cached: PoolFeatures, images: list[str], fingerprints: list[str], features: np.ndarray,
               listed: set[str] | None = None, now: float | None = None) -> int:
    """Writes ``cached`` with these images' rows added (an image cached before under another
    fingerprint replaced), atomically; returns the rows written. With ``listed`` (the round's
    whole pool), the rows of images it does not list that were run over ``STALE_DAYS`` ago go."""
    now = int(time.time() if now is None else now)
    features = np.asarray(features, FEATURE_DTYPE)
    added = set(images)
    stale_before = now - STALE_DAYS * 86400
    kept = sorted((row, key) for key, row in cached.rows.items() if key[0] not in added
                  and (listed is None or key[0] in listed or cached.kept_at[row] >= stale_before))
    rows = [row for row, _ in kept]
    table = pa.table({
        "image": pa.array([image for _, (image, _) in kept] + list(images), pa.string()),
        "fingerprint": pa.array([fingerprint for _, (_, fingerprint) in kept] + list(fingerprints), pa.string()),
        "kept_at": pa.array(np.concatenate([cached.kept_at[rows], np.full(len(images), now, np.int64)]), pa.int64()),
        "features": pa.FixedSizeListArray.from_arrays(
            pa.array(np.concatenate([cached.matrix[rows], features]).reshape(-1), pa.float16()), features.shape[1]),
    })
    sink = pa.BufferOutputStream()
    pq.write_table(table, sink, compression="lz4", use_dictionary=False, write_statistics=False)
    atomic_write_bytes(cached.uri, sink.getvalue().to_pybytes())
    return table.num_rows
