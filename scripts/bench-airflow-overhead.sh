#!/usr/bin/env bash
# Airflow's overhead: the extract_cifar10 + fit_heads_cifar10 DAG runs on a local Airflow
# vs. the same steps called directly (tlfs extract, sweep, fit x3), on the same sample,
# each into a fresh store. Prints both wall times. Usage: LIMIT=2000 scripts/bench-airflow-overhead.sh
set -euo pipefail
cd "$(dirname "$0")/.."
limit=${LIMIT:-2000}
shared="$(cd .. && pwd)/shared/data/cifar10"
export TLFS_CIFAR10_SOURCE="${TLFS_CIFAR10_SOURCE:-$shared/train.tar.gz,$shared/test.tar.gz}"
work=$(mktemp -d /tmp/tlfs-overhead-XXXX)
export TLFS_MODELS="$work/models"
.venv/bin/tlfs export --backbone efficientnet_lite0 > /dev/null 2>&1   # both paths reuse it

export TLFS_STORE="$work/direct"
t0=$(date +%s.%N)
.venv/bin/tlfs extract --dataset cifar10 --backbone efficientnet_lite0 --limit "$limit" --no-progress > "$work/direct.log" 2>&1
t1=$(date +%s.%N)
best=$(.venv/bin/tlfs sweep --dataset cifar10 --backbone efficientnet_lite0 2>>"$work/direct.log" | tail -1 | .venv/bin/python -c "import json,sys; print(json.load(sys.stdin)['best_layer'])")
for head in softmax lightgbm mlp; do
  .venv/bin/tlfs fit --dataset cifar10 --backbone efficientnet_lite0 --layer "$best" --head "$head" >> "$work/direct.log" 2>&1
done
t2=$(date +%s.%N)

export TLFS_STORE="$work/airflow-store"
.venv/bin/python scripts/airflow_local.py run --dag extract_cifar10 --conf "{\"limit\": $limit}" --home "$work/airflow" | tee "$work/airflow.log"
.venv/bin/python - "$t0" "$t1" "$t2" "$work/airflow.log" <<'PY'
import json, sys
t0, t1, t2 = map(float, sys.argv[1:4])
dag = json.loads(open(sys.argv[4]).read().strip().splitlines()[-1])
direct_extract, direct_fit = t1 - t0, t2 - t1
print(f"direct:  extract {direct_extract:.0f}s  sweep+heads {direct_fit:.0f}s  total {direct_extract + direct_fit:.0f}s")
print(f"airflow: extract DAG run {dag['extract_seconds']:.0f}s  fit_heads DAG run {dag['fit_seconds']:.0f}s  "
      f"(+ {dag['startup_seconds']:.0f}s to start Airflow and parse the DAGs)")
print(json.dumps({"direct_extract_s": round(direct_extract, 1), "direct_fit_s": round(direct_fit, 1),
                  "airflow_extract_s": dag["extract_seconds"], "airflow_fit_s": dag["fit_seconds"],
                  "airflow_startup_s": dag["startup_seconds"],
                  "extract_overhead": round(dag["extract_seconds"] / direct_extract, 2),
                  "fit_overhead": round(dag["fit_seconds"] / direct_fit, 2)}))
PY
