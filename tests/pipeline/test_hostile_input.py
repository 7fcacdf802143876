"""Hostile and broken dataset input: each case is handled or refused with a clear reason,
and nothing is lost: read = written + rejected."""

import io
import os
import tarfile
import zipfile

import numpy as np
import pytest
from PIL import Image

from tlfs import features
from tlfs.pipeline.indexing import build_index, refused_notice
from tlfs.pipeline.errors import NothingReadable, SourceError
from tests.conftest import folder_images, png_bytes, write_tar, write_tree
from tests.extraction import run_extract


def run(tmp_path, sources, models_root):
    return run_extract("h", [str(s) for s in sources], "efficientnet_lite0", str(tmp_path / "store"), models_root,
                       layers=["head"], shard_size=8, batch_size=4, show_progress=False, log=lambda *_: None)


def encoded(img: Image.Image, fmt: str) -> bytes:
    buffer = io.BytesIO()
    img.save(buffer, fmt)
    return buffer.getvalue()


def test_every_kind_of_bad_image_is_recorded_and_counts_reconcile(tmp_path, lite0, models_root):
    files = folder_images(per_class=2)
    good = png_bytes((10, 200, 10))
    bad = {
        "train/red/zero.jpg": b"",
        "train/red/zero.png": b"",
        "train/red/truncated.jpg": png_bytes((1, 2, 3), fmt="JPEG")[:300],
        "train/red/truncated.png": good[: len(good) // 2],
        "train/red/garbage.png": os.urandom(500),
        "train/red/bomb.png": encoded(Image.new("1", (12000, 12000)), "PNG"),
    }
    odd_but_fine = {
        "train/green/grey.png": encoded(Image.new("L", (20, 20), 128), "PNG"),
        "train/green/cmyk.jpg": encoded(Image.new("CMYK", (20, 20), (0, 50, 100, 0)), "JPEG"),
        "train/green/rgba.png": encoded(Image.new("RGBA", (20, 20), (1, 2, 3, 100)), "PNG"),
        "train/green/palette.png": encoded(Image.new("RGB", (20, 20), (9, 9, 9)).convert("P"), "PNG"),
        "train/green/sixteen.png": encoded(Image.fromarray(np.full((20, 20), 40000, np.uint16)), "PNG"),
    }
    summary = run(tmp_path, [write_tree(tmp_path / "d", {**files, **bad, **odd_but_fine})], models_root)
    train = summary["counts"]["train"]
    assert train == {"read": 6 + 6 + 5, "written": 6 + 5, "rejected": 6}
    rejects = {r["image_id"]: r["reason"] for r in features.describe("h", "efficientnet_lite0", str(tmp_path / "store"))["rejects"]}
    assert set(rejects) == set(bad)
    assert rejects["train/red/zero.jpg"] == "empty file (0 bytes)"
    assert rejects["train/red/bomb.png"].startswith("decompression bomb")


def test_archive_escapes_and_links_are_rejected_not_followed(tmp_path, lite0, models_root):
    path = tmp_path / "evil.tar"
    with tarfile.open(path, "w") as archive:
        for rel, data in folder_images(per_class=1).items():
            info = tarfile.TarInfo(rel)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
        for name in ("../train/red/up.png", "/train/red/abs.png"):
            info = tarfile.TarInfo(name)
            info.size = 3
            archive.addfile(info, io.BytesIO(b"abc"))
        link = tarfile.TarInfo("train/red/link.png")
        link.type = tarfile.SYMTYPE
        link.linkname = "/etc/passwd"
        archive.addfile(link)
    summary = run(tmp_path, [path], models_root)
    assert summary["counts"]["train"] == {"read": 6, "written": 3, "rejected": 3}
    reasons = sorted(r["reason"] for r in features.describe("h", "efficientnet_lite0", str(tmp_path / "store"))["rejects"])
    assert reasons[0].startswith("link inside archive") and all("unsafe archive path" in r for r in reasons[1:])


def test_symlinks_in_a_folder_dataset_are_not_followed(tmp_path):
    root = write_tree(tmp_path / "d", folder_images(per_class=1))
    secret = tmp_path / "secret.png"
    secret.write_bytes(png_bytes((1, 1, 1)))
    os.symlink(secret, root / "train" / "red" / "link.png")
    index = build_index("h", [str(root)])
    assert [r.image_id for r in index.rejects] == ["train/red/link.png"]
    assert "train/red/link.png" not in {e.image_id for e in index.entries}
    assert refused_notice(index) == ("; 1 refused while indexing, recorded as rejected: train/red/link.png "
                                     "(symbolic link (not followed))")  # said beside the indexed count it is not in


def test_non_utf8_file_names_get_a_readable_stable_id(tmp_path, lite0, models_root):
    root = write_tree(tmp_path / "d", folder_images(per_class=1))
    os.makedirs(os.fsencode(root / "train" / "red"), exist_ok=True)
    with open(os.path.join(os.fsencode(root / "train" / "red"), b"caf\xe9.png"), "wb") as f:
        f.write(png_bytes((200, 0, 0)))
    summary = run(tmp_path, [root], models_root)
    assert summary["counts"]["train"]["written"] == 4
    frame = features.load("h", "efficientnet_lite0", "head", "train", str(tmp_path / "store"))
    assert "train/red/caf\\xe9.png" in set(frame["image_id"])


def test_a_class_missing_from_one_split_keeps_labels_consistent(tmp_path, lite0, models_root):
    files = {k: v for k, v in folder_images(per_class=2).items() if not k.startswith("test/blue/")}
    os.makedirs(tmp_path / "d" / "train" / "empty_class")  # an empty class folder: no images, no class
    run(tmp_path, [write_tree(tmp_path / "d", files)], models_root)
    store = str(tmp_path / "store")
    manifest = features.describe("h", "efficientnet_lite0", store)
    assert manifest["classes"] == ["blue", "green", "red"]
    for split in ("train", "test"):
        frame = features.load("h", "efficientnet_lite0", "head", split, store)
        assert (frame["label"] == frame["label_name"].map(manifest["classes"].index)).all()


def test_a_run_whose_every_image_is_rejected_commits_nothing_and_says_why(tmp_path, lite0, models_root):
    files = {f"{split}/{cls}/{n}.jpg": os.urandom(300) for split in ("train", "test") for cls in ("a", "b")
             for n in range(2)}
    with pytest.raises(NothingReadable, match=r"nothing to commit to .*: all 8 images of h were rejected: "
                                              r"\S+/\S+/\d.jpg: [^;]+; .*\(and 5 more\)"):
        run(tmp_path, [write_tree(tmp_path / "d", files)], models_root)
    assert features.list_sets(str(tmp_path / "store")).empty  # no version of no row
    files["train/a/good.png"] = png_bytes((10, 200, 10))  # one image readable: the rejects are kept beside it
    summary = run(tmp_path, [write_tree(tmp_path / "d", files)], models_root)
    assert (summary["rows"], summary["rejected"]) == (1, 8)


def test_a_split_whose_every_image_was_rejected_is_named_by_each_step_that_needs_it(tmp_path, lite0, models_root):
    from tlfs.pipeline.advise import advise
    from tlfs.pipeline.duplicates import DuplicatesRequest, find_duplicates
    from tlfs.pipeline.errors import CannotCheck, PipelineError
    from tlfs.pipeline.finetune import decode_splits
    from tlfs.pipeline.fit import fit, sweep
    from tlfs.pipeline.label_issues import LabelIssuesRequest, find_label_issues
    from tlfs.pipeline.learning_curve import LearningCurveRequest, learning_curve

    files = {k: (os.urandom(300) if k.startswith("train/") else v) for k, v in folder_images(per_class=2).items()}
    source = write_tree(tmp_path / "d", files)
    run(tmp_path, [source], models_root)
    store, quiet = str(tmp_path / "store"), {"log": lambda *_: None}
    fs = features.open_set("h", "efficientnet_lite0", store)
    empty = r"the train split of .* holds no image {}: 6 read, 6 rejected \(tlfs describe lists why\)"
    for step in (lambda: fit(fs, ["head"], **quiet), lambda: sweep(fs, **quiet),
                 lambda: learning_curve(LearningCurveRequest("h", "efficientnet_lite0", ("head",), store=store), **quiet)):
        with pytest.raises(PipelineError, match=empty.format("to fit a head")):
            step()
    with pytest.raises(PipelineError, match=empty.format("to measure the dataset by")):
        advise(fs, **quiet)
    with pytest.raises(CannotCheck, match=empty.format("to compare")):
        find_duplicates(DuplicatesRequest("h", "efficientnet_lite0", store=store), **quiet)
    with pytest.raises(CannotCheck, match=empty.format("to check labels with")):
        find_label_issues(LabelIssuesRequest("h", "efficientnet_lite0", store=store), **quiet)
    with pytest.raises(PipelineError, match=r"the train split of h holds no image to fine-tune on: all 6 were "
                                            r"rejected: train/\w+/\d+.png: "):
        decode_splits(build_index("h", [str(source)]), 224, None, seed=0)


@pytest.mark.parametrize("kind", ["truncated_gz", "corrupt_zip", "not_an_archive"])
def test_broken_archives_are_refused_naming_the_file(tmp_path, kind):
    if kind == "truncated_gz":
        whole = write_tar(tmp_path / "whole.tar.gz", folder_images(per_class=20)).read_bytes()
        path = tmp_path / "broken.tar.gz"
        path.write_bytes(whole[: len(whole) // 2])
    elif kind == "corrupt_zip":
        path = tmp_path / "broken.zip"
        buffer = io.BytesIO()
        with zipfile.ZipFile(buffer, "w") as archive:
            archive.writestr("train/red/a.png", png_bytes((1, 2, 3)))
        path.write_bytes(buffer.getvalue()[:-30])
    else:
        path = tmp_path / "broken.tar"
        path.write_bytes(os.urandom(4096))
    with pytest.raises(SourceError, match=path.name):
        build_index("h", [str(path)])
