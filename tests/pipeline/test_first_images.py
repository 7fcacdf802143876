"""Planning's look at the first images. 12-bit images (a microscope's camera, an X-ray
detector: 0-4095 stored in 16 bits) scaled as 16-bit come out 16 times darker: planning reads
a few and says so, ``--bit-depth 12`` scales them by their own range, and the depth is the
set's: kept by later runs and used to decode new images the way the set's were. TIFF stacks and
DICOM files of several frames, of which only the first page or frame is read, are told."""

import io

import numpy as np
import pytest
from PIL import Image

from tlfs import features
from tlfs.pipeline.image_decode import decode
from tlfs.pipeline.indexing import build_index
from tlfs.pipeline.first_images import SAMPLED, first_images_notices
from tlfs.pipeline.similar import SimilarRequest, similar_images
from tests.conftest import dicom_file, scene_images, write_tree, xray
from tests.extraction import run_extract


def greyscale(files: dict[str, bytes], bits: int | None) -> dict[str, bytes]:
    """Each image as greyscale: 8-bit (``bits`` None) or ``bits``-bit samples in a 16-bit PNG."""
    converted = {}
    for name, data in files.items():
        grey = np.asarray(Image.open(io.BytesIO(data)).convert("L"))
        if bits is not None:
            grey = np.rint(grey.astype(np.float64) * (2 ** bits - 1) / 255).astype(np.uint16)
        buffer = io.BytesIO()
        Image.fromarray(grey).save(buffer, "PNG")
        converted[name] = buffer.getvalue()
    return converted


def test_a_twelve_bit_image_decodes_as_its_8_bit_self_with_bit_depth_12_and_16_times_darker_without():
    eight = greyscale(scene_images(per_class=1), None)
    twelve = greyscale(scene_images(per_class=1), 12)
    for name in eight:
        assert Image.open(io.BytesIO(twelve[name])).mode == "I;16"
        expected = decode(eight[name], 224)
        assert np.array_equal(decode(twelve[name], 224, bit_depth=12), expected), name
        assert abs(decode(twelve[name], 224).mean() * 16 - expected.mean()) < 16  # as 16-bit: a sixteenth as bright


def test_a_sample_above_the_bit_depth_is_white_not_wrapped():
    payload = _png16(np.array([[0, 4095, 5000, 65535]], np.uint16))
    assert decode(payload, 224, bit_depth=12)[0, :, 0].tolist() == [0, 255, 255, 255]


@pytest.mark.parametrize("bits,asked,says", [
    (12, 16, r"hold no sample above [\d,]+: if they are 12-bit images \(0-4,095\), scaled as 16-bit they come out 16 "
             r"times darker than their range; --bit-depth 12 scales them by 4,095"),
    (10, 16, r"no sample above [\d,]+: if they are 10-bit images .* 64 times darker .* --bit-depth 10"),
    (12, 12, None),
    (16, 16, None),
    (12, 10, r"holds samples up to [\d,]+, above 1,023, the top of 10-bit samples \(--bit-depth 10\): those above "
             r"come out white"),
])
def test_planning_says_what_the_first_greyscale_16_bit_images_suggest(tmp_path, bits, asked, says):
    files = greyscale(scene_images(per_class=4), bits if bits < 16 else None)
    if bits == 16:  # full-range 16-bit samples
        files = {name: _png16(np.full((8, 8), 60000, np.uint16)) for name in files}
    index = build_index("g", [str(write_tree(tmp_path / "g", files))])
    notice = " ".join(first_images_notices(index, asked))
    if says is None:
        assert notice == ""
    else:
        import re

        assert notice.startswith("note: ") and re.search(says, notice), notice
        if "if they are" in says:
            assert f"the {min(SAMPLED, len(files))} greyscale 16-bit images read" in notice


def test_a_dataset_without_16_bit_images_is_not_read_for_the_check(tmp_path, monkeypatch):
    import tlfs.pipeline.first_images as first_images

    read = []
    monkeypatch.setattr(first_images, "_look", lambda payload: read.append(payload))
    eight_bit = build_index("e", [str(write_tree(tmp_path / "e", {"train/a/1.jpg": b"x", "test/a/2.jpg": b"x"}))])
    assert first_images_notices(eight_bit, 16) == [] and read == []


def _png16(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, "PNG")
    return buffer.getvalue()


def test_a_twelve_bit_set_extracted_with_its_depth_holds_the_features_of_its_8_bit_self(tmp_path, lite0, models_root):
    scenes = scene_images(per_class=3)
    eight = write_tree(tmp_path / "eight", greyscale(scenes, None))
    twelve = write_tree(tmp_path / "twelve", greyscale(scenes, 12))
    store8, store12 = str(tmp_path / "s8"), str(tmp_path / "s12")
    run_extract("g", [str(eight)], "efficientnet_lite0", store8, models_root, show_progress=False)
    said = []
    as16 = run_extract("g", [str(twelve)], "efficientnet_lite0", store12, models_root, show_progress=False, log=said.append)
    assert any("--bit-depth 12 scales them by 4,095" in line for line in said), said
    said.clear()
    as12 = run_extract("g", [str(twelve)], "efficientnet_lite0", store12, models_root, show_progress=False,
                       log=said.append, bit_depth=12)
    assert as12["version"] == as16["version"] + 1 and as12["images_extracted"] == len(scenes)
    assert any("scaled as 16-bit, this run's as 12-bit (--bit-depth)" in line for line in said), said
    assert not any("--bit-depth 12 scales them" in line for line in said)

    reference, set12 = features.open_set("g", "efficientnet_lite0", store8), features.open_set("g", "efficientnet_lite0", store12)
    for split in ("train", "test"):
        X8, _, ids8 = reference.matrix("head", split)
        X12, _, ids12 = set12.matrix("head", split)
        order8, order12 = np.argsort(ids8), np.argsort(ids12)
        assert list(ids8[order8]) == list(ids12[order12]) and np.array_equal(X8[order8], X12[order12])
    assert set12.lineage["preprocessing"]["bit_depth"] == 12
    assert "16-bit samples hold 12 bits" in set12.lineage["preprocessing"]["decode"]

    said.clear()  # a later run that does not say keeps the set's depth: nothing to extract
    again = run_extract("g", [str(twelve)], "efficientnet_lite0", store12, models_root, show_progress=False, log=said.append)
    assert again["unchanged"] and any("read as 12-bit, as version 2 read them" in line for line in said), said

    # a new 12-bit image is decoded as the set's were: a stored image, given as a file, finds itself
    found = similar_images(SimilarRequest("g", "efficientnet_lite0", (str(twelve / "train/red/001.png"),), store=store12,
                                          k=1), log=lambda *_: None)
    assert found["image_id"].iloc[0] == "train/red/001.png" and found["similarity"].iloc[0] == pytest.approx(1.0, abs=1e-4)


def test_a_pgm_says_its_own_maximum_and_the_bit_depth_leaves_it_alone():
    """A PGM declares its maximum (4095 for 12-bit samples) and Pillow scales by it: such an
    image is right at any bit depth, not made white by --bit-depth 12."""
    samples = (np.arange(64).reshape(8, 8) * 64).astype(">u2")  # 0-4032 of 4095
    payload = b"P5\n8 8\n4095\n" + samples.tobytes()
    expected = np.rint(samples.astype(np.float64) * 255 / 4095)
    for bits in (16, 12):
        assert np.abs(decode(payload, 224, bit_depth=bits)[..., 0] - expected).max() <= 1, bits


@pytest.mark.parametrize("photometric", ["minisblack", "rgb"])
def test_a_tiff_that_declares_12_bits_is_scaled_by_them_and_not_told(tmp_path, photometric):
    """A TIFF whose BitsPerSample says 12 is scaled by 4095 whatever --bit-depth says (greyscale
    through Pillow, colour through tifffile), and planning has nothing to tell of it."""
    import tifffile

    shape = (8, 8) if photometric == "minisblack" else (8, 8, 3)
    samples = (np.arange(np.prod(shape)).reshape(shape) * 4095 // (np.prod(shape) - 1)).astype(np.uint16)
    buffer = io.BytesIO()
    tifffile.imwrite(buffer, samples, bitspersample=12, photometric=photometric)
    expected = np.rint(samples.astype(np.float64) * 255 / 4095).astype(np.uint8)
    for bits in (16, 10):
        decoded = decode(buffer.getvalue(), 224, bit_depth=bits)
        assert np.abs(decoded.astype(int) - (expected[..., None] if expected.ndim == 2 else expected)).max() <= 1, bits
    files = {f"{split}/a/{n}.tif": buffer.getvalue() for split in ("train", "test") for n in range(3)}
    assert first_images_notices(build_index("t", [str(write_tree(tmp_path / "t", files))]), 16) == []


def test_tiff_stacks_are_told_only_their_first_page_being_read(tmp_path):
    """An ImageJ stack (z-planes, channels or times as pages) decodes as its first page, as any
    multi-frame file: planning says so, once, with an example."""
    import tifffile

    stack, single = io.BytesIO(), io.BytesIO()
    tifffile.imwrite(stack, np.zeros((3, 16, 16), np.uint8), photometric="minisblack")  # three pages
    tifffile.imwrite(single, np.zeros((16, 16), np.uint8), photometric="minisblack")
    files = {"train/a/1.tif": stack.getvalue(), "train/a/2.tif": single.getvalue(), "test/a/3.tif": single.getvalue()}
    notices = first_images_notices(build_index("s", [str(write_tree(tmp_path / "s", files))]), 16)
    assert notices == ["note: 1 of the 3 images read to check is a TIFF stack (such as train/a/1.tif, 3 pages: z-planes, "
                       "channels or times); only the first page of each is read: to use another, or several as colours, "
                       "save the images as such"]
    assert decode(stack.getvalue(), 224).shape == (16, 16, 3)


def test_dicom_files_of_several_frames_are_told_only_their_first_frame_being_read(tmp_path):
    """A CT or MR volume, or an ultrasound's cine, in one DICOM file decodes as its first frame:
    planning says so from the files' headers, beside any TIFF stack, each once."""
    import tifffile

    stack = io.BytesIO()
    tifffile.imwrite(stack, np.zeros((2, 16, 16), np.uint8), photometric="minisblack")
    volume = dicom_file(np.stack([xray(0), xray(1), xray(2)]), bits=12, NumberOfFrames=3)
    files = {"train/a/1.dcm": volume, "train/a/2.dcm": dicom_file(xray(3), bits=12), "train/a/3.dcm": volume,
             "test/a/4.tif": stack.getvalue()}
    notices = first_images_notices(build_index("v", [str(write_tree(tmp_path / "v", files))]), 16)
    assert notices == ["note: 1 of the 4 images read to check is a TIFF stack (such as test/a/4.tif, 2 pages: z-planes, "
                       "channels or times); only the first page of each is read: to use another, or several as colours, "
                       "save the images as such",
                       "note: 2 of the 4 images read to check are DICOM files of several frames (such as train/a/1.dcm, "
                       "3 frames: a volume's slices or a cine's frames); only the first frame of each is read: to use "
                       "the others, save one file a slice or frame"]
