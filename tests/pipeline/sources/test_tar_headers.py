"""Indexing a tar by its headers gives exactly what indexing it through tarfile gives,
for every common form it reads itself; any other form is read through tarfile, with
tarfile's own results and errors."""

import io
import shutil
import subprocess
import tarfile

import pytest

from tests.conftest import folder_images
from tests.pipeline.sources.helpers import write_webdataset
from tlfs.pipeline.errors import SourceError
from tlfs.pipeline.indexing import build_index
from tlfs.pipeline.sources import tar
from tlfs.pipeline.sources.tar_headers import Members, Unusual, compression_of

LONG = "train/red/" + "l" * 120 + ".png"  # a GNU long-name header, or a pax path, carries it
WIDE = "train/red/" + "é" * 60 + ".png"  # not ASCII: a pax path
SPLIT = "test/" + "k" * 92 + "/a.png"  # POSIX splits it into prefix and name


def archive(path, mode: str, fmt: int, extra=()) -> str:
    """Images, a folder, a symbolic and a hard link, an empty file and a README."""
    files = {**folder_images(per_class=2), LONG: b"long" * 300, WIDE: b"wide" * 7, SPLIT: b"split" * 40,
             "train/red/empty.png": b"", "README.txt": b"not an image"}
    with tarfile.open(path, mode, format=fmt) as out:
        folder = tarfile.TarInfo("train/blue/sub")
        folder.type = tarfile.DIRTYPE
        out.addfile(folder)
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))
        for name, kind in (("train/green/link.png", tarfile.SYMTYPE), ("train/green/hard.png", tarfile.LNKTYPE)):
            link = tarfile.TarInfo(name)
            link.type, link.linkname = kind, "train/red/000.png"
            out.addfile(link)
        for info, data in extra:
            out.addfile(info, io.BytesIO(data) if data is not None else None)
    return str(path)


def by_headers(uri: str):
    return tar.TarArchive()._indexed(uri, 0, {}, None, {}, tar._Listed(uri, None, tar._by_headers))


def by_tarfile(uri: str):
    return tar.TarArchive()._indexed(uri, 0, {}, None, {}, tar._Listed(uri, None, tar._by_tarfile))


@pytest.mark.parametrize("compression", ["gz", "bz2", "xz", ""])
@pytest.mark.parametrize("fmt", [tarfile.GNU_FORMAT, tarfile.PAX_FORMAT, tarfile.USTAR_FORMAT])
def test_the_common_forms_are_read_by_their_headers_exactly_as_tarfile_reads_them(tmp_path, compression, fmt):
    if fmt == tarfile.USTAR_FORMAT:  # no long or non-ASCII names in plain POSIX headers
        path = tmp_path / "d.tar"
        with tarfile.open(path, f"w:{compression}", format=fmt) as out:
            for name, data in {**folder_images(per_class=2), SPLIT: b"split" * 40}.items():
                info = tarfile.TarInfo(name)
                info.size = len(data)
                out.addfile(info, io.BytesIO(data))
        uri = str(path)
    else:
        uri = archive(tmp_path / "d.tar", f"w:{compression}", fmt)
    fast = by_headers(uri)  # raises Unusual if it needed tarfile
    slow = by_tarfile(uri)
    assert fast.entries == slow.entries and fast.rejects == slow.rejects and fast.info == slow.info
    assert fast.info.compression == (compression or "tar")
    assert {r.reason for r in fast.rejects} <= {"link inside archive (not followed)"}


def test_a_git_archive_with_a_global_pax_header_is_read_by_headers(tmp_path):
    """CIFAR-10's shared archives start with a global header carrying a comment (git archive)."""
    files = folder_images(per_class=2)
    with tarfile.open(tmp_path / "d.tar.gz", "w:gz", format=tarfile.PAX_FORMAT,
                      pax_headers={"comment": "d7d05618061fe37d830fb0419063d113c575ccbc"}) as out:
        for name, data in files.items():
            info = tarfile.TarInfo(name)
            info.size, info.mtime = len(data), 1.5  # a fractional time: a pax record per member
            out.addfile(info, io.BytesIO(data))
    uri = str(tmp_path / "d.tar.gz")
    assert by_headers(uri).entries == by_tarfile(uri).entries and len(by_headers(uri).entries) == len(files)


def test_webdataset_samples_are_read_by_headers_as_through_tarfile(tmp_path):
    uri = str(write_webdataset(tmp_path / "w.tar", folder_images(per_class=2)))
    fast, slow = by_headers(uri), by_tarfile(uri)
    assert fast.info.format == "webdataset-tar" and fast.entries == slow.entries and fast.info == slow.info


def unusual(uri: str) -> str:
    with pytest.raises(Unusual) as caught:
        by_headers(uri)
    return str(caught.value)


def test_a_pax_record_that_matters_otherwise_leaves_the_archive_to_tarfile_with_the_same_index(tmp_path):
    odd = tarfile.TarInfo("train/red/odd.png")
    odd.size, odd.pax_headers = 4, {"hdrcharset": "BINARY"}
    uri = archive(tmp_path / "d.tar.gz", "w:gz", tarfile.PAX_FORMAT, extra=[(odd, b"odd!")])
    assert "hdrcharset" in unusual(uri)
    assert build_index("d", [uri]).entries == by_tarfile(uri).entries


@pytest.mark.skipif(shutil.which("tar") is None, reason="no tar command here to write a sparse member")
def test_a_sparse_member_leaves_the_archive_to_tarfile(tmp_path):
    (tmp_path / "src" / "train" / "red").mkdir(parents=True)
    with open(tmp_path / "src" / "train" / "red" / "holes.png", "wb") as f:
        f.write(b"head")
        f.seek(1 << 20)
        f.write(b"tail")
    path = tmp_path / "d.tar.gz"
    subprocess.run(["tar", "--sparse", "--format=gnu", "-czf", str(path), "-C", str(tmp_path / "src"), "train"], check=True)
    assert "type" in unusual(str(path))
    assert [e.offset for e in build_index("d", [str(path)]).entries] == [-1]


def test_a_damaged_header_is_an_error_naming_where_not_the_silent_end_tarfile_makes_of_it(tmp_path):
    uri = archive(tmp_path / "d.tar", "w", tarfile.PAX_FORMAT)
    data = bytearray(open(uri, "rb").read())
    data[512 + 10] ^= 0xFF  # a byte of the first image's name (after the folder's header): no checksum holds
    (tmp_path / "bad.tar").write_bytes(bytes(data))
    assert by_tarfile(str(tmp_path / "bad.tar")).entries == []  # tarfile ends the archive there, quietly
    with pytest.raises(SourceError, match=r"bad.tar: cannot read .*header at byte 512 .* is damaged"):
        build_index("d", [str(tmp_path / "bad.tar")])


def test_a_cut_archive_is_an_error_naming_where_it_ends(tmp_path):
    raw = open(archive(tmp_path / "d.tar.gz", "w:gz", tarfile.PAX_FORMAT), "rb").read()
    (tmp_path / "cut.tar.gz").write_bytes(raw[: len(raw) // 2])
    with pytest.raises(SourceError, match=r"cut.tar.gz: cannot read .*cannot be read on after byte \d+ .*cut short"):
        build_index("d", [str(tmp_path / "cut.tar.gz")])
    plain = open(archive(tmp_path / "d.tar", "w", tarfile.PAX_FORMAT), "rb").read()
    (tmp_path / "cut.tar").write_bytes(plain[: 512 + 512 + 100])  # the folder's header, the first image's, into its bytes
    with pytest.raises(SourceError, match=r"cut.tar: cannot read .*ends inside a member, at byte 1124"):
        build_index("d", [str(tmp_path / "cut.tar")])


def test_a_compressed_stream_damaged_inside_a_members_bytes_is_an_error_not_a_silent_end(tmp_path):
    """tarfile's stream reader checks no gzip CRC: on this archive it ends the archive at
    the damage without a word and indexes the members before it."""
    big = {f"train/red/{n:03d}.png": bytes(range(256)) * 64 for n in range(40)}  # 16 KB each, 640 KB in all
    with tarfile.open(tmp_path / "d.tar.gz", "w:gz") as out:
        for name, data in big.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))
    raw = bytearray((tmp_path / "d.tar.gz").read_bytes())
    middle = len(raw) // 2
    raw[middle:middle + 64] = bytes(64)  # the deflate stream broken halfway
    (tmp_path / "bad.tar.gz").write_bytes(bytes(raw))
    assert len(by_tarfile(str(tmp_path / "bad.tar.gz")).entries) < len(big)  # quietly cut short
    with pytest.raises(SourceError, match=r"bad.tar.gz: cannot read .*damaged or cut short"):
        build_index("d", [str(tmp_path / "bad.tar.gz")])


def test_a_members_bytes_are_read_once_before_the_next_member():
    stream = io.BytesIO()
    with tarfile.open(fileobj=stream, mode="w") as out:
        for name in ("a", "b"):
            info = tarfile.TarInfo(name)
            info.size = 3
            out.addfile(info, io.BytesIO(name.encode() * 3))
    stream.seek(0)
    members = Members(stream)
    walked = iter(members)
    a = next(walked)
    assert (a.name, a.size, a.offset_data) == ("a", 3, 512) and members.read(a) == b"aaa"
    b = next(walked)  # a's padding skipped
    assert b.offset_data == 1536
    next(walked, None)
    with pytest.raises(ValueError, match="passed"):
        members.read(a)


def test_the_compression_is_told_as_tarfile_tells_it():
    assert compression_of(b"\x1f\x8b\x08\x00") == "gz"
    assert compression_of(b"BZh91AY&SY") == "bz2"
    assert compression_of(b"\xfd7zXZ\x00") == "xz"
    assert compression_of(b"train/red/") == "tar"
