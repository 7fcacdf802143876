"""The ``tlfs`` command line's grammar: every command, its options, their types and help."""

from __future__ import annotations

import argparse
from dataclasses import fields

from tlfs.models.names import BACKBONE_HELP, DEFAULT_BACKBONE, HEADS
from tlfs.models.projection import METHODS as MAP_METHODS
from tlfs.models.runtime import DEFAULT_BATCH
from tlfs.pipeline.advise import LARGE_IMAGES_PER_CLASS, SIMILAR_SCORE
from tlfs.pipeline.bench import DEFAULT_IMAGES
from tlfs.pipeline.duplicates import DEFAULT_THRESHOLD as DUPLICATE_THRESHOLD
from tlfs.pipeline.familiarity import FAMILIAR_SHARE, NEIGHBOURS
from tlfs.pipeline.label_issues import DEFAULT_FOLDS as LABEL_ISSUE_FOLDS, SHEET_IMAGES as LABEL_ISSUE_SHEET
from tlfs.pipeline.feature_map import DEFAULT_IMAGES as MAP_IMAGES
from tlfs.pipeline.label_next import DEFAULT_COUNT as LABEL_NEXT_COUNT, SHEET_IMAGES as LABEL_NEXT_SHEET
from tlfs.pipeline.report import REPORT_FILE
from tlfs.pipeline.learning_curve import DEFAULT_SHARES as CURVE_SHARES
from tlfs.pipeline.stage_bench import STAGE_IMAGES
from tlfs.pipeline.image_decode import BIT_DEPTHS
from tlfs.pipeline.config import (DEFAULT_SOURCE_DATASET, SETTING_FIELDS, FinetuneConfig, bounded, parse_value,
                                  setting_help)


class _Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line on stderr and exit status 1, like every
    other error of tlfs (argparse's own habit is the usage block and status 2)."""

    def error(self, message: str):
        self.exit(1, f"{self.prog}: error: {message} (see {self.prog} --help)\n")

    def parse_args(self, args=None, namespace=None):
        """As argparse's, but an argument no command takes is told by the command it was given
        to (``tlfs fit: ... (see tlfs fit --help)``), not by ``tlfs`` itself."""
        parsed, extras = self.parse_known_args(args, namespace)
        if extras:
            command = getattr(parsed, "command", None)
            prog = f"{self.prog} {command}" if command else self.prog
            self.exit(1, f"{prog}: error: unrecognized arguments: {' '.join(extras)} (see {prog} --help)\n")
        return parsed


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


def _bit_depth_arg(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bit-depth", type=int, metavar="N", choices=BIT_DEPTHS,
                   help="the bits that greyscale 16-bit images hold (a microscope's or an X-ray's 12-bit images, 0-4095: "
                        "--bit-depth 12 scales them by 4095, not 65535, which leaves them 16 times darker); default: as "
                        "the set's newest version, else 16")


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
    _bit_depth_arg(p)
    p.add_argument("--views", type=_csv, help="views stored beside the original: 'flip' stores the features of the "
                   "horizontally flipped image too (view=flip; heads use them as extra training rows and average at test)")
    p.add_argument("--full", action="store_true", help="extract every image again (a newest version extracted whole "
                   "by the same plan is kept as it is); by default a run reuses the features of the images unchanged "
                   "since the set's newest version and extracts only new and changed ones")
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
    _bit_depth_arg(p)
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
    _setting_arg(p, "precision")
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

    p = sub.add_parser("rm", help="delete a whole feature set: every version, its heads and checks (says what it "
                       "holds, and deletes it only with --yes; refused while a run works on it)")
    _set_dataset_arg(p)
    _backbone_arg(p)
    _store_arg(p)
    p.add_argument("--yes", action="store_true", help="delete it (without it, only say what would be deleted)")
    return parser


def _version_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--version", type=_positive, help="a version number of the set (default: the newest; see tlfs history)")
    p.add_argument("--as-of", help="the version that was newest at this ISO time (e.g. 2026-11-27T09:00:00Z)")


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

