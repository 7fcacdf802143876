"""The documentation's command lines are the parser's: the user guide's synopsis names every
flag of every command, and no page quotes a flag its command does not take."""

import argparse
import re
from pathlib import Path

import pytest

from tlfs.pipeline.cli import build_parser

ROOT = Path(__file__).resolve().parents[2]
GUIDE = ROOT / "docs" / "user-guide.md"
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
FLAG = re.compile(r"(?<![\w-])(--?[a-zA-Z][\w-]*)")


def parser_options() -> dict[str, set[str]]:
    """Each subcommand's option strings, -h and --help left out."""
    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    return {name: {option for action in sub._actions for option in action.option_strings} - {"-h", "--help"}
            for name, sub in commands.items()}


def synopsis(text: str) -> dict[str, set[str]]:
    """The flags each command's lines name in the guide's synopsis: the indented block under
    "## Commands", one `tlfs COMMAND ...` entry per command line and its continuation lines."""
    section = text.split("\n## Commands\n", 1)[1].split("\n### ", 1)[0]
    entries: list[str] = []
    for line in section.splitlines():
        if not line.startswith("    "):
            continue
        if line.strip().startswith("tlfs "):
            entries.append(line)
        elif entries:
            entries[-1] += " " + line
    named: dict[str, set[str]] = {}
    for entry in entries:
        words = entry.split(None, 2)
        named.setdefault(words[1], set()).update(FLAG.findall(words[2] if len(words) > 2 else ""))
    return named


def quoted_commands(text: str):
    """Every `tlfs COMMAND --flag ...` a page quotes: in code spans, fenced and indented blocks."""
    fenced = [line for block in re.findall(r"^```[^\n]*\n(.*?)^```", text, re.S | re.M) for line in block.splitlines()]
    pieces = re.findall(r"`([^`\n]*)`", text) + fenced + [line for line in text.splitlines() if line.startswith("    ")]
    for piece in pieces:
        for match in re.finditer(r"\btlfs ([a-z][a-z-]*)((?: +[^ |;&)`]+)*)", piece):
            yield match.group(1), FLAG.findall(match.group(2)), piece


OPTIONS = parser_options()
SYNOPSIS = synopsis(GUIDE.read_text())


@pytest.mark.parametrize("command", sorted(OPTIONS))
def test_the_synopsis_names_every_flag_of_each_command_and_no_other(command):
    assert command in SYNOPSIS, f"docs/user-guide.md's synopsis has no line for tlfs {command}"
    assert OPTIONS[command] - SYNOPSIS[command] == set(), f"tlfs {command} takes flags the synopsis leaves out"
    assert SYNOPSIS[command] - OPTIONS[command] == set(), f"the synopsis gives tlfs {command} flags it does not take"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: p.name)
def test_every_quoted_command_line_uses_flags_its_command_takes(page):
    wrong = [f"tlfs {command} {flag}  (in: {piece.strip()[:100]})"
             for command, flags, piece in quoted_commands(page.read_text()) if command in OPTIONS
             for flag in flags if flag.startswith("--") and flag not in OPTIONS[command] | {"--help"}]
    assert wrong == []


def test_the_checks_see_a_flag_the_parser_lacks():
    """The two checks above can fail: a made-up flag is caught in a synopsis and in a page."""
    text = "# Guide\n\n## Commands\n\n    tlfs fit --dataset NAME --layer L --no-such-flag\n\n### Next\n"
    assert "--no-such-flag" in synopsis(text)["fit"]
    (_, flags, _), = quoted_commands("run `tlfs fit --dataset x --no-such-flag` first")
    assert "--no-such-flag" in flags and "--no-such-flag" not in OPTIONS["fit"]
    (_, flags, _), = quoted_commands("```\n$ tlfs sweep --dataset x --no-such-flag\n```\n")
    assert flags == ["--dataset", "--no-such-flag"]
