"""Any timm model as a backbone: one CNN (resnet18), one vision transformer with a class
token (vit_tiny_patch16_224) and one without, with a register token instead
(vit_wee_patch16_reg1_gap_256). Random weights throughout; nothing reaches the internet:
the one test of the hub download path serves weights it makes itself on 127.0.0.1 and
sends every other address to a proxy that does not exist."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from tests.conftest import folder_images, write_tree
from tests.extraction import run_extract
from tlfs.models.errors import ModelError, WeightsUnavailable

pytest.importorskip("timm")

CNN, VIT, VIT_NO_CLS = "timm/resnet18", "timm/vit_tiny_patch16_224", "timm/vit_wee_patch16_reg1_gap_256"


@pytest.fixture(scope="module")
def timm_models(tmp_path_factory):
    """The three models exported once (random weights) into one model store."""
    from tlfs.models.export import export

    root = str(tmp_path_factory.mktemp("timm-models"))
    return root, {name: export(name, root, random_weights=True, log=lambda *_: None) for name in (CNN, VIT, VIT_NO_CLS)}


def test_a_cnn_is_tapped_at_the_stages_features_only_returns():
    import timm

    from tlfs.models.backbones import get_spec

    spec = get_spec(CNN)
    stages = [info["module"] for info in timm.create_model("resnet18", features_only=True).feature_info.get_dicts()]
    assert spec.tap_names == stages == ["act1", "layer1", "layer2", "layer3", "layer4"]
    # resnet's classifier reads layer4's global average: no layer of its own
    assert spec.layer_names == spec.tap_names and spec.classifier_input == "layer4" and spec.classifier == "fc"
    # preprocessing from the model's own pretrained config
    assert (spec.input_size, spec.interpolation, spec.mean) == (224, "bicubic", (0.485, 0.456, 0.406))


def test_a_vit_is_tapped_at_evenly_spaced_blocks_and_its_final_norm_as_class_token_and_patch_mean():
    from tlfs.models.backbones import get_spec

    spec = get_spec(VIT)
    assert spec.layer_names == ["block3_cls", "block3_mean", "block6_cls", "block6_mean", "block9_cls", "block9_mean",
                                "block12_cls", "block12_mean", "norm_cls", "norm_mean"]
    assert spec.classifier_input == "norm_cls" and spec.prefix_tokens == 1 and spec.mean == (0.5, 0.5, 0.5)


def test_a_vit_without_a_class_token_stores_the_patch_mean_only_and_its_pooled_head_input():
    from tlfs.models.backbones import get_spec

    spec = get_spec(VIT_NO_CLS)
    # 14 blocks: taps after 4, 7, 10 and 14; no final norm (it normalises after pooling: pre_logits)
    assert spec.layer_names == ["block4_mean", "block7_mean", "block10_mean", "block14_mean", "pre_logits"]
    assert spec.prefix_tokens == 1 and not spec.class_token  # one register token, left out of the mean
    assert spec.classifier_input == "pre_logits" and spec.input_size == 256


def test_the_patch_mean_leaves_the_class_and_register_tokens_out():
    from tlfs.models.taps import class_token, patch_mean

    tokens = torch.tensor([[[100.0], [50.0], [1.0], [3.0]]])  # class, register, two patches
    assert patch_mean(tokens, 2).item() == 2.0 and class_token(tokens).item() == 100.0


def test_a_grid_variant_of_a_vit_is_refused_and_an_unknown_model_named():
    from tlfs.models.backbones import get_spec

    with pytest.raises(ModelError, match="vision transformer"):
        get_spec("timm/vit_tiny_patch16_224_2x2")
    with pytest.raises(ModelError, match="unknown timm model 'resnet_nosuch'"):
        get_spec("timm/resnet_nosuch")


def test_a_model_without_an_imagenet_head_has_no_classifier():
    from tlfs.models.backbones import get_spec

    spec = get_spec("timm/vit_base_patch16_siglip_224")  # SigLIP's image tower: an attention pool, no classes
    assert spec.classifier == "" and spec.layer_names[-1] == "pre_logits" and not spec.class_token


def test_export_matches_pytorch_with_the_widths_of_each_layer(timm_models):
    from tlfs.models.variants import PARITY_MIN_COSINE

    _, artifacts = timm_models
    assert artifacts[CNN].card["layers"] == {"act1": 64, "layer1": 64, "layer2": 128, "layer3": 256, "layer4": 512}
    assert set(artifacts[VIT].card["layers"].values()) == {192}
    assert artifacts[VIT_NO_CLS].card["layers"] == {"block4_mean": 256, "block7_mean": 256, "block10_mean": 256,
                                                    "block14_mean": 256, "pre_logits": 256}
    for artifact in artifacts.values():
        card = artifact.card
        assert min(p["cosine_similarity"] for p in card["parity"].values()) >= PARITY_MIN_COSINE
        assert "fp16" in card["variants"] and card["weights"]["origin"] == "random (requested)"
        assert card["preprocessing"]["resize"].startswith("bicubic")
        assert artifact.version.startswith("timm-") and "/" not in artifact.version
    assert "token_pooling" in artifacts[VIT].card["preprocessing"]


def test_the_exported_vit_computes_class_token_and_patch_mean_as_pytorch_does(timm_models):
    import onnxruntime as ort

    from tlfs.models import sample_images
    from tlfs.models.backbones import load_backbone
    from tlfs.models.taps import TapNetwork
    from tlfs.models.variants import min_cosine

    _, artifacts = timm_models
    loaded = load_backbone(VIT, random_weights=True)
    network = TapNetwork(loaded.spec, loaded.module).eval()
    session = ort.InferenceSession(artifacts[VIT].onnx_uri, providers=["CPUExecutionProvider"])
    batch = sample_images.parity_batches()[-1]
    got = dict(zip(network.output_names, session.run(network.output_names, {"images": batch})))
    with torch.no_grad():
        tokens = loaded.module.forward_features(network.preprocess(torch.from_numpy(batch.copy())))  # after the norm
    assert min_cosine(got["norm_cls"], tokens[:, 0].numpy()) > 0.9999
    assert min_cosine(got["norm_mean"], tokens[:, 1:].mean(1).numpy()) > 0.9999


@pytest.mark.parametrize("name", [CNN, VIT, VIT_NO_CLS])
def test_extraction_commits_a_set_with_the_models_layers_and_a_sweep_runs_on_it(name, timm_models, tmp_path):
    from tlfs import features
    from tlfs.pipeline.fit import sweep

    models, artifacts = timm_models
    images = write_tree(tmp_path / "images", folder_images(per_class=4))
    store = str(tmp_path / "store")
    summary = run_extract("colours", [str(images)], name, store, models, random_weights=True, show_progress=False)
    assert summary["rows"] == 24 and summary["rejected"] == 0
    fs = features.open_set("colours", name, store=store)  # found by the name the user gave
    assert fs.manifest["backbone"] == name and fs.backbone_version == artifacts[name].version
    assert dict(fs.layers) == artifacts[name].card["layers"]
    for layer, width in artifacts[name].card["layers"].items():
        X, y, _ = fs.matrix(layer, "test")
        assert X.shape == (12, width) and np.isfinite(X).all()
    result = sweep(fs, log=lambda *_: None)
    assert set(result["layers"]) == set(fs.layers)


def test_weights_not_on_this_machine_are_one_line_that_says_how_to_get_them(tmp_path, monkeypatch):
    from tlfs.models.backbones import load_backbone

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(WeightsUnavailable) as error:
        load_backbone(CNN)
    message = str(error.value)
    assert "\n" not in message and "timm.create_model('resnet18', pretrained=True)" in message
    assert "--weights PATH" in message and "--random-weights" in message


def test_a_local_safetensors_file_is_loaded_and_recorded(tmp_path):
    from safetensors.torch import save_file

    from tlfs.models.backbones import load_backbone

    reference = load_backbone(CNN, random_weights=True).module
    with torch.no_grad():
        reference.fc.bias.fill_(0.5)
    path = tmp_path / "resnet18.safetensors"
    save_file(reference.state_dict(), str(path))
    loaded = load_backbone(CNN, weights=path)
    assert torch.equal(loaded.module.fc.bias, reference.fc.bias) and loaded.weights_origin == str(path)


def test_the_catalog_lists_both_families_and_finds_no_weights_offline():
    from tlfs.models import catalog

    named = {row["name"]: row for row in catalog.named_backbones()}
    assert named["efficientnet_lite2"]["offline"] and named["efficientnet_lite2"]["input_size"] == 260
    timm_rows = catalog.timm_models("vit_small_patch14_dinov2*")
    assert timm_rows and all(row["name"].startswith("timm/vit_small_patch14_dinov2") for row in timm_rows)
    assert catalog.describe(VIT)["layers"][-1] == "norm_mean"


def test_advise_on_a_model_without_an_imagenet_head_says_the_similarity_cannot_be_measured(tmp_path):
    """As for SigLIP's or DINOv2's image tower, whose cards record why they have no classifier."""
    import json

    from tlfs import features
    from tlfs.models.export import export, no_classifier_reason
    from tlfs.models.backbones import get_spec
    from tlfs.pipeline.advise import advise

    models, store = str(tmp_path / "models"), str(tmp_path / "store")
    artifact = export(CNN, models, random_weights=True, log=lambda *_: None)
    card_path = tmp_path / "models" / artifact.version / "model_card.json"
    card = json.loads(card_path.read_text())
    card.update(imagenet_classifier=None, imagenet_classifier_missing=no_classifier_reason(get_spec(CNN)))
    card_path.write_text(json.dumps(card))
    images = write_tree(tmp_path / "images", folder_images(per_class=4))
    run_extract("colours", [str(images)], artifact.version, store, models, show_progress=False)
    result = advise(features.open_set("colours", artifact.version, store=store), log=lambda *_: None)
    assert result["case"] == "small_unmeasured" and result["similarity"]["measured"] is False
    assert "has no ImageNet classifier" in result["similarity"]["why"] and result["size"]["train_images"] == 12


def test_tlfs_backbones_says_when_no_timm_model_matches(capsys):
    from tlfs.pipeline.cli import main

    assert main(["backbones", "--timm", "no_such_model*"]) == 0
    assert "no timm model with pretrained weights matches 'no_such_model*'" in capsys.readouterr().out


def test_weights_come_from_a_hub_into_its_cache_where_the_machine_reaches_one(tmp_path):
    """hf_hub_download against a hub this test serves on loopback (HF_ENDPOINT), with
    weights it makes itself: the real download path, its cache, and the weights that came
    loaded. Nothing leaves this machine: any other address goes to a proxy that does not
    exist, so a request for the internet fails instead of reaching it."""
    import hashlib
    import json
    import os
    import subprocess
    import sys
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    from safetensors.torch import save_file

    from tlfs.models.backbones import load_backbone

    reference = load_backbone(CNN, random_weights=True).module
    repo = reference.pretrained_cfg["hf_hub_id"]  # timm's own config, from the installed package
    with torch.no_grad():
        reference.fc.bias.fill_(0.25)
    save_file(reference.state_dict(), str(tmp_path / "model.safetensors"))
    body = (tmp_path / "model.safetensors").read_bytes()
    served = []

    class Hub(BaseHTTPRequestHandler):
        def _answer(self, with_body: bool) -> None:
            served.append((self.command, self.path))
            if self.path != f"/{repo}/resolve/main/model.safetensors":
                self.send_response(404)
                self.send_header("X-Error-Code", "EntryNotFound")
                self.end_headers()
                return
            self.send_response(200)
            self.send_header("X-Repo-Commit", "0" * 40)
            self.send_header("ETag", f'"{hashlib.sha256(body).hexdigest()}"')
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            if with_body:
                self.wfile.write(body)

        def do_HEAD(self):  # noqa: N802 - http.server's names
            self._answer(False)

        def do_GET(self):  # noqa: N802
            self._answer(True)

        def log_message(self, *_):
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Hub)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    dead_proxy = "http://127.0.0.1:9"  # the discard port: nothing listens there
    env = {**os.environ, "HF_ENDPOINT": f"http://127.0.0.1:{server.server_port}", "HF_HUB_OFFLINE": "0",
           "HF_HOME": str(tmp_path / "hf"), "HF_HUB_DISABLE_TELEMETRY": "1", "HF_HUB_DISABLE_XET": "1",
           "HTTP_PROXY": dead_proxy, "HTTPS_PROXY": dead_proxy, "ALL_PROXY": dead_proxy,
           "http_proxy": dead_proxy, "https_proxy": dead_proxy, "all_proxy": dead_proxy,
           "NO_PROXY": "127.0.0.1,localhost", "no_proxy": "127.0.0.1,localhost"}
    code = ("import json; from tlfs.models.backbones import load_backbone; b = load_backbone('timm/resnet18'); "
            "print(json.dumps({'origin': str(b.weights_origin), 'bias': float(b.module.fc.bias[0])}))")
    try:
        done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=300)
    finally:
        server.shutdown()
    assert done.returncode == 0, done.stderr[-2000:]
    loaded = json.loads(done.stdout.strip().splitlines()[-1])
    assert loaded["bias"] == 0.25 and loaded["origin"].startswith(str(tmp_path / "hf"))  # the served weights, from the cache
    assert ("GET", f"/{repo}/resolve/main/model.safetensors") in served
