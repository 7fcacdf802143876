"""Tar archives: indexing records where each member's bytes lie in the tar's stream, and
reading takes them there (by range when uncompressed; sliced out of the decompressed
stream when compressed, each member's own header checked first)."""

import dataclasses
import io
import shutil
import subprocess
import tarfile

import pytest

from tests.conftest import folder_images, write_tar
from tlfs.pipeline.image_decode import Unreadable
from tlfs.pipeline.indexing import build_index, iter_payloads
from tlfs.pipeline.sources.tar import OpenArchives

LONG = "train/red/" + "l" * 120 + ".png"  # longer than a header's name field: a GNU or pax header carries it
WIDE = "train/red/" + "é" * 60 + ".png"  # not ASCII, and 130 bytes in UTF-8
SPLIT = "test/" + "k" * 92 + "/a.png"  # too long for the name field alone: POSIX splits it into prefix/name


def archive(path, files: dict[str, bytes], mode: str, fmt: int = tarfile.PAX_FORMAT):
    with tarfile.open(path, mode, format=fmt) as out:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))
    return path


def members(path) -> dict[str, bytes]:
    """Each file's bytes, as tarfile reads them."""
    with tarfile.open(path) as archived:
        return {m.name: archived.extractfile(m).read() for m in archived if m.isfile()}


def read(index, entries=None, archives=None) -> dict[str, bytes | Exception]:
    return {e.member: p for e, p in iter_payloads(index.sources, index.entries if entries is None else entries,
                                                  archives=archives)}


@pytest.mark.parametrize("compression", ["gz", "bz2", "xz", ""])
@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT])
def test_each_member_is_read_at_the_offset_indexing_found_whatever_its_compression(tmp_path, compression, fmt):
    files = {**folder_images(per_class=2), LONG: b"long" * 300, WIDE: b"wide" * 7, "train/red/empty.png": b""}
    path = archive(tmp_path / f"d.tar{'.' + compression if compression else ''}", files, f"w:{compression}", fmt)
    index = build_index("d", [str(path)])
    assert index.sources[0].compression == (compression or "tar")
    assert len(index.entries) == len(files) and all(e.offset >= 512 for e in index.entries)
    assert read(index) == members(path)


def test_a_posix_header_splits_a_long_name_into_prefix_and_name_and_is_read_back(tmp_path):
    files = {**folder_images(per_class=1), SPLIT: b"split" * 40}
    path = archive(tmp_path / "d.tar.gz", files, "w:gz", tarfile.USTAR_FORMAT)
    index = build_index("d", [str(path)])
    assert read(index) == members(path) and read(index)[SPLIT] == b"split" * 40


def test_a_run_continues_one_stream_and_an_earlier_member_opens_the_archive_again(tmp_path):
    path = write_tar(tmp_path / "d.tar.gz", folder_images(per_class=3))
    index = build_index("d", [str(path)])
    expected, half = members(path), len(index.entries) // 2
    archives = OpenArchives()
    try:
        later = read(index, index.entries[half:], archives)
        earlier = read(index, index.entries[:half], archives)  # behind where the stream stopped
        again = read(index, index.entries[half:], archives)
    finally:
        archives.close()
    assert {**later, **earlier} == expected and again == later


def test_a_compressed_archive_changed_since_indexing_gives_clear_rejects_never_another_members_bytes(tmp_path):
    files = folder_images(per_class=3)
    path = write_tar(tmp_path / "d.tar.gz", files)
    index = build_index("d", [str(path)])
    first = sorted(files)[0]
    grown = {first: files[first] + b"grown", **{k: v for k, v in files.items() if k != first}}
    write_tar(path, grown)  # the first member's size changed, and the rest may have moved
    got, now = read(index), members(path)
    rejected = {m: p for m, p in got.items() if isinstance(p, Unreadable)}
    assert rejected and all("changed since it was indexed" in p.reason for p in rejected.values())
    assert all(p == now[m] for m, p in got.items() if m not in rejected)


def test_a_cut_compressed_archive_gives_rejects_for_what_is_missing(tmp_path):
    path = write_tar(tmp_path / "d.tar.gz", folder_images(per_class=3))
    index = build_index("d", [str(path)])
    path.write_bytes(path.read_bytes()[:len(path.read_bytes()) // 2])
    got = read(index)
    assert len(got) == len(index.entries)
    assert any(isinstance(p, Unreadable) for p in got.values())


def test_a_compressed_tar_indexed_before_offsets_were_recorded_is_streamed_by_name(tmp_path):
    path = write_tar(tmp_path / "d.tar.gz", folder_images(per_class=2))
    index = build_index("d", [str(path)])
    old = dataclasses.replace(index, sources=[dataclasses.replace(index.sources[0], compression=None)],
                              entries=[dataclasses.replace(e, offset=-1, size=-1) for e in index.entries])
    assert read(old) == members(path)


@pytest.mark.parametrize("fmt", ["gnu", "posix"])
def test_a_sparse_member_is_read_through_tarfile_by_name(tmp_path, fmt):
    """A sparse member's bytes are not in one piece in the archive (GNU tar's --sparse)."""
    if shutil.which("tar") is None:
        pytest.skip("no tar command here to write a sparse member")
    (tmp_path / "src" / "train" / "red").mkdir(parents=True)
    (tmp_path / "src" / "train" / "red" / "a.png").write_bytes(b"plain" * 30)
    with open(tmp_path / "src" / "train" / "red" / "holes.png", "wb") as f:
        f.write(b"head")
        f.seek(1 << 20)
        f.write(b"tail")
    path = tmp_path / "d.tar.gz"
    subprocess.run(["tar", "--sparse", f"--format={fmt}", "-czf", str(path), "-C", str(tmp_path / "src"), "train"],
                   check=True)
    index = build_index("d", [str(path)])
    assert {e.member: e.offset for e in index.entries}["train/red/holes.png"] == -1
    assert read(index) == members(path)


def test_a_header_whose_name_field_matches_but_a_posix_prefix_names_another_path_is_a_reject(tmp_path):
    """The header check's quick path (the name field as it is, tarfile's size field) must
    not pass a header whose POSIX prefix puts the same name under another folder."""
    import gzip

    files = folder_images(per_class=1)
    path = archive(tmp_path / "d.tar.gz", files, "w:gz", tarfile.USTAR_FORMAT)
    index = build_index("d", [str(path)])
    target = index.entries[0]
    raw = bytearray(gzip.decompress(path.read_bytes()))
    header = target.offset - 512
    assert raw[header:header + len(target.member)] == target.member.encode() and raw[header + 345] == 0
    raw[header + 345:header + 348] = b"zzz"  # now zzz/<member>: the archive changed since it was indexed
    raw[header + 148:header + 156] = b" " * 8
    raw[header + 148:header + 156] = b"%06o\0 " % sum(raw[header:header + 512])  # its checksum, as tar computes it
    path.write_bytes(gzip.compress(bytes(raw)))
    got = read(index)
    assert isinstance(got[target.member], Unreadable) and "changed since it was indexed" in got[target.member].reason
    assert all(got[e.member] == files[e.member] for e in index.entries[1:])
