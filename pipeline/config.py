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

from tlfs.pipeline.errors import PipelineError

if TYPE_CHECKING:
    from tlfs.features.leases import LeaseTerms
    from tlfs.models.session import Runtime

# The one dataset with a default source: the official CIFAR-10 python tarball (md5-checked
# in pipeline/datasets.py), or TLFS_CIFAR10_SOURCE.
DEFAULT_SOURCE_DATASET = "cifar10"
CIFAR10_URL = "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"


@dataclass(frozen=True)
class Settings:
    store: str = "tlfs-data/store"  # feature store root, any fsspec URI
    model_store: str = "tlfs-data/models"  # exported ONNX artifacts root, any fsspec URI
    cifar10_source: tuple[str, ...] = (CIFAR10_URL,)  # default source(s) of the cifar10 dataset
    cache_dir: str = "tlfs-data/cache"  # local copies of remote dataset sources
    batch_size: int = 0  # images per inference batch; 0 = the device's (64 on the CPU, 256 on CUDA)
    shard_size: int = 2500  # images per shard (per split)
    device: str = "cpu"
    precision: str = ""  # fp32 or fp16; "" = the device's (fp32 on the CPU, fp16 on CUDA)
    cudnn_conv_algo_search: str = "EXHAUSTIVE"  # EXHAUSTIVE, HEURISTIC or DEFAULT (once per fixed shape)
    threads: int = 0  # onnxruntime intra-op threads; 0 = one per core
    decode_workers: int = 0  # processes decoding images; 0 = one per core (GPU) or a quarter of them (CPU), 1 = none
    writers: int = 0  # threads encoding and writing shard files; 0 = one per core, at most 8; 1 = in order, one at a time
    # A DAG run maps at most this many extract_shard tasks (each takes a group of shards):
    # Airflow fails a mapping longer than [core] max_map_length (1,024 by default).
    max_shard_tasks: int = 512
    # A run's lease on its plan lasts this long unless renewed (every quarter of it); a
    # commit removes another plan's files only once its leases ran out (features/leases.py).
    lease_seconds: float = 600.0
    # A DAG task's lease outlives the task this long, so the plan's next task, waiting in
    # a queue, still finds it.
    task_lease_linger: float = 7200.0
    # Which older versions of a feature set stay readable (features/versions.py): the
    # newest ``retain_versions`` and those younger than ``retain_days``; 0 = no limit of
    # that kind (both 0: keep every version). Applied by each commit and `tlfs vacuum`.
    retain_versions: int = 0
    retain_days: float = 7.0

    def runtime(self) -> Runtime:
        """Where and how extraction computes: the device's defaults where unset."""
        from tlfs.models.session import resolve_runtime

        return resolve_runtime(self.device, self.precision or None, self.batch_size or None,
                               cudnn_conv_algo_search=self.cudnn_conv_algo_search)

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


def _option(default, help: str, choices: tuple | None = None, minimum: float | None = None, positive: bool = False,
            pattern: str | None = None):
    """A setting with the help text, choices and bounds that the CLI and the DAG Params
    show and check (``positive``: above 0; ``minimum``: at least that; ``pattern``: a
    regular expression a text setting must match)."""
    return field(default=default, metadata={"help": help, "choices": choices, "minimum": minimum, "positive": positive,
                                            "pattern": pattern})


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


ENV = {
    "store": "TLFS_STORE",
    "model_store": "TLFS_MODELS",
    "cifar10_source": "TLFS_CIFAR10_SOURCE",
    "cache_dir": "TLFS_CACHE",
    "batch_size": "TLFS_BATCH_SIZE",
    "shard_size": "TLFS_SHARD_SIZE",
    "device": "TLFS_DEVICE",
    "precision": "TLFS_PRECISION",
    "cudnn_conv_algo_search": "TLFS_CUDNN_CONV_ALGO_SEARCH",
    "threads": "TLFS_THREADS",
    "decode_workers": "TLFS_DECODE_WORKERS",
    "writers": "TLFS_WRITERS",
    "max_shard_tasks": "TLFS_MAX_SHARD_TASKS",
    "lease_seconds": "TLFS_LEASE_SECONDS",
    "task_lease_linger": "TLFS_TASK_LEASE_LINGER",
    "retain_versions": "TLFS_RETAIN_VERSIONS",
    "retain_days": "TLFS_RETAIN_DAYS",
}


def _coerce(name: str, value):
    if name == "cifar10_source":
        items = value.split(",") if isinstance(value, str) else list(value)
        return tuple(s.strip() for s in items if s.strip())
    if name in ("batch_size", "shard_size", "threads", "decode_workers", "writers", "max_shard_tasks", "retain_versions"):
        try:
            number = int(value)
        except (TypeError, ValueError):
            raise PipelineError(f"{name} must be a whole number, got {value!r}") from None
        if number < 0 or (number == 0 and name in ("shard_size", "max_shard_tasks")):
            raise PipelineError(f"{name} must be positive, got {number}")
        return number
    if name in ("lease_seconds", "task_lease_linger", "retain_days"):
        try:
            seconds = float(value)
        except (TypeError, ValueError):
            raise PipelineError(f"{name} must be a number of seconds, got {value!r}") from None
        if seconds <= 0 and name == "lease_seconds" or seconds < 0:
            raise PipelineError(f"{name} must be positive, got {seconds}")
        return seconds
    return str(value)


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
