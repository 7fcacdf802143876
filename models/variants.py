"""Variants of an exported graph, derived from its fp32 ``model.onnx``. Importable
without torch (extraction workers need only onnx and onnxruntime).

- **fp16** (``model.fp16.onnx``): float tensors in half precision, converted with
  onnxconverter-common (``keep_io_types``: uint8 images in, float32 features out). The
  first node after the input, the uint8 -> float Cast, is kept as it is: converted, it
  declares a float16 output while still casting to float and the graph does not load.
  Built at export, checked against fp32 on real photos here (onnxruntime's CPU provider
  runs it, casting where it has no fp16 kernel), recorded in the model card with that
  parity; chosen automatically on CUDA.
- **int8** (``model.int8.<digest>.onnx``): for the CPU, quantized by onnxruntime's static
  quantization (``models/quantize.py``), its ranges taken on calibration pictures other than
  the parity photos. Built when a run first asks for ``--precision int8``, checked against
  fp32 on the parity photos (a looser bound than fp16's: int8 features are an
  approximation, whose heads the benchmarks compare), recorded in the model card.
- **fixed shape**: batch, height and width fixed, so that onnxruntime folds the
  ``Shape`` nodes that size the in-graph resize into constants: no node left for the
  CPU, no host round trip, and CUDA graphs become possible. Made on demand per input
  shape, in a local cache.
"""

from __future__ import annotations

import tempfile
import warnings
from pathlib import Path

import numpy as np

from tlfs.features.storage import atomic_put_file, atomic_write_bytes, sha256_uri
from tlfs.models.artifact import CARD_NAME, Artifact, local_cache
from tlfs.models.errors import ModelError

FP16_NAME = "model.fp16.onnx"
PARITY_MIN_COSINE = 0.9999  # the fp32 graph vs PyTorch, and fp32 on CUDA vs the CPU
FP16_MIN_COSINE = 0.999  # fp16 vs fp32 on the sample photos, per layer, worst image
# The int8 file is named by its digest (model.int8.<16 hex digits>.onnx): it is built by whichever run
# first asks for it, so two runs on two machines may build it at once, into different bytes (their
# calibrations' float sums in another order); each publishes its own file and the card names one
# of them, never a file the other overwrote. A plan keeps the card it ran with, and its file stays.
INT8_PREFIX = "model.int8"
# int8 vs fp32 on the sample photos, per layer, worst image: EfficientNet-Lite0's worst layer
# measured 0.90 (its heads as accurate as fp32's); a quantization gone wrong falls far below
INT8_MIN_COSINE = 0.85


def with_variants(artifact: Artifact, log=print) -> Artifact:
    """The artifact with its fp16 variant (built if an older export lacks it) and, where
    a GPU is present and it was not yet checked, its CUDA-vs-CPU parity in the card."""
    from tlfs.models.runtime import cuda_probe
    from tlfs.models.session import local_onnx

    if "fp16" not in artifact.card.get("variants", {}):
        artifact = build_fp16(artifact, local_onnx(artifact), log)
    if "parity_cuda" not in artifact.card and cuda_probe()[0]:
        artifact = check_cuda_parity(artifact, local_onnx(artifact), local_onnx(artifact, precision="fp16"), log)
    return artifact


def to_fp16(fp32_path: Path, out_path: Path) -> None:
    import onnx
    from onnxconverter_common import float16

    model = onnx.load(str(fp32_path))
    _outputs_apart(model)
    typed = onnx.shape_inference.infer_shapes(model)
    elem = {v.name: v.type.tensor_type.elem_type for v in [*typed.graph.input, *typed.graph.value_info]}
    floats = {onnx.TensorProto.FLOAT, onnx.TensorProto.FLOAT16, onnx.TensorProto.DOUBLE}
    # Casts from the uint8 images to float stay as they are (see the module's docstring), and so
    # do casts to float32 of a float (a transformer's attention scale): converted, they too declare
    # float16 outputs while casting to float
    input_casts = [n.name for n in model.graph.node if n.op_type == "Cast" and (
        elem.get(n.input[0]) not in floats or _cast_target(n) == onnx.TensorProto.FLOAT)]
    with warnings.catch_warnings():  # it reports every weight below fp16's range that it rounds
        warnings.simplefilter("ignore", UserWarning)
        converted = float16.convert_float_to_float16(model, keep_io_types=True, node_block_list=input_casts)
    onnx.save(converted, str(out_path))


def _outputs_apart(model) -> None:
    """Give each graph output that other nodes also read (a transformer's pooled tokens,
    which its head norm reads) an Identity of its own: with keep_io_types the converter
    keeps the output float32 and would hand that float32 tensor to a float16 node."""
    import onnx

    consumed = {name for node in model.graph.node for name in node.input}
    for output in model.graph.output:
        if output.name not in consumed:
            continue
        inner = f"{output.name}__inner"
        for node in model.graph.node:
            node.output[:] = [inner if name == output.name else name for name in node.output]
            node.input[:] = [inner if name == output.name else name for name in node.input]
        model.graph.node.append(onnx.helper.make_node("Identity", [inner], [output.name], name=f"{output.name}__output"))


def _cast_target(node) -> int | None:
    return next((a.i for a in node.attribute if a.name == "to"), None)


def parity(reference: Path, candidate: Path, batches: list[np.ndarray], providers=("CPUExecutionProvider",)) -> dict:
    """Per output: the worst cosine similarity and largest absolute difference of
    ``candidate`` (run on ``providers``) against ``reference`` (fp32, CPU)."""
    import onnxruntime as ort

    ref = ort.InferenceSession(str(reference), providers=["CPUExecutionProvider"])
    cand = ort.InferenceSession(str(candidate), providers=list(providers))
    names = [o.name for o in ref.get_outputs()]
    return parity_over(names, ((cand.run(names, {"images": b}), ref.run(names, {"images": b})) for b in batches))


def parity_over(names: list[str], runs) -> dict:
    """Per output name: the worst cosine similarity and the largest absolute difference
    over ``runs``, pairs of (got, wanted) output lists in ``names``' order."""
    report = {n: {"max_abs_diff": 0.0, "cosine_similarity": 1.0} for n in names}
    for got_outputs, wanted_outputs in runs:
        for name, got, want in zip(names, got_outputs, wanted_outputs):
            entry = report[name]
            entry["max_abs_diff"] = max(entry["max_abs_diff"], float(np.abs(got.astype(np.float64) - want).max()))
            entry["cosine_similarity"] = min(entry["cosine_similarity"], min_cosine(got, want))
    return report


def min_cosine(a: np.ndarray, b: np.ndarray) -> float:
    a64, b64 = a.astype(np.float64), b.astype(np.float64)
    num = (a64 * b64).sum(1)
    den = np.linalg.norm(a64, axis=1) * np.linalg.norm(b64, axis=1)
    return float(np.min(np.where(den > 0, num / np.maximum(den, 1e-30), 1.0)))


def build_fp16(artifact: Artifact, fp32_local: Path, log=print) -> Artifact:
    """Make, check and publish the fp16 variant of ``artifact``; returns the artifact
    with its card updated (the card is rewritten last, atomically)."""
    import onnxconverter_common

    return _build_variant(artifact, fp32_local, "fp16", FP16_MIN_COSINE, to_fp16, lambda digest: FP16_NAME, {
        "converter": f"onnxconverter-common {onnxconverter_common.__version__} convert_float_to_float16, "
                     "keep_io_types, the input Cast kept"}, log)


def with_int8(artifact: Artifact, log=print) -> Artifact:
    """The artifact with its int8 variant, built (a few seconds) where it has none yet."""
    from tlfs.models.session import local_onnx

    if "int8" in artifact.card.get("variants", {}):
        return artifact
    log(f"int8 variant of {artifact.version}: quantizing it for the CPU (once; a few seconds) ...")
    return build_int8(artifact, local_onnx(artifact), log)


def build_int8(artifact: Artifact, fp32_local: Path, log=print) -> Artifact:
    """Make, check and publish the int8 variant of ``artifact`` (see ``models/quantize.py``)."""
    import onnxruntime

    from tlfs.models import quantize, sample_images

    input_size = int(artifact.card["preprocessing"]["input_size"])
    batches = sample_images.calibration_batches(input_size)

    def quantized(source: Path, out: Path) -> None:
        quantize.to_int8(source, out, batches)

    return _build_variant(artifact, fp32_local, "int8", INT8_MIN_COSINE, quantized,
                          lambda digest: f"{INT8_PREFIX}.{digest[:16]}.onnx", {
        "quantizer": f"onnxruntime {onnxruntime.__version__} {quantize.QUANTIZER}",
        "calibration": f"{len(batches) * sample_images.CALIBRATION_BATCH} crops of scikit-image's pictures "
                       f"({', '.join(sample_images.CALIBRATION_COLOUR + ('motorcycle',) + sample_images.CALIBRATION_GREY)}) "
                       f"at 32 and {input_size} px, seed 0"}, log)


def _build_variant(artifact: Artifact, fp32_local: Path, precision: str, bound: float, convert, named,
                   described: dict, log) -> Artifact:
    """Convert ``fp32_local`` into ``precision``'s file with ``convert(source, out)``, check it
    against fp32 on the sample photos (refused below ``bound``), publish it as ``named(its
    sha256)``, then the card naming it with ``described`` and its parity; returns the artifact
    with that card."""
    from tlfs.models import sample_images

    with tempfile.TemporaryDirectory(prefix=f"tlfs-{precision}-") as tmp:
        out = Path(tmp) / f"model.{precision}.onnx"
        convert(fp32_local, out)
        report = parity(fp32_local, out, sample_images.parity_batches())
        worst = min(v["cosine_similarity"] for v in report.values())
        if worst < bound:
            raise ModelError(f"the {precision} variant of {artifact.version} disagrees with fp32 (cosine {worst:.5f} < {bound})")
        digest = sha256_uri(out)
        name = named(digest)
        card = {**artifact.card, "variants": {**artifact.card.get("variants", {}), precision: {
            "file": name,
            "sha256": digest,
            "bytes": out.stat().st_size,
            **described,
            "parity_vs_fp32_cpu": report,
        }}}
        atomic_put_file(out, f"{artifact.uri}/{name}")
        _publish_card(artifact.uri, card)  # last: the variant is there before the card names it
    log(f"{precision} variant of {artifact.version}: parity vs fp32 (min cosine) {worst:.6f}")
    return Artifact(artifact.uri, card)


def check_cuda_parity(artifact: Artifact, fp32_local: Path, fp16_local: Path, log=print,
                      providers: tuple[str, ...] = ("CUDAExecutionProvider",)) -> Artifact:
    """fp32 and fp16 on CUDA against fp32 on the CPU, on the sample photos, recorded in
    the card (``parity_cuda``); refused below the same bounds as on the CPU."""
    from tlfs.models import sample_images

    batches = sample_images.parity_batches()
    report = {"fp32": parity(fp32_local, fp32_local, batches, providers), "fp16": parity(fp32_local, fp16_local, batches, providers)}
    for precision, bound in (("fp32", PARITY_MIN_COSINE), ("fp16", FP16_MIN_COSINE)):
        worst = min(v["cosine_similarity"] for v in report[precision].values())
        if worst < bound:
            raise ModelError(f"{artifact.version} {precision} on CUDA disagrees with the CPU (cosine {worst:.6f} < {bound})")
    card = {**artifact.card, "parity_cuda": report}
    _publish_card(artifact.uri, card)
    log(f"CUDA vs CPU parity of {artifact.version}: " + ", ".join(
        f"{p} {min(v['cosine_similarity'] for v in r.values()):.6f}" for p, r in report.items()))
    return Artifact(artifact.uri, card)


def _publish_card(uri: str, card: dict) -> None:
    import json

    with tempfile.TemporaryDirectory(prefix="tlfs-card-") as tmp:
        path = Path(tmp) / CARD_NAME
        path.write_text(json.dumps(card, indent=2))
        atomic_put_file(path, f"{uri}/{CARD_NAME}")


def fixed_shape(source: Path, batch: int, height: int, width: int, cache_dir: str | None = None) -> Path:
    """``source`` with its input fixed at ``[batch, height, width, 3]`` (cached by the
    source's digest and the shape)."""
    import onnx
    from onnxruntime.tools.onnx_model_utils import fix_output_shapes, make_input_shape_fixed

    target = local_cache(cache_dir) / f"{sha256_uri(source)}-{batch}x{height}x{width}.onnx"
    if not target.exists():
        model = onnx.load(str(source))
        make_input_shape_fixed(model.graph, "images", [batch, height, width, 3])
        fix_output_shapes(model)
        atomic_write_bytes(str(target), model.SerializeToString())
    return target
