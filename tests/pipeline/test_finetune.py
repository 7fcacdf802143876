"""Fine-tuning on CPU with a small dataset: freezing, the two phases, checkpoints, a
killed run that resumes to the same result, and the export of a new version whose
features are extracted by version."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from tlfs import features
from tlfs.models.backbones import load_backbone
from tlfs.models.finetune import Classifier, Labelled, Step, apply_freeze, augment, train_epoch
from tlfs.pipeline.errors import PipelineError
from tlfs.pipeline.config import FinetuneConfig
from tlfs.pipeline.finetune import FinetuneRequest, finetune
from tests.conftest import folder_images, write_tree
from tests.faults import python_path
from tests.extraction import run_extract

SMALL = ["--head-epochs", "1", "--epochs", "2", "--batch-size", "8", "--no-progress"]


@pytest.fixture(scope="module")
def loaded():
    return load_backbone("efficientnet_lite0")


def test_freeze_counts_tap_blocks_shallow_to_deep(loaded):
    model = Classifier(loaded, classes=3)
    assert apply_freeze(model, "none") == []
    first = apply_freeze(model, 1)
    assert first and all(n.startswith(("_conv_stem", "_bn0", "_blocks.0.", "_blocks.1.", "_blocks.2.")) for n in first)
    assert len(apply_freeze(model, 3)) > len(first)
    everything = apply_freeze(model, "all")
    assert not any(p.requires_grad for p in model.features.parameters())
    assert all(p.requires_grad for p in model.classifier.parameters()) and len(everything) > 100
    with pytest.raises(Exception, match="cannot freeze 99"):
        apply_freeze(model, 99)


def test_augmentation_keeps_shape_and_range_and_is_seeded():
    images = torch.randint(0, 256, (4, 32, 32, 3), dtype=torch.uint8)
    a = augment(images, 64, torch.Generator().manual_seed(1))
    b = augment(images, 64, torch.Generator().manual_seed(1))
    assert a.shape == (4, 3, 64, 64) and torch.equal(a, b)
    assert float(a.min()) >= 0 and float(a.max()) <= 255


def test_an_epoch_gives_its_mean_loss_and_the_seconds_of_its_first_and_last_steps(loaded):
    torch.manual_seed(0)
    model = Classifier(loaded, classes=3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.01)
    step = Step(optimizer, torch.optim.lr_scheduler.LambdaLR(optimizer, lambda _: 1.0), torch.nn.CrossEntropyLoss())
    data = Labelled(torch.randint(0, 256, (10, 32, 32, 3), dtype=torch.uint8), torch.arange(10) % 3)
    generator = torch.Generator().manual_seed(0)
    started = time.perf_counter()
    trained = train_epoch(model, step, data, torch.randperm(10, generator=generator).split(4), generator, amp=False)
    epoch_seconds = time.perf_counter() - started
    assert trained.mean_loss > 0 and trained.first_step_seconds > 0 and trained.last_step_seconds > 0
    # two of the epoch's three steps, each timed on its own within it (not which is the faster: the last is
    # two images, not four, but a loaded machine made it the slower in one run of the suite beside another)
    assert trained.first_step_seconds + trained.last_step_seconds <= epoch_seconds
    alone = train_epoch(model, step, data, torch.arange(10).split(10), generator, amp=False)  # one step: first and last
    assert alone.first_step_seconds == alone.last_step_seconds > 0


def test_a_checkpoint_of_images_decoded_by_another_rule_is_not_the_same_run(tmp_path, monkeypatch):
    """A run's checkpoint folder is keyed by what it trains on: the decoding rule with the
    images, the weights and the settings, so a run begun before a new rule (photos turned
    upright) is not resumed on images decoded by it; a rule that only adds a format (DICOM)
    keeps the key."""
    import tlfs.pipeline.finetune as finetune_module
    import tlfs.pipeline.image_decode as image_decode
    from tlfs.pipeline.indexing import build_index

    source = write_tree(tmp_path / "images", folder_images())
    request = FinetuneRequest("colors", (str(source),), "efficientnet_lite0", str(tmp_path / "models"))
    index = build_index("colors", [str(source)])
    key = finetune_module.run_key(request, index, "ab" * 32)
    assert finetune_module.run_key(request, index, "ab" * 32) == key
    twelve_bit = FinetuneRequest("colors", (str(source),), "efficientnet_lite0", str(tmp_path / "models"), bit_depth=12)
    assert finetune_module.run_key(twelve_bit, index, "ab" * 32) != key
    with monkeypatch.context() as before_dicom:  # the rule before DICOM was read: its pixels, the same run
        before_dicom.setattr(image_decode, "DECODE", image_decode.PILLOW_DECODE)
        before_dicom.setattr(image_decode, "EXTENDED_RULES", ())
        assert finetune_module.run_key(request, index, "ab" * 32) == key
    monkeypatch.setattr(image_decode, "DECODE", "Pillow to RGB (alpha over white, 16-bit scaled); ...")
    monkeypatch.setattr(image_decode, "EXTENDED_RULES", ())  # a rule that changes pixels gives none before it
    assert finetune_module.run_key(request, index, "ab" * 32) != key


def test_cuda_without_cuda_is_an_error_not_a_fallback(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    source = write_tree(tmp_path / "d", folder_images(per_class=2))
    with pytest.raises(PipelineError, match="no CPU fallback"):
        finetune(FinetuneRequest("c", [str(source)], "efficientnet_lite0", str(tmp_path / "m"), device="cuda"),
                 show_progress=False)


def tlfs(*args, env_extra=None, check=True):
    env = {**os.environ, **(env_extra or {}), "PYTHONPATH": python_path()}
    proc = subprocess.run([str(Path(sys.executable).with_name("tlfs")), *args], capture_output=True, text=True, env=env, timeout=900)
    if check:
        assert proc.returncode == 0, proc.stderr[-3000:]
    return proc


@pytest.mark.slow
def test_a_killed_run_resumes_from_its_checkpoint_to_the_same_result(tmp_path):
    source = write_tree(tmp_path / "images", folder_images(per_class=8))
    common = ["finetune", "--dataset", "colors", "--source", str(source), "--backbone", "efficientnet_lite0", *SMALL,
              "--models", str(tmp_path / "models")]
    # Die while writing the third checkpoint (phase 2, epoch 1): three events per write.
    killed = tlfs(*common, check=False, env_extra={"TLFS_KILL_AT": "7", "TLFS_KILL_MATCH": "checkpoint.pt"})
    assert killed.returncode == -9, killed.stderr[-2000:]
    resumed = tlfs(*common)
    got = json.loads(resumed.stdout.strip().splitlines()[-1])
    assert "resuming from" in resumed.stderr
    assert got["resumed_from"] == {"phase": "head", "epoch": 1}

    # a checkpoint written with other settings is refused, naming the way out ...
    import torch

    (checkpoint,) = (tmp_path / "models").rglob("checkpoint.pt")
    saved = torch.load(checkpoint, weights_only=True)
    saved["config"] = {**saved["config"], "lr": saved["config"]["lr"] * 10}
    torch.save(saved, checkpoint)
    refused = tlfs(*common, check=False)
    assert refused.returncode == 1 and "was written with other settings; use --restart to start over" in refused.stderr
    assert "Traceback" not in refused.stderr
    # ... and --restart starts over from the pretrained weights: an unbroken run, which the
    # resumed one equals bit for bit
    restarted = tlfs(*common, "--restart")
    whole = json.loads(restarted.stdout.strip().splitlines()[-1])
    assert "resuming from" not in restarted.stderr and whole["resumed_from"] is None
    assert abs(got["test_accuracy"] - whole["test_accuracy"]) <= 1e-9
    assert got["backbone_version"] == whole["backbone_version"]  # the same weights, bit for bit


@pytest.mark.slow
def test_finetune_exports_a_new_version_with_lineage_and_features_follow(tmp_path):
    source = write_tree(tmp_path / "images", folder_images(per_class=6))
    store, models = tmp_path / "store", tmp_path / "models"
    out = tlfs("finetune", "--dataset", "colors", "--source", str(source), "--backbone", "efficientnet_lite0",
               "--models", str(models), "--store", str(store), "--freeze", "2", *SMALL, "--extract")
    result = json.loads(out.stdout.strip().splitlines()[-1])
    assert {"test_accuracy", "backbone_version", "set_uri", "softmax_test_accuracy"} <= set(result)
    card = json.loads((models / result["backbone_version"] / "model_card.json").read_text())
    assert card["parent"]["version"] == result["parent_version"] != result["backbone_version"]
    assert card["parent"]["dataset"] == "colors" and card["parent"]["finetune"]["freeze"] == "2"
    from tlfs.pipeline.image_decode import DECODE

    assert card["parent"]["decode"] == DECODE  # how its training images became pixels
    assert card["parent"]["metrics"]["test_accuracy"] == result["test_accuracy"]
    manifest = features.describe("colors", result["backbone_version"], str(store))
    assert manifest["lineage"]["parent"]["version"] == result["parent_version"] and manifest["rows"] == 36
    again = run_extract("colors", [str(source)], result["backbone_version"], str(store), str(models), layers=["head"],
                        show_progress=False, log=lambda *_: None)
    assert again["backbone_version"] == result["backbone_version"]
    with pytest.raises(PipelineError, match="neither a backbone"):
        run_extract("colors", [str(source)], "efficientnet_lite0-0000000000", str(store), str(models), show_progress=False)


def test_a_timm_vit_fine_tunes_from_a_local_weights_file_and_exports_a_version_of_its_own(tmp_path):
    """timm's extractor names the model's parameters under a prefix: freezing and the
    saved weights must still find them (the exported version loads them strictly)."""
    pytest.importorskip("timm")
    from safetensors.torch import save_file

    backbone = "timm/vit_tiny_patch16_224"
    weights = tmp_path / "vit.safetensors"
    save_file(load_backbone(backbone, random_weights=True).module.state_dict(), str(weights))
    model = Classifier(load_backbone(backbone, weights=weights), classes=3)
    frozen = apply_freeze(model, 2)  # the patch embedding and blocks up to the second tap (block6)
    assert "model.blocks.5.mlp.fc2.weight" in frozen and not any(name.startswith("model.blocks.6.") for name in frozen)
    source = write_tree(tmp_path / "images", folder_images(per_class=4))
    result = finetune(FinetuneRequest("colors", [str(source)], backbone, str(tmp_path / "models"),
                                      FinetuneConfig(head_epochs=1, epochs=1, batch_size=8, freeze="2"), weights=str(weights)),
                      show_progress=False, log=lambda *_: None)
    assert result["backbone_version"].startswith("timm-vit_tiny_patch16_224-") and result["n_test"] == 12
    card = json.loads((tmp_path / "models" / result["backbone_version"] / "model_card.json").read_text())
    assert card["parent"]["version"] == result["parent_version"] and card["layers"]["norm_cls"] == 192


def test_settings_are_checked_before_any_work():
    with pytest.raises(PipelineError, match="cosine"):
        FinetuneConfig(schedule="linear").check()
    with pytest.raises(PipelineError, match="from-scratch"):
        FinetuneConfig(from_scratch=True, freeze="2").check()
    with pytest.raises(PipelineError, match="--freeze must be a number of tap blocks, 'all' or 'none', not 'abc'"):
        FinetuneConfig(freeze="abc").check()


def test_the_images_rejected_while_decoding_are_named_and_left_out(tmp_path):
    """A damaged image, or a DICOM file without a picture, is one reject said with its reason,
    not a silent hole in the training set nor the end of the run."""
    files = {**folder_images(per_class=4), "train/red/cut.png": folder_images(per_class=1)["train/red/000.png"][:40]}
    said = []
    result = finetune(FinetuneRequest("colors", [str(write_tree(tmp_path / "images", files))], "efficientnet_lite0",
                                      str(tmp_path / "models"), FinetuneConfig(head_epochs=1, epochs=1, batch_size=8)),
                      show_progress=False, log=said.append)
    assert result["rejected"] == 1
    assert any(line.startswith("1 of 25 images rejected while decoding, left out of fine-tuning: train/red/cut.png (")
               for line in said), said
