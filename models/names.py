"""Names a user picks from, importable without torch (the CLI's choices and the Airflow
DAGs' Params are made from them): the backbones of the registry (models/backbones.py
checks that it holds exactly these) and the heads (models/heads.py).

Each backbone has a ``_2x2`` variant: the same network and weights, whose feature set
also holds every tap layer's 2x2 grid of average-pooled quadrants (``<tap>_2x2``)."""

FAMILIES = ("efficientnet_lite0", "resnet50", "vgg16", "inception_v3", "efficientnet_lite1", "efficientnet_lite2")
GRID = "2x2"
BACKBONES = FAMILIES + tuple(f"{name}_{GRID}" for name in FAMILIES)
DEFAULT_BACKBONE = "efficientnet_lite0"
HEADS = ("softmax", "lightgbm", "mlp")
# Views a set may store beside the original image (pipeline/views.py computes them).
EXTRA_VIEWS = ("flip",)
# Any timm model by name (models/timm_family.py): ``timm/<model>[.<pretrained tag>][_2x2]``.
TIMM_PREFIX = "timm/"
TIMM_BACKBONE = r"timm/[a-z0-9][a-z0-9_]*(\.[a-z0-9_]+)?"
# A backbone name as a JSON-schema pattern (the DAG Params), and what it may be
BACKBONE_NAME = rf"^({'|'.join(BACKBONES)}|{TIMM_BACKBONE})$"
BACKBONE_HELP = (f"backbone name: {', '.join(BACKBONES)}, or any timm model as timm/<model>[.<pretrained tag>] "
                 f"(e.g. timm/convnext_tiny, timm/vit_small_patch14_dinov2.lvd142m); a _{GRID} variant also stores "
                 f"each spatial tap's 2x2 grid of quadrant averages as layer <tap>_{GRID}")
# A backbone name, or an exported version of one: ``<folder name>-<10 hex digits>`` (models/export.py).
BACKBONE_OR_VERSION = rf"^(({'|'.join(BACKBONES)})(-[0-9a-f]{{10}})?|{TIMM_BACKBONE}|timm-[a-z0-9_.]+-[0-9a-f]{{10}})$"


def is_backbone(name: str) -> bool:
    """A name the registry builds: a named backbone, or ``timm/<model>`` (whether timm
    knows the model is checked when it is built)."""
    import re

    return name in BACKBONES or re.fullmatch(TIMM_BACKBONE, name or "") is not None


def folder_name(backbone: str) -> str:
    """``backbone`` as one path segment (versions, folders): ``timm/resnet18`` -> ``timm-resnet18``."""
    return backbone.replace("/", "-")
