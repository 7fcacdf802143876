"""``tlfs``'s entry point: the command named, run with the settings its flags give; errors are one
line on stderr and exit status 1; a command's summary, where it has one, ends the output as a JSON line."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys

from tlfs.pipeline.config import SETTING_FIELDS, Settings, load_settings
from tlfs.pipeline.cli.analysis_commands import (cmd_advise, cmd_duplicates, cmd_label_issues, cmd_label_next,
                                                 cmd_learning_curve, cmd_map, cmd_report, cmd_similar)
from tlfs.pipeline.cli.arguments import build_parser
from tlfs.pipeline.cli.extract_commands import (cmd_backbones, cmd_bench, cmd_export, cmd_extract, cmd_finetune,
                                                cmd_verify)
from tlfs.pipeline.cli.head_commands import cmd_export_classifier, cmd_fit, cmd_heads, cmd_predict, cmd_sweep
from tlfs.pipeline.cli.store_commands import cmd_describe, cmd_history, cmd_ls, cmd_rm, cmd_vacuum


def _settings(args: argparse.Namespace) -> Settings:
    """The settings, with every flag this command has for one of them (a flag left out: None, the next source decides)."""
    return load_settings(**{name: getattr(args, name, None) for name in SETTING_FIELDS})


# What a command stopped part-way keeps, for the line it leaves (Ctrl-C, a write that failed)
RESUMES = {
    "extract": "the shards it finished are kept: the same command goes on from them",
    "finetune": "the epochs it finished are kept in its checkpoint: the same command goes on from them",
}

COMMANDS = {
    # the backbone and its features
    "backbones": cmd_backbones, "export": cmd_export, "extract": cmd_extract, "finetune": cmd_finetune,
    "bench": cmd_bench, "verify": cmd_verify,
    # heads, and their use
    "fit": cmd_fit, "sweep": cmd_sweep, "heads": cmd_heads, "predict": cmd_predict,
    "export-classifier": cmd_export_classifier,
    # what the features say about the dataset
    "duplicates": cmd_duplicates, "similar": cmd_similar, "label-issues": cmd_label_issues,
    "label-next": cmd_label_next, "learning-curve": cmd_learning_curve, "map": cmd_map, "advise": cmd_advise,
    "report": cmd_report,
    # the store
    "ls": cmd_ls, "describe": cmd_describe, "history": cmd_history, "vacuum": cmd_vacuum, "rm": cmd_rm,
}


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
    except ImportError as exc:  # a package a URI's protocol needs (fsspec's "Please install gcsfs to access ...")
        if "install" not in str(exc).lower():
            raise
        print(f"tlfs {args.command}: error: {exc} (pip install it into this environment)", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        resumes = RESUMES.get(args.command)
        print(f"tlfs {args.command}: interrupted" + (f"; {resumes}" if resumes else ""), file=sys.stderr)
        return 130
    if result is not None:
        print(json.dumps(result, default=str))
    return 0
