"""scripts/setup.sh refuses a Python tlfs does not support before it makes or changes anything.

The happy path is every test run: `scripts/test.sh` sets up through the same script.
"""

import shutil
import subprocess
from pathlib import Path

import pytest

SETUP = Path(__file__).resolve().parents[1] / "scripts" / "setup.sh"


def fake_python(path: Path, version: str) -> Path:
    """An interpreter that answers the script's version question with `version`, and fails anything else."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(f'#!/bin/sh\ncase "$1" in -c) echo {version} ;; *) echo "not expected: $*" >&2; exit 3 ;; esac\n')
    path.chmod(0o755)
    return path


def run_setup(checkout: Path, python: str | None) -> subprocess.CompletedProcess:
    (checkout / "scripts").mkdir(parents=True, exist_ok=True)
    shutil.copy(SETUP, checkout / "scripts" / "setup.sh")
    env = {"PATH": "/usr/bin:/bin"}
    if python is not None:
        env["PYTHON"] = python
    return subprocess.run(["bash", "scripts/setup.sh"], cwd=checkout, env=env,
                          capture_output=True, text=True, timeout=60)


@pytest.mark.parametrize("version", ["3.10", "3.13"])
def test_an_unsupported_python_is_refused_naming_it_before_a_venv_is_made(tmp_path, version):
    python = fake_python(tmp_path / "bin" / "python-old-or-new", version)
    done = run_setup(tmp_path / "checkout", str(python))
    assert done.returncode == 1
    assert f"{python} is Python {version}; tlfs needs 3.11 or 3.12" in done.stderr
    assert "PYTHON=python3.12" in done.stderr
    assert not (tmp_path / "checkout" / ".venv").exists()


def test_a_python_that_is_not_there_is_named(tmp_path):
    done = run_setup(tmp_path / "checkout", "python3.99")
    assert done.returncode == 1
    assert "python3.99 not found: tlfs needs Python 3.11 or 3.12" in done.stderr
    assert not (tmp_path / "checkout" / ".venv").exists()


def test_a_venv_of_another_python_than_the_one_asked_for_is_named_and_left_as_it_is(tmp_path):
    checkout = tmp_path / "checkout"
    venv_python = fake_python(checkout / ".venv" / "bin" / "python", "3.11")
    before = venv_python.read_text()
    asked = fake_python(tmp_path / "bin" / "python3.12", "3.12")
    done = run_setup(checkout, str(asked))
    assert done.returncode == 1
    assert f".venv holds Python 3.11, PYTHON={asked} is 3.12: remove .venv" in done.stderr
    assert venv_python.read_text() == before and sorted(p.name for p in (checkout / ".venv").iterdir()) == ["bin"]


def test_a_venv_of_an_unsupported_python_is_named(tmp_path):
    checkout = tmp_path / "checkout"
    fake_python(checkout / ".venv" / "bin" / "python", "3.13")
    done = run_setup(checkout, None)
    assert done.returncode == 1
    assert ".venv holds Python 3.13; tlfs needs 3.11 or 3.12: remove .venv" in done.stderr
