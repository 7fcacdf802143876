#!/usr/bin/env bash
# Set up (if needed) and run the test suite. Reads ../shared/data/cifar10 when present.
#   ./scripts/test.sh            the full suite (what CI runs, .ci/run)
#   ./scripts/test.sh --quick    the quick tier: unit level, no real Airflow, no fault
#                                injection, no Docker files (markers in pyproject.toml)
# Any other arguments go to pytest (e.g. -k NAME, a test file).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
args=()
for arg in "$@"; do
  if [ "$arg" = "--quick" ]; then
    args+=(-m "not slow and not airflow and not faults and not docker")
  else
    args+=("$arg")
  fi
done
exec .venv/bin/python -m pytest -q --durations=15 "${args[@]}"
