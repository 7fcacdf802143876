#!/usr/bin/env bash
# Set up (if needed) and run the test suite. Reads ../shared/data/cifar10 when present.
#   ./scripts/test.sh             the full suite (what CI runs, .ci/run)
#   ./scripts/test.sh --quick     the quick tier: unit level, no real Airflow, no fault
#                                 injection, no Docker files (markers in pyproject.toml)
#   --coverage                    also report line coverage per module, and fail if a
#                                 module of models/, features/ or pipeline/ never ran
# Any other arguments go to pytest (e.g. -k NAME, a test file).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
args=()
runner=(-m pytest)
coverage=""
for arg in "$@"; do
  case "$arg" in
    --quick) args+=(-m "not slow and not airflow and not faults and not docker") ;;
    --coverage) coverage=1; runner=(-m coverage run --source=models,features,pipeline,dags -m pytest) ;;
    *) args+=("$arg") ;;
  esac
done
if [ -z "$coverage" ]; then
  exec .venv/bin/python "${runner[@]}" -q --durations=15 "${args[@]}"
fi
.venv/bin/python "${runner[@]}" -q --durations=15 "${args[@]}"
.venv/bin/python -m coverage report --sort=cover
.venv/bin/python -m coverage json -q -o .coverage.json
.venv/bin/python - <<'PY'
import json, sys
files = json.load(open(".coverage.json"))["files"]
never = [f for f, data in files.items() if f.split("/")[0] in ("models", "features", "pipeline")
         and data["summary"]["num_statements"] > 0 and data["summary"]["covered_lines"] == 0]  # not empty __init__.py
if never:
    sys.exit("modules no test ran: " + ", ".join(sorted(never)))
print(f"every module of models/, features/ and pipeline/ ran ({len(files)} files measured)")
PY
