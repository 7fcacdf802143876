"""The README's tour runs as written: every ``console`` block's commands (lines after
``$ ``) and every ``python`` block, in order, in a fresh folder, on the real CIFAR-10
sample the tour names. A block after a ``<!-- tour: not run ...`` comment is left out
(it says why). Each command must succeed, and each output line the README shows must
begin as the real one does (its text up to the first digit: figures may move, words may
not); each comment in a python block must appear in what the block prints."""

from __future__ import annotations

import io
import os
import re
import subprocess
import sys
from contextlib import redirect_stdout
from pathlib import Path

import pytest

from tests.conftest import REPO, shared_cifar_sources

pytestmark = pytest.mark.slow


def tour_blocks(readme: str) -> list[tuple[str, str]]:
    """(language, body) of each fenced block of the tour that is meant to run."""
    tour = readme.split("## A ten-minute tour", 1)[1].split("\n## ", 1)[0]
    blocks = []
    for match in re.finditer(r"(<!-- tour: not run[^>]*-->\s*)?```(console|python)\n(.*?)```", tour, re.S):
        if not match.group(1):
            blocks.append((match.group(2), match.group(3)))
    return blocks


def console_steps(body: str) -> list[tuple[str, list[str]]]:
    """(command, the output lines shown after it)."""
    steps: list[tuple[str, list[str]]] = []
    for line in body.splitlines():
        if line.startswith("$ "):
            steps.append((line[2:], []))
        elif steps and line.strip():
            steps[-1][1].append(line)
    return steps


def label(line: str) -> str:
    """What of an output line must not change: its words up to the first figure."""
    return re.split(r"\d", line.strip(), maxsplit=1)[0][:20].strip()


def squeeze(text: str) -> str:
    return " ".join(text.split())


def test_the_tour_blocks_are_found():
    blocks = tour_blocks((REPO / "README.md").read_text())
    assert [lang for lang, _ in blocks].count("console") >= 4 and any(lang == "python" for lang, _ in blocks)


def test_the_readme_tour_runs_as_written(tmp_path, monkeypatch, lite0, models_root):
    sources = shared_cifar_sources()
    env = {**os.environ, "TLFS_CIFAR10_SOURCE": ",".join(sources), "TLFS_MODELS": models_root,
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}"}
    for name in ("TLFS_STORE", "TLFS_CONFIG"):  # the tour uses the default store, in the folder it runs in
        env.pop(name, None)
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("TLFS_MODELS", models_root)
    # run as from a checkout, with the shared data beside it where the README's commands name it (../shared/...)
    checkout = tmp_path / "checkout"
    (tmp_path / "shared" / "data").mkdir(parents=True)
    (tmp_path / "shared" / "data" / "cifar10").symlink_to(Path(sources[0]).parent)
    checkout.mkdir()
    monkeypatch.chdir(checkout)
    ran = 0
    for lang, body in tour_blocks((REPO / "README.md").read_text()):
        if lang == "python":
            printed = io.StringIO()
            with redirect_stdout(printed):
                exec(compile(body, "README.md (tour)", "exec"), {})
            for comment in re.findall(r"#\s*(.+)$", body, re.M):
                assert squeeze(comment) in squeeze(printed.getvalue()), (comment, printed.getvalue())
            ran += 1
            continue
        for command, shown in console_steps(body):
            done = subprocess.run(["bash", "-c", command], cwd=checkout, env=env, capture_output=True, text=True,
                                  timeout=600)
            assert done.returncode == 0, f"$ {command}\n{done.stderr[-2000:]}"
            got = [label(line) for line in done.stdout.splitlines()]
            for line in shown:
                want = label(line)
                assert not want or any(g.startswith(want) for g in got), f"$ {command}: no line begins {want!r}:\n{done.stdout}"
            ran += 1
    assert ran >= 6
