"""Errors of the models layer; the CLI prints them as one line."""


class ModelError(Exception):
    """A backbone, its weights or its ONNX artifact cannot be used as asked."""


class WeightsUnavailable(ModelError):
    """Pretrained weights were asked for but cannot be had here."""
