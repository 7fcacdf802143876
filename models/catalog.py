"""What ``tlfs backbones`` lists: the registry's named backbones and the timm family,
each with its input, its stored layers, where its weights come from and whether they
are on this machine (nothing is downloaded to find out)."""

from __future__ import annotations

from tlfs.models.names import BACKBONES, TIMM_PREFIX


def named_backbones() -> list[dict]:
    from tlfs.models.backbones import get_spec

    return [_row(get_spec(name), name) for name in BACKBONES]


def timm_models(pattern: str, limit: int = 50) -> list[dict]:
    """timm's pretrained models matching ``pattern`` (fnmatch, e.g. ``vit_small*``), from its
    package's configs: input size and the weights' repository, cached here or not."""
    from tlfs.models.timm_family import cached_weights, _timm

    timm = _timm()
    rows = []
    for name in timm.list_pretrained(pattern)[:limit]:
        cfg = timm.models.get_pretrained_cfg(name).to_dict()
        repo = cfg.get("hf_hub_id") or ""
        rows.append({"name": f"{TIMM_PREFIX}{name}", "family": "timm", "input_size": int(cfg["input_size"][-1]),
                     "layers": None, "weights_source": f"Hugging Face hub {repo or 'none'}",
                     "offline": cached_weights(repo) is not None})
    return rows


def describe(name: str) -> dict:
    """One backbone in full (a timm model is built, with random weights, to read its layers)."""
    from tlfs.models.backbones import get_spec

    return _row(get_spec(name), name)


def _row(spec, name: str) -> dict:
    offline = spec.weights_on_machine() is not None
    return {"name": name, "family": spec.family, "input_size": spec.input_size, "interpolation": spec.interpolation,
            "layers": spec.layer_names, "imagenet_classifier": spec.classifier_input or None,
            "weights_source": spec.weights_source, "offline": offline}
