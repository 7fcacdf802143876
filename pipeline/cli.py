"""``tlfs``: the command line. Each subcommand calls one pipeline step; errors are one
line on stderr and exit status 1; ``fit``, ``sweep`` and ``extract`` end with a JSON line."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
from dataclasses import fields

from tlfs.features.codecs import DEFAULT_CODEC
from tlfs.models.names import BACKBONE_HELP, DEFAULT_BACKBONE, HEADS
from tlfs.models.projection import METHODS as MAP_METHODS
from tlfs.models.runtime import DEFAULT_BATCH, resolve_runtime
from tlfs.pipeline.advise import LARGE_IMAGES_PER_CLASS, SIMILAR_SCORE
from tlfs.pipeline.bench import DEFAULT_IMAGES
from tlfs.pipeline.duplicates import DEFAULT_THRESHOLD as DUPLICATE_THRESHOLD
from tlfs.pipeline.familiarity import FAMILIAR_SHARE, NEIGHBOURS
from tlfs.pipeline.label_issues import DEFAULT_FOLDS as LABEL_ISSUE_FOLDS, SHEET_IMAGES as LABEL_ISSUE_SHEET
from tlfs.pipeline.feature_map import DEFAULT_IMAGES as MAP_IMAGES
from tlfs.pipeline.label_next import DEFAULT_COUNT as LABEL_NEXT_COUNT, SHEET_IMAGES as LABEL_NEXT_SHEET
from tlfs.pipeline.report import REPORT_FILE
from tlfs.pipeline.learning_curve import DEFAULT_SHARES as CURVE_SHARES, WORTH_A_DOUBLING
from tlfs.pipeline.stage_bench import STAGE_IMAGES
from tlfs.pipeline.dataset_sources import sources_for
from tlfs.pipeline.config import (DEFAULT_SOURCE_DATASET, SETTING_FIELDS, FinetuneConfig, Settings, bounded,
                                  load_settings, parse_value, setting_help)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit status 1, like every
    other error of tlfs (argparse's own habit is the usage block and status 2)."""

    def error(self, message: str):
        self.exit(1, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


class _Version(argparse.Action):
    """``tlfs --version``: the package, the git commit and the libraries that decide what a
    run computes, for a bug report; found only when asked (git is a subprocess)."""

    LIBRARIES = ("onnxruntime", "onnxruntime-gpu", "torch", "pyarrow", "apache-airflow")

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        import platform
        from importlib import metadata

        from tlfs.pipeline.lineage import code_version

        version = code_version()
        installed = []
        for name in self.LIBRARIES:
            try:
                installed.append(f"{name} {metadata.version(name)}")
            except metadata.PackageNotFoundError:
                pass
        commit = f" (git {version['git_commit'][:12]})" if version["git_commit"] else ""
        print(f"tlfs {version['package']}{commit}; Python {platform.python_version()}; {'; '.join(installed)}")
        parser.exit()


def _csv(value: str) -> list[str]:
    items = [v.strip() for v in value.split(",") if v.strip()]
    if not items:
        raise argparse.ArgumentTypeError("expected a comma-separated list")
    return items


def _checked(kind: type, minimum: float | None = None, positive: bool = False, maximum: float | None = None):
    """An argparse type over config.bounded, the one numeric check (its message becomes argparse's)."""
    def check(value: str):
        try:
            number = bounded(value, kind, minimum, positive)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None
        if maximum is not None and number > maximum:
            raise argparse.ArgumentTypeError(f"expected a number in (0, {maximum:g}], got {value}")
        return number

    return check


_positive = _checked(int, positive=True)
_non_negative = _checked(int, minimum=0)
_fraction = _checked(float, positive=True, maximum=1)
_positive_rate = _checked(float, positive=True)


def _table_file(value: str) -> str:
    """A table's file (``--output``), its format checked before the command's work."""
    from tlfs.pipeline.errors import PipelineError
    from tlfs.pipeline.tables import table_suffix

    try:
        table_suffix(value)
    except PipelineError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None
    return value


def _shares(value: str) -> list[float]:
    """Comma-separated fractions, each in (0, 1]."""
    return [_fraction(item) for item in _csv(value)]


def _setting_arg(p: argparse.ArgumentParser, name: str, flag: str | None = None, dest: str | None = None) -> None:
    """A flag for one of config.Settings' fields, made from it: type, bounds, choices, help and default."""
    f = SETTING_FIELDS[name]
    kind = type(f.default)
    p.add_argument(flag or "--" + name.replace("_", "-"), dest=dest or name, help=setting_help(name),
                   choices=f.metadata["choices"], type=None if f.metadata["choices"] else _field_type(f),
                   metavar=None if f.metadata["choices"] else ("N" if kind in (int, float) else "URI"))


def _saved_head_arg(p) -> None:
    p.add_argument("--head", help="a saved head, as tlfs fit names its folder under _heads/ (softmax-block15, "
                   "mlp-block14+head; default: the best saved head, the one tlfs heads marks best and the fit DAG ships)")


def _familiarity_args(p: argparse.ArgumentParser, help: str) -> None:
    p.add_argument("--unfamiliar", action="store_true", help=help)
    p.add_argument("--neighbours", type=_positive, metavar="K", help="with --unfamiliar: the K of the K-th most "
                   f"similar training image (default: {NEIGHBOURS}, or half the smallest class's training images where "
                   "fewer)")
    p.add_argument("--familiar-share", type=_fraction, default=FAMILIAR_SHARE, metavar="S", help="with --unfamiliar: "
                   f"the share of the training images that counts as familiar, which sets the threshold (default: "
                   f"{FAMILIAR_SHARE})")


def _store_arg(p: argparse.ArgumentParser) -> None:
    _setting_arg(p, "store")


def _image_files_arg(p: argparse.ArgumentParser, required: bool = True, help_more: str = "") -> None:
    p.add_argument("images", nargs="+" if required else "*", metavar="IMAGE", help="image files, folders (every image "
                   f"below) or globs, local or any fsspec URI{help_more}")


def _image_runtime_args(p: argparse.ArgumentParser) -> None:
    """Where and how new images run through the set's backbone."""
    for name in ("device", "batch_size", "decode_workers"):
        _setting_arg(p, name)
    p.add_argument("--no-progress", action="store_true", help="no progress bar")


def _backbone_arg(p: argparse.ArgumentParser, what: str = "backbone name (newest set) or exact backbone version") -> None:
    p.add_argument("--backbone", default=DEFAULT_BACKBONE, help=f"{what} (default: {DEFAULT_BACKBONE})")


def _backbone_args(p: argparse.ArgumentParser) -> None:
    _backbone_arg(p, f"{BACKBONE_HELP} (extract also takes an exported version, e.g. a fine-tuned one; "
                  "tlfs backbones lists them)")
    p.add_argument("--weights", help="state-dict file with the backbone's pretrained weights (default: its known source)")
    p.add_argument("--random-weights", action="store_true", help="untrained weights, for tests and benchmarks only")
    _setting_arg(p, "model_store", flag="--models")


def _set_dataset_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", required=True, help="the dataset whose feature set it reads (tlfs ls lists them)")


def _dataset_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", required=True, help=f"dataset name; {DEFAULT_SOURCE_DATASET} has a default source, others need "
                   "--source the first time (then the sources its newest set was extracted from are read)")
    p.add_argument("--source", action="append", dest="sources", metavar="URI",
                   help="dataset source: an image-folder dir/.tar/.tar.gz/.zip, WebDataset .tar archives, a Parquet table "
                        "of images, a CSV of labels beside the images (train.csv#root=train_images) or the CIFAR-10 "
                        "python tarball; a glob or brace list names many "
                        "('shards/train-{0000..0099}.tar'); repeat to merge; #md5=HEX or #sha256=HEX checks it, "
                        "#holdout=0.2 holds a test split out of a source of train images (a folder of "
                        "<class>/<image>), #split=, #image=, #label=, #split_column=, #id= set options "
                        "(docs/user-guide.md, Datasets)")
    p.add_argument("--limit", type=_positive, help="class-balanced sample of N images per split")


def _decode_workers_arg(p: argparse.ArgumentParser) -> None:
    _setting_arg(p, "decode_workers")


def _field_type(f):
    """The argparse type that checks a Settings or FinetuneConfig field (its DAG Param checks the same)."""
    def check(value: str):
        try:
            return parse_value(f, value)
        except ValueError as exc:
            raise argparse.ArgumentTypeError(str(exc)) from None

    return check


def _finetune_config_args(p: argparse.ArgumentParser) -> None:
    """One flag per FinetuneConfig field, with its default and help (pipeline/config.py)."""
    for f in fields(FinetuneConfig):
        flag = "--" + f.name.replace("_", "-")
        help_text = f.metadata["help"]
        if f.type == "bool":
            p.add_argument(flag, action="store_true", help=help_text)
            continue
        p.add_argument(flag, type=None if f.metadata["choices"] else _field_type(f), default=f.default,
                       choices=f.metadata["choices"], help=f"{help_text} (default {f.default})")


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(prog="tlfs", description="Transfer-learning feature store: ImageNet backbone -> ONNX -> "
                                     "multi-layer features in partitioned Parquet -> heads.")
    parser.add_argument("--version", action=_Version, help="the versions of tlfs, its git commit and its main libraries")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("backbones", help="list the backbones: the named ones and timm's (name, input, layers, where "
                                         "the weights come from, whether they are on this machine)")
    p.add_argument("name", nargs="?", help="one backbone in full, e.g. timm/convnext_tiny (its layers and classifier)")
    p.add_argument("--timm", metavar="PATTERN", help="timm's pretrained models matching PATTERN, e.g. 'vit_small*'")

    p = sub.add_parser("export", help="export a backbone to ONNX with a model card (reused when unchanged)")
    _backbone_args(p)

    p = sub.add_parser("extract", help="run a dataset through the backbone and store per-layer features")
    _dataset_args(p)
    _backbone_args(p)
    p.add_argument("--layers", type=_csv, help="comma-separated tap layers (default: all)")
    p.add_argument("--splits", type=_csv, help="comma-separated splits (default: all)")
    _store_arg(p)
    for name in ("device", "precision", "batch_size", "bound_buffers", "shard_size", "codec", "threads", "sessions",
                 "decode_workers"):
        _setting_arg(p, name)
    p.add_argument("--views", type=_csv, help="views stored beside the original: 'flip' stores the features of the "
                   "horizontally flipped image too (view=flip; heads use them as extra training rows and average at test)")
    p.add_argument("--full", action="store_true", help="extract every image again; by default a run reuses the "
                   "features of the images unchanged since the set's newest version and extracts only new and changed ones")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")

    p = sub.add_parser("fit", help="fit a head on one layer or a concatenation of layers")
    _set_dataset_arg(p)
    _backbone_arg(p)
    p.add_argument("--layer", required=True, type=_csv, help="layer, comma-separated layers to concatenate (each layer normalised to equal weight), or 'all'")
    p.add_argument("--head", default=HEADS[0], choices=HEADS, help=f"the head fitted (default: {HEADS[0]}): softmax "
                   "(a linear classifier), lightgbm (boosted trees on the softmax's scores) or mlp (one hidden layer)")
    _fit_views_arg(p)
    _balanced_arg(p)
    _store_arg(p)

    p = sub.add_parser("predict", help="classify new images with a head fitted on a feature set (files, folders, globs)")
    _image_files_arg(p)
    p.add_argument("--dataset", required=True, help="the feature set whose head classifies them")
    _backbone_arg(p)
    _saved_head_arg(p)
    p.add_argument("--output", metavar="FILE", type=_table_file, help="write every prediction to FILE (.csv, .parquet or .jsonl) "
                   "instead of printing each")
    p.add_argument("--min-probability", type=_fraction, default=0.0, metavar="P", help="mark the predictions below "
                   "probability P unsure, for a person to check (tlfs fit prints how accurate the head is above 0.5-0.99)")
    _familiarity_args(p, "also mark the images unlike the set's training images (of none of its classes, or from "
                      "elsewhere): by the cosine of the head's layers to the K-th most similar training image")
    _store_arg(p)
    _image_runtime_args(p)

    p = sub.add_parser("export-classifier", help="a saved head and its backbone as one ONNX classifier (uint8 images "
                       "in, probabilities and label out) that onnxruntime runs alone")
    p.add_argument("--dataset", required=True, help="the feature set whose head it is")
    _backbone_arg(p)
    _saved_head_arg(p)
    p.add_argument("--output", metavar="FILE", help="where to write it, local or any fsspec URI (default: "
                   "classifier.onnx in the head's folder)")
    _familiarity_args(p, "also output each image's similarity to the training images and whether it is familiar, as "
                      "predict --unfamiliar marks them (the training images' features go into the file)")
    _store_arg(p)

    p = sub.add_parser("duplicates", help="near-copies: each image's nearest image of another split (or its own) by "
                       "the cosine similarity of its features; a head's accuracy with and without them")
    _set_dataset_arg(p)
    _backbone_arg(p)
    p.add_argument("--layer", help="whose features are compared (default: head, else the set's deepest layer)")
    p.add_argument("--split", default="test", help="the images checked (default: test)")
    p.add_argument("--against", default="train", help="the images they may copy (default: train); the same split "
                   "as --split: copies within it")
    p.add_argument("--threshold", type=float, default=DUPLICATE_THRESHOLD, help="the cosine similarity from which a "
                   f"pair counts as near-copies (default: {DUPLICATE_THRESHOLD})")
    p.add_argument("--head", help="a saved head (softmax-block15) whose accuracy is given with and without the near-copies")
    p.add_argument("--output", metavar="FILE", type=_table_file, help="write every image's nearest neighbour to FILE (.csv, .parquet "
                   "or .jsonl), most similar first")
    p.add_argument("--show", type=int, default=10, metavar="N", help="print the N most similar pairs (default: 10)")
    p.add_argument("--sheet", metavar="FILE.png", help="draw where the threshold cuts: the --show least similar "
                   "pairs it flags and the --show most similar it does not, the images read again from the sources")
    p.add_argument("--save", action="store_true", help="keep the pairs and what they come to (and the --sheet) beside "
                   "the set's heads, where `tlfs report` shows them (as the fit_heads DAG's near_copies task does)")
    _store_arg(p)

    p = sub.add_parser("similar", help="search a feature set by example: the stored images most similar to each "
                       "given image (files, folders, globs) by the cosine similarity of one layer's features")
    _image_files_arg(p, required=False, help_more="; or --id")
    p.add_argument("--id", action="append", default=[], metavar="IMAGE_ID", help="a stored image (test/cat/0003.jpg) "
                   "whose stored features are searched for instead of a file's (repeat for several)")
    p.add_argument("--dataset", required=True, help="the feature set searched")
    _backbone_arg(p)
    p.add_argument("--layer", default="head", help="whose features are compared (default: head)")
    p.add_argument("--split", type=_csv, default=[], help="the splits searched, comma-separated (default: every split)")
    p.add_argument("-k", type=_positive, default=5, help="matches an image (default: 5)")
    p.add_argument("--output", metavar="FILE", type=_table_file, help="write every match to FILE (.csv, .parquet or .jsonl) instead of "
                   "printing them")
    p.add_argument("--sheet", metavar="FILE.png", help="draw each image beside its matches, the stored images read "
                   "again from the set's sources")
    _store_arg(p)
    _image_runtime_args(p)

    p = sub.add_parser("label-issues", help="labels that look wrong: each image classified by a head that never saw "
                       "it (out of fold on the training split), the doubtful ones by confident learning, least likely first")
    _set_dataset_arg(p)
    _backbone_arg(p)
    _chosen_layer_arg(p)
    p.add_argument("--head", default=HEADS[0], choices=HEADS, help=f"which head classifies the images (default: {HEADS[0]})")
    p.add_argument("--split", default="train", help="the images whose labels are checked (default: train, out of fold; "
                   "another split is classified by a head fitted on train)")
    p.add_argument("--folds", type=_positive, default=LABEL_ISSUE_FOLDS,
                   help=f"folds of the training split's cross-validation (default: {LABEL_ISSUE_FOLDS})")
    _fit_views_arg(p)
    p.add_argument("--all", action="store_true", dest="every", help="every image of the split in the table, the least "
                   "likely label first, the doubtful ones flagged (default: the doubtful ones only)")
    p.add_argument("--output", metavar="FILE", type=_table_file, help="write the table to FILE (.csv, .parquet or .jsonl)")
    p.add_argument("--show", type=int, default=20, metavar="N", help="print the table's first N rows (default: 20)")
    p.add_argument("--sheet", metavar="FILE.png", help=f"draw the {LABEL_ISSUE_SHEET} most doubtful images, read "
                   "again from the set's sources, each with its label and the class suggested")
    p.add_argument("--save", action="store_true", help="keep the table and what it comes to (and the --sheet) beside "
                   "the set's heads, where `tlfs report` shows them (as the fit_heads DAG's label_issues task does)")
    _store_arg(p)

    p = sub.add_parser("label-next", help="which of a pool of unlabelled images to label next: those a saved head is "
                       "least sure of (between its two likeliest classes), spread over what they look like; images "
                       "the set already holds are left out")
    _image_files_arg(p, help_more=": the unlabelled pool")
    p.add_argument("--dataset", required=True, help="the feature set whose head scores them")
    _backbone_arg(p)
    _saved_head_arg(p)
    p.add_argument("-n", "--count", type=_positive, default=LABEL_NEXT_COUNT, metavar="N",
                   help=f"images to choose (default {LABEL_NEXT_COUNT})")
    p.add_argument("--output", metavar="FILE", type=_table_file, help="write the chosen images to FILE (.csv, .parquet or .jsonl), "
                   "least sure first, instead of printing them")
    p.add_argument("--sheet", metavar="FILE.png", help=f"draw the first {LABEL_NEXT_SHEET} chosen images with the "
                   "two classes the head hesitates between")
    p.add_argument("--exclude", action="append", default=[], metavar="FILE",
                   help="an earlier queue (label-next's .csv, .parquet or .jsonl): its images, sent to be labelled "
                   "and not yet in the set, are not chosen again (repeatable)")
    p.add_argument("--no-cache", action="store_true", help="run every image through the backbone, and neither read "
                   "nor keep the pool's features in the set's _pool/ (kept, a later round runs only new or changed "
                   "images through it)")
    _store_arg(p)
    _image_runtime_args(p)

    p = sub.add_parser("learning-curve", help="would more labelled images help? one head fitted on growing shares of "
                       "the training images, each scored on the same validation and test images")
    _set_dataset_arg(p)
    _backbone_arg(p)
    _chosen_layer_arg(p)
    p.add_argument("--head", default=HEADS[0], choices=HEADS, help=f"the head fitted (default: {HEADS[0]})")
    p.add_argument("--shares", type=_shares, default=list(CURVE_SHARES), help="shares of the training images, "
                   f"comma-separated (default: {','.join(f'{s:g}' for s in CURVE_SHARES)})")
    p.add_argument("--repeats", type=_positive, default=1, help="draws of the training images, for the spread of each "
                   "point and of the gain (default: 1)")
    _fit_views_arg(p)
    _balanced_arg(p, " (the curve of their balanced accuracy)")
    _store_arg(p)

    p = sub.add_parser("map", help="a set's images on a plane: one layer's features of a class-balanced sample, by "
                       "t-SNE or PCA, one colour a class, and the classes' silhouette")
    _set_dataset_arg(p)
    _backbone_arg(p)
    _chosen_layer_arg(p)
    p.add_argument("--split", default="test", help="the images drawn (default: test)")
    p.add_argument("--method", default="tsne", choices=MAP_METHODS, help="t-SNE (clusters; default) or PCA (exact, quick)")
    p.add_argument("--images", type=_positive, default=MAP_IMAGES, help=f"at most this many, as many of each class "
                   f"(default: {MAP_IMAGES})")
    p.add_argument("--output", metavar="FILE", type=_table_file, help="write each image's place to FILE (.csv, .parquet or .jsonl)")
    _store_arg(p)

    p = sub.add_parser("heads", help="every saved head of the store's sets (or of one dataset's), by validation "
                       "accuracy: which backbone, layer and head transfer best")
    p.add_argument("--dataset", help="only this dataset's sets")
    _store_arg(p)

    p = sub.add_parser("sweep", help="fit the softmax head on every stored layer and compare")
    _set_dataset_arg(p)
    _backbone_arg(p)
    _fit_views_arg(p)
    _balanced_arg(p, " (the best layer then chosen by the validation images' balanced accuracy)")
    _store_arg(p)

    p = sub.add_parser("finetune", help="fine-tune a backbone on the dataset's classes (two phases, checkpointed), "
                       "export it as a new backbone version")
    _dataset_args(p)
    _backbone_args(p)
    _store_arg(p)
    _finetune_config_args(p)
    p.add_argument("--device", choices=["cpu", "cuda"], help="PyTorch device (default: cpu); cuda never falls back")
    p.add_argument("--restart", action="store_true", help="ignore an existing checkpoint of the same run")
    p.add_argument("--extract", action="store_true", help="then extract features with the new version and fit a softmax head")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")

    p = sub.add_parser("bench", help="images/s of PyTorch fp32, PyTorch fp16, onnxruntime and the full pipeline, side by side; "
                       "--host-only: the host side alone (reading, decoding, batching, writing) on a real dataset")
    _backbone_args(p)
    p.add_argument("--device", choices=["cpu", "cuda"], default="cpu", help="the device PyTorch, onnxruntime and the "
                   "pipeline run on (default: cpu); cuda never falls back")
    p.add_argument("--batch-size", type=_positive, help="default: the device's ("
                   + ", ".join(f"{n} on {d}" for d, n in DEFAULT_BATCH.items()) + ")")
    p.add_argument("--images", type=_positive, help="images per measurement (default "
                   + ", ".join(f"{n:,} on {d}" for d, n in DEFAULT_IMAGES.items())
                   + f"; --stages: the dataset's first {STAGE_IMAGES:,})")
    p.add_argument("--rounds", type=_positive, default=1,
                   help="pipeline runs, each followed by onnxruntime alone again; the round of the median ratio "
                   "is reported, every round's ratio beside it (default 1)")
    _decode_workers_arg(p)
    _setting_arg(p, "bound_buffers")
    _setting_arg(p, "sessions")
    _setting_arg(p, "codec")
    p.add_argument("--host-only", action="store_true", help="measure the host side of tlfs extract on --dataset, with "
                   "inference replaced by a trivial session, beside reading and decoding alone")
    p.add_argument("--device-rate", type=_positive_rate, metavar="IMAGES_PER_S",
                   help="with --host-only: inference replaced by a stand-in GPU of this rate (batches of 256 unless "
                   "--batch-size, short ones padded, two in flight), to see whether this host keeps it busy")
    p.add_argument("--dataset", help="with --host-only: the dataset (cifar10 has a default source)")
    p.add_argument("--source", action="append", dest="sources", metavar="URI", help="with --host-only: a source; repeat to merge")
    p.add_argument("--stages", action="store_true", help="each host stage of tlfs extract alone on --dataset, in "
                   "images/s on one core, which are serial, and the host side's projected rate on --cores")
    p.add_argument("--cores", type=_positive, help="with --stages: the cores to project onto (default: this machine's)")
    p.add_argument("--layers", help="with --host-only or --stages: comma-separated layers (default: all of the backbone's)")
    p.add_argument("--limit", type=_positive, help="with --host-only: class-balanced sample of N images per split")

    p = sub.add_parser("verify", help="check every shard of a feature set against its manifest's checksums")
    _set_dataset_arg(p)
    _backbone_arg(p)
    _store_arg(p)
    p.add_argument("--repair", action="store_true", help="re-extract only the damaged shards and commit again")
    p.add_argument("--device", choices=["cpu", "cuda"], help="device for --repair (default and only choice: the set's own)")

    p = sub.add_parser("advise", help="which transfer case the dataset is (size x similarity to ImageNet) and what to do, "
                       "from its committed features")
    _set_dataset_arg(p)
    _backbone_arg(p, "backbone name (newest set) or exact version; the set must hold the layer its ImageNet "
                  "classifier reads (e.g. head)")
    _store_arg(p)
    p.add_argument("--large-per-class", type=_positive,
                   help=f"training images per class from which a dataset is large (default {LARGE_IMAGES_PER_CLASS})")
    p.add_argument("--similar-score", type=_fraction,
                   help=f"similarity score from which a dataset is ImageNet-like (default {SIMILAR_SCORE})")

    p = sub.add_parser("report", help="one self-contained HTML page about a feature set: what it holds and rejected, "
                       "the advice and its evidence, the layer sweep, the heads, the learning curves and the images to "
                       "label next, with their plots (refits nothing)")
    _set_dataset_arg(p)
    _backbone_arg(p)
    _store_arg(p)
    p.add_argument("--version", type=_positive, help="a version number of the set (default: the newest; see tlfs history)")
    p.add_argument("--output", metavar="FILE.html", help="where to write the page, any fsspec URI (default: "
                   f"{REPORT_FILE} in the set's _heads/)")

    p = sub.add_parser("ls", help="list committed feature sets")
    _store_arg(p)

    p = sub.add_parser("describe", help="show a feature set's manifest summary and lineage")
    _set_dataset_arg(p)
    _backbone_arg(p)
    _store_arg(p)
    _version_args(p)
    p.add_argument("--json", action="store_true", help="print the whole manifest as JSON")

    p = sub.add_parser("history", help="list a feature set's versions: when, rows, images added / changed / removed / reused")
    _set_dataset_arg(p)
    _backbone_arg(p)
    _store_arg(p)

    p = sub.add_parser("vacuum", help="delete the files of versions the retention no longer keeps (safe beside "
                       "readers of kept versions and live runs)")
    _set_dataset_arg(p)
    _backbone_arg(p)
    _store_arg(p)
    _setting_arg(p, "retain_versions", flag="--keep")
    _setting_arg(p, "retain_days", flag="--keep-days")
    return parser


def _version_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--version", type=_positive, help="a version number of the set (default: the newest; see tlfs history)")
    p.add_argument("--as-of", help="the version that was newest at this ISO time (e.g. 2026-11-27T09:00:00Z)")


def _settings(args: argparse.Namespace) -> Settings:
    """The settings, with every flag this command has for one of them (a flag left out: None, the next source decides)."""
    return load_settings(**{name: getattr(args, name, None) for name in SETTING_FIELDS})


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def cmd_backbones(args, settings: Settings) -> None:
    from tlfs.models import catalog

    if args.name:
        rows = [catalog.describe(args.name)]
    elif args.timm:
        rows = catalog.timm_models(args.timm)
    else:
        rows = catalog.named_backbones()
    if not rows:
        print(f"no timm model with pretrained weights matches {args.timm!r}")
        return None
    width = max([34, *(len(row["name"]) for row in rows)])
    print(f"{'backbone':<{width}} {'input':>5}  {'weights here':<12} {'weights from'}")
    for row in rows:
        print(f"{row['name']:<{width}} {row['input_size']:>5}  {'yes' if row['offline'] else 'no':<12} {row['weights_source']}")
        if row["layers"]:
            print(f"{'':<{width}} layers: {', '.join(row['layers'])}"
                  + (f"; ImageNet classifier on {row['imagenet_classifier']}" if args.name else ""))
    if not args.name and not args.timm:
        print(f"{'timm/<model>[.<tag>]':<{width}} {'its':>5}  {'if cached':<12} timm's pretrained config and the Hugging "
              "Face hub (tlfs backbones --timm 'PATTERN' lists them)")
    return None


def cmd_export(args, settings: Settings) -> dict:
    from tlfs.models.export import export

    artifact = export(args.backbone, settings.model_store, weights=args.weights, random_weights=args.random_weights, log=_log)
    card = artifact.card
    print(f"{card['version']}  {artifact.onnx_uri}")
    for name, dim in card["layers"].items():
        p = card["parity"][name]
        print(f"  {name:>10}  {dim:>5}-d  parity max|diff| {p['max_abs_diff']:.2e}  cosine {p['cosine_similarity']:.8f}")
    return {"backbone_version": card["version"], "uri": artifact.uri, "onnx_sha256": card["onnx_sha256"], "parity": card["parity"]}


def _opening_parts(summary: dict) -> str:
    """`` (variant 1.6 s, session 0.4 s, ...)``: where the session's opening went, where it was measured by part."""
    parts = summary.get("session_open_parts") or {}
    if list(parts) in ([], ["session"]):  # the session alone: its seconds are the total already given
        return ""
    return f" ({', '.join(f'{name} {seconds} s' for name, seconds in parts.items())})"


def cmd_extract(args, settings: Settings) -> dict:
    from tlfs.pipeline import extract
    from tlfs.pipeline.extract import ExtractionRequest, RunOptions

    request = ExtractionRequest(
        args.dataset, sources_for(settings, args.dataset, args.sources, _log), args.backbone, settings.store, settings.model_store,
        layers=args.layers, splits=args.splits, limit=args.limit, runtime=settings.runtime(), shard_size=settings.shard_size,
        codec=settings.codec, views=args.views, weights=args.weights, random_weights=args.random_weights,
        cache_dir=settings.cache_dir, incremental=not args.full)
    options = RunOptions(threads=settings.threads or None, sessions=settings.sessions or None,
                         decode_workers=settings.decode_workers, writers=settings.writers or None,
                         show_progress=not args.no_progress, lease=settings.lease_terms(), retention=settings.retention())
    summary = extract.run(request, options, log=_log)
    codec = "" if summary["codec"] == DEFAULT_CODEC else f", this run's files in {summary['codec']}"
    print(f"features: {summary['set_uri']} version {summary['version']}"
          f"{' (unchanged)' if summary['unchanged'] else ''}  ({summary['rows']} rows, {summary['rejected']} rejected; "
          f"{_extracted(summary)}; Parquet {summary['parquet_bytes'] / 1e6:.1f} MB{codec}"
          + (f"; the session took {summary['session_open_seconds']} s to open{_opening_parts(summary)}"
             if summary["session_open_seconds"] else "")
          + ")")
    return summary


def _extracted(summary: dict) -> str:
    """What the run computed and how fast, with how busy the session and the writers were
    meanwhile (the one near 100 % bounds the run)."""
    extracted, computed = summary["images_extracted"], summary["images_computed"]
    if not summary["images_per_second"]:
        return f"{extracted} images extracted" + (", all by an earlier run of the plan" if extracted else "")
    busy = [f"{name} {summary[key]:.0%}" for name, key in (("the session", "session_busy"), ("the writers", "writers_busy"))
            if summary.get(key) is not None]
    # a run that resumes a plan computes only the shards an earlier run left: its rate is of those
    this_run = "" if computed == extracted else f", {computed} of them by this run,"
    return (f"{extracted} images extracted{this_run} at {summary['images_per_second']} images/s"
            + (f", busy: {', '.join(busy)}" if busy else ""))


def cmd_finetune(args, settings: Settings) -> dict:
    from tlfs.pipeline.finetune import FinetuneRequest, finetune

    if args.random_weights:
        raise SystemExit("tlfs finetune: use --from-scratch for random initialisation")
    config = FinetuneConfig(**{f.name: getattr(args, f.name) for f in fields(FinetuneConfig)})
    sources = sources_for(settings, args.dataset, args.sources, _log)
    request = FinetuneRequest(args.dataset, sources, args.backbone, settings.model_store, config, limit=args.limit,
                              device=settings.device, cache_dir=settings.cache_dir, weights=args.weights)
    result = finetune(request, restart=args.restart, show_progress=not args.no_progress, log=_log)
    print(f"fine-tuned {args.backbone} on {args.dataset}: test accuracy {result['test_accuracy']:.4f} "
          f"(validation {result['validation_accuracy']:.4f}, {result['seconds']}s) -> {result['backbone_version']}")
    if args.extract:
        from tlfs import features
        from tlfs.models.backbones import get_spec
        from tlfs.models.finetune import classifier_layer
        from tlfs.pipeline import extract
        from tlfs.pipeline.extract import ExtractionRequest, RunOptions
        from tlfs.pipeline.fit import fit

        layer = classifier_layer(get_spec(args.backbone))
        request = ExtractionRequest(args.dataset, sources, result["backbone_version"], settings.store,
                                          settings.model_store, limit=args.limit, runtime=settings.runtime(),
                                          codec=settings.codec, cache_dir=settings.cache_dir)
        extracted = extract.run(request, RunOptions(show_progress=not args.no_progress, lease=settings.lease_terms()), log=_log)
        head = fit(features.open_set(args.dataset, result["backbone_version"], store=settings.store), [layer], "softmax", log=_log)
        print(f"features: {extracted['set_uri']}; softmax on {layer}: test accuracy {head['test_accuracy']:.4f}")
        result = {**result, "set_uri": extracted["set_uri"], "softmax_test_accuracy": head["test_accuracy"]}
    return {k: v for k, v in result.items() if k != "history"}


def _chosen_layer_arg(p) -> None:
    p.add_argument("--layer", type=_csv, default=[], help="the head's features: a layer, comma-separated layers side by "
                   "side, or 'all' (default: the layer the stored sweep chose, or the deepest layer without a sweep)")


def _fit_views_arg(p) -> None:
    p.add_argument("--views", type=_csv, help="stored views to use, comma-separated (default: all the set has; "
                   "'original' leaves a flipped view out)")


def _balanced_arg(p, more: str = "") -> None:
    p.add_argument("--balanced", action="store_true", help="predict as if every class were equally common: the training "
                   "split's class shares divided out of the head's probabilities (for imbalanced classes: more of the rare "
                   f"ones found, a better accuracy averaged over classes); saved as HEAD-LAYERS-balanced{more}")


def cmd_fit(args, settings: Settings) -> dict:
    from tlfs import features
    from tlfs.pipeline.fit import fit, frequent_confusions

    result = fit(features.open_set(args.dataset, args.backbone, store=settings.store), args.layer, args.head, log=_log,
                 views=args.views, balanced=args.balanced)
    print(f"{args.head} on {'+'.join(result['layers'])}{' (balanced)' if result['balanced'] else ''}: test accuracy "
          f"{result['test_accuracy']:.4f}, balanced accuracy {result['test_balanced_accuracy']:.4f}  -> {result['saved_to']}")
    for name, acc in result["per_class_accuracy"].items():
        print(f"  {name:>14}  {acc if acc is None else f'{acc:.3f}'}")
    confusions = frequent_confusions(result["confusion_matrix"], 3)
    if confusions:
        classes = result["classes"]
        print("  most often taken for another: " + ", ".join(f"{classes[i]} as {classes[j]} {n}" for n, i, j in confusions))
    for threshold, figures in result["at_probability"].items():
        if figures["accuracy"] is not None:
            print(f"  probability >= {threshold:<4}  {figures['share']:6.1%} of the test images, {figures['accuracy']:6.1%} of "
                  "them right")
    if result["calibration_error"] is not None:
        print(f"  calibration error {result['calibration_error']:.4f} (the gap between its probability and how often it "
              "is right)")
    return {k: result[k] for k in ("test_accuracy", "validation_accuracy", "test_balanced_accuracy",
                                   "validation_balanced_accuracy", "balanced", "head", "layers", "backbone_version", "saved_to")}


def cmd_predict(args, settings: Settings) -> dict:
    from collections import Counter

    from tlfs.pipeline.predict import PredictRequest, predict, write_predictions

    predictions = predict(PredictRequest(args.dataset, args.backbone, tuple(args.images), args.head, settings.store,
                                         settings.device, settings.batch_size, args.min_probability, args.unfamiliar,
                                         args.neighbours, args.familiar_share, settings.decode_workers), log=_log,
                          show_progress=not args.no_progress)
    if args.output:
        write_predictions(predictions, args.output)
    else:
        for p in predictions:
            print(f"{p.image}\t{p.label}\t{p.probability:.4f}" + ("" if p.sure else "\tunsure")
                  + ("\tunfamiliar" if p.familiar is False else "") if p.label is not None
                  else f"{p.image}\t-\t{p.reason}")
    return {"images": len(predictions), "classes": dict(Counter(p.label for p in predictions if p.label is not None)),
            "rejected": sum(p.label is None for p in predictions), "min_probability": args.min_probability,
            "unsure": sum(p.sure is False for p in predictions),
            **({"unfamiliar": sum(p.familiar is False for p in predictions)} if args.unfamiliar else {}),
            "output": args.output}


def cmd_export_classifier(args, settings: Settings) -> dict:
    from tlfs.pipeline.export_classifier import ClassifierRequest, export_classifier

    return export_classifier(ClassifierRequest(args.dataset, args.backbone, args.head, args.output, settings.store,
                                               unfamiliar=args.unfamiliar, neighbours=args.neighbours,
                                               familiar_share=args.familiar_share), log=_log)


def _write_file(uri: str, data: bytes) -> None:
    """``data`` written to ``uri``, local or any fsspec URI (a sheet of images)."""
    import fsspec

    with fsspec.open(uri, "wb") as f:
        f.write(data)


def cmd_report(args, settings: Settings) -> dict:
    from tlfs.pipeline.report import ReportRequest, write_report

    summary = write_report(ReportRequest(args.dataset, args.backbone, settings.store, args.version), args.output,
                           log=_log)
    print(f"report: {summary['output']}")
    return summary


def cmd_duplicates(args, settings: Settings) -> dict:
    from tlfs.pipeline.duplicates import KEPT_AS, DuplicatesRequest, find_duplicates, threshold_sheet
    from tlfs.pipeline.tables import write_table

    request = DuplicatesRequest(args.dataset, args.backbone, args.layer, args.split, args.against, args.threshold,
                                args.head, settings.store)
    pairs, summary = find_duplicates(request, log=_log)
    print(f"{summary['near_copies']} of {summary['images']} {summary['counted']} (cosine similarity >= "
          f"{summary['threshold']} on {summary['layer']}), {summary['other_label']} of them of another class")
    for row in pairs.head(max(args.show, 0)).itertuples():
        print(f"  {row.similarity:.4f}  {row.image_id} ({row.label_name})  ~  {row.nearest_id} ({row.nearest_label_name})")
    if "head" in summary:
        head = summary["head"]
        parts = [(head["all"], f"all {summary['images']}"),
                 (head["without_near_copies"], f"the {head['images_without']} without a near-copy"),
                 (head["on_near_copies"], f"the {summary['near_copies']} near-copies")]
        print(f"{head['name']}: accuracy " + ", ".join(f"{value:.4f} on {what}" for value, what in parts if value is not None))
    if args.output:
        write_table(pairs, args.output)
    sheet = threshold_sheet(request, pairs, max(args.show, 1), log=_log) if args.sheet else None
    if sheet:
        _write_file(args.sheet, sheet)
    return {**summary, "output": args.output, "sheet": args.sheet, "saved_to": _kept(args.save, KEPT_AS, pairs, summary,
                                                                                     sheet)}


def _kept(save: bool, name: str, table, summary: dict, sheet: bytes | None) -> str | None:
    """With ``--save``, the check kept beside the set's heads for ``tlfs report``: where its summary went."""
    if not save:
        return None
    from tlfs.pipeline.kept_checks import keep_check

    saved = keep_check(summary["feature_set"], name, table, summary, sheet)
    _log(f"kept beside the heads: {saved}")
    return saved


def cmd_similar(args, settings: Settings) -> dict:
    from tlfs.pipeline.similar import SimilarRequest, results_sheet, similar_images
    from tlfs.pipeline.tables import write_table

    request = SimilarRequest(args.dataset, args.backbone, tuple(args.images), tuple(args.id), args.layer,
                             tuple(args.split), args.k, settings.store, device=settings.device,
                             batch_size=settings.batch_size, decode_workers=settings.decode_workers)
    results = similar_images(request, log=_log, show_progress=not args.no_progress)
    if args.output:
        write_table(results, args.output)
    else:
        for image, matches in results.groupby("image", sort=False):
            print(image)
            for row in matches.itertuples():
                print(f"  {row.rank}  {row.similarity:.4f}  {row.image_id} ({row.label_name})" if row.rank
                      else f"  -  {row.reason}")
    if args.sheet:
        _write_file(args.sheet, results_sheet(request, results, log=_log))
    first = results[results["rank"] == 1]
    return {"images": int(results["image"].nunique()), "rejected": int((results["rank"] == 0).sum()),
            "layer": args.layer, "k": args.k, "nearest_labels": first["label_name"].value_counts().to_dict(),
            "output": args.output, "sheet": args.sheet}


def cmd_label_issues(args, settings: Settings) -> dict:
    from tlfs.pipeline.label_issues import KEPT_AS, LabelIssuesRequest, find_label_issues, issues_sheet
    from tlfs.pipeline.tables import write_table

    request = LabelIssuesRequest(args.dataset, args.backbone, tuple(args.layer), args.split, args.head, args.folds,
                                 tuple(args.views or ()), args.every, settings.store)
    issues, summary = find_label_issues(request, log=_log)
    print(f"{summary['issues']} of {summary['images']} {summary['split']} labels look wrong ({summary['share']:.2%}); "
          f"the held-out {summary['head']} head agrees with {summary['held_out_accuracy']:.2%} of the labels")
    for row in issues.head(max(args.show, 0)).itertuples():
        print(f"  {row.rank:>4}  {row.image_id}  {row.label_name} ({row.label_probability:.3f})  ->  {row.suggested} "
              f"({row.suggested_probability:.3f})" + ("" if row.flagged else "  (not flagged)"))
    if args.output:
        write_table(issues, args.output)
    sheet = issues_sheet(request, issues, summary["layers"], log=_log) if args.sheet else None
    if sheet:
        _write_file(args.sheet, sheet)
    return {**summary, "output": args.output, "sheet": args.sheet, "saved_to": _kept(args.save, KEPT_AS, issues, summary,
                                                                                     sheet)}


def cmd_label_next(args, settings: Settings) -> dict:
    from tlfs.pipeline.label_next import LabelNextRequest, chosen_sheet, label_next
    from tlfs.pipeline.tables import write_table

    request = LabelNextRequest(args.dataset, args.backbone, tuple(args.images), args.count, args.head, settings.store,
                               settings.device, settings.batch_size, cache=not args.no_cache,
                               decode_workers=settings.decode_workers, exclude=tuple(args.exclude))
    chosen, summary = label_next(request, log=_log, show_progress=not args.no_progress)
    if args.output:
        write_table(chosen, args.output)
    else:
        for row in chosen.itertuples():
            print(f"{row.rank}\t{row.image}\t{row.label} {row.probability:.3f}"
                  + (f" or {row.runner_up} {row.runner_up_probability:.3f}" if row.runner_up else ""))
    if args.sheet:
        _write_file(args.sheet, chosen_sheet(chosen, summary))
    return {**summary, "output": args.output, "sheet": args.sheet}


def cmd_learning_curve(args, settings: Settings) -> dict:
    from tlfs.pipeline.learning_curve import LearningCurveRequest, learning_curve

    result = learning_curve(LearningCurveRequest(args.dataset, args.backbone, tuple(args.layer), args.head,
                                                 tuple(args.shares), args.repeats, tuple(args.views or ()), settings.store,
                                                 balanced=args.balanced), log=_log)
    measure, spread_of = result["measure"], result["measure"].replace("accuracy", "std")
    print(f"{args.head} on {'+'.join(result['layers'])}: {'share':>6} {'images':>8} {'a class':>8} {'validation':>11} "
          f"{'test':>7}" + ("  (balanced accuracy)" if args.balanced else ""))
    for point in result["points"]:
        spread = (f"  ± {point[f'validation_{spread_of}']:.4f} / {point[f'test_{spread_of}']:.4f}"
                  if f"validation_{spread_of}" in point else "")
        print(f"{'':>{len(args.head) + len('+'.join(result['layers'])) + 5}}{point['share']:>6g} {point['images']:>8} "
              f"{point['per_class']:>8g} {point[f'validation_{measure}']:>11.4f} {point[f'test_{measure}']:>7.4f}{spread}")
    gain, gain_spread = result["last_doubling_gain"], result.get("last_doubling_gain_std")
    if gain is not None:
        print(f"a doubling of the images last added {gain * 100:+.2f}"
              + (f" ± {gain_spread * 100:.2f}" if gain_spread is not None else "")
              + f" points of validation {measure.replace('_', ' ')}"
              + (f"; more labels would likely still help (tlfs label-next --dataset {args.dataset} chooses which images "
                 "to label first)" if gain >= WORTH_A_DOUBLING else
                 "; the curve has flattened: more labels would add little to this head"))
    return {k: result[k] for k in ("dataset", "head", "layers", "balanced", "measure", "repeats", "points",
                                   "last_doubling_gain", "last_doubling_gain_std", "saved_to")}


def cmd_map(args, settings: Settings) -> dict:
    from tlfs.pipeline.feature_map import MapRequest, feature_map
    from tlfs.pipeline.tables import write_table

    points, summary = feature_map(MapRequest(args.dataset, args.backbone, tuple(args.layer), args.split, args.method,
                                             args.images, settings.store), log=_log)
    silhouette = f"; the classes' silhouette {summary['silhouette']:.3f}" if summary["silhouette"] is not None else ""
    print(f"{summary['images']} {summary['split']} images on {'+'.join(summary['layers'])} by {summary['method']}"
          f"{silhouette} -> {summary['saved_to']}")
    if args.output:
        write_table(points, args.output)
    return {**summary, "output": args.output}


def cmd_heads(args, settings: Settings) -> dict:
    from tlfs.pipeline.saved_heads import head_board

    board = head_board(settings.store, args.dataset)
    if board.empty:
        print(f"no saved heads in {settings.store}{f' for {args.dataset}' if args.dataset else ''} (tlfs sweep or tlfs fit "
              "saves them)")
    else:
        print(f"{'dataset':<14} {'backbone version':<36} {'head':<24} {'validation':>10}  {'test':>6}  {'balanced':>8}  "
              f"{'calibration':>11}  views")
    for row in board.itertuples():
        line = (f"{row.dataset:<14} {row.backbone_version:<36} {row.name:<24} {_accuracy(row.validation_accuracy):>10}  "
                f"{_accuracy(row.test_accuracy):>6}  {_accuracy(row.test_balanced_accuracy):>8}  "
                f"{_accuracy(row.calibration_error):>11}  {'+'.join(row.views)}")
        if not row.current:
            line += f"  (fitted on version {row.version})"
        if not _absent(row.classifier_bytes):
            line += f"  classifier.onnx {row.classifier_bytes / 1e6:.1f} MB"
        print(line + ("  <- best (by validation)" if row.best else "")
              + ("  <- best balanced (by validation balanced accuracy)" if row.best_balanced else ""))
    best, best_balanced = board[board["best"]], board[board["best_balanced"]]
    return {"heads": len(board), "best": {row.dataset: {"backbone_version": row.backbone_version, "head": row.name,
                                                        "validation_accuracy": row.validation_accuracy,
                                                        "test_accuracy": row.test_accuracy}
                                          for row in best.itertuples()},
            **({"best_balanced": {row.dataset: {"backbone_version": row.backbone_version, "head": row.name,
                                                "validation_balanced_accuracy": row.validation_balanced_accuracy,
                                                "test_balanced_accuracy": row.test_balanced_accuracy}
                                  for row in best_balanced.itertuples()}} if len(best_balanced) else {})}


def cmd_sweep(args, settings: Settings) -> dict:
    from tlfs import features
    from tlfs.pipeline.fit import sweep

    summary = sweep(features.open_set(args.dataset, args.backbone, store=settings.store), log=_log, views=args.views,
                    balanced=args.balanced)
    balanced = summary["balanced_accuracy"]
    print(f"{'layer':>12}  {'dims':>6}  {'validation':>10}  {'test':>6}  {'balanced: validation':>20}  {'test':>6}")
    for layer, acc in summary["layers"].items():
        mark = f"  <- best (by {summary['chosen_by'].replace('_', ' ')})" if layer == summary["best_layer"] else ""
        print(f"{layer:>12}  {summary['dims'][layer]:>6}  {summary['validation'][layer]:>10.4f}  {acc:.4f}  "
              f"{balanced['validation'][layer]:>20.4f}  {balanced['test'][layer]:.4f}{mark}")
    print(f"saved sweep.json and sweep.png to {summary['saved_to']}")
    return {k: summary[k] for k in ("layers", "validation", "balanced_accuracy", "balanced", "best_layer", "chosen_by",
                                    "test_accuracy")}


def cmd_bench(args, settings: Settings) -> dict:
    if args.host_only and args.stages:
        raise SystemExit("tlfs bench: give --host-only or --stages, not both")
    if args.rounds != 1 and (args.host_only or args.stages):
        raise SystemExit("tlfs bench: --rounds repeats the pipeline beside onnxruntime alone; "
                         "--host-only and --stages run once")
    if args.device_rate and not args.host_only:
        raise SystemExit("tlfs bench: --device-rate is for --host-only (a stand-in device instead of inference)")
    if args.host_only:
        return _bench_host_only(args, settings)
    if args.stages:
        return _bench_stages(args, settings)
    from tlfs.pipeline.bench import bench
    from tlfs.pipeline.plan import ExtractionRequest

    runtime = resolve_runtime(args.device, batch_size=args.batch_size, bound_buffers=settings.bound_buffers or None)
    request = ExtractionRequest("bench", (), args.backbone, settings.store, settings.model_store, runtime=runtime,
                                weights=args.weights, random_weights=args.random_weights, shard_size=settings.shard_size,
                                codec=settings.codec)
    result = bench(request, args.images, settings.decode_workers, sessions=settings.sessions or None,
                   rounds=args.rounds, log=_log)
    print(f"{args.backbone} on {args.device}, batch {result['batch_size']}, {result['images']} images, steady state:")
    print(f"  {'measurement':<34} images/s")
    rows = [("(a) PyTorch eager fp32", "torch_fp32"), ("(b) PyTorch fp16 channels_last", "torch_fp16"),
            ("(c) onnxruntime fp32, inference", "ort_fp32"), ("(c16) onnxruntime fp16, inference", "ort_fp16"),
            (f"(d) tlfs extract ({result['precision']}), files -> Parquet", "pipeline")]
    for label, key in rows:
        value = result[key]
        print(f"  {label:<34} {'n/a' if value is None else f'{value:,.1f}'}")
    print(f"  pipeline vs onnxruntime alone (mean of a run before and one after it): {result['pipeline_vs_ort']:.2f}x")
    if len(result["pipeline_vs_ort_rounds"]) > 1:
        print(f"    the round of the median ratio; every round's: "
              + ", ".join(f"{r:.3f}" for r in result["pipeline_vs_ort_rounds"]))
    if result["pipeline_session_vs_ort"] is not None:
        print(f"    = the session had a batch {result['pipeline_session_busy']:.1%} of the time"
              f" x its batches at {result['pipeline_session_vs_ort']:.3f}x onnxruntime alone's rate")
        print("      " + _idle_ends(result["pipeline_session_first_batch_seconds"],
                                    result["pipeline_session_after_last_batch_seconds"], result["pipeline_extract_seconds"]))
    if result["pipeline_writers_busy"] is not None:
        print(f"    the writer pool's {result['pipeline_writers']} threads wrote {result['pipeline_writers_busy']:.1%} of the time")
    print(f"  pipeline vs PyTorch fp32: {result['pipeline_vs_torch_fp32']:.2f}x")
    if result["pipeline_vs_torch_fp16"] is not None:
        print(f"  pipeline vs PyTorch fp16: {result['pipeline_vs_torch_fp16']:.2f}x")
    _print_threads(result["pipeline_thread_cpu_us_per_image"], result["pipeline_busiest_thread"],
                   result["pipeline_busiest_thread_busy"], result["pipeline_cores_idle"])
    return result


def _bench_request(args, settings: Settings, mode: str, batch_size: int | None = None):
    """The extraction a host-side bench (``mode``: --host-only, --stages) measures: the
    dataset's, on the CPU's runtime (no inference is run), in batches of ``--batch-size``,
    else ``batch_size``, else the CPU's."""
    from tlfs.pipeline.plan import ExtractionRequest

    if not args.dataset:
        raise SystemExit(f"tlfs bench: {mode} needs --dataset")
    return ExtractionRequest(args.dataset, sources_for(settings, args.dataset, args.sources, _log), args.backbone, settings.store,
                             settings.model_store, layers=args.layers.split(",") if args.layers else None,
                             limit=args.limit, shard_size=settings.shard_size, codec=settings.codec,
                             runtime=resolve_runtime("cpu", batch_size=args.batch_size or batch_size),
                             cache_dir=settings.cache_dir)


def _bench_host_only(args, settings: Settings) -> dict:
    from tlfs.pipeline.bench import host_only

    # a stand-in GPU takes a GPU's batches
    request = _bench_request(args, settings, "--host-only", DEFAULT_BATCH["cuda"] if args.device_rate else None)
    result = host_only(request, settings.decode_workers, log=_log, device_rate=args.device_rate)
    print(f"host side of tlfs extract on {args.dataset}, {result['images']} images, {result['decode_workers']} decode worker(s):")
    print(f"  reading and decoding alone       {result['decode_images_per_s']:>10,.1f} images/s")
    inference = f"a device of {args.device_rate:,.0f}/s" if args.device_rate else "no inference"
    print(f"  whole pipeline, {inference:<16} {result['host_images_per_s']:>10,.1f} images/s  "
          f"({result['host_vs_decode']:.2f}x reading and decoding)")
    if args.device_rate:
        print(f"  against the device: {result['host_vs_device']:.3f}x its rate; it had work {result['device_busy']:.1%} "
              f"of the extraction's time, {result['device_batches']} batches of {result['batch_size']}, "
              f"{result['device_padding']:.1%} of their rows padding")
        print("    " + _idle_ends(result["session_first_batch_seconds"], result["session_after_last_batch_seconds"],
                                  result["extract_seconds"]))
    print(f"  seconds: reading {result['read_seconds']}, decoding {result['decode_seconds']} (summed over workers), "
          f"batching {result['batch_seconds']}, writing {result['write_seconds']} (summed over the "
          f"{result['writers']} writer threads, busy {result['writers_busy']:.1%} of the time"
          f"{', below decoding' if result['writers_yield'] else ''})")
    _print_threads(result["thread_cpu_us_per_image"], result["busiest_thread"], result["busiest_thread_busy"],
                   result["cores_idle"])
    if result["decode_workers"] > 1 and result["decode_workers"] >= result["cores"] and not args.device_rate:
        print(f"  the {result['decode_workers']} decode workers take all {result['cores']} cores: the rest of the host side "
              "(Parquet encoding above all) shares them, so the ratio is bounded by `tlfs bench --stages`'s "
              "projected_vs_decode_ceiling; with cores to spare the rest runs beside the workers")
    return result


def _idle_ends(first: float | None, after_last: float | None, extract: float) -> str:
    """Where a run's session had no batch at its two ends, against the extraction's seconds:
    fixed costs, which a larger dataset spreads thinner."""
    if first is None or after_last is None or extract <= 0:
        return "the session ran no batch"
    return (f"of the extraction's {extract:.2f} s: {first:.3f} s before the session's first batch "
            f"({first / extract:.1%}), {after_last:.3f} s after its last ({after_last / extract:.1%}: the last shards' files)")


def _print_threads(cpu_us: dict[str, float], busiest: str | None, busy: float | None, idle: float | None) -> None:
    """Where the run's process spent its CPU while extracting, and the machine's idle share (bench.extract_watched)."""
    if cpu_us and busiest is not None:
        print("  CPU of the run's process an image, by thread (µs): " + ", ".join(f"{r} {us}" for r, us in cpu_us.items())
              + f"; busiest thread: {busiest}, {busy:.0%} of the extraction's wall time")
    if idle is not None:
        print(f"  the machine's cores idle {idle:.1%} of the extraction's time")


def _bench_stages(args, settings: Settings) -> dict:
    from tlfs.pipeline.stage_bench import stage_bench

    result = stage_bench(_bench_request(args, settings, "--stages"), args.images or STAGE_IMAGES, args.cores, log=_log)
    print(f"host stages of tlfs extract: {result['backbone']} ({result['values_per_image']:,} values per image), "
          f"{result['images']:,} images of {result['dataset']}, one core each:")
    where = {name: f"{stage['thread']} thread" if stage["serial"] else "a pool (scales)"
             for name, stage in result["stages"].items()}
    width = max(len("runs on"), *map(len, where.values()))
    print(f"  {'stage':<26} {'images/s':>12}  {'runs on':<{width}} what")
    for name, stage in result["stages"].items():
        print(f"  {name:<26} {stage['images_per_s']:>12,.1f}  {where[name]:<{width}} {stage['what']}")
    print("  serial threads (their stages added up): "
          + ", ".join(f"{thread} {rate:,.1f}" for thread, rate in result["threads"].items()) + " images/s")
    print(f"  slowest serial thread: {result['serial_min_images_per_s']:,.1f} images/s (bound by {result['bound_by']})")
    print(f"  projected host side on {result['cores']} cores: {result['projected_images_per_s']:,.1f} images/s "
          f"(a projection from the stages above, not a measured run)")
    print(f"  every serial thread's stages on one core, one after another (their GIL shared at worst): "
          f"{result['serial_one_core_images_per_s']:,.1f} images/s")
    print(f"  projected decode ceiling on {result['cores']} cores (reading, decoding and hand-over alone, as "
          f"--host-only's first step): {result['decode_ceiling_images_per_s']:,.1f} images/s; the host side "
          f"{result['projected_vs_decode_ceiling']:.2f}x of it")
    return result


def cmd_verify(args, settings: Settings) -> dict:
    from tlfs import features
    from tlfs.pipeline.extract import verify

    set_uri, _ = features.find_set(args.dataset, args.backbone, settings.store)
    report = verify(set_uri, repair=args.repair, device=args.device, log=_log)
    for bad in report["bad"]:
        print(f"BAD  {bad['path']}  (shard {bad['shard']}): {bad['reason']}")
    state = "repaired" if report["repaired"] else ("damaged" if report["bad"] else "ok")
    print(f"{state}: {len(report['bad'])} of {report['shard_files']} shard files bad in {set_uri} ({report['seconds']}s)")
    if report["bad"] and not report["repaired"]:
        print(json.dumps(report))
        raise SystemExit(1)
    return report


def cmd_advise(args, settings: Settings) -> dict:
    from tlfs import features
    from tlfs.pipeline import advise as advisor

    result = advisor.advise(features.open_set(args.dataset, args.backbone, store=settings.store),
                            advisor.Thresholds.given(args.large_per_class, args.similar_score), log=_log)
    print(advisor.describe(result))
    return result


def cmd_ls(args, settings: Settings) -> None:
    from tlfs import features

    table = features.list_sets(settings.store)
    if table.empty:
        print(f"no committed feature sets in {settings.store}")
        return None
    for row in table.itertuples():
        print(f"{row.dataset:<14} {row.backbone_version:<32} rows {row.rows:>7}  rejected {row.rejected:>4}  "
              f"layers {','.join(row.layers)}  splits {','.join(row.splits)}  {row.committed_at}")
    return None


def cmd_describe(args, settings: Settings) -> None:
    from tlfs import features

    from tlfs.pipeline.kept_checks import check_line, kept_summaries
    from tlfs.pipeline.saved_heads import head_summaries
    from tlfs.pipeline.sources.uris import recorded_uris

    info = features.describe(args.dataset, args.backbone, settings.store, version=args.version, as_of=args.as_of)
    info["heads"] = head_summaries(info["uri"])
    info["checks"] = kept_summaries(info["uri"])
    if args.json:
        print(json.dumps(info, indent=2))
        return None
    lineage = info["lineage"]
    print(f"feature set   {info['uri']}")
    print(f"version       {info.get('version', 1)}" + (f" (of {info['parent_version']})" if info.get("parent_version") else "")
          + (f"  {_changes(info['changes'])}" if info.get("changes") else ""))
    print(f"backbone      {info['backbone_version']}  (onnx sha256 {lineage['onnx_sha256'][:16]}...)")
    print(f"weights       {lineage['weights']['source']}  sha256 {lineage['weights']['sha256'][:16]}...")
    print(f"committed     {info['committed_at']}  plan {info['plan_id']}  code {lineage['code']}")
    print(f"classes       {', '.join(info['classes'])}")
    print("layers        " + ", ".join(f"{k} ({v}-d)" for k, v in info["layers"].items()))
    for split, c in info["counts"].items():
        print(f"split {split:<8} read {c['read']}  written {c['written']}  rejected {c['rejected']}")
    files = recorded_uris(lineage["sources"])
    for s, uri in zip(lineage["sources"], files):
        digest = s["checksum"].get("sha256") or s["checksum"].get("listing_sha256")
        print(f"source        {uri}  [{s['format']}]  {s['images']} images  sha256 {digest[:16]}...")
    if lineage.get("source_uris") and lineage["source_uris"] != files:  # a glob or a brace list, matched again by later runs
        print(f"given as      {', '.join(lineage['source_uris'])}  (what a later run reads where no --source is given)")
    for r in info["rejects"][:20]:
        print(f"rejected      {r['image_id']}: {r['reason']}")
    if len(info["rejects"]) > 20:
        print(f"rejected      ... and {len(info['rejects']) - 20} more (--json lists all)")
    for head in info["heads"]:
        print(f"head          {_head_line(head, info)}")
    for name, summary in info["checks"].items():
        print(f"check         {name:<13} {check_line(name, summary)}")
    return None


def _accuracy(value: float | None) -> str:
    return "-" if _absent(value) else f"{value:.4f}"


def _head_line(head: dict, info: dict) -> str:
    """A saved head as ``describe`` lists it: accuracies, views, the version it was fitted on
    where that is not the one described, and its shipped classifier."""
    line = (f"{head['name']:<22} test {_accuracy(head['test_accuracy'])}  validation "
            f"{_accuracy(head['validation_accuracy'])}  balanced {_accuracy(head['test_balanced_accuracy'])}  "
            f"views {'+'.join(head['views'])}")
    if head["plan_id"] != info["plan_id"]:
        line += f"  (fitted on version {head['version']})"
    if head["classifier_bytes"] is not None:
        line += f"  classifier.onnx {head['classifier_bytes'] / 1e6:.1f} MB"
    return line


def _changes(changes: dict) -> str:
    from tlfs.pipeline.extract import describe_changes

    return describe_changes(changes)


def cmd_history(args, settings: Settings) -> None:
    from tlfs import features

    table = features.history(args.dataset, args.backbone, settings.store)
    for row in table.itertuples():
        what = ("vacuumed " + row.vacuumed_at) if row.vacuumed_at else f"{row.shard_files} shard files"
        counts = "  ".join(f"{k} {'-' if _absent(v) else int(v)}" for k, v in
                           (("added", row.added), ("changed", row.changed), ("removed", row.removed), ("reused", row.reused)))
        base = "from scratch" if _absent(row.base_version) else f"on version {int(row.base_version)}"
        print(f"version {row.version:<4} {row.committed_at}  rows {row.rows:>7}  {base:<14} {counts}  {what}")
    return None


def _absent(value) -> bool:
    """None, or pandas' NaN for it in a column of numbers."""
    return value is None or value != value


def cmd_vacuum(args, settings: Settings) -> dict:
    from tlfs.pipeline.extract import vacuum

    report = vacuum(features_set_uri(args, settings), settings.retention())
    print(f"kept versions {', '.join(map(str, report['versions_kept']))}; vacuumed "
          f"{', '.join(map(str, report['versions_vacuumed'])) or 'none'}; removed {report['files_removed']} files "
          f"({report['bytes_freed'] / 1e6:.1f} MB) and {report['superseded_plans_removed']} superseded plans' staging",
          file=sys.stderr)
    return report


def features_set_uri(args, settings: Settings) -> str:
    from tlfs import features

    return features.find_set(args.dataset, args.backbone, settings.store)[0]


# What a command stopped part-way keeps, for the line it leaves (Ctrl-C, a write that failed)
RESUMES = {
    "extract": "the shards it finished are kept: the same command goes on from them",
    "finetune": "the epochs it finished are kept in its checkpoint: the same command goes on from them",
}

COMMANDS = {"backbones": cmd_backbones, "export": cmd_export, "extract": cmd_extract, "finetune": cmd_finetune, "bench": cmd_bench, "verify": cmd_verify, "advise": cmd_advise, "fit": cmd_fit, "predict": cmd_predict,
            "export-classifier": cmd_export_classifier, "duplicates": cmd_duplicates, "similar": cmd_similar,
            "label-issues": cmd_label_issues, "label-next": cmd_label_next, "learning-curve": cmd_learning_curve, "map": cmd_map,
            "heads": cmd_heads,
            "sweep": cmd_sweep, "ls": cmd_ls, "describe": cmd_describe, "report": cmd_report,
            "history": cmd_history, "vacuum": cmd_vacuum}


def main(argv: list[str] | None = None) -> int:
    try:
        code = _run(argv)
        sys.stdout.flush()  # here, not at exit, where a closed pipe could no longer be answered
        return code
    except BrokenPipeError:  # what reads the output stopped (tlfs heads | head): end quietly, as a shell tool does
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # so that Python's flush at exit cannot fail
        return 128 + signal.SIGPIPE


def _run(argv: list[str] | None) -> int:
    from tlfs.features.errors import StoreError, WriteFailed
    from tlfs.models.errors import ModelError
    from tlfs.pipeline.errors import PipelineError

    args = build_parser().parse_args(argv)
    try:
        settings = _settings(args)
        result = COMMANDS[args.command](args, settings)
    except BrokenPipeError:
        raise
    except (PipelineError, ModelError, StoreError, OSError) as exc:  # OSError: a missing file, a full /tmp, ...
        resumes = RESUMES.get(args.command) if isinstance(exc, WriteFailed) else None  # a disk freed, it goes on
        print(f"tlfs {args.command}: error: {exc}" + (f"; {resumes}" if resumes else ""), file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        resumes = RESUMES.get(args.command)
        print(f"tlfs {args.command}: interrupted" + (f"; {resumes}" if resumes else ""), file=sys.stderr)
        return 130
    if result is not None:
        print(json.dumps(result, default=str))
    return 0


if __name__ == "__main__":
    sys.exit(main())
