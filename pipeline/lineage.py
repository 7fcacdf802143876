"""What produced a feature set: code version and environment, for the manifest."""

from __future__ import annotations

import functools
import subprocess
from importlib import metadata
from pathlib import Path


@functools.cache
def code_version() -> dict:
    """The package's version and git commit of the code this process runs. Taken once per
    process (the code imported is the code that runs, whatever is installed meanwhile):
    reading the package's metadata and asking git cost a commit a few milliseconds."""
    try:
        package = metadata.version("tlfs")
    except metadata.PackageNotFoundError:
        package = "unknown"
    commit = None
    try:
        commit = subprocess.run(
            ["git", "rev-parse", "HEAD"], cwd=Path(__file__).resolve().parent, capture_output=True, text=True, timeout=5
        ).stdout.strip() or None
    except (OSError, subprocess.SubprocessError):
        pass
    return {"package": package, "git_commit": commit}
