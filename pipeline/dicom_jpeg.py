"""imagecodecs as a pydicom decoding plugin: the JPEG lossless, JPEG-LS and 12-bit JPEG pixel
data of X-rays and CTs, which pydicom's own plugin for Pillow does not decode. imagecodecs
(libjpeg-turbo, CharLS; BSD-licensed) is already a dependency, for tifffile's compressions;
pydicom's other plugins for these (pylibjpeg-libjpeg) are GPL. The module is what pydicom's
``Decoder.add_plugin`` asks of one: ``is_available``, ``DECODER_DEPENDENCIES`` and the function."""

from __future__ import annotations

import functools
import threading

from pydicom import uid

LABEL = "imagecodecs"
JPEG_LS = (uid.JPEGLSLossless, uid.JPEGLSNearLossless)
SYNTAXES = (uid.JPEGExtended12Bit, uid.JPEGLossless, uid.JPEGLosslessSV1, *JPEG_LS)
DECODER_DEPENDENCIES = {syntax: ("imagecodecs",) for syntax in SYNTAXES}
_registering = threading.Lock()


def is_available(syntax: str) -> bool:
    return syntax in SYNTAXES


def decode_frame(src: bytes, runner) -> bytes:
    """One frame's samples, colour by pixel, in 8 or 16 bits as the codestream's precision asks."""
    import imagecodecs

    if runner.transfer_syntax in JPEG_LS:
        pixels = imagecodecs.jpegls_decode(src)
    else:
        pixels = imagecodecs.jpeg8_decode(src)  # libjpeg-turbo: lossless (any predictor, 2-16 bits) and 12-bit
        if pixels.ndim == 3 and runner.transfer_syntax == uid.JPEGExtended12Bit:
            runner.set_option("photometric_interpretation", "RGB")  # a lossy colour JPEG comes out as RGB
    if pixels.ndim == 3:
        runner.set_option("planar_configuration", 0)
    runner.set_option("bits_allocated", 8 * pixels.dtype.itemsize)
    return pixels.tobytes()


@functools.cache
def register() -> None:
    """This plugin added to pydicom's decoders of its transfer syntaxes, once a process (the
    lock: two threads' first calls at once)."""
    from pydicom.pixels.decoders.base import get_decoder

    with _registering:
        for syntax in SYNTAXES:
            decoder = get_decoder(syntax)
            if LABEL not in decoder.available_plugins:
                decoder.add_plugin(LABEL, (__name__, "decode_frame"))
