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
# A backbone name, or an exported version of one: ``<name>-<10 hex digits>`` (models/export.py).
BACKBONE_OR_VERSION = rf"^({'|'.join(BACKBONES)})(-[0-9a-f]{{10}})?$"
