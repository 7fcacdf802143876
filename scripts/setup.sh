#!/usr/bin/env bash
# Create .venv (Python 3.11 or 3.12) and install tlfs with its test and storage extras.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip 2>&1 | grep -v '^WARNING: Location' || true
.venv/bin/python -m pip install -q -e '.[test,http,s3,airflow]' 2>&1 | grep -v '^WARNING: Location' || true
echo "tlfs installed in $(pwd)/.venv"
