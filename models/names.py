"""Backbone names, importable without torch (the Airflow DAGs validate params with it)."""

BACKBONES = ("efficientnet_lite0", "resnet50", "vgg16", "inception_v3")
DEFAULT_BACKBONE = "efficientnet_lite0"
