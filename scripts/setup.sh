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
.venv/bin/python -m pip install -q --upgrade pip 2>&1 | quiet
.venv/bin/python -m pip install -q -e '.[test,http,s3,airflow]' 2>&1 | quiet
echo "tlfs installed in $(pwd)/.venv"
