#!/usr/bin/env bash
# Set up (if needed) and run the whole test suite. Reads ../shared/data/cifar10 when present.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec .venv/bin/python -m pytest -q --durations=10 "$@"
