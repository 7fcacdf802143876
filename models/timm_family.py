"""Any timm model as a backbone: ``timm/<model>[.<pretrained tag>][_2x2]``.

The spec is read from the model itself and from its pretrained config, which timm ships
inside its package (no download): input size, interpolation, mean and std, the
classifier's module, the Hugging Face repository of the weights.

Taps:
- **CNNs**: every stage timm's ``features_only`` would return (``feature_info``),
  globally average-pooled; a ``_2x2`` variant stores their 2x2 grids too.
- **Vision transformers** (a ``blocks`` sequence of token maps): four evenly spaced
  blocks and the final norm, each stored as its class token (``block6_cls``) and the mean
  of its patch tokens (``block6_mean``; register and class tokens left out). A model
  without a class token stores the mean only.
- ``pre_logits``: what the model's own classifier reads (``forward_head(pre_logits=True)``:
  a head norm, an attention pool, a conv head...), stored where it differs from every tap
  above; the ImageNet classifier applies to it, or to the tap it equals.

Taps are captured with forward hooks rather than torchvision's fx: timm's models are
written for scripting and tracing, not all for symbolic tracing.

Weights: the Hugging Face cache (``$HF_HOME``), downloaded there first where the
machine has internet (not with ``HF_HUB_OFFLINE=1``); or a local file (``--weights``,
``.safetensors`` or a state dict); random only when asked for.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Callable

import torch
from torch import nn

from tlfs.models.errors import ModelError
from tlfs.models.names import GRID, TIMM_PREFIX

VIT_TAPS = 4  # evenly spaced blocks of a vision transformer, the last one included
PRE_LOGITS = "pre_logits"
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin")


def split_name(name: str) -> tuple[str, bool]:
    """``timm/resnet18_2x2`` -> (``resnet18``, grid)."""
    model = name.removeprefix(TIMM_PREFIX)
    grid = model.endswith(f"_{GRID}")
    return (model.removesuffix(f"_{GRID}"), grid)


class TimmTaps(nn.Module):
    """{tap: activation} of a timm model, taken by forward hooks on its modules during
    ``forward_features``, and ``pre_logits`` from ``forward_head``. The model is a
    submodule: its parameters are named ``model.<its own names>``."""

    param_prefix = "model."

    def __init__(self, model: nn.Module, modules: dict[str, str], pre_logits: str | None) -> None:
        super().__init__()
        self.model = model
        self.tap_modules = modules  # tap -> module path
        self.pre_logits = pre_logits  # the tap name that holds forward_head(pre_logits=True), if asked for

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        captured: dict[str, torch.Tensor] = {}
        handles = [self.model.get_submodule(path).register_forward_hook(
                       lambda _module, _inputs, output, tap=tap: captured.__setitem__(tap, output))
                   for tap, path in self.tap_modules.items()]
        try:
            features = self.model.forward_features(x)
            if self.pre_logits:
                captured[self.pre_logits] = self.model.forward_head(features, pre_logits=True)
        finally:
            for handle in handles:
                handle.remove()
        return captured


def _timm():
    try:
        import timm
    except ImportError:
        raise ModelError("timm backbones need the timm package: pip install 'timm>=1.0,<2' "
                         "(this project's 'timm' extra)") from None
    return timm


def _pretrained_cfg(model_name: str) -> dict:
    from timm.models import get_pretrained_cfg

    cfg = get_pretrained_cfg(model_name)
    if cfg is None:
        raise ModelError(f"timm has no pretrained config for {model_name!r}: name a model with pretrained weights "
                         f"(timm.list_pretrained('{model_name.split('.')[0]}*'))")
    return cfg.to_dict()


def _is_transformer(model: nn.Module) -> bool:
    return hasattr(model, "blocks") and hasattr(model, "num_prefix_tokens")


def _transformer_taps(model: nn.Module) -> dict[str, str]:
    depth = len(model.blocks)
    numbers = sorted({max(1, round(depth * k / VIT_TAPS)) for k in range(1, VIT_TAPS + 1)})
    taps = {f"block{n}": f"blocks.{n - 1}" for n in numbers}
    if not isinstance(getattr(model, "norm", None), (nn.Identity, type(None))):
        taps["norm"] = "norm"
    return taps


def _cnn_taps(model: nn.Module) -> dict[str, str]:
    info = getattr(model, "feature_info", None)
    if not info:
        raise ModelError(f"{type(model).__name__} declares no feature stages (feature_info): not a timm CNN tlfs can tap")
    return {entry["module"].replace(".", "_"): entry["module"] for entry in info}


def _pre_logits_twin(model: nn.Module, taps: dict[str, str], transformer: bool, prefix: int,
                     class_token: bool, size: int) -> str | None:
    """The stored layer that equals ``pre_logits`` on a random image, or None (then it is
    stored as a layer of its own)."""
    from tlfs.models.taps import POOLINGS

    torch.manual_seed(0)
    x = torch.randn(1, 3, size, size)
    with torch.no_grad():
        out = TimmTaps(model, taps, PRE_LOGITS)(x)
    pre = out[PRE_LOGITS]
    candidates = []
    for tap in reversed(list(taps)):
        if transformer:
            candidates += [(f"{tap}_cls", POOLINGS["cls"](out[tap], prefix))] if class_token else []
            candidates += [(f"{tap}_mean", POOLINGS["mean"](out[tap], prefix))]
        else:
            candidates.append((tap, POOLINGS["avg"](out[tap], prefix)))
    for layer, value in candidates:
        if value.shape == pre.shape and torch.allclose(value, pre, rtol=1e-4, atol=1e-5):
            return layer
    return None


@functools.lru_cache(maxsize=32)
def spec_for(name: str):
    """The :class:`BackboneSpec` of ``timm/<model>[.<tag>][_2x2]`` (built once per process:
    it instantiates the model, with random weights, to read its structure)."""
    from tlfs.models.backbones import BackboneSpec

    timm = _timm()
    model_name, grid = split_name(name)
    architecture = model_name.split(".")[0]
    if not timm.is_model(architecture):
        raise ModelError(f"unknown timm model {architecture!r} (timm {timm.__version__}); "
                         f"see timm.list_models('*{architecture[:6]}*')")
    cfg = _pretrained_cfg(model_name)
    model = _create(model_name).eval()
    size = int(cfg["input_size"][-1])
    transformer = _is_transformer(model)
    if transformer:
        if grid:
            raise ModelError(f"{name}: a 2x2 grid needs spatial maps; {model_name} is a vision transformer")
        taps = _transformer_taps(model)
        prefix = int(model.num_prefix_tokens)
        class_token = getattr(model, "cls_token", None) is not None
    else:
        taps, prefix, class_token = _cnn_taps(model), 0, False
    twin = _pre_logits_twin(model, taps, transformer, prefix, class_token, size)
    classifier_module = cfg.get("classifier") or ""
    has_classifier = (int(getattr(model, "num_classes", 0) or 0) > 0 and classifier_module
                      and isinstance(_submodule(model, classifier_module), nn.Linear))
    token_taps = tuple(taps) if transformer else ()
    grid_taps = tuple(taps) if grid else ()
    tap_modules = dict(taps)
    if twin is None:
        taps = {**taps, PRE_LOGITS: PRE_LOGITS}
    repo = cfg.get("hf_hub_id") or ""
    return BackboneSpec(
        name=name,
        input_size=size,
        mean=tuple(float(v) for v in cfg["mean"]),
        std=tuple(float(v) for v in cfg["std"]),
        taps=taps,
        build=lambda: _create(model_name),
        weights_source=f"timm {model_name} (Hugging Face hub {repo or 'none'})",
        default_weights=_hub_weights(repo),
        weights_here=lambda: cached_weights(repo),
        classifier=classifier_module if has_classifier else "",
        classifier_input=(twin or PRE_LOGITS) if has_classifier else "",
        grid_taps=grid_taps,
        weights_help=(f"on a machine with internet run: python -c \"import timm; timm.create_model('{model_name}', "
                      f"pretrained=True)\" and copy its Hugging Face cache (HF_HOME) here"),
        interpolation=_interpolation(cfg.get("interpolation")),
        token_taps=token_taps,
        prefix_tokens=prefix,
        class_token=class_token,
        extractor=lambda module, wanted: TimmTaps(module, {t: tap_modules[t] for t in wanted if t in tap_modules},
                                                  PRE_LOGITS if PRE_LOGITS in wanted else None),
        family="timm",
    )


def _submodule(model: nn.Module, path: str) -> nn.Module | None:
    try:
        return model.get_submodule(path)
    except AttributeError:
        return None


def _interpolation(mode: str | None) -> str:
    """The config's resize mode where torch's interpolate has it (``bicubic``), else bilinear."""
    return mode if mode in ("bicubic", "bilinear", "nearest") else "bilinear"


def _create(model_name: str) -> nn.Module:
    return _timm().create_model(model_name, pretrained=False)


def _offline() -> bool:
    return os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on")


def cached_weights(repo: str) -> Path | None:
    """The weights file of ``repo`` in the Hugging Face cache, without any download."""
    if not repo:
        return None
    from huggingface_hub import try_to_load_from_cache

    for filename in WEIGHT_FILES:
        cached = try_to_load_from_cache(repo, filename)
        if isinstance(cached, str):
            return Path(cached)
    return None


def _hub_weights(repo: str) -> Callable[[], Path | None]:
    """The weights file in the Hugging Face cache; downloaded into it first where the
    machine may reach the hub. None where neither works."""

    def find() -> Path | None:
        cached = cached_weights(repo)
        if cached is not None or not repo or _offline():
            return cached
        from huggingface_hub import hf_hub_download

        for filename in WEIGHT_FILES:
            try:
                return Path(hf_hub_download(repo, filename))
            except Exception:  # noqa: BLE001 - no internet, no such file, no access: the caller says how
                continue
        return None

    return find
