"""Where things live in a feature store (any fsspec URI).

    {store}/{dataset}/{backbone_version}/            one feature set
        _manifest.json                               the commit point: the newest version
        _versions/{N:08d}.json                       every version's manifest (features/versions.py)
        _staging/{plan_id}/plan.json, shards/*.json  work in progress (ignored by readers)
        _staging/{plan_id}/records.jsonl             a committed plan's records, gathered by its commit
        _staging/{plan_id}/entries.jsonl.gz          each shard's images, a line each, a gzip member each (a task reads its own)
        _staging/{plan_id}/files/layer=.../part-...  shard files written, not yet committed
        _staging/{plan_id}/leases/*.json             who is working on that plan (features/leases.py)
        _retired/layer=.../part-...parquet           files of older versions only (until vacuumed)
        _heads/...                                   fitted heads, metrics, plots
        _pool/{view}-{layers}-{key}.parquet          features of unlabelled images label-next scored (a cache)
        layer={layer}/split={split}/part-{plan8}-{shard:05d}.parquet     the newest version, original view
        view={view}/layer={layer}/split={split}/part-...parquet         other views (e.g. flip)

The ``layer=`` (and ``view=``) folders hold exactly the newest version's files: a shard
file is written into its plan's staging, moved into place by the commit, and moved to
``_retired/`` (same relative path) when a newer version no longer uses it. So a plain
reader of a ``layer=`` folder always gets the newest version, and tlfs's readers find an
older version's file under ``_retired/``.

Views other than the original (features of the horizontally flipped image, for one)
live under their own ``view=`` folder, so that reading a ``layer=`` folder, as an
analyst or pyarrow does, gives the original view and nothing else.

Names starting with ``_`` or ``.`` are skipped by pyarrow's dataset discovery, so
``pandas.read_parquet`` on a layer folder sees only shard files. Shard names carry the
plan id, so a new plan never overwrites a file that a committed manifest refers to.
"""

from __future__ import annotations

import re

# The store a reader or a run uses when none is named: $TLFS_STORE, else this folder
STORE_ENV = "TLFS_STORE"
DEFAULT_STORE = "tlfs-data/store"

MANIFEST = "_manifest.json"
VERSIONS = "_versions"
RETIRED = "_retired"
STAGING = "_staging"
SUPERSEDED = "_superseded"  # plans' staging a commit set aside, deleted by the next planning (local stores)
LEASES = "leases"
RECORDS = "shards"  # a plan's folder of shard records
PLAN = "plan.json"
HEADS = "_heads"
POOL = "_pool"
ORIGINAL = "original"  # the view every set has: the image as it is

PLAN_ID_DIGITS = 16  # hex digits of a plan id (a digest of what the plan makes)
FILE_PLAN_DIGITS = 8  # of them in a shard file's name: enough to tell plans of one set apart


def plan_prefix(plan_id: str) -> str:
    """The part of a plan id that a shard file's name carries."""
    return plan_id[:FILE_PLAN_DIGITS]


_SHARD_FILE = re.compile(r"^\.?part-([0-9a-f]{8})-\d+\.parquet")
_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")


def check_name(kind: str, value: str) -> str:
    if not _NAME.match(value or ""):
        from tlfs.features.errors import StoreError

        raise StoreError(f"invalid {kind} name {value!r}: use ASCII letters, digits, '_', '-' and '.', beginning with a letter or a digit")
    return value


def set_uri(store: str, dataset: str, version: str) -> str:
    return f"{store.rstrip('/')}/{check_name('dataset', dataset)}/{check_name('backbone version', version)}"


def manifest_uri(set_root: str) -> str:
    return f"{set_root}/{MANIFEST}"


def staging_uri(set_root: str, plan_id: str) -> str:
    return f"{set_root}/{STAGING}/{plan_id}"


def plan_uri(set_root: str, plan_id: str) -> str:
    return f"{staging_uri(set_root, plan_id)}/{PLAN}"


def entries_uri(set_root: str, plan_id: str) -> str:
    """Every shard's entries, one JSON line per shard, each line a gzip member of its
    own (``zcat`` reads the whole file); the plan says where each member is."""
    return f"{staging_uri(set_root, plan_id)}/entries.jsonl.gz"


def plain_entries_uri(set_root: str, plan_id: str) -> str:
    """Every shard's entries as plans saved them before :func:`entries_uri` (uncompressed)."""
    return f"{staging_uri(set_root, plan_id)}/entries.jsonl"


def shard_entries_uri(set_root: str, plan_id: str, shard: int) -> str:
    """A shard's entries as plans saved them before ``entries.jsonl`` (a file per shard)."""
    return f"{staging_uri(set_root, plan_id)}/entries/{shard:05d}.json"


def record_uri(set_root: str, plan_id: str, shard: int) -> str:
    """A shard's result record: its files, counts and rejects, once it is done."""
    return f"{staging_uri(set_root, plan_id)}/{RECORDS}/{shard:05d}.json"


def records_uri(set_root: str, plan_id: str) -> str:
    """A committed plan's records in one file, a JSON line each (its commit gathers them)."""
    return f"{staging_uri(set_root, plan_id)}/records.jsonl"


def leases_uri(set_root: str, plan_id: str) -> str:
    return f"{staging_uri(set_root, plan_id)}/{LEASES}"


def plan_of_shard_file(name: str) -> str | None:
    """The plan prefix (8 characters) in a shard file's name, or in the name of its
    temporary file (``.part-<plan8>-00001.parquet.<random>.tmp``)."""
    match = _SHARD_FILE.match(name)
    return match.group(1) if match else None


def heads_uri(set_root: str) -> str:
    return f"{set_root}/{HEADS}"


def pool_uri(set_root: str) -> str:
    return f"{set_root}/{POOL}"


def partition_uri(set_root: str, layer: str, split: str, view: str = ORIGINAL) -> str:
    folder = set_root if view == ORIGINAL else f"{set_root}/view={check_name('view', view)}"
    return f"{folder}/layer={layer}/split={split}"


_SHARD_PATH = re.compile(r"^(view=[^/]+/)?layer=[^/]+/split=[^/]+/part-[^/]*\.parquet$")


def is_shard_path(relative: str) -> bool:
    """Whether ``relative`` (inside a set) is where a shard file lives (what :func:`shard_globs` match)."""
    return _SHARD_PATH.match(relative) is not None


def shard_globs(set_root: str) -> list[str]:
    """Patterns that match every shard file of a set, of every view."""
    return [f"{set_root}/layer=*/split=*/part-*.parquet", f"{set_root}/view=*/layer=*/split=*/part-*.parquet"]


def version_uri(set_root: str, number: int) -> str:
    return f"{set_root}/{version_name(number)}"


def version_name(number: int) -> str:
    """A version file's path inside its set."""
    return f"{VERSIONS}/{number:08d}.json"


def version_of_name(name: str) -> int | None:
    """The version number a ``_versions/`` file name holds, or None."""
    stem, dot, suffix = name.partition(".")
    return int(stem) if dot and suffix == "json" and stem.isdigit() else None


def staged_uri(set_root: str, plan_id: str, relative: str) -> str:
    """Where a plan writes a shard file before its commit moves it to ``{set_root}/{relative}``."""
    return f"{staging_uri(set_root, plan_id)}/files/{relative}"


def retired_uri(set_root: str, relative: str) -> str:
    return f"{set_root}/{RETIRED}/{relative}"


def shard_path(layer: str, split: str, plan_id: str, shard: int, view: str = ORIGINAL) -> str:
    """A shard file's path inside its set (what manifests list)."""
    return f"{partition_uri('', layer, split, view).lstrip('/')}/{shard_name(plan_id, shard)}"


def shard_name(plan_id: str, shard: int) -> str:
    return f"part-{plan_prefix(plan_id)}-{shard:05d}.parquet"


def shard_uri(set_root: str, layer: str, split: str, plan_id: str, shard: int, view: str = ORIGINAL) -> str:
    return f"{partition_uri(set_root, layer, split, view)}/{shard_name(plan_id, shard)}"
