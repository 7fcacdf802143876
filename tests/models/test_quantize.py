"""The int8 variant of an exported graph (``models/quantize.py``, ``models/variants.py``):
quantized for the CPU's integer units, its preprocessing left in float, checked against
fp32 on the sample photos and named in the model card, built once."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from tlfs.models import quantize, sample_images
from tlfs.models.artifact import Artifact, read_card
from tlfs.models.session import local_onnx
from tlfs.models.variants import INT8_MIN_COSINE, build_int8, parity, with_int8


def int8_artifact(int8_models: str, lite0) -> Artifact:
    uri = f"{int8_models}/{lite0.version}"
    return Artifact(uri, read_card(uri))


def test_the_preprocessing_is_every_node_before_the_first_weighted_one():
    """Layout, cast, resize and normalisation compute from the input and constants alone;
    what follows a convolution, an addition of two branches included, is quantized."""
    nodes = [helper.make_node("Transpose", ["images"], ["t"], name="layout", perm=[0, 3, 1, 2]),
             helper.make_node("Cast", ["t"], ["f"], name="cast", to=TensorProto.FLOAT),
             helper.make_node("Mul", ["f", "scale"], ["m"], name="normalise"),
             helper.make_node("Conv", ["m", "w"], ["c"], name="stem"),
             helper.make_node("Relu", ["c"], ["r"], name="act"),
             helper.make_node("Add", ["r", "c"], ["out"], name="residual")]
    graph = helper.make_graph(nodes, "g", [helper.make_tensor_value_info("images", TensorProto.UINT8, [1, 8, 8, 3])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
                              [helper.make_tensor("scale", TensorProto.FLOAT, [], [0.5]),
                               helper.make_tensor("w", TensorProto.FLOAT, [4, 3, 1, 1], [0.1] * 12)])
    assert quantize.preprocessing_nodes(helper.make_model(graph)) == ["layout", "cast", "normalise"]


def test_the_calibration_crops_are_the_same_for_a_seed_and_never_the_parity_photos():
    first, again = sample_images.calibration_batches(64), sample_images.calibration_batches(64)
    assert all(np.array_equal(a, b) for a, b in zip(first, again)) and len(first) == len(again)
    assert {b.shape[1] for b in first} == {32, 64} and all(len(b) == sample_images.CALIBRATION_BATCH for b in first)
    assert sum(len(b) for b in first) == 2 * sample_images.CALIBRATION_CROPS
    assert not set(sample_images.CALIBRATION_COLOUR + sample_images.CALIBRATION_GREY) & set(sample_images.PHOTOS + ("cat",))


def test_the_int8_variant_is_checked_against_fp32_and_named_in_the_card(int8_models, lite0):
    artifact = int8_artifact(int8_models, lite0)
    variant = artifact.card["variants"]["int8"]
    path = local_onnx(artifact, precision="int8")  # its sha256 checked against the card's
    assert variant["file"] == f"model.int8.{variant['sha256'][:16]}.onnx" == path.name
    assert variant["bytes"] == path.stat().st_size
    assert set(variant["parity_vs_fp32_cpu"]) == set(artifact.card["layers"])
    worst = min(v["cosine_similarity"] for v in variant["parity_vs_fp32_cpu"].values())
    assert INT8_MIN_COSINE <= worst < 0.9999  # close to fp32, and not fp32 itself
    assert "min-max" in variant["quantizer"] and "seed 0" in variant["calibration"]
    # measured again here: the card tells what the file does
    again = parity(local_onnx(artifact), path, sample_images.parity_batches())
    assert min(v["cosine_similarity"] for v in again.values()) == pytest.approx(worst, abs=1e-6)
    assert artifact.card["variants"]["fp16"] == lite0.card["variants"]["fp16"]  # the others as they were


def test_the_int8_graph_runs_its_convolutions_on_integers_and_its_preprocessing_in_float(int8_models, lite0, tmp_path):
    path = local_onnx(int8_artifact(int8_models, lite0), precision="int8")
    model = onnx.load(str(path))
    first_quantize = next(i for i, n in enumerate(model.graph.node) if n.op_type == "QuantizeLinear")
    before = {n.op_type for n in model.graph.node[:first_quantize]}
    assert {"Resize", "Mul", "Add"} <= before and "Conv" not in before  # the normalised image quantized, not the pixels
    assert {o.domain for o in model.opset_import} == {""}  # mergeable with a head's graph (export-classifier)
    options = ort.SessionOptions()
    options.optimized_model_filepath = str(tmp_path / "optimized.onnx")
    ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    ops = [n.op_type for n in onnx.load(options.optimized_model_filepath).graph.node]
    assert ops.count("QLinearConv") == 49 and "Conv" not in ops  # every convolution of Lite0 fused


def test_the_int8_variant_is_built_once(int8_models, lite0):
    artifact = int8_artifact(int8_models, lite0)
    card = Path(artifact.uri) / "model_card.json"
    before = (card.read_bytes(), card.stat().st_mtime_ns)
    said = []
    assert with_int8(artifact, log=said.append).card == artifact.card
    assert (card.read_bytes(), card.stat().st_mtime_ns) == before and said == []
    assert json.loads(card.read_text())["variants"]["int8"]["sha256"] == artifact.card["variants"]["int8"]["sha256"]


def test_a_store_without_the_int8_variant_says_how_to_build_it(lite0):
    with pytest.raises(Exception, match="has no int8 variant; `tlfs extract --precision int8` builds it"):
        local_onnx(Artifact(lite0.uri, {k: v for k, v in lite0.card.items() if k != "variants"}), precision="int8")


def test_a_cpu_without_vnni_is_told_that_int8_products_can_saturate_on_it():
    said = quantize.saturation_notice({"avx2", "fma", "avx512bw"})
    assert said is not None and "no VNNI" in said and "saturate" in said
    assert quantize.saturation_notice({"avx2", "avx512_vnni"}) is None and quantize.saturation_notice({"avx_vnni"}) is None


def test_two_runs_building_the_int8_graph_at_once_each_publish_their_own_file(int8_models, lite0, tmp_path, monkeypatch):
    """Two machines quantizing the same version at once may make different bytes: the card
    names one file, whole, and the other's stays for the run that read its card."""
    import shutil

    folder = tmp_path / lite0.version
    shutil.copytree(f"{int8_models}/{lite0.version}", folder)
    first = Artifact(str(folder), read_card(str(folder)))
    without = Artifact(str(folder), {k: v for k, v in first.card.items() if k != "variants"} |
                       {"variants": {"fp16": first.card["variants"]["fp16"]}})  # as the other run read the card

    quantized = quantize.to_int8

    def elsewhere(source, out, batches, input_name="images"):  # the same graph, in other bytes
        quantized(source, out, batches, input_name)
        model = onnx.load(str(out))
        model.doc_string = "calibrated on another machine"
        onnx.save(model, str(out))

    monkeypatch.setattr(quantize, "to_int8", elsewhere)
    second = build_int8(without, local_onnx(first), log=lambda *_: None)
    monkeypatch.undo()
    assert second.card["variants"]["int8"]["file"] != first.card["variants"]["int8"]["file"]
    assert read_card(str(folder))["variants"]["int8"] == second.card["variants"]["int8"]
    assert local_onnx(second, precision="int8").exists() and local_onnx(first, precision="int8").exists()
