import hashlib
import io
import pickle
import tarfile
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from tlfs.pipeline.dataset_index import DatasetIndex, sample
from tlfs.pipeline.indexing import alike_classes_notice, build_index, check_sources, iter_payloads, left_out_notice
from tlfs.pipeline.errors import SourceError
from tlfs.pipeline.image_decode import Unreadable
from tests.conftest import folder_images, write_tar, write_tree, write_zip
from tests.pipeline.sources.helpers import write_labels_csv


def ids(index):
    return sorted(e.image_id for e in index.entries)


@pytest.mark.parametrize("kind", ["dir", "tar", "tar.gz", "zip"])
def test_image_folder_in_every_container_gives_the_same_index(tmp_path, kind):
    files = folder_images()
    if kind == "dir":
        uri = write_tree(tmp_path / "d", files)
    elif kind == "zip":
        uri = write_zip(tmp_path / "d.zip", files)
    else:
        uri = write_tar(tmp_path / f"d.{kind}", files, "w" if kind == "tar" else "w:gz")
    index = build_index("colors", [str(uri)])
    assert ids(index) == sorted(files)
    assert index.classes == ["blue", "green", "red"] and index.splits() == ["test", "train"]
    payloads = dict((e.image_id, p) for e, p in iter_payloads(index.sources, index.entries))
    assert payloads == files


@pytest.mark.parametrize("kind", ["dir", "tar", "tar.gz", "zip"])
def test_a_tree_wrapped_in_one_folder_gives_the_same_index_as_the_tree(tmp_path, kind):
    """`tar czf pets.tar.gz pets` and `zip -r pets.zip pets` put the tree in a folder of its
    own (pets/train/cats/1.jpg): the images are the tree's, with the same ids, as if it were
    not there; an image at another depth inside it is still named as left out."""
    files = folder_images()
    wrapped = {**{f"pets/{name}": data for name, data in files.items()}, "pets/train/red/2024/x.png": b"x",
               "pets/README.txt": b"hi", "pets/.thumbs/train/red/001.png": b"x"}
    uri = {"dir": lambda: write_tree(tmp_path / "d", wrapped), "zip": lambda: write_zip(tmp_path / "d.zip", wrapped),
           "tar": lambda: write_tar(tmp_path / "d.tar", wrapped, "w"),
           "tar.gz": lambda: write_tar(tmp_path / "d.tar.gz", wrapped, "w:gz")}[kind]()
    index = build_index("colors", [str(uri)])
    assert ids(index) == sorted(files) and index.splits() == ["test", "train"] and not index.rejects
    assert dict((e.image_id, p) for e, p in iter_payloads(index.sources, index.entries)) == files
    assert index.left_out == [f"{uri}/pets/train/red/2024/x.png" if kind == "dir" else f"{uri}: pets/train/red/2024/x.png"]
    plain = {"dir": lambda: write_tree(tmp_path / "p", files), "zip": lambda: write_zip(tmp_path / "p.zip", files),
             "tar": lambda: write_tar(tmp_path / "p.tar", files, "w"),
             "tar.gz": lambda: write_tar(tmp_path / "p.tar.gz", files, "w:gz")}[kind]()
    unwrapped = build_index("colors", [str(plain)]).entries
    assert [e.image_id for e in index.entries] == [e.image_id for e in unwrapped]
    if kind != "dir":  # a file's fingerprint is its bytes' (a folder's: its size and time)
        assert [e.fingerprint for e in index.entries] == [e.fingerprint for e in unwrapped]


def test_trees_in_two_folders_are_not_taken_for_one(tmp_path):
    """Two folders each holding a tree (a/train/..., b/train/...) are not one dataset's
    wrapper: which would be meant is not for the index to guess."""
    files = folder_images()
    both = {**{f"a/{name}": data for name, data in files.items()}, **{f"b/{name}": data for name, data in files.items()}}
    with pytest.raises(SourceError, match="no images found"):
        build_index("colors", [str(write_tar(tmp_path / "two.tar.gz", both, "w:gz"))])


def test_jpegs_named_as_windows_and_browsers_name_them_and_avif_are_images(tmp_path):
    from PIL import Image

    from tlfs.pipeline.image_decode import decode

    files = {**folder_images()}
    for name, fmt in (("train/red/saved.jfif", "JPEG"), ("train/red/old.JPE", "JPEG"), ("test/red/web.avif", "AVIF")):
        buffer = io.BytesIO()
        Image.new("RGB", (40, 30), (200, 10, 10)).save(buffer, fmt)
        files[name] = buffer.getvalue()
    index = build_index("colors", [str(write_tree(tmp_path / "d", files))])
    assert ids(index) == sorted(files) and not index.left_out
    new = [e for e in index.entries if e.image_id.endswith(("jfif", "JPE", "avif"))]
    pixels = [decode(payload, 224) for _, payload in iter_payloads(index.sources, new)]
    assert len(pixels) == 3 and all(image.shape == (30, 40, 3) and image[..., 0].mean() > 150 for image in pixels)


def test_several_sources_merge_and_duplicates_are_refused(tmp_path):
    files = folder_images()
    train = write_tar(tmp_path / "train.tar.gz", {k: v for k, v in files.items() if k.startswith("train/")})
    test = write_zip(tmp_path / "test.zip", {k: v for k, v in files.items() if k.startswith("test/")})
    merged = build_index("colors", [str(train), str(test)])
    assert ids(merged) == sorted(files) and len(merged.sources) == 2
    with pytest.raises(SourceError, match="is in two sources"):
        build_index("colors", [str(train), str(train)])


@pytest.mark.parametrize("kind", ["dir", "tar.gz", "zip"])
def test_non_image_files_and_other_depths_are_not_images_and_the_images_left_out_are_named(tmp_path, kind):
    """An image deeper than <split>/<class>/<file>, or above the classes, is not in the
    dataset, and the index names it (planning says so); a README, notes and hidden files
    (macOS's ``._x.jpg``) are not images at all."""
    extra = {"README.txt": b"hi", "train/red/notes.txt": b"x", "train/red/._001.png": b"x", "train/red/.x.png": b"x",
             ".thumbs/train/red/001.png": b"x",
             "train/red/deep/x.png": b"x", "train/cover.JPG": b"x", "logo.png": b"x", "test/red/shot.CR2": b"x"}
    files = {**folder_images(), **extra}
    uri = {"dir": lambda: write_tree(tmp_path / "d", files), "zip": lambda: write_zip(tmp_path / "d.zip", files),
           "tar.gz": lambda: write_tar(tmp_path / "d.tar.gz", files, "w:gz")}[kind]()
    index = build_index("colors", [str(uri)])
    assert len(index.entries) == 24
    where = f"{uri}/" if kind == "dir" else f"{uri}: "
    assert sorted(index.left_out) == [f"{where}{name}" for name in
                                      ("logo.png", "test/red/shot.CR2", "train/cover.JPG", "train/red/deep/x.png")]
    placed = [path for path in index.left_out if not path.endswith(".CR2")]
    assert left_out_notice(index) == (f"; 3 image files left out, not at <split>/<class>/<file>: {', '.join(placed)}"
                                      f"; 1 image file left out in formats not read (cr2), to be converted to JPEG or PNG: "
                                      f"{where}test/red/shot.CR2")
    assert left_out_notice(sample(index, 4)).startswith("; 3 image files")  # a sample leaves the sources' files as they are
    assert left_out_notice(build_index("colors", [str(write_tree(tmp_path / "plain", folder_images()))])) == ""


@pytest.mark.parametrize("kind", ["dir", "tar.gz", "zip"])
def test_a_splits_images_one_folder_too_deep_are_not_taken_for_a_wrapped_tree(tmp_path, kind):
    """train/dogs/2024/1.jpg alone is a split whose classes hold folders, not a tree wrapped in
    a folder named train (whose splits would be dogs and cats): no images, each named."""
    nested = {f"train/{animal}/2024/{n}.png": b"x" for animal in ("dogs", "cats") for n in range(2)}
    uri = {"dir": lambda: write_tree(tmp_path / "d", nested), "zip": lambda: write_zip(tmp_path / "d.zip", nested),
           "tar.gz": lambda: write_tar(tmp_path / "d.tar.gz", nested, "w:gz")}[kind]()
    with pytest.raises(SourceError, match=r"no images found .*4 image files at other depths, such as .*train/"):
        build_index("pets", [str(uri)])


def test_a_folder_of_classes_without_splits_is_told_how_to_lay_out_its_images(tmp_path):
    flat = write_tree(tmp_path / "pets", {"cats/1.jpg": b"x", "dogs/1.jpg": b"x"})
    with pytest.raises(SourceError, match=r"no images found in .*pets.*; 2 image files at other depths, such as "
                                          r".*pets/cats/1\.jpg: the tree is to be <split>/<class>/<image> \(train/<class>"):
        build_index("pets", [str(flat)])


def test_a_set_of_raw_camera_photos_in_a_format_not_read_is_told_to_convert_them_not_to_move_them(tmp_path):
    """A camera's raw files at the right depth are not misplaced: the error names the format,
    and the depth advice only for the files that are misplaced."""
    camera = write_tree(tmp_path / "camera", {"train/cats/1.CR2": b"x", "test/cats/2.cr2": b"x", "train/3.jpg": b"x"})
    with pytest.raises(SourceError) as raised:
        build_index("camera", [str(camera)])
    message = str(raised.value)
    assert "; 2 image files in formats not read (cr2), such as " in message and "to be converted to JPEG or PNG" in message
    assert "; 1 image file at other depths, such as " in message and message.count("at other depths") == 1
    assert "CR2 at other depths" not in message and "cr2 at other depths" not in message


def test_a_phones_heic_photos_are_images_of_the_dataset(tmp_path):
    from tests.conftest import heic

    phone = write_tree(tmp_path / "phone", {"train/cats/IMG_0001.HEIC": heic(), "test/cats/IMG_0002.heic": heic()})
    index = build_index("phone", [str(phone)])
    assert sorted(e.image_id for e in index.entries) == ["test/cats/IMG_0002.heic", "train/cats/IMG_0001.HEIC"]
    assert index.left_out == [] and left_out_notice(index) == ""


def test_classes_that_differ_only_in_case_or_spacing_are_named_with_their_splits(tmp_path):
    """train/cat and test/Cat are two classes (a head counts every test Cat as wrong): planning says so."""
    files = {f"{split}/{name}/{i}.png": b"x" for split, names in (("train", ("cat", "dog", "Golden_Retriever")),
                                                                  ("test", ("Cat", "dog", "golden retriever")))
             for name in names for i in range(2)}
    index = build_index("pets", [str(write_tree(tmp_path / "pets", files))])
    assert alike_classes_notice(index) == (
        "; classes told apart that differ only in case, spaces, '_' or '-': 'Cat' (test) and 'cat' (train); "
        "'Golden_Retriever' (train) and 'golden retriever' (test) (a class is its folder's or label's exact name: "
        "rename one to merge them)")
    assert alike_classes_notice(build_index("colors", [str(write_tree(tmp_path / "plain", folder_images()))])) == ""
    letters = {f"{split}/{name}/{i}.png": b"x" for split in ("train", "test") for name in ("a", "A") for i in range(2)}
    assert alike_classes_notice(build_index("letters", [str(write_tree(tmp_path / "letters", letters))])) == ""  # meant apart


def test_a_folder_of_nifti_volumes_is_told_to_convert_them(tmp_path):
    """NIfTI volumes (``.nii``, ``.nii.gz``: a two-part suffix) are image formats not read: named, not 'no images' alone."""
    scans = write_tree(tmp_path / "scans", {"train/tumour/1.nii": b"x", "train/healthy/2.nii.gz": b"x", "test/tumour/3.nii": b"x"})
    with pytest.raises(SourceError, match=r"; 3 image files in formats not read \(nii, nii.gz\), such as .*: to be converted"):
        build_index("scans", [str(scans)])


def test_a_long_list_of_images_left_out_is_cut_short():
    index = DatasetIndex("d", [], [], [], left_out=[f"d/a/b/c/{n}.jpg" for n in range(5)])
    assert left_out_notice(index) == "; 5 image files left out, not at <split>/<class>/<file>: d/a/b/c/0.jpg, d/a/b/c/1.jpg, " \
                                     "d/a/b/c/2.jpg and 2 more"


def test_limit_is_class_balanced_deterministic_and_order_independent(tmp_path):
    files = folder_images(per_class=10)
    a = build_index("colors", [str(write_tree(tmp_path / "a", files))], limit=7)
    reordered = dict(reversed(list(files.items())))
    b = build_index("colors", [str(write_tar(tmp_path / "b.tar", reordered, "w"))], limit=7)
    assert ids(a) == ids(b)
    per = Counter((e.split, e.label_name) for e in a.entries)
    assert sorted(per.values()) == [2, 2, 2, 2, 3, 3]  # 7 = 3 + 2 + 2 per split
    assert Counter(e.split for e in a.entries) == {"train": 7, "test": 7}


def test_splits_filter_and_unknown_split(tmp_path):
    root = str(write_tree(tmp_path / "d", folder_images()))
    assert build_index("colors", [root], splits=["test"]).splits() == ["test"]
    with pytest.raises(SourceError, match="has no split val"):
        build_index("colors", [root], splits=["val"])


def test_missing_or_wrong_sources_are_clear_errors(tmp_path):
    with pytest.raises(SourceError, match="no such file"):
        build_index("x", [str(tmp_path / "nope.tar.gz")])
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"this is not gzip")
    with pytest.raises(SourceError, match="bad.tar.gz: cannot read"):
        build_index("x", [str(bad)])
    other = tmp_path / "x.rar"
    other.write_bytes(b"")
    with pytest.raises(SourceError, match="not a directory"):
        build_index("x", [str(other)])
    with pytest.raises(SourceError, match="no images found"):
        build_index("x", [str(write_tree(tmp_path / "empty", {"a.txt": b""}))])


def test_expected_checksum_in_the_uri_is_verified(tmp_path):
    path = write_tar(tmp_path / "d.tar.gz", folder_images())
    sha = hashlib.sha256(path.read_bytes()).hexdigest()
    assert build_index("c", [f"{path}#sha256={sha}"]).sources[0].checksum["sha256"] == sha
    with pytest.raises(SourceError, match="does not match"):
        build_index("c", [f"{path}#sha256={'0' * 64}"])


def test_unsafe_archive_paths_are_rejected_not_read(tmp_path):
    files = {**folder_images(), "../train/red/evil.png": b"x", "/train/red/abs.png": b"x"}
    index = build_index("c", [str(write_tar(tmp_path / "d.tar", files, "w"))])
    reasons = {r.image_id: r.reason for r in index.rejects}
    assert all("unsafe archive path" in r for r in reasons.values()) and len(reasons) == 2
    assert "train/red/evil.png" not in {e.image_id for e in index.entries}


def test_a_zip_written_on_windows_with_backslashes_reads_them_as_folders_and_an_escape_stays_refused(tmp_path):
    """Some Windows tools (PowerShell 5's Compress-Archive) write ``train\\red\\0.png``;
    unzip and 7-Zip read the backslashes as folders, and so does a source."""
    files = {name.replace("/", "\\"): data for name, data in folder_images(per_class=2).items()}
    index = build_index("w", [str(write_zip(tmp_path / "w.zip", {**files, "..\\train\\red\\evil.png": b"x"}))])
    assert sorted(e.image_id for e in index.entries) == sorted(folder_images(per_class=2))
    assert [(r.image_id, r.reason) for r in index.rejects] == [("train/red/evil.png", "unsafe archive path '..\\\\train\\\\red\\\\evil.png'")]
    got = dict((e.image_id, payload) for e, payload in iter_payloads(index.sources, index.entries))
    assert got == folder_images(per_class=2)


def _zip_members_marked(path: Path, method: int | None = None, encrypted: bool = False) -> Path:
    """The zip at ``path`` with every member's method (or its password flag) set in both of its
    headers, as Windows Explorer's Deflate64 or a zip with a password has them."""
    data = bytearray(path.read_bytes())
    for signature, flags_at, method_at in ((b"PK\x03\x04", 6, 8), (b"PK\x01\x02", 8, 10)):
        at = data.find(signature)
        while at >= 0:
            if method is not None:
                data[at + method_at:at + method_at + 2] = method.to_bytes(2, "little")
            if encrypted:
                data[at + flags_at] |= 0x1
            at = data.find(signature, at + 4)
    path.write_bytes(bytes(data))
    return path


@pytest.mark.parametrize("marks,reason", [
    ({"method": 9}, r"compressed with Deflate64 \(as Windows Explorer compresses large files\), which Python's zipfile "
                    r"does not read: to be zipped again with Deflate"),
    ({"encrypted": True}, r"encrypted \(the zip has a password\): to be zipped again without one"),
])
def test_a_zip_whose_members_cannot_be_read_refuses_them_at_indexing_with_the_reason(tmp_path, marks, reason):
    """A zip Windows Explorer wrote with Deflate64, or one with a password: zipfile raised
    NotImplementedError or RuntimeError at the first image read, which stopped the run."""
    zipped = _zip_members_marked(write_zip(tmp_path / "w.zip", folder_images(per_class=1)), **marks)
    with pytest.raises(SourceError, match=r"no images found in .*; 6 refused while indexing: train/.*: " + reason):
        build_index("w", [str(zipped)])
    index = build_index("w", [str(write_zip(tmp_path / "ok.zip", folder_images(per_class=1)))])
    damaged = _zip_members_marked(tmp_path / "ok.zip", **marks)  # changed after indexing: read, then refused
    got = list(iter_payloads(index.sources, index.entries))
    assert len(got) == 6 and all(isinstance(payload, Unreadable) for _, payload in got), damaged


def test_a_dataset_whose_every_image_indexing_refused_names_them_not_only_no_images(tmp_path):
    """A CSV whose root is mistyped: every row names a file that is not there."""
    csv = write_labels_csv(tmp_path, folder_images(per_class=1))
    with pytest.raises(SourceError, match=r"no images found in .*; 6 refused while indexing: .*\(line 2: no file "
                                          r".*/elsewhere/.*\) and 3 more$"):
        build_index("c", [f"{csv}#root=elsewhere"])


def test_a_source_over_http_that_is_not_there_says_what_the_server_or_the_connection_answered(tmp_path):
    """fsspec's HTTP filesystem reports a 404 and a refused connection alike as not found: each is told as it is."""
    import functools
    import http.server
    import socket
    import threading

    write_tar(tmp_path / "colors.tar.gz", folder_images(per_class=1))
    handler = functools.partial(http.server.SimpleHTTPRequestHandler, directory=str(tmp_path))
    handler.log_message = lambda *_: None
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    with socket.socket() as closed:  # a port nothing listens on
        closed.bind(("127.0.0.1", 0))
        refused = closed.getsockname()[1]
    try:
        base = f"http://127.0.0.1:{server.server_address[1]}"
        assert len(build_index("web", [f"{base}/colors.tar.gz"]).entries) == 6
        with pytest.raises(SourceError, match=r"/nope.tar.gz: the server answered HTTP 404"):
            check_sources("web", [f"{base}/nope.tar.gz"])
        with pytest.raises(SourceError, match=rf"127.0.0.1:{refused}/x.tar.gz: cannot be reached \(ClientConnectorError: "):
            check_sources("web", [f"http://127.0.0.1:{refused}/x.tar.gz"])
        with pytest.raises(SourceError, match=r"nowhere.tar.gz: no such file or directory"):
            check_sources("local", [str(tmp_path / "nowhere.tar.gz")])
    finally:
        server.shutdown()


# ---------------------------------------------------------------- CIFAR-10 python format


def cifar_tarball(path, per_batch: int = 6, extra_pickle=None):
    rng = np.random.default_rng(0)
    names = [n.encode() for n in ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]]
    members = {"cifar-10-batches-py/batches.meta": pickle.dumps({b"label_names": names})}
    for batch in ["data_batch_1", "data_batch_2", "test_batch"]:
        labels = [i % 10 for i in range(per_batch)]
        members[f"cifar-10-batches-py/{batch}"] = pickle.dumps({
            b"data": rng.integers(0, 255, (per_batch, 3072), dtype=np.uint8),
            b"labels": labels,
            b"filenames": [f"{batch}_{i}.png".encode() for i in range(per_batch)],
        })
    if extra_pickle is not None:
        members["cifar-10-batches-py/data_batch_3"] = extra_pickle
    with tarfile.open(path, "w:gz") as archive:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path, hashlib.md5(path.read_bytes()).hexdigest()


def test_cifar_python_tarball_is_read_after_its_checksum(tmp_path):
    path, md5 = cifar_tarball(tmp_path / "cifar-10-python.tar.gz")
    index = build_index("cifar10", [f"{path}#md5={md5}"])
    assert index.sources[0].format == "cifar10-python"
    assert index.classes[0] == "airplane" and Counter(e.split for e in index.entries) == {"train": 12, "test": 6}
    images = [p for _, p in iter_payloads(index.sources, index.entries)]
    assert all(isinstance(p, np.ndarray) and p.shape == (32, 32, 3) for p in images)


def test_cifar_tarball_with_unofficial_checksum_is_not_unpickled(tmp_path):
    path, _ = cifar_tarball(tmp_path / "cifar-10-python.tar.gz")
    with pytest.raises(SourceError, match="not the official"):
        build_index("cifar10", [str(path)])


def test_cifar_batch_with_code_in_its_pickle_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path, md5 = cifar_tarball(tmp_path / "c.tar.gz", extra_pickle=pickle.dumps({b"x": Evil()}))
    with pytest.raises(SourceError, match=r"c.tar.gz: cifar-10-batches-py/data_batch_3 is not a CIFAR-10 batch: "
                                          r"forbidden global builtins.print"):
        build_index("cifar10", [f"{path}#md5={md5}"])


@pytest.mark.parametrize("suffix", [".tar", ".tar.gz"])
def test_consecutive_shards_of_an_archive_read_it_once_and_going_back_reopens_it(tmp_path, monkeypatch, suffix):
    from tlfs.pipeline.sources import OpenArchives as TarStreams
    from tlfs.pipeline.sources import tar

    opened = []
    real_open = tar.open_source
    monkeypatch.setattr(tar, "open_source", lambda uri, cache: opened.append(uri) or real_open(uri, cache))
    index = build_index("colors", [str(write_tar(tmp_path / f"d{suffix}", folder_images(per_class=6)))])
    opened.clear()  # indexing read it once
    entries = index.entries
    streams = TarStreams()
    thirds = [entries[:12], entries[12:24], entries[24:]]
    read = [e.image_id for part in thirds for e, payload in streams.payloads(index.sources[0].uri, part, None)
            if isinstance(payload, bytes)]
    assert read == [e.image_id for e in entries] and len(opened) == 1
    again = [e.image_id for e, _ in streams.payloads(index.sources[0].uri, thirds[0], None)]
    assert again == [e.image_id for e in thirds[0]] and len(opened) == 2  # behind the stream: opened again
    streams.close()
    assert [e.image_id for e, _ in iter_payloads(index.sources, entries)] == [e.image_id for e in entries]


def test_a_damaged_source_of_any_format_is_a_source_error_or_rejects_never_another_exception(tmp_path):
    """Bytes flipped in a zip, a tar.gz, WebDataset shards, a Parquet table and a CSV of labels:
    indexing says the source cannot be read, or reads it and records what it cannot; zipfile's
    NotImplementedError (a version byte) and pyarrow's UnicodeDecodeError (a schema's metadata)
    escaped it."""
    import random

    from tlfs.pipeline.errors import PipelineError
    from tests.pipeline.sources.helpers import write_parquet_table, write_webdataset

    files = folder_images(per_class=2)
    seeds = {".zip": write_zip(tmp_path / "s.zip", files).read_bytes(),
             ".tar.gz": write_tar(tmp_path / "s.tar.gz", files, "w:gz").read_bytes(),
             ".tar": write_webdataset(tmp_path / "w.tar", files).read_bytes(),
             ".parquet": write_parquet_table(tmp_path / "t.parquet", files, ["blue", "green", "red"]).read_bytes(),
             ".csv": write_labels_csv(tmp_path / "csv", files).read_bytes()}
    rng = random.Random(2)
    for number in range(1200):
        suffix = rng.choice(list(seeds))
        damaged = bytearray(seeds[suffix])
        for _ in range(rng.randint(1, 6)):
            damaged[rng.randrange(len(damaged))] = rng.randrange(256)
        if rng.random() < 0.2:
            damaged = damaged[:rng.randrange(len(damaged))]
        path = (tmp_path / "csv" if suffix == ".csv" else tmp_path) / f"d{number}{suffix}"
        path.write_bytes(bytes(damaged))
        try:
            index = build_index("d", [str(path)])
            assert sum(1 for _ in iter_payloads(index.sources, index.entries)) == len(index.entries)
        except PipelineError:
            pass
        path.unlink()


def test_a_folder_of_dicom_files_without_a_suffix_is_told_to_name_them(tmp_path):
    """Scanners export DICOM files without a suffix (``IM000001``): a dataset of them alone has
    no images by name, and the error says what they are; other files without one are not looked
    into further."""
    from tests.conftest import dicom_file, xray

    scans = write_tree(tmp_path / "scans", {"train/a/IM000001": dicom_file(xray(0), bits=12), "README": b"scans",
                                            "test/a/IM000002": dicom_file(xray(1), bits=12)})
    with pytest.raises(SourceError, match=r"; files without a suffix are DICOM, such as .*/IM00000\d: to be named with "
                                          r"\.dcm \(images are known by their suffix\)$"):
        build_index("scans", [str(scans)])
    notes = write_tree(tmp_path / "notes", {"train/a/NOTES": b"x" * 200, "test/a/LICENSE": b"y" * 200})
    with pytest.raises(SourceError) as refused:
        build_index("notes", [str(notes)])
    assert "DICOM" not in str(refused.value)
