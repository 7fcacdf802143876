"""Image files given by the user (``tlfs predict``, ``tlfs similar``), sent the way a
feature set's images went: listed from files, folders and globs, read and decoded by the
set's rule a chunk at a time, run in batches of images of one size through the set's
backbone version at its precision, their features rounded to float16 as stored. An image
that cannot be read or decoded keeps its reason in place of a result; the others go on."""

from __future__ import annotations

import itertools
from typing import Callable, Iterator

import fsspec
import numpy as np

from tlfs.features.storage import fs_path
from tlfs.pipeline.errors import PipelineError
from tlfs.pipeline.image_decode import FULL_DEPTH, ImageRejected, bit_depth_of, decode, decoded_alike
from tlfs.pipeline.sources.paths import UNREAD_SUFFIXES, an_image
from tlfs.pipeline.sources.reading import batch_reader, read_files
from tlfs.pipeline.sources.uris import expand_uri
from tlfs.pipeline.views import VIEWS

READ_AT_ONCE = 256  # images read and decoded together: bounds the memory held


def list_images(uris: tuple[str, ...] | list[str]) -> list[str]:
    """Every image file the URIs name: files as they are, folders searched below and globs
    expanded (hidden files and folders, and files that are not images, left out); in the
    order given, each folder sorted."""
    return [name for name, _ in listed_images(uris)]


def listed_images(uris: tuple[str, ...] | list[str]) -> list[tuple[str, dict]]:
    """:func:`list_images`'s files, each with what its filesystem lists of it (size, change
    tokens), from the listing itself: a folder is listed once, not asked file by file."""
    found: list[tuple[str, dict]] = []
    not_read: list[str] = []  # images in folders in formats not read, named where nothing else is found
    for uri in uris:
        pattern = any(c in uri for c in "*?[{")
        for name in expand_uri(uri):
            fs, path = fsspec.core.url_to_fs(name)
            try:
                info = fs.info(path)
            except FileNotFoundError:
                raise PipelineError(f"{name}: no such file or folder") from None
            if info.get("type") == "directory":  # each image named below the folder as it was given
                below = fs.find(path, detail=True)
                base = len(path.rstrip("/")) + 1
                for file in sorted(below):
                    named = f"{name.rstrip('/')}/{file[base:]}"
                    if an_image(file[base:]):
                        found.append((named, below[file]))
                    elif an_image(file[base:], UNREAD_SUFFIXES):
                        not_read.append(named)
            elif not pattern or an_image(path.rsplit("/", 1)[-1]):
                found.append((name, info))
    if not found:
        formats = (f" ({len(not_read)} in formats not read, such as {not_read[0]}: to be converted to JPEG or PNG)"
                   if not_read else "")
        raise PipelineError(f"no image files in {', '.join(uris)}{formats}")
    return found


def session_as_stored(feature_set, layers: list[str], device: str, batch_size: int | None,
                      log: Callable[[str], None] = print):
    """``(session, runtime, input size)``: the set's backbone version for ``layers`` at the
    precision its features were computed in (fp16 ones differ in the last bits), so that an
    image goes the way the set's images went."""
    from tlfs.models.runtime import resolve_runtime
    from tlfs.models.session import open_session
    from tlfs.pipeline.lineage import graph_of

    if not decoded_alike(feature_set.lineage.get("preprocessing", {}).get("decode"), bit_depth_of(feature_set.lineage)):
        log(f"note: {feature_set.uri}'s images were decoded by another rule than this version's; "
            "new images' features may differ a little from the stored ones")
    artifact, precision = graph_of(feature_set)
    runtime = resolve_runtime(device, precision, batch_size)
    return open_session(artifact, layers, runtime), runtime, artifact.card["preprocessing"]["input_size"]


def features_as_stored(session, batch: np.ndarray, layers: list[str]) -> np.ndarray:
    """A uint8 batch's features: its layers side by side, each rounded to float16 as the set
    stores them."""
    from tlfs.features.schema import FEATURE_DTYPE

    outputs = session.run(batch)
    return np.hstack([outputs[layer].astype(FEATURE_DTYPE).astype(np.float32) for layer in layers])


def view_features(session, batch: np.ndarray, layers: list[str], views: list[str]) -> dict[str, np.ndarray]:
    """Each view's features of a uint8 batch (:func:`features_as_stored`), each view through the
    backbone once."""
    return {view: features_as_stored(session, VIEWS[view](batch), layers) for view in dict.fromkeys(views)}


def decoded_chunks(paths: list[str], input_size: int, desc: str, show_progress: bool, decode_workers: int = 1,
                   device: str = "cpu", bit_depth: int = FULL_DEPTH) -> Iterator[tuple[list[str], list[np.ndarray | str]]]:
    """``(paths, their pixels or reasons)``, ``READ_AT_ONCE`` at a time (``show_progress``: a
    progress bar on stderr; ``bit_depth``: the set's, pipeline/image_decode.py). With ``decode_workers`` processes (0: the default for ``device``,
    pipeline/decode_pool.default_workers: one a core beside a GPU), chunks are read and decoded
    in them, ahead of the caller's work on the chunk before; 1: here, one after another."""
    from tqdm import tqdm

    from tlfs.pipeline.decode_pool import Decoder

    chunks = [paths[start:start + READ_AT_ONCE] for start in range(0, len(paths), READ_AT_ONCE)]
    with tqdm(total=len(paths), unit="img", desc=desc, disable=not show_progress, mininterval=1.0) as bar, \
            Decoder(decode_workers, device) as decoder:
        ahead = _decoded_ahead(decoder, chunks, input_size, bit_depth) if decoder.workers > 1 and len(chunks) > 1 else \
            (decoded(chunk, input_size, bit_depth) for chunk in chunks)
        for chunk, images in zip(chunks, ahead):
            yield chunk, images
            bar.update(len(chunk))


def _decoded_ahead(decoder, chunks: list[list[str]], input_size: int, bit_depth: int) -> Iterator[list[np.ndarray | str]]:
    """Each chunk's pixels or reasons, in order, decoded by ``decoder``'s worker processes with
    one chunk more in flight than there are workers: enough to keep them busy, while the pixels
    held stay bounded (256 photos at 224 x 224 are 38 MB a chunk)."""
    from collections import deque
    from concurrent.futures.process import BrokenProcessPool

    upcoming = iter(chunks)
    pending = deque(decoder.submit(decoded, chunk, input_size, bit_depth)
                    for chunk in itertools.islice(upcoming, decoder.workers + 1))
    while pending:
        try:
            images = pending.popleft().result()
        except BrokenProcessPool as exc:
            raise PipelineError(f"a decode worker process died ({exc}); run the command again") from exc
        if (chunk := next(upcoming, None)) is not None:
            pending.append(decoder.submit(decoded, chunk, input_size, bit_depth))
        yield images


def count_of(count: int, what: str = "image") -> str:
    return f"{count} {what}{'' if count == 1 else 's'}"


def decoded(paths: list[str], input_size: int, bit_depth: int = FULL_DEPTH) -> list[np.ndarray | str]:
    """Each image's pixels, or the reason it has none."""
    payloads = _read(paths)
    images: list[np.ndarray | str] = []
    for path in paths:
        try:
            images.append(decode(payloads[path], input_size, bit_depth))
        except ImageRejected as exc:
            images.append(str(exc))
    return images


def _read(paths: list[str]) -> dict[str, object]:
    """Each file's bytes, or why it could not be read
    (:class:`~tlfs.pipeline.image_decode.Unreadable`), those of one filesystem read together
    as a folder source reads its batches."""
    by_fs: dict[str, list[str]] = {}
    for uri in paths:
        by_fs.setdefault(uri.split("://", 1)[0] if "://" in uri else "file", []).append(uri)
    payloads: dict[str, object] = {}
    for uris in by_fs.values():
        fs, _ = batch_reader(uris[0])
        payloads.update(zip(uris, read_files(fs, [fs_path(uri)[1] for uri in uris])))
    return payloads


def per_image(images: list[np.ndarray | str], batch_size: int,
              compute: Callable[[np.ndarray], np.ndarray]) -> list[np.ndarray | str]:
    """``compute``'s row for each decoded image, in batches of at most ``batch_size`` images
    of one size (small ones are resized in the graph, so sizes may differ); a reason stays
    in place of its image."""
    results: list[np.ndarray | str] = list(images)
    by_shape: dict[tuple, list[int]] = {}
    for number, image in enumerate(images):
        if not isinstance(image, str):
            by_shape.setdefault(image.shape, []).append(number)
    for numbers in by_shape.values():
        for start in range(0, len(numbers), batch_size):
            batch_numbers = numbers[start:start + batch_size]
            rows = compute(np.stack([images[n] for n in batch_numbers]))
            for number, row in zip(batch_numbers, rows):
                results[number] = row
    return results
