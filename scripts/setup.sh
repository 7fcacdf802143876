#!/usr/bin/env bash
# Create .venv (Python 3.11 or 3.12) and install tlfs with its test and storage extras.
# A failed install fails this script (and so the test command): nothing is skipped quietly.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
quiet() { grep -v '^WARNING: Location' || true; }  # pip's notes about this machine's local indexes
# The versions the suite was last passed with (scripts/freeze-constraints.sh), which the
# Docker images install too; a Python without its docker/constraints-X.Y.txt resolves
# afresh, and so does TLFS_NO_CONSTRAINTS=1 (to move the pins: then test, then freeze).
version=$(.venv/bin/python -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")')
constraints=()
if [ -f "docker/constraints-$version.txt" ] && [ -z "${TLFS_NO_CONSTRAINTS:-}" ]; then constraints=(-c "docker/constraints-$version.txt"); fi
# What the install depends on; when it is unchanged since the last install, pip is not run
# again (the project itself is installed in editable mode: code changes need no install).
stamp=$(cat pyproject.toml "${constraints[@]:1}" <(echo "$version ${TLFS_NO_CONSTRAINTS:-}") | sha256sum | cut -c1-64)
if [ -x .venv/bin/tlfs ] && [ "$(cat .venv/.tlfs-install-stamp 2>/dev/null)" = "$stamp" ]; then
  echo "tlfs already installed in $(pwd)/.venv (pyproject.toml and constraints unchanged)"
  exit 0
fi
.venv/bin/python -m pip install -q --upgrade pip 2>&1 | quiet
.venv/bin/python -m pip install -q "${constraints[@]}" -e '.[test,http,s3,airflow,timm]' 2>&1 | quiet
echo "$stamp" > .venv/.tlfs-install-stamp
echo "tlfs installed in $(pwd)/.venv"
