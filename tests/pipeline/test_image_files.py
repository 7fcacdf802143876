"""The image files a user names (``predict``, ``similar``): listed from files, folders and
globs, and run through a computation in batches of one size, a reason kept in place of an
image that has none."""

import numpy as np
import pytest

from tlfs.pipeline.errors import PipelineError
from tlfs.pipeline.image_files import decoded, list_images, per_image
from tests.conftest import write_tree


def test_folders_are_searched_for_images_globs_expanded_and_a_missing_path_named(tmp_path):
    tree = write_tree(tmp_path / "photos", {"a/1.jpg": b"x", "a/b/2.PNG": b"x", "a/.hidden.jpg": b"x", ".thumbs/3.jpg": b"x",
                                            "notes.txt": b"x", "4.webp": b"x"})
    assert list_images([str(tree)]) == [f"{tree}/4.webp", f"{tree}/a/1.jpg", f"{tree}/a/b/2.PNG"]
    assert list_images([f"{tree}/a/*.jpg", f"{tree}/4.webp"]) == [f"{tree}/a/1.jpg", f"{tree}/4.webp"]
    with pytest.raises(PipelineError, match="nowhere.jpg: no such file or folder"):
        list_images([str(tmp_path / "nowhere.jpg")])
    (tmp_path / "empty").mkdir()
    with pytest.raises(PipelineError, match="no image files in"):
        list_images([str(tmp_path / "empty")])


def test_a_folder_of_raw_camera_photos_in_a_format_not_read_is_told_to_convert_them(tmp_path):
    camera = write_tree(tmp_path / "camera", {"IMG_1.DNG": b"x", "IMG_2.dng": b"x", "notes.txt": b"x"})
    with pytest.raises(PipelineError, match=r"no image files in .*camera \(2 in formats not read, such as .*IMG_1\.DNG: "
                                            r"to be converted to JPEG or PNG\)"):
        list_images([str(camera)])


def test_a_folder_of_phone_photos_in_heic_is_read(tmp_path):
    from tests.conftest import heic

    phone = write_tree(tmp_path / "phone", {"IMG_1.HEIC": heic(), "IMG_2.heic": heic(), "notes.txt": b"x"})
    paths = list_images([str(phone)])
    assert [p.rsplit("/", 1)[-1] for p in paths] == ["IMG_1.HEIC", "IMG_2.heic"]
    assert all(image.shape == (48, 64, 3) for image in decoded(paths, 224))


def test_images_are_computed_in_batches_of_one_size_and_a_reason_keeps_its_place():
    images = [np.full((4, 4, 3), 1, np.uint8), "not a recognised image format", np.full((2, 2, 3), 2, np.uint8),
              np.full((4, 4, 3), 3, np.uint8), np.full((4, 4, 3), 4, np.uint8)]
    batches = []

    def compute(batch):
        batches.append(batch.shape)
        return batch.reshape(len(batch), -1).max(1, keepdims=True).astype(np.float32)

    results = per_image(images, 2, compute)
    assert batches == [(2, 4, 4, 3), (1, 4, 4, 3), (1, 2, 2, 3)]
    assert results[1] == "not a recognised image format"
    assert [float(r[0]) for n, r in enumerate(results) if n != 1] == [1, 2, 3, 4]


def test_decoding_in_worker_processes_gives_the_same_chunks_pixels_and_reasons_in_order(tmp_path, monkeypatch):
    from tests.conftest import noisy_images
    from tlfs.pipeline import image_files

    monkeypatch.setattr(image_files, "READ_AT_ONCE", 5)  # 4 chunks, more than the 2 workers hold at once
    tree = write_tree(tmp_path / "pool", {name: data for name, data in list(noisy_images(per_class=3).items())[:17]})
    (tree / "train" / "red" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n cut")
    paths = image_files.list_images([str(tree)])
    here = list(image_files.decoded_chunks(paths, 32, "here", False, decode_workers=1))
    ahead, in_processes = image_files._decoded_ahead, []
    monkeypatch.setattr(image_files, "_decoded_ahead", lambda decoder, *a: in_processes.append(decoder.workers) or
                        ahead(decoder, *a))
    workers = list(image_files.decoded_chunks(paths, 32, "workers", False, decode_workers=2))
    assert in_processes == [2]
    assert [chunk for chunk, _ in workers] == [chunk for chunk, _ in here] and len(here) == 4
    for (_, ours), (_, theirs) in zip(here, workers):
        for mine, other in zip(ours, theirs):
            assert (mine == other) if isinstance(mine, str) else np.array_equal(mine, other)
    assert sum(isinstance(image, str) for _, images in workers for image in images) == 1


def _die(*_):
    import os

    os._exit(9)  # a decode worker killed (out of memory, say)


def test_a_decode_worker_that_dies_is_one_error_naming_it(tmp_path, monkeypatch):
    from tests.conftest import noisy_images
    from tlfs.pipeline import image_files
    from tlfs.pipeline.decode_pool import Decoder

    monkeypatch.setattr(image_files, "READ_AT_ONCE", 4)
    tree = write_tree(tmp_path / "pool", dict(list(noisy_images(per_class=2).items())[:12]))
    monkeypatch.setattr(Decoder, "submit", lambda self, fn, *args: self._executor().submit(_die))
    with pytest.raises(PipelineError, match=r"a decode worker process died .*; run the command again"):
        list(image_files.decoded_chunks(image_files.list_images([str(tree)]), 32, "dies", False, decode_workers=2))


def test_new_images_of_an_int8_set_go_through_the_very_graph_that_computed_it(tmp_path, int8_models):
    """A model store whose int8 graph was built again since names another file: an int8 set's
    new images still go through the set's own graph (kept under its digest's name), and where
    that file is gone the command says so rather than compute other features."""
    import shutil

    from PIL import Image

    from tlfs import features
    from tlfs.models.artifact import read_card
    from tlfs.pipeline.image_files import features_as_stored, session_as_stored
    from tlfs.pipeline.lineage import graph_of
    from tests.conftest import folder_images, int8_graph_built_again
    from tests.extraction import run_extract

    models = tmp_path / "models"
    shutil.copytree(int8_models, models)
    source = write_tree(tmp_path / "images", folder_images(per_class=2))
    summary = run_extract("colors", [str(source)], "efficientnet_lite0", str(tmp_path / "store"), str(models),
                          layers=["head"], precision="int8", show_progress=False)
    feature_set = features.open_set("colors", "efficientnet_lite0", store=str(tmp_path / "store"))
    folder = models / summary["backbone_version"]
    own = read_card(str(folder))["variants"]["int8"]["file"]
    assert int8_graph_built_again(folder, alongside=True) != own

    artifact, precision = graph_of(feature_set)
    assert precision == "int8" and artifact.card["variants"]["int8"]["file"] == own
    session, runtime, size = session_as_stored(feature_set, ["head"], "cpu", None)
    stored, _, ids = feature_set.matrices(["head"], "train")
    batch = np.stack([np.asarray(Image.open(source / i).convert("RGB")) for i in ids])
    assert runtime.precision == "int8"
    np.testing.assert_array_equal(features_as_stored(session, batch, ["head"]), stored)  # the stored features, bit for bit

    (folder / own).unlink()
    with pytest.raises(PipelineError, match="was computed by the int8 graph of sha256 .* which .* no longer holds"):
        session_as_stored(feature_set, ["head"], "cpu", None)
