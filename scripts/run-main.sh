#!/usr/bin/env bash
# Set up, then run the main job on a real local Airflow 3 (SQLite, LocalExecutor):
# trigger extract_cifar10 (CIFAR-10 through EfficientNet-Lite0 with its ImageNet weights,
# every tap layer), wait for it and for the fit_heads_cifar10 run its Asset schedules,
# print where the features are, the heads' accuracy, the classifier shipped, the learning curve, the near-copies
# between splits, the labels that look wrong and the report page, and stop every Airflow process.
#   LIMIT=2000 ./scripts/run-main.sh     # a class-balanced sample of 2,000 images per split
# Without internet, the shared CIFAR-10 archives beside this checkout are used.
set -euo pipefail
cd "$(dirname "$0")/.."
started=$(date +%s)
bash scripts/setup.sh
shared="$(cd .. && pwd)/shared/data/cifar10"
if [ -z "${TLFS_CIFAR10_SOURCE:-}" ] && [ -f "$shared/train.tar.gz" ]; then
  export TLFS_CIFAR10_SOURCE="$shared/train.tar.gz,$shared/test.tar.gz"
  echo "using the shared CIFAR-10 archives: $TLFS_CIFAR10_SOURCE"
fi
data="$(pwd)/tlfs-data"
export TLFS_STORE="${TLFS_STORE:-$data/store}" TLFS_MODELS="${TLFS_MODELS:-$data/models}" TLFS_CACHE="${TLFS_CACHE:-$data/cache}"
# The DAG's advice step would trigger finetune_cifar10 (a GPU job) for the full CIFAR-10;
# this script stops at heads unless FINETUNE=auto|always is set.
conf="{\"finetune\": \"${FINETUNE:-never}\"}"
[ -n "${LIMIT:-}" ] && conf="{\"finetune\": \"${FINETUNE:-never}\", \"limit\": $LIMIT}"
.venv/bin/python scripts/airflow_local.py run --dag extract_cifar10 --conf "$conf" --home "$data/airflow"
echo
.venv/bin/tlfs ls
.venv/bin/python - <<'PY'
import json

from tlfs import features
uri, manifest = features.find_set("cifar10", "efficientnet_lite0")
print(f"\nfeatures: {uri}  ({manifest['rows']} rows; pandas: features.load('cifar10', 'efficientnet_lite0', LAYER, SPLIT))")
heads = f"{uri}/_heads"
sweep = json.load(open(f"{heads}/sweep.json"))
assert sweep["plan_id"] == manifest["plan_id"], "the stored sweep is of an older extraction"
validation = sweep["validation"]
print("softmax validation / test accuracy per layer: "
      + ", ".join(f"{k} {validation[k]:.4f}/{v:.4f}" for k, v in sweep["layers"].items()))
print(f"best layer by validation accuracy: {sweep['best_layer']}")
for head in ("softmax", "lightgbm", "mlp"):
    m = json.load(open(f"{heads}/{head}-{sweep['best_layer']}/metrics.json"))
    assert m["plan_id"] == manifest["plan_id"], f"the stored {head} head is of an older extraction"
    print(f"{head:>8} on {sweep['best_layer']}: test accuracy {m['test_accuracy']:.4f}")
import glob
import os

shipped = [path for path in glob.glob(f"{heads}/*/classifier.onnx")  # this extraction's, by its head's plan
           if json.load(open(os.path.join(os.path.dirname(path), "metrics.json")))["plan_id"] == manifest["plan_id"]]
print(f"the best head by validation accuracy as one ONNX classifier (onnxruntime runs it alone): {', '.join(shipped)}")
curve = json.load(open(f"{heads}/learning_curve-softmax-{sweep['best_layer']}.json"))
assert curve["plan_id"] == manifest["plan_id"], "the stored learning curve is of an older extraction"
first, last = curve["points"][0], curve["points"][-1]
print(f"learning curve of softmax on {sweep['best_layer']}: validation accuracy {first['validation_accuracy']:.4f} with "
      f"{first['images']} training images, {last['validation_accuracy']:.4f} with {last['images']}; a doubling last added "
      f"{curve['last_doubling_gain'] * 100:+.1f} points")
copies = json.load(open(f"{heads}/near_copies.json"))
assert copies["version"] == manifest["version"], "the stored near-copy check is of an older version"
print(f"{copies['near_copies']} of {copies['images']} {copies['counted']} ({copies['share']:.1%}); "
      f"{copies['head']['name']} {copies['head']['without_near_copies']:.4f} on the test images without one")
doubted = json.load(open(f"{heads}/label_issues.json"))
assert doubted["version"] == manifest["version"], "the stored label check is of an older version"
print(f"{doubted['issues']} of {doubted['images']} train labels look wrong to a held-out {doubted['head']} head on "
      f"{'+'.join(doubted['layers'])} ({doubted['share']:.1%}): a list to review")
report = f"{heads}/report.html"
assert f"version {manifest['version']}</title>" in open(report).read(), "the report page is of an older version"
print(f"all of it on one page, to open in a browser: {report}")
PY
echo "main job done in $(( $(date +%s) - started ))s"
