"""The accuracy of a classifier from `tlfs export-classifier` on a folder of
`<class>/<image>` (e.g. CIFAR-10's test split unpacked), run with onnxruntime, NumPy and
Pillow alone, as a deployment would: no tlfs imported.

    python scripts/onnx-classifier-accuracy.py MODEL.onnx FOLDER [--batch 64]

Prints images/s, the accuracy and one JSON line; the class folders must be named as the
model's classes (its metadata tlfs.classes). A classifier exported with `--unfamiliar`
also gives the share of images it marks unfamiliar."""

import argparse
import json
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort
from PIL import Image, ImageOps


def load(path, input_size: int) -> np.ndarray:
    """uint8 RGB pixels as tlfs decodes an image (pipeline/image_decode.py), with Pillow
    alone: a JPEG over twice the input size decoded at a reduced scale, turned upright by its
    EXIF orientation, transparency over white, and an image larger than the input resized
    to it square (bilinear, antialiased). Images so decoded give the classifier the pixels
    tlfs gave its head (16-bit greyscale, which tlfs scales to 8 bits, aside)."""
    image = Image.open(path)
    if image.format == "JPEG" and max(image.size) > 2 * input_size:
        image.draft("RGB", (input_size, input_size))
    image = ImageOps.exif_transpose(image)
    if image.mode in ("LA", "PA", "RGBA") or (image.mode == "P" and "transparency" in image.info):
        image = image.convert("RGBA")
        background = Image.new("RGB", image.size, (255, 255, 255))
        background.paste(image, mask=image.getchannel("A"))
        image = background
    image = image.convert("RGB")
    if max(image.size) > input_size:
        image = image.resize((input_size, input_size), Image.Resampling.BILINEAR)
    return np.asarray(image)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("model")
    parser.add_argument("folder", type=Path)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args()
    session = ort.InferenceSession(args.model, providers=["CPUExecutionProvider"])
    meta = session.get_modelmeta().custom_metadata_map
    classes, input_size = json.loads(meta["tlfs.classes"]), int(meta["tlfs.input_size"])
    files = sorted(p for p in args.folder.rglob("*") if p.suffix.lower() in {".jpg", ".jpeg", ".png"})
    started, right, unfamiliar, by_size = time.perf_counter(), 0, 0, {}
    for path in files:  # a batch holds images of one size
        pixels = load(path, input_size)
        by_size.setdefault(pixels.shape, []).append((path, pixels))
    for images in by_size.values():
        for start in range(0, len(images), args.batch):
            chunk = images[start:start + args.batch]
            outputs = session.run(None, {"images": np.stack([pixels for _, pixels in chunk])})
            right += sum(classes[label] == path.parent.name for label, (path, _) in zip(outputs[1], chunk))
            unfamiliar += int((~outputs[3]).sum()) if len(outputs) > 3 else 0  # --unfamiliar's 'familiar' output
    seconds = time.perf_counter() - started
    familiarity = len(session.get_outputs()) > 3
    print(f"{len(files)} images in {seconds:.1f}s ({len(files) / seconds:.1f} images/s): accuracy {right / len(files):.4f}"
          + (f", {unfamiliar} unfamiliar" if familiarity else ""))
    print(json.dumps({"model": args.model, "images": len(files), "accuracy": right / len(files), "seconds": round(seconds, 1),
                      "head": meta.get("tlfs.head"), "recorded_test_accuracy": json.loads(meta["tlfs.test_accuracy"]),
                      **({"unfamiliar": unfamiliar} if familiarity else {})}))


if __name__ == "__main__":
    main()
