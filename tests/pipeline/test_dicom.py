"""DICOM files (an X-ray's, a CT slice's, an ultrasound's) are images: their first frame is
decoded as a radiology viewer shows it (the modality LUT, then the file's first window, else
its own range; MONOCHROME1 inverted), whatever the compression a scanner chose, and a file
without a picture (a report) or a damaged one is a reject with its reason."""

import io

import numpy as np
import pytest
from PIL import Image

from pydicom import uid
from pydicom.dataset import Dataset, FileMetaDataset

from tlfs.pipeline.image_decode import MAX_PIXELS, ImageRejected, decode
from tlfs.pipeline.indexing import build_index
from tests.conftest import dicom_file, scene_images, write_tree, xray
from tests.extraction import run_extract


def grey(pixels: np.ndarray) -> np.ndarray:
    """The image as decode returns it: all three channels the same, one of them."""
    assert pixels.ndim == 3 and (pixels[..., 0] == pixels[..., 1]).all() and (pixels[..., 0] == pixels[..., 2]).all()
    return pixels[..., 0]


def test_a_twelve_bit_xray_without_a_window_spans_its_own_darkest_to_brightest_value():
    samples = xray()
    pixels = grey(decode(dicom_file(samples, bits=12), 224))
    expected = np.rint((samples - samples.min()) * (255 / (samples.max() - samples.min())))
    assert pixels.shape == samples.shape and pixels.min() == 0 and pixels.max() == 255
    assert np.abs(pixels.astype(int) - expected).max() <= 1


def test_a_ct_slice_is_shown_through_its_rescale_and_its_first_window():
    """Stored values are Hounsfield units + 1024; the file's soft-tissue window (centre 40,
    width 400) shows -160 HU and below black, 240 and above white."""
    hounsfield = np.array([[-1000, -160, 40, 240, 1000]] * 4, dtype=np.int16)
    data = dicom_file((hounsfield + 1024).astype(np.uint16), bits=12, RescaleIntercept=-1024, RescaleSlope=1,
                      WindowCenter=[40, 400], WindowWidth=[400, 2000])
    row = grey(decode(data, 224))[0]
    assert row[0] == row[1] == 0 and row[3] == row[4] == 255 and 126 <= row[2] <= 129


def test_a_voi_lut_in_the_file_is_applied_before_its_window():
    """A VOI LUT (a table of the displayed value of each stored one) is the view the file gives
    first, before any window; its entries' bits are its range."""
    from pydicom.dataset import Dataset
    from pydicom.sequence import Sequence

    samples = xray(7)
    table = Dataset()
    table.LUTDescriptor = [4096, 0, 16]
    table.LUTData = ((4095 - np.arange(4096, dtype="<u2")) * 16).tobytes()  # the darkest white, in 16 bits
    data = dicom_file(samples, bits=12, VOILUTSequence=Sequence([table]), WindowCenter=2048, WindowWidth=100)
    assert (grey(decode(data, 224)) == np.rint((4095 - samples.astype(float)) * 16 * 255 / 65535)).all()


def test_monochrome1_is_inverted_as_film_shows_it():
    samples = xray(1)
    normal = grey(decode(dicom_file(samples, bits=12), 224))
    film = grey(decode(dicom_file(samples, "MONOCHROME1", bits=12), 224))
    assert (film == 255 - normal).all()


@pytest.mark.parametrize("syntax", [uid.JPEGLosslessSV1, uid.JPEGLSLossless])
def test_compressed_pixel_data_decodes_to_the_same_picture(syntax):
    """Scanners compress X-rays losslessly (JPEG lossless, JPEG-LS), which Pillow does not read:
    the same picture as the uncompressed file."""
    import imagecodecs

    samples = xray(2)
    frame = imagecodecs.jpeg8_encode(samples, lossless=True, predictor=1, bitspersample=12) \
        if syntax == uid.JPEGLosslessSV1 else imagecodecs.jpegls_encode(samples)
    compressed = decode(dicom_file(samples, bits=12, syntax=syntax, frames=[frame]), 224)
    assert (compressed == decode(dicom_file(samples, bits=12), 224)).all()


def test_a_large_jpeg_compressed_xray_is_decoded_at_a_reduced_scale_as_a_jpeg_file_of_it_is():
    """An 8-bit greyscale JPEG frame of 1,024 pixels a side (RSNA's chest X-rays) is decoded by
    libjpeg's DCT scaling, as a JPEG file is: the same pixels as the JPEG file's, at a third of
    a full decode's time."""
    picture = np.asarray(Image.fromarray(xray(8, (64, 64)) // 16).resize((1024, 1024)), np.uint8).copy()
    picture[:128, :128], picture[-128:, -128:] = 0, 255  # its own range 0-255: no stretch
    jpeg = io.BytesIO()
    Image.fromarray(picture).save(jpeg, "JPEG", quality=90)
    data = dicom_file(picture, bits=8, syntax=uid.JPEGBaseline8Bit, frames=[jpeg.getvalue()])
    assert (decode(data, 224) == decode(jpeg.getvalue(), 224)).all()


def test_colour_is_read_as_the_same_pixels_as_a_png_of_them():
    png = scene_images(per_class=1)["train/red/000.png"]
    rgb = np.asarray(Image.open(io.BytesIO(png)).convert("RGB"))
    assert (decode(dicom_file(rgb, "RGB"), 224) == decode(png, 224)).all()


def test_float_pixel_data_spans_its_own_range_and_nan_is_black():
    """A parametric map (float samples, no stored bits to window) is shown from its lowest to
    its highest value; a NaN sample is black."""
    samples = np.linspace(-1.5, 2.5, 20 * 16, dtype=np.float32).reshape(20, 16)
    samples[0, 0] = np.nan
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = uid.ParametricMapStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid.generate_uid()
    ds.Rows, ds.Columns, ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.BitsAllocated = 20, 16, 1, "MONOCHROME2", 32
    ds.FloatPixelData = samples.tobytes()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    pixels = grey(decode(buffer.getvalue(), 224))
    expected = np.rint((np.nan_to_num(samples, nan=-1.5) + 1.5) * 255 / 4)
    assert pixels[0, 0] == 0 and np.abs(pixels.astype(int) - expected).max() <= 1 and pixels.max() == 255


def test_of_several_frames_the_first_is_read():
    stack = np.stack([xray(3), xray(4)[:, ::-1]])
    first = decode(dicom_file(stack, bits=12, NumberOfFrames=2), 224)
    assert (first == decode(dicom_file(stack[0], bits=12), 224)).all()


def test_a_data_set_written_without_its_preamble_is_read():
    headerless = _without_preamble(xray(5))
    assert headerless[:2] == b"\x08\x00" and (decode(headerless, 224) == decode(dicom_file(xray(5), bits=12), 224)).all()


def _without_preamble(samples: np.ndarray) -> bytes:
    """The data set alone (implicit VR, no file meta), as an old ACR-NEMA tool writes it."""
    ds = Dataset()
    ds.SOPClassUID = uid.DigitalXRayImageStorageForPresentation
    ds.set_pixel_data(samples, "MONOCHROME2", 12)
    del ds.file_meta
    buffer = io.BytesIO()
    ds.save_as(buffer, implicit_vr=True, little_endian=True)
    return buffer.getvalue()


@pytest.mark.parametrize("payload, reason", [
    (lambda: _report(), r"^a DICOM file without a picture \(no pixel data\): Basic Text SR Storage$"),
    (lambda: dicom_file(xray(6), bits=12)[:-500], r"^corrupt or unreadable DICOM: ValueError: .*less than expected"),
    (lambda: _cut_before_pixels(dicom_file(xray(6), bits=12)), r"^corrupt or truncated DICOM: a Digital X-Ray Image Storage - For "
                                                 r"Presentation file without its pixel data$"),
    (lambda: dicom_file(xray(6), bits=12, Rows=8000, Columns=8000), r"^decompression bomb: 8000x8000 pixels, over "),
    (lambda: dicom_file(xray(6), bits=12, PhotometricInterpretation="HSV"), r"^a DICOM picture in HSV colour "),
    (lambda: b"\x08\x00" + bytes(range(256)) * 2, r"^not a recognised image format, nor a DICOM data set without its"),
])
def test_a_file_without_a_usable_picture_is_rejected_with_its_reason(payload, reason):
    with pytest.raises(ImageRejected, match=reason):
        decode(payload(), 224)
    assert MAX_PIXELS < 8000 * 8000


def _cut_before_pixels(data: bytes) -> bytes:
    return data[:data.index(b"\xe0\x7f\x10\x00")]  # the (7FE0,0010) Pixel Data tag


def _report() -> bytes:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
    ds.SOPClassUID = ds.file_meta.MediaStorageSOPClassUID = uid.BasicTextSRStorage
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid.generate_uid()
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def test_a_folder_of_dicom_files_is_indexed_and_extracted_with_rejects_counted(tmp_path, lite0, models_root):
    files = {f"{split}/{label}/{n}.dcm": dicom_file(xray(seed), bits=12)
             for seed, (split, label, n) in enumerate((s, c, n) for s in ("train", "test") for c in ("normal", "pneumonia")
                                                      for n in range(3))}
    files["train/normal/report.dcm"] = _report()
    source = write_tree(tmp_path / "xrays", files)
    assert len(build_index("xrays", [str(source)]).entries) == 13
    summary = run_extract("xrays", [str(source)], "efficientnet_lite0", str(tmp_path / "store"), models_root,
                          layers=["head"], show_progress=False, shard_size=8, batch_size=4)
    assert summary["rows"] == 12 and summary["rejected"] == 1
