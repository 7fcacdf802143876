"""Names a user picks from, importable without torch (the CLI's choices and the Airflow
DAGs' Params are made from them): the backbones of the registry (models/backbones.py
checks that it holds exactly these) and the heads (models/heads.py)."""

BACKBONES = ("efficientnet_lite0", "resnet50", "vgg16", "inception_v3")
DEFAULT_BACKBONE = "efficientnet_lite0"
HEADS = ("softmax", "lightgbm", "mlp")
