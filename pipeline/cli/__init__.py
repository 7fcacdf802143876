"""``tlfs``: the command line. Each subcommand calls one pipeline step: ``arguments`` is the
grammar, ``entry_point`` runs the command named, and the ``*_commands`` modules the commands, by what
they work on (``extract_commands``: the backbone and its features; ``head_commands``: heads;
``analysis_commands``: what the features say about the dataset; ``store_commands``: the store)."""

from tlfs.pipeline.cli.arguments import build_parser
from tlfs.pipeline.cli.entry_point import main

__all__ = ["build_parser", "main"]
