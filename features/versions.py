"""A feature set's history: every commit is a numbered version (1, 2, ...), kept in
``_versions/`` with its time, lineage and what changed, and readable until vacuumed.

Where a version's files are (features/layout.py): the newest version's in the ``layer=``
folders; a file that only older versions use under ``_retired/``; a file just written
and not yet moved into place (a commit interrupted between its manifest and its moves)
in its plan's staging. :func:`locate` looks in that order. A commit moves its files
into the ``layer=`` folders right before its manifest (so that nothing a run may clean
up holds a committed file), and the older files out right after; :func:`settle` does
both and is idempotent, so the next commit finishes an interrupted one.

:func:`vacuum` applies a :class:`Retention`: a version is kept while it is among the
newest ``versions`` or younger than ``days`` (the newest always), and a file is deleted
once no kept version lists it (and no live run reuses it). A commit decides the same
from the newest manifest's :class:`VersionIndex` alone (:func:`next_index`, then
:func:`apply_index`), reading no older version's file; ``tlfs vacuum`` reads them all.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass
from datetime import datetime, timezone
from itertools import compress
from operator import eq, itemgetter, not_
from typing import NamedTuple

from tlfs.features import layout, storage
from tlfs.features.errors import NotCommitted, StoreError
from tlfs.features.storage import atomic_write_json, fs_path, is_local, read_json



def timestamp(seconds: float | None = None) -> str:
    """An ISO time in UTC to the millisecond (versions committed in one second stay apart for ``as_of``)."""
    moment = datetime.fromtimestamp(time.time() if seconds is None else seconds, timezone.utc)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.") + f"{moment.microsecond // 1000:03d}Z"


@dataclass(frozen=True)
class Retention:
    """Which versions stay readable: the newest ``versions`` and those younger than
    ``days`` (either may be None: no limit of that kind; both None keeps everything)."""

    versions: int | None = None
    days: float | None = 7.0  # as Delta Lake's default: a week to read or roll back

    def __post_init__(self) -> None:
        if self.versions is not None and self.versions < 1:
            raise StoreError(f"a retention of {self.versions} versions would drop the newest: keep at least 1")
        if self.days is not None and self.days < 0:
            raise StoreError(f"a retention of {self.days} days is negative")

    def kept(self, versions: list[dict], now: float | None = None) -> set[int]:
        """The numbers of ``versions`` (manifests, any order) that this retention keeps."""
        numbers = sorted((number_of(v) for v in versions), reverse=True)
        if not numbers:
            return set()
        if self.versions is None and self.days is None:
            return set(numbers)
        keep = {numbers[0]}
        if self.versions is not None:
            keep.update(numbers[: self.versions])
        if self.days is not None:
            now = time.time() if now is None else now
            keep.update(number_of(v) for v in versions if now - committed_seconds(v) <= self.days * 86400)
        return keep


def number_of(manifest: dict) -> int:
    """A manifest's version number (a set committed before versions existed is version 1)."""
    return int(manifest.get("version", 1))


def committed_seconds(manifest: dict) -> float:
    return parse_time(manifest["committed_at"])


def parse_time(value) -> float:
    """Seconds since the epoch of an ISO time (naive: UTC), a ``datetime`` or a number."""
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, datetime):
        moment = value
    else:
        try:
            moment = datetime.fromisoformat(str(value).replace("Z", "+00:00"))
        except ValueError:
            raise StoreError(f"as_of={value!r} is not a time: give an ISO time such as 2026-11-27T09:30:00Z") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=timezone.utc)
    return moment.timestamp()


def history(set_root: str, newest: dict | None = None, listing: "Listing | None" = None) -> list[dict]:
    """Every version of the set up to the newest committed one, oldest first. A version
    file beyond the newest is a commit that crashed before its manifest: not a version.
    ``listing``: the set as a commit listed it (else the versions are listed here)."""
    from tlfs.features.manifest import read_manifest

    newest = newest or read_manifest(set_root)
    fs, root = fs_path(set_root)
    if listing is not None:
        paths = [relative for relative in listing.others if relative.startswith(f"{layout.VERSIONS}/")]
    else:
        fs.invalidate_cache(f"{root}/{layout.VERSIONS}")  # versions other processes committed since
        paths = fs.glob(f"{root}/{layout.VERSIONS}/*.json")
    found = {}
    for path in paths:
        number = layout.version_of_name(path.rsplit("/", 1)[-1])
        if number is not None and number < number_of(newest):
            found[number] = None
    versions = [read_json(layout.version_uri(set_root, n)) for n in sorted(found)]
    return versions + [newest]


def resolve(set_root: str, newest: dict, version: int | None = None, as_of=None) -> dict:
    """The manifest of ``version``, or of the newest version committed at or before
    ``as_of``, or the newest."""
    if version is not None and as_of is not None:
        raise StoreError("give a version or as_of, not both")
    if version is None and as_of is None:
        return newest
    versions = history(set_root, newest)
    if version is not None:
        chosen = [v for v in versions if number_of(v) == int(version)]
        if not chosen:
            raise NotCommitted(f"{set_root} has no version {version}; it has "
                               f"{', '.join(str(number_of(v)) for v in versions)}")
    else:
        moment = parse_time(as_of)
        chosen = [v for v in versions if committed_seconds(v) <= moment]
        if not chosen:
            raise NotCommitted(f"{set_root} has no version committed at or before {as_of} "
                               f"(the first was committed at {versions[0]['committed_at']})")
    found = chosen[-1]
    if found.get("vacuumed_at"):
        raise NotCommitted(f"version {number_of(found)} of {set_root} was vacuumed at {found['vacuumed_at']} "
                           "(tlfs vacuum, retention setting): its files are gone")
    return found


UNREAD = object()  # a Listing made without the set's newest manifest


@dataclass(frozen=True, eq=False)
class ManifestRead:
    """A set's ``_manifest.json`` as a process read it: its bytes and what they parse to.
    A 100,000-image set's manifest takes 0.1-0.3 ms to parse, the one part of a commit
    that grew with the set after its files stopped being read: a commit under its lock
    that finds the bytes its run's planning read (:func:`read_newest` with ``known``)
    reuses planning's parse. Not to be changed: both share ``manifest``."""

    data: bytes
    manifest: dict


def read_newest(set_root: str, known: ManifestRead | None = None) -> ManifestRead | None:
    """The set's newest manifest (None where it has none): ``known`` itself where the file
    holds exactly its bytes (one GET, no parse), else read and parsed."""
    fs, path = fs_path(layout.manifest_uri(set_root))
    try:
        data = fs.cat_file(path)  # the whole file in one GET (see storage.read_json)
    except FileNotFoundError:
        return None
    if known is not None and known.data == data:
        return known
    return ManifestRead(data, storage.json_loads(data))


class Located(NamedTuple):  # where a file of the set is: made when a file is looked up
    uri: str
    bytes: int


# A commit handles every file of the set a few times over (the newest manifest's, and the
# one it writes), so those passes are C-level maps and set operations, not Python loops.
_path, _bytes = itemgetter("path"), itemgetter("bytes")


def paths_of(shards: list[dict]) -> set[str]:
    """The paths of a manifest's ``shards``."""
    return set(map(_path, shards))


class Listing:
    """Every file of a set, from one listing of it (one paginated LIST on an object
    store), by where the set's files may be: in place, retired or staged. A commit checks
    and moves its files with it, reading none of them (their sizes and sha256 were taken
    by the writer from the bytes it wrote; ``tlfs verify`` reads every byte).

    ``newest``: the set's committed manifest as the caller read it (under the commit
    lock), or None where there is none yet (not given: :data:`UNREAD`). Locally, the
    ``layer=`` folders are not listed where ``newest`` says what they hold (it carries its
    commit's :class:`VersionIndex` and no commit stopped past its moves: see
    :func:`_accounts_for_placed`): its files are taken in place at the sizes it lists,
    each checked when its version was committed, so a commit lists what it adds, retires
    and keeps staged, not the set (``settled``: they hold exactly ``newest``'s files, so a
    commit has no earlier one to finish). Otherwise every folder is listed (a file ``newest``
    lists still taken at its listed size, without a ``stat``). Any other file's size is
    the file system's; an object store's one paginated LIST gives every size.
    """

    def __init__(self, set_root: str, newest: dict | None | object = UNREAD) -> None:
        fs, root = fs_path(set_root)
        self.set_root, self.root, self.newest = set_root, root, newest
        fs.invalidate_cache(root)  # files other processes wrote since this process last looked
        placed = None  # the files in place, where taken from ``newest`` rather than listed
        exact = False  # whether they are ``newest``'s files and no others
        if is_local(fs):
            found = _local_files(root, placed=False)
            if _accounts_for_placed(root, newest, found):
                placed, exact = _placed_of(root, newest, found)
            else:
                found.update(_local_files(root, placed=True, committed=_listed_sizes(newest)))
        else:
            found = _remote_files(fs, root)
        self.placed_from_manifest = placed is not None
        # the layer= folders hold exactly ``newest``'s files: no commit is left to settle
        self.settled = exact
        self.placed: dict[str, int] = placed or {}  # in place: relative path -> bytes (its URI made when asked for)
        self.retired: dict[str, Located] = {}
        self.staged: dict[str, Located] = {}
        self.others: dict[str, int] = {}  # everything else, relative to the set: versions, plans, records, temporary files
        self.staging_plans: set[str] = set()  # the plans with anything in staging
        staging, retired = f"{layout.STAGING}/", f"{layout.RETIRED}/"
        for path, info in sorted(found.items()):
            relative = path[len(root) + 1:]
            if relative.startswith(staging):
                self.staging_plans.add(relative.split("/")[1])
            located = Located(f"{set_root}/{relative}", int(info.get("size") or 0))
            name = relative.rsplit("/", 1)[-1]
            if name.startswith("."):
                self.others[relative] = located.bytes
            elif relative.startswith(retired):
                self.retired[relative[len(retired):]] = located
            elif relative.startswith(staging) and "/files/" in relative:
                self.staged.setdefault(relative.split("/files/", 1)[1], located)
            elif layout.is_shard_path(relative):
                self.placed[relative] = located.bytes
            else:
                self.others[relative] = located.bytes

    @classmethod
    def with_newest(cls, set_root: str, known: ManifestRead | None = None) -> "Listing":
        """The set's newest manifest read (under the caller's commit lock; not parsed again
        where it holds ``known``'s bytes: :func:`read_newest`), then the set listed with it."""
        newest = read_newest(set_root, known)
        return cls(set_root, newest.manifest if newest is not None else None)

    def locate(self, relative: str) -> Located | None:
        """Where the set's file ``relative`` is (in :func:`candidates`' order), or None."""
        size = self.placed.get(relative)
        if size is not None:
            return Located(f"{self.set_root}/{relative}", size)
        return self.retired.get(relative) or self._staged(relative) or self._unlisted(relative)

    def _unlisted(self, relative: str) -> Located | None:
        """A file in place that the layer= folders, not listed, may hold unknown to the
        newest manifest (a writer that wrote there itself): sized on disk, then known."""
        if not self.placed_from_manifest or not layout.is_shard_path(relative):
            return None
        try:
            size = os.stat(f"{self.root}/{relative}").st_size
        except (FileNotFoundError, NotADirectoryError):
            return None
        self.placed[relative] = size
        self.settled = False  # a file in place that ``newest`` does not list
        return Located(f"{self.set_root}/{relative}", size)

    def _staged(self, relative: str) -> Located | None:
        found = self.staged.get(relative)
        plan8 = layout.plan_of_shard_file(relative.rsplit("/", 1)[-1])
        if found is None or plan8 is None or f"/{layout.STAGING}/{plan8}" not in found.uri:
            return None
        return found

    def missing(self, files: list[dict]) -> list[dict]:
        """Each of ``files`` (``path``, ``bytes``) that is not there with its size, with the reason.
        Those in place at their size (mostly: the set's files a run reuses) are found by
        C-level maps; only the others (new, moved or wrong) are looked up one by one."""
        in_place = map(eq, map(self.placed.get, map(_path, files)), map(_bytes, files))
        bad = []
        for info in compress(files, map(not_, in_place)):
            found = self.locate(info["path"])
            if found is None:
                bad.append({**info, "reason": "missing"})
            elif found.bytes != info["bytes"]:
                bad.append({**info, "reason": f"size {found.bytes} != {info['bytes']}"})
        return bad


def _remote_files(fs, root: str) -> dict[str, dict]:
    try:
        return fs.find(root, detail=True)  # one paginated LIST of the prefix
    except FileNotFoundError:
        return {}


def _local_files(root: str, placed: bool, committed: dict[str, int] | None = None) -> dict[str, dict]:
    """Every file under ``root`` with its size, by ``os.scandir`` (fsspec's local find
    costs several times more per file): with ``placed``, only those in the top-level
    ``layer=`` and ``view=`` folders, else every other one. ``committed``: path relative
    to ``root`` -> size of the files a committed manifest lists, taken at that size."""
    committed = committed or {}
    found, folders = {}, []
    try:
        top = list(os.scandir(root))
    except (FileNotFoundError, NotADirectoryError):
        return found
    for entry in top:
        if entry.name == layout.SUPERSEDED:  # set aside by a commit: no longer the set's
            continue
        if entry.is_dir(follow_symlinks=False) and entry.name.startswith(PLACED_FOLDERS) == placed:
            folders.append(entry.path)
        elif not placed and not entry.is_dir(follow_symlinks=False):
            _add_file(found, entry, root, committed)
    while folders:
        folder = folders.pop()
        try:
            entries = list(os.scandir(folder))
        except (FileNotFoundError, NotADirectoryError):
            continue
        for entry in entries:
            try:
                if entry.is_dir(follow_symlinks=False):
                    folders.append(entry.path)
                else:
                    _add_file(found, entry, root, committed)
            except FileNotFoundError:  # removed meanwhile
                continue
    return found


def _add_file(found: dict, entry: os.DirEntry, root: str, committed: dict[str, int]) -> None:
    size = committed.get(entry.path[len(root) + 1:])
    try:
        found[entry.path] = {"size": entry.stat(follow_symlinks=False).st_size if size is None else size}
    except FileNotFoundError:  # removed meanwhile
        pass


PLACED_FOLDERS = ("layer=", "view=")  # the top-level folders that hold a version's files in place


def _listed_sizes(newest) -> dict[str, int]:
    return dict(zip(map(_path, newest["shards"]), map(_bytes, newest["shards"]))) if isinstance(newest, dict) else {}


def _accounts_for_placed(root: str, newest, found: dict[str, dict]) -> bool:
    """Whether the newest manifest says what the ``layer=`` folders hold, so that they
    need no listing: it carries the index its commit settled by (:class:`VersionIndex`),
    and no commit stopped after moving files in but before its commit point (no version
    file beyond the newest: such a commit's files would be there, unlisted)."""
    if not isinstance(newest, dict) or INDEX not in newest:
        return False
    prefix = f"{root}/{layout.VERSIONS}/"
    beyond = (layout.version_of_name(path[len(prefix):]) for path in found if path.startswith(prefix))
    return not any(number is not None and number > number_of(newest) for number in beyond)


def _placed_of(root: str, newest: dict, found: dict[str, dict]) -> tuple[dict[str, int], bool]:
    """The files in place by the newest manifest (at its sizes: each was checked by its
    commit), with those a file system call must confirm: a listed file also staged (a
    repair stages its file again under the same name, after removing the damaged one) is
    in place only where it is; a file the index retired but that is not in ``_retired/``
    (its commit stopped before moving it out, or the retention deleted it) is in place
    only where it is, at its size on disk. ``root``: the set's path on its file system.
    Also whether they are exactly the manifest's files (nothing left for a settle)."""
    staged = {path.split("/files/", 1)[1] for path in found
              if path.startswith(f"{root}/{layout.STAGING}/") and "/files/" in path}
    shards = newest["shards"]
    paths = list(map(_path, shards))
    placed = dict(zip(paths, map(_bytes, shards)))
    for relative in placed.keys() & staged:
        if not os.path.isfile(f"{root}/{relative}"):
            del placed[relative]
    exact = len(placed) == len(shards)  # no listed file is elsewhere
    retired = f"{root}/{layout.RETIRED}/"
    for relative in VersionIndex.from_json(newest[INDEX]).retired_after:
        if f"{retired}{relative}" not in found and relative not in placed:
            try:
                placed[relative] = os.stat(f"{root}/{relative}").st_size
                exact = False  # a file it does not list is still in place
            except (FileNotFoundError, NotADirectoryError):
                continue
    return placed, exact


def candidates(set_root: str, relative: str) -> list[str]:
    """Where a file of the set may be, most likely first (see the module's note)."""
    plan8 = layout.plan_of_shard_file(relative.rsplit("/", 1)[-1])
    staged = [f"{set_root}/{layout.STAGING}/{plan8}*/files/{relative}"] if plan8 else []
    return [f"{set_root}/{relative}", layout.retired_uri(set_root, relative), *staged]


def locate(set_root: str, relative: str) -> str | None:
    """The URI where the set's file ``relative`` is now, or None."""
    fs, _ = fs_path(set_root)
    for uri in candidates(set_root, relative):
        _, path = fs_path(uri)
        if "*" in path:
            found = fs.glob(path)
            if found:
                return uri.split(f"/{layout.STAGING}/", 1)[0] + found[0][found[0].index(f"/{layout.STAGING}/"):]
        elif fs.exists(path):
            return uri
    return None


def settle(set_root: str, manifest: dict, listing: Listing | None = None) -> dict:
    """Under the commit lock: move the files of ``manifest`` (the newest version) into
    the ``layer=`` folders, and every other shard file there to ``_retired/``.
    Idempotent, so a crash in between is finished by the next call."""
    listing = listing or Listing(set_root)
    return {"moved_in": move_in(set_root, manifest, listing), "retired": retire_others(set_root, manifest, listing)}


def move_in(set_root: str, manifest: dict, listing: Listing | None = None) -> int:
    """Move the files of ``manifest`` that are elsewhere (staged, retired) into the
    ``layer=`` folders; how many were moved. ``listing``: the set as listed under the
    commit lock (kept up to date with the moves)."""
    fs, root = fs_path(set_root)
    listing = listing or Listing(set_root)
    moved_in = 0
    made: set[str] = set()
    for relative in sorted(paths_of(manifest["shards"]).difference(listing.placed)):
        found = listing.locate(relative)
        if found is None or relative in listing.placed:
            continue  # found in place after all; or missing: validate() names it, a reader gets a clear error
        _, source = fs_path(found.uri)
        folder = f"{root}/{relative}".rsplit("/", 1)[0]
        if folder not in made:
            fs.makedirs(folder, exist_ok=True)
            made.add(folder)
        try:
            fs.mv(source, f"{root}/{relative}")
        except FileNotFoundError:
            if not fs.exists(f"{root}/{relative}"):  # else another commit of the same plan moved it meanwhile
                raise StoreError(f"shard file {relative} of {set_root} vanished before its commit moved it into place") from None
        came_from = listing.retired if listing.retired.get(relative) is found else listing.staged
        del came_from[relative]
        listing.placed[relative] = found.bytes
        moved_in += 1
    return moved_in


def retire_others(set_root: str, manifest: dict, listing: Listing | None = None) -> int:
    """Move every shard file in the ``layer=`` folders that ``manifest`` does not list
    to ``_retired/``; how many were moved."""
    fs, root = fs_path(set_root)
    listing = listing or Listing(set_root)
    retired = 0
    for relative in sorted(listing.placed.keys() - paths_of(manifest["shards"])):
        path = f"{root}/{relative}"
        target = f"{root}/{layout.RETIRED}/{relative}"
        if relative in listing.retired:
            fs.rm(path)  # retired before, and copied back by an interrupted move
        else:
            fs.makedirs(target.rsplit("/", 1)[0], exist_ok=True)
            fs.mv(path, target)
            listing.retired[relative] = Located(layout.retired_uri(set_root, relative), listing.placed[relative])
        del listing.placed[relative]
        retired += 1
    return retired


def record(set_root: str, manifest: dict, encoded: bytes | None = None) -> None:
    """Write ``manifest``'s version file (before the manifest itself: see manifest.publish);
    ``encoded``: its JSON (:func:`storage.json_bytes`), where the caller has it already."""
    storage.atomic_write_bytes(layout.version_uri(set_root, number_of(manifest)),
                               storage.json_bytes(manifest) if encoded is None else encoded)


INDEX = "versions_index"  # a manifest's key: its VersionIndex


@dataclass(frozen=True)
class VersionIndex:
    """What a commit needs of the set's history, carried by each manifest so that a commit
    reads no older version's file (reading them all made a commit cost the set's size
    times its number of versions): the versions the retention keeps besides the
    manifest's own (number -> commit time), the ones this commit drops (marked vacuumed
    right after its commit point, and checked again by the next commit, in case it was
    stopped in between), and each retired file's last version (the newest that lists it).
    A retired file is deleted once no kept version up to its last one is left."""

    live: dict[int, str]
    dropping: tuple[int, ...]
    retired_after: dict[str, int]

    def to_json(self) -> dict:
        return {"live": [[v, t] for v, t in sorted(self.live.items())], "dropping": list(self.dropping),
                "retired_after": dict(sorted(self.retired_after.items()))}

    @classmethod
    def from_json(cls, data: dict) -> "VersionIndex":
        return cls({int(v): t for v, t in data["live"]}, tuple(int(v) for v in data["dropping"]),
                   {p: int(v) for p, v in data["retired_after"].items()})

    def deletable(self, relative: str, newest: int) -> bool:
        """Whether the retired file ``relative`` is listed by no kept version (one listed
        by versions a kept version may fall among is kept)."""
        last = self.retired_after.get(relative)
        return last is None or not any(v <= last for v in (*self.live, newest))


def next_index(set_root: str, current: dict | None, manifest: dict, retention: Retention,
               protect: set[int], listing: Listing, now: float | None = None) -> VersionIndex:
    """The :class:`VersionIndex` of ``manifest`` (the version being committed, with its
    number and time), composed under the commit lock before its commit point from the
    newest version's (``current``; a set committed before the index: its history, read
    once). ``protect``: versions live runs build on, kept whatever the retention."""
    if current is None:
        return VersionIndex({}, (), {})
    if INDEX in current:
        known = VersionIndex.from_json(current[INDEX])
        live = {**known.live, number_of(current): current["committed_at"]}
        after = {p: v for p, v in known.retired_after.items() if p in listing.retired}
        after.update(dict.fromkeys(map(_path, current["shards"]), number_of(current)))
        pending = known.dropping
    else:
        live, after, pending = {}, {}, ()
        for v in history(set_root, current, listing):  # oldest first
            if not v.get("vacuumed_at"):
                live[number_of(v)] = v["committed_at"]
                after.update(dict.fromkeys(map(_path, v.get("shards", [])), number_of(v)))
    keep = retention.kept([{"version": v, "committed_at": t} for v, t in live.items()] + [manifest], now)
    keep |= set(protect) & set(live)
    dropping = sorted(set(pending) | {v for v in live if v not in keep})
    return VersionIndex({v: t for v, t in live.items() if v in keep}, tuple(dropping),
                        {p: after[p] for p in after.keys() - paths_of(manifest["shards"])})


def vacuum(set_root: str, newest: dict, retention: Retention, protect: set[int] = frozenset(),
           now: float | None = None, listing: Listing | None = None) -> dict:
    """Under the commit lock: mark the versions ``retention`` drops (and ``protect`` does
    not name: the versions live runs reuse files of) as vacuumed, and delete every
    retired file no kept version lists. Returns what it did. ``listing``: the set as the
    commit listed it, kept up to date by its moves (else it is listed here). A commit's
    manifest says what to do (:class:`VersionIndex`: no older version file is read);
    ``tlfs vacuum`` reads the set's history, with its own retention."""
    listing = listing or Listing(set_root)
    versions = history(set_root, newest, listing)
    live = [v for v in versions if not v.get("vacuumed_at")]
    keep = retention.kept(live, now) | (set(protect) & {number_of(v) for v in live})
    dropped = [v for v in live if number_of(v) not in keep]
    stamp = timestamp(now)
    for v in dropped:
        _mark_vacuumed(set_root, v, stamp)
    listed = {s["path"] for v in versions if number_of(v) in keep for s in v.get("shards", [])}
    removed, freed = _remove_retired(set_root, listing, lambda relative: relative not in listed)
    return {"versions_vacuumed": [number_of(v) for v in dropped], "versions_kept": sorted(keep),
            "files_removed": len(removed), "bytes_freed": freed}


def apply_index(set_root: str, newest: dict, listing: Listing, now: float | None = None) -> dict:
    """Right after a commit's point, under its lock: what its manifest's
    :class:`VersionIndex` decided. Each dropped version is marked vacuumed (its file read
    once, then rewritten without its files; one already marked is left as it is), then
    every retired file that no kept version may list is deleted. Returns what it did."""
    index = VersionIndex.from_json(newest[INDEX])
    stamp, marked = timestamp(now), []
    for number in index.dropping:
        uri = layout.version_uri(set_root, number)
        try:
            version = read_json(uri)
        except FileNotFoundError:
            continue
        if not version.get("vacuumed_at"):
            _mark_vacuumed(set_root, version, stamp)
            marked.append(number)
    removed, freed = _remove_retired(set_root, listing, lambda relative: index.deletable(relative, number_of(newest)))
    return {"versions_vacuumed": marked, "versions_kept": sorted({*index.live, number_of(newest)}),
            "files_removed": len(removed), "bytes_freed": freed}


def _mark_vacuumed(set_root: str, version: dict, stamp: str) -> None:
    """Rewrite ``version``'s file without its files, stamped ``vacuumed_at`` (history still lists it)."""
    atomic_write_json(layout.version_uri(set_root, number_of(version)),
                      {**{k: x for k, x in version.items() if k != "shards"}, "vacuumed_at": stamp})


def _remove_retired(set_root: str, listing: Listing, doomed) -> tuple[list[str], int]:
    """Delete each retired file for which ``doomed(relative)`` holds; what was removed and its bytes."""
    fs, root = fs_path(set_root)
    removed, freed = [], 0
    for relative in sorted(r for r in listing.retired if doomed(r)):
        try:
            fs.rm(f"{root}/{layout.RETIRED}/{relative}")
        except FileNotFoundError:
            continue
        removed.append(f"{layout.RETIRED}/{relative}")
        freed += listing.retired.pop(relative).bytes
    return removed, freed
