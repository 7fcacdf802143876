"""Configuration in one typed place. Precedence: explicit argument (CLI flag, DAG
param) > environment variable > YAML file (``TLFS_CONFIG``) > default.

Every default a user sees lives here once: the CLI's flags and the DAGs' Params are
generated from these dataclasses. Importable without torch, onnxruntime or pandas (the
Airflow DAG files import it when they are parsed).
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import TYPE_CHECKING

from tlfs.features.codecs import CODECS, DEFAULT_CODEC
from tlfs.features.layout import DEFAULT_STORE, STORE_ENV
from tlfs.features.leases import DEFAULT_TTL
from tlfs.pipeline.errors import PipelineError

if TYPE_CHECKING:
    from tlfs.features.leases import LeaseTerms
    from tlfs.models.runtime import Runtime

# The one dataset with a default source: the official CIFAR-10 python tarball (md5-checked
# in pipeline/indexing.py), or TLFS_CIFAR10_SOURCE.
DEFAULT_SOURCE_DATASET = "cifar10"
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"


def _option(default, help: str, choices: tuple | None = None, minimum: float | None = None, positive: bool = False,
            pattern: str | None = None, env: str | None = None, default_text: str | None = None):
    """A setting with the help text, choices and bounds that the CLI's flags and the DAG
    Params show and check (``positive``: above 0; ``minimum``: at least that; ``pattern``: a
    regular expression a text setting must match; ``env``: the variable that sets it;
    ``default_text``: how to say the default where the value alone would not)."""
    return field(default=default, metadata={"help": help, "env": env, "choices": choices, "minimum": minimum,
                                            "positive": positive, "pattern": pattern, "default_text": default_text})


@dataclass(frozen=True)
class Settings:
    store: str = _option(DEFAULT_STORE, "feature store root, any fsspec URI", env=STORE_ENV)
    model_store: str = _option("tlfs-data/models", "root of exported ONNX artifacts, any fsspec URI", env="TLFS_MODELS")
    cifar10_source: tuple[str, ...] = _option((CIFAR10_URL,), "default source(s) of the cifar10 dataset, comma-separated",
                                               env="TLFS_CIFAR10_SOURCE", default_text="the official tarball, md5-checked")
    cache_dir: str = _option("tlfs-data/cache", "local copies of remote dataset sources", env="TLFS_CACHE")
    batch_size: int = _option(0, "images per inference batch", env="TLFS_BATCH_SIZE", minimum=0,
                               default_text="0 = the device's: 64 on cpu, 256 on cuda")
    shard_size: int = _option(2500, "images per shard file (per split)", env="TLFS_SHARD_SIZE", positive=True)
    codec: str = _option(DEFAULT_CODEC, "Parquet compression of the feature files: lz4; zstd (a fifth smaller, more "
                                        "CPU to write); none (the least CPU, the largest)", env="TLFS_CODEC", choices=CODECS)
    device: str = _option("cpu", "onnxruntime device; cuda never falls back", env="TLFS_DEVICE", choices=("cpu", "cuda"))
    precision: str = _option("", "graph precision: fp32, fp16 (for CUDA), int8 (for the CPU: a quantized copy of the "
                                  "graph, built once)", env="TLFS_PRECISION", choices=("fp32", "fp16", "int8"),
                              default_text="the device's: fp32 on cpu, fp16 on cuda; int8 on cpu only")
    cudnn_conv_algo_search: str = _option("EXHAUSTIVE", "cuDNN convolution search, once per fixed shape",
                                           env="TLFS_CUDNN_CONV_ALGO_SEARCH", choices=("EXHAUSTIVE", "HEURISTIC", "DEFAULT"))
    bound_buffers: int = _option(0, "sets of bound device buffers per input shape, each run by a thread of its own: "
                                    "one batch is copied in while another computes", env="TLFS_BOUND_BUFFERS", minimum=0,
                                 default_text="0 = the device's: 2 on cuda, 1 on cpu")
    threads: int = _option(0, "onnxruntime intra-op threads, shared out among its sessions", env="TLFS_THREADS", minimum=0,
                           default_text="0 = one per core")
    sessions: int = _option(0, "onnxruntime sessions of the graph, each computing its part of every batch at once on "
                               "its share of the threads (dynamic-shape graphs)", env="TLFS_SESSIONS", minimum=0,
                            default_text="0 = the device's: 2 on cpu where there are 2 cores or more, 1 on cuda "
                                         "(its sets of bound buffers overlap the batches)")
    decode_workers: int = _option(0, "processes decoding images", env="TLFS_DECODE_WORKERS", minimum=0,
                                   default_text="0 = one per core with a GPU, a quarter of the cores on cpu, where "
                                                "inference takes them; 1 = none, decode on the reading thread")
    writers: int = _option(0, "threads encoding and writing shard files", env="TLFS_WRITERS", minimum=0,
                            default_text="0 = one per core with a GPU, a quarter of the cores on cpu, where "
                                         "inference takes them (at least one, at most 8); 1 = in order, one at a time")
    # Airflow fails a mapping longer than [core] max_map_length (1,024 by default).
    max_shard_tasks: int = _option(512, "extract_shard tasks a DAG run maps at most (each takes a group of shards)",
                                    env="TLFS_MAX_SHARD_TASKS", positive=True)
    # A commit removes another plan's files only once its leases ran out (features/leases.py).
    lease_seconds: float = _option(DEFAULT_TTL, "seconds a run's lease on its plan lasts unless renewed (every quarter of it)",
                                    env="TLFS_LEASE_SECONDS", positive=True)
    # so that the plan's next task, waiting in a queue, still finds it
    task_lease_linger: float = _option(7200.0, "seconds a DAG task's lease outlives the task", env="TLFS_TASK_LEASE_LINGER",
                                        minimum=0)
    # Which older versions of a feature set stay readable (features/versions.py); applied
    # by each commit and `tlfs vacuum`.
    retain_versions: int = _option(0, "keep the newest N versions", env="TLFS_RETAIN_VERSIONS", minimum=0,
                                    default_text="0 = no count limit")
    retain_days: float = _option(7.0, "keep versions younger than D days", env="TLFS_RETAIN_DAYS", minimum=0,
                                  default_text="7; 0 = no age limit")

    def runtime(self) -> Runtime:
        """Where and how extraction computes: the device's defaults where unset."""
        from tlfs.models.runtime import resolve_runtime

        return resolve_runtime(self.device, self.precision or None, self.batch_size or None,
                               cudnn_conv_algo_search=self.cudnn_conv_algo_search, bound_buffers=self.bound_buffers or None)

    def lease_terms(self, task: bool = False) -> LeaseTerms:
        from tlfs.features.leases import LeaseTerms

        return LeaseTerms(self.lease_seconds, self.task_lease_linger if task else 0.0)

    def retention(self):
        from tlfs.features.versions import Retention

        return Retention(self.retain_versions or None, self.retain_days or None)

    def sources_for(self, dataset: str, given: list[str] | None) -> list[str]:
        if given:
            return list(given)
        if dataset == DEFAULT_SOURCE_DATASET:
            return list(self.cifar10_source)
        raise PipelineError(f"dataset {dataset!r} needs --source URI (only {DEFAULT_SOURCE_DATASET} has a default source)")


FREEZE_PATTERN = r"^(all|none|[0-9]+)$"  # tap blocks kept frozen: a number, or all, or none


@dataclass(frozen=True)
class FinetuneConfig:
    """The fine-tuning task's settings: ``tlfs finetune`` flags and ``finetune_<dataset>``
    Params are generated from these fields."""

    freeze: str = _option("none", "tap blocks kept frozen in phase 2: a number, 'all' or 'none'", pattern=FREEZE_PATTERN)
    head_epochs: int = _option(2, "phase 1: epochs of the new classifier only", minimum=0)
    head_lr: float = _option(1e-3, "phase 1 RMSprop learning rate", positive=True)
    epochs: int = _option(10, "phase 2: epochs of the unfrozen layers", minimum=0)
    lr: float = _option(1e-4, "phase 2 SGD learning rate (the seeds' low rate)", positive=True)
    momentum: float = _option(0.9, "phase 2 SGD momentum", minimum=0)
    schedule: str = _option("constant", "learning-rate schedule of each phase", ("constant", "cosine"))
    batch_size: int = _option(64, "training images per step", positive=True)
    patience: int = _option(3, "epochs without a better validation accuracy before a phase stops", positive=True)
    # random initialisation (the seeds' case IV alternative): phase 2 only, nothing frozen
    from_scratch: bool = _option(False, "random initialisation instead of pretrained (one phase, nothing frozen)")
    label_smoothing: float = _option(0.0, "label smoothing of the training loss", minimum=0)
    weight_decay: float = _option(0.0, "SGD weight decay", minimum=0)
    seed: int = _option(0, "random seed (initialisation, sampling, augmentation)")

    def check(self) -> None:
        if not re.match(FREEZE_PATTERN, str(self.freeze)):
            raise PipelineError(f"--freeze must be a number of tap blocks, 'all' or 'none', not {self.freeze!r}")
        if self.schedule not in ("constant", "cosine"):
            raise PipelineError(f"--schedule must be constant or cosine, not {self.schedule!r}")
        if self.head_epochs < 0 or self.epochs < 0 or self.head_epochs + self.epochs == 0:
            raise PipelineError("--head-epochs and --epochs must be >= 0, and not both 0")
        if self.lr <= 0 or self.head_lr <= 0 or self.batch_size <= 0 or self.patience <= 0:
            raise PipelineError("learning rates, batch size and patience must be positive")
        if self.from_scratch and self.freeze not in ("none", "0"):
            raise PipelineError("--from-scratch trains every layer: it cannot be combined with --freeze")


ENV = {f.name: f.metadata["env"] for f in fields(Settings)}


def bounded(value, kind: type, minimum: float | None = None, positive: bool = False) -> int | float:
    """``value`` as a whole number (``kind`` int) or a finite number, within its bounds;
    ValueError says what was expected. The one check behind every numeric flag, Param
    default, environment variable and YAML setting."""
    import math

    try:
        number = kind(value)
        if kind is int and isinstance(value, float) and not value.is_integer():
            raise ValueError
    except (TypeError, ValueError):
        raise ValueError(f"expected {'a whole number' if kind is int else 'a number'}, got {value!r}") from None
    if kind is float and not math.isfinite(number):
        raise ValueError(f"expected a finite number, got {value!r}")
    if positive and number <= 0:
        raise ValueError(f"expected {'a positive number' if kind is int else 'a number above 0'}, got {value}")
    if minimum is not None and number < minimum:
        raise ValueError(f"expected {minimum:g} or more, got {value}")
    return number


def parse_value(f, value):
    """A field of :class:`Settings` or :class:`FinetuneConfig` from text or YAML, checked."""
    meta, kind = f.metadata, type(f.default)
    if kind is tuple:
        items = value.split(",") if isinstance(value, str) else list(value)
        return tuple(s.strip() for s in items if s.strip())
    if kind is bool:
        if isinstance(value, bool):
            return value
        text = str(value).lower()
        if text not in ("1", "true", "yes", "on", "0", "false", "no", "off"):
            raise ValueError(f"expected true or false, got {value!r}")
        return text in ("1", "true", "yes", "on")
    if kind in (int, float):
        return bounded(value, kind, meta["minimum"], meta["positive"])
    text = str(value)
    if meta["choices"] and not (text == "" and f.default == ""):
        canonical = {choice.lower(): choice for choice in meta["choices"]}  # any case, as it is written in the choices
        if text.lower() not in canonical:
            raise ValueError(f"expected one of {', '.join(meta['choices'])}, got {text!r}")
        text = canonical[text.lower()]
    if meta["pattern"] and not re.match(meta["pattern"], text):
        raise ValueError(f"expected {meta['help']}, got {text!r}")
    return text


def _default_text(f) -> str:
    return f.metadata["default_text"] or (", ".join(f.default) if isinstance(f.default, tuple) else str(f.default))


def setting_help(name: str) -> str:
    """A setting's help with its default and environment variable, as the CLI and the Params say it."""
    f = SETTING_FIELDS[name]
    return f"{f.metadata['help']} (default: ${f.metadata['env']} or {_default_text(f)})"


SETTING_FIELDS = {f.name: f for f in fields(Settings)}


def settings_table() -> str:
    """The settings as the operations guide shows them (a test keeps the guide's copy equal)."""
    rows = ["| setting | variable | default | what |", "| --- | --- | --- | --- |"]
    for f in fields(Settings):
        rows.append(f"| {f.name} | `{f.metadata['env']}` | {_default_text(f)} | {f.metadata['help']} |")
    return "\n".join(rows)


def _coerce(name: str, value):
    try:
        return parse_value(SETTING_FIELDS[name], value)
    except ValueError as exc:
        raise PipelineError(f"{name} ({SETTING_FIELDS[name].metadata['env']}): {exc}") from None


def load_settings(environ: dict | None = None, **overrides) -> Settings:
    environ = os.environ if environ is None else environ
    values: dict = {}
    config_file = environ.get("TLFS_CONFIG")
    if config_file:
        import yaml

        path = Path(config_file)
        if not path.exists():
            raise PipelineError(f"TLFS_CONFIG points to {path}, which does not exist")
        data = yaml.safe_load(path.read_text()) or {}
        unknown = set(data) - {f.name for f in fields(Settings)}
        if unknown:
            raise PipelineError(f"{path}: unknown setting(s) {', '.join(sorted(unknown))}")
        values.update(data)
    for name, var in ENV.items():
        if environ.get(var):
            values[name] = environ[var]
    values.update({k: v for k, v in overrides.items() if v is not None})
    return Settings(**{k: _coerce(k, v) for k, v in values.items()})
