#!/usr/bin/env bash
# Create .venv (Python 3.11 or 3.12; PYTHON=python3.12 picks one) and install tlfs with its
# test and storage extras.
# A failed install fails this script (and so the test command): nothing is skipped quietly.
set -euo pipefail
cd "$(dirname "$0")/.."
# PYTHON picks the interpreter the .venv is made with (python3 by default); the .venv is made
# once, so choosing another means removing it. Both are checked before anything is installed.
supported="3.11 3.12"  # pyproject.toml's requires-python
version_of() { "$1" -c 'import sys; print(f"{sys.version_info[0]}.{sys.version_info[1]}")'; }
is_supported() { case " $supported " in *" $1 "*) return 0 ;; *) return 1 ;; esac; }
fail() { echo "scripts/setup.sh: $*" >&2; exit 1; }
if [ -x .venv/bin/python ]; then
  version=$(version_of .venv/bin/python) || fail "$(pwd)/.venv/bin/python does not run: remove .venv and run again"
  is_supported "$version" || fail "$(pwd)/.venv holds Python $version; tlfs needs 3.11 or 3.12: remove .venv and run again with PYTHON=python3.12 (or python3.11)"
  if [ -n "${PYTHON:-}" ]; then
    asked=$(version_of "$PYTHON") || fail "PYTHON=$PYTHON does not run"
    [ "$asked" = "$version" ] || fail "$(pwd)/.venv holds Python $version, PYTHON=$PYTHON is $asked: remove .venv to make it with $asked"
  fi
else
  python=${PYTHON:-python3}
  command -v "$python" > /dev/null || fail "$python not found: tlfs needs Python 3.11 or 3.12 (set PYTHON to one, e.g. PYTHON=python3.12)"
  asked=$(version_of "$python") || fail "$python does not run"
  is_supported "$asked" || fail "$python is Python $asked; tlfs needs 3.11 or 3.12: run again with PYTHON=python3.12 (or python3.11)"
  "$python" -m venv .venv
  version=$asked
fi
quiet() { grep -v '^WARNING: Location' || true; }  # pip's notes about this machine's local indexes
# The versions the suite was last passed with (scripts/freeze-constraints.sh), which the
# Docker images install too; a Python without its docker/constraints-X.Y.txt resolves
# afresh, and so does TLFS_NO_CONSTRAINTS=1 (to move the pins: then test, then freeze).
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
