#!/usr/bin/env bash
# One command for the GPU machine: the GPU tests, then every GPU figure, ending with one
# JSON line of them all. Sized for about 9 minutes (each step has its own time limit; an H200
# took about 7 before the host-only steps with 2 decode workers, about 30 s more, and the Lite0
# bench with fewer decode workers and the stand-in device, about 75 s more: where the check's
# deadline comes first, the last steps, the GPU tests, the fine-tuning run and the two photo
# searches, are cut short or skipped and say so).
#
# That machine (../shared/gpu/README.md) has Python 3.12, its own torch, no package
# registry, and this project is not installed: it runs from the checkout. Stage here first
# (what its image lacks):
#   bash ../shared/gpu/stage.sh onnxconverter-common==1.16.0 orjson==3.13.0
# carry each .device/chunks/NN in its own call (mkdir -p /root/stage && cp .device/chunks/NN/* /root/stage/),
# then, carrying [".device/chunks/06", ".device/install.sh", ".device/data"] (the last chunk is small):
#   mkdir -p /root/stage && cp .device/chunks/06/* /root/stage/ && bash .device/install.sh && bash scripts/gpu-check.sh
# Figures go to stdout; the summary and a tarball of every step's log go to $OUT (the device tool
# brings back at most 8 files from $OUT, so the logs travel as one file).
set -uo pipefail
cd "$(dirname "$0")/.."
# The project installs as `tlfs` (tlfs.models = models/, ...); without an install, a folder of
# links gives the same import names.
view=$(mktemp -d /tmp/tlfs-view-XXXX)
mkdir -p "$view/tlfs" && for pkg in models features pipeline; do ln -s "$PWD/$pkg" "$view/tlfs/$pkg"; done
export PYTHONPATH="/tmp/site:$view:$PWD${PYTHONPATH:+:$PYTHONPATH}"
results=${OUT:-/tmp/tlfs-gpu-check}
work=$(mktemp -d /tmp/tlfs-gpu-XXXX)
out="$work/logs"
mkdir -p "$out" "$results"
export TLFS_MODELS="$work/models" TLFS_STORE="$work/store" TLFS_CACHE="$work/cache"
data=.device/data/cifar10
[ -f "$data/train.tar.gz" ] || data=../shared/data/cifar10
export TLFS_TEST_CIFAR10_DIR="$PWD/$data" TLFS_CIFAR10_SOURCE="$PWD/$data/train.tar.gz,$PWD/$data/test.tar.gz"
py=${PYTHON:-python3}
FT_EPOCHS=${FT_EPOCHS:-2}   # the shortened fine-tuning schedule that fits this check

# The whole check ends by this deadline (a device call is at most ~8 minutes); 20 s stay for the summary.
deadline=$(( $(date +%s) + ${GPU_CHECK_SECONDS:-540} ))

step() {  # step NAME SECONDS COMMAND...: run with a time limit, log to $out/NAME.log, keep going
  local name=$1 limit=$2; shift 2
  local started=$(date +%s)
  local left=$(( deadline - started - 20 ))
  # GPU_CHECK_STEPS="bench_lite0 tests" reruns only those steps (a second call in the same session)
  if [ -n "${GPU_CHECK_STEPS:-}" ] && [[ " $GPU_CHECK_STEPS " != *" $name "* ]]; then return; fi
  if [ "$left" -lt 15 ]; then echo "$name: skipped, the check's time is spent"; echo "$name 125 0" >> "$out/steps.txt"; return; fi
  [ "$limit" -gt "$left" ] && limit=$left
  timeout "$limit" "$@" > "$out/$name.log" 2>&1
  local rc=$?
  echo "$name: exit $rc in $(( $(date +%s) - started ))s (log $out/$name.log)"
  tail -n 3 "$out/$name.log" | cut -c1-400
  echo "$name $rc $(( $(date +%s) - started ))" >> "$out/steps.txt"
}

: > "$out/steps.txt"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader > "$out/gpu.txt" 2>&1
echo "GPU: $(cat "$out/gpu.txt")"
step probe 45 "$py" -c "import onnxruntime as o; o.preload_dlls(); from tlfs.models.runtime import cuda_probe; print(o.__version__, o.get_available_providers(), cuda_probe())"
# Speed first (the extraction's figures), then the GPU tests, then the fine-tuning run.
step bench_lite0 90 "$py" -m tlfs.pipeline.cli bench --backbone efficientnet_lite0 --device cuda --images 20480
# The same with one set of bound buffers (one inference thread): what the second set, copying in while the device computes, gains
step bench_lite0_one_set 70 "$py" -m tlfs.pipeline.cli bench --backbone efficientnet_lite0 --device cuda --images 20480 --bound-buffers 1
step bench_resnet50 110 "$py" -m tlfs.pipeline.cli bench --backbone resnet50 --random-weights --device cuda --images 20480
# The host side alone on the 16 cores (decode workers: one per core): can it feed the GPU?
step host_cifar 60 "$py" -m tlfs.pipeline.cli bench --host-only --dataset cifar10
# The host side feeding a stand-in GPU of about the H100's onnxruntime fp16 rate for Lite0: does it keep one busy?
step host_cifar_device 45 "$py" -m tlfs.pipeline.cli bench --host-only --dataset cifar10 --device-rate 15000
# Each host stage alone, and the host side's projection on this machine's 16 cores (beside the measured pipeline above)
step stages_lite0 40 "$py" -m tlfs.pipeline.cli bench --stages --dataset cifar10 --backbone efficientnet_lite0
# The whole CIFAR-10, ResNet-50 (random weights: speed only), all taps, into a committed set; export apart.
step export_resnet50 60 "$py" -m tlfs.pipeline.cli export --backbone resnet50 --random-weights
step cifar_resnet50 60 "$py" -m tlfs.pipeline.cli extract --dataset cifar10 --backbone resnet50 --random-weights --device cuda --no-progress
# The main job's extraction on the GPU: the whole CIFAR-10 through EfficientNet-Lite0's real weights, all 7 taps
step cifar_lite0 45 "$py" -m tlfs.pipeline.cli extract --dataset cifar10 --backbone efficientnet_lite0 --device cuda --no-progress
# The same with one set of bound buffers, into a store of its own: on a run of this size, does the second set's
# opening (session_open_parts: capture of the other sets) cost more than its overlap gains?
step cifar_lite0_one_set 45 "$py" -m tlfs.pipeline.cli extract --dataset cifar10 --backbone efficientnet_lite0 --device cuda --no-progress \
  --bound-buffers 1 --store "$work/one-set-store"
# With 2 decode workers the rest of the host side has 14 cores of its own: does it keep up with
# decoding (0.9x of reading and decoding alone)? On a 2-core machine the workers take both cores.
# (About 30 s; before the GPU tests and the fine-tuning run, which take what time is left.)
step host_cifar_2w 45 "$py" -m tlfs.pipeline.cli bench --host-only --dataset cifar10 --decode-workers 2
# The writer pool with 2 threads against 1 on this machine's disk (on the 2-core build machine 1.5-1.7x,
# its files written past the page cache; 1.7-1.9x without writing them)
step writer_pool 40 "$py" scripts/writer-pool-bench.py --backbone efficientnet_lite0 --threads 2 --runs 3
step make_photos 30 "$py" scripts/make-photos.py 2000 "$work/photos.tar"
step host_photos_2w 30 "$py" -m tlfs.pipeline.cli bench --host-only --dataset photos --source "$work/photos.tar" --decode-workers 2
# The one-epoch fine-tuning test is left out here: it alone filled this step's 180 s, and the step after it
# fine-tunes on CUDA for real; tests/pipeline/test_finetune.py runs the same code on the CPU in CI
step tests 120 "$py" -m pytest -v --durations=0 --timeout 100 -m gpu tests/gpu -p no:cacheprovider -rs -k "not finetuning"
# Fine-tuning EfficientNet-Lite0 on CIFAR-10, shortened to fit: SGD with momentum, cosine, label smoothing.
step finetune_lite0 200 "$py" -m tlfs.pipeline.cli finetune --dataset cifar10 --backbone efficientnet_lite0 --device cuda \
  --head-epochs 1 --head-lr 1e-3 --epochs "$FT_EPOCHS" --lr 0.02 --momentum 0.9 --schedule cosine --label-smoothing 0.1 \
  --batch-size 128 --patience 99 --no-progress
# The images a user names (predict, similar, label-next), decoded by a worker a core beside the GPU (the default),
# then in the command's own process (--decode-workers 1, as before): the photos searched for on Lite0's head layer
# of the CIFAR-10 set cifar_lite0 made (no head needed). Last: where the deadline comes first, they are skipped.
mkdir -p "$work/photos" && tar xf "$work/photos.tar" -C "$work/photos" 2>/dev/null
similar=(-m tlfs.pipeline.cli similar --dataset cifar10 --backbone efficientnet_lite0 --layer head --split test -k 1
         --device cuda --no-progress "$work/photos")
step similar_photos 40 "$py" "${similar[@]}"
step similar_photos_1w 40 "$py" "${similar[@]}" --decode-workers 1

"$py" - "$out" "$FT_EPOCHS" <<'PY'
import json, re, sys
from pathlib import Path

out, epochs = Path(sys.argv[1]), int(sys.argv[2])

def last_json(name):
    try:
        lines = (out / f"{name}.log").read_text().strip().splitlines()
    except FileNotFoundError:
        return None
    for line in reversed(lines):
        if line.startswith("{"):
            try:
                return json.loads(line)
            except json.JSONDecodeError:
                continue
    return None

steps = {n: {"exit": int(rc), "seconds": int(s)} for n, rc, s in (l.split() for l in (out / "steps.txt").read_text().splitlines())}
tests = (out / "tests.log").read_text().strip().splitlines()[-1:] if (out / "tests.log").exists() else []
summary = {"gpu": (out / "gpu.txt").read_text().strip(), "steps": steps, "gpu_tests": tests[0] if tests else None}
for name in ("bench_lite0", "bench_lite0_one_set", "bench_resnet50"):
    b = last_json(name) or {}
    summary[name] = {k: b.get(k) for k in ("batch_size", "precision", "torch_fp32", "torch_fp16", "ort_fp32", "ort_fp16",
                                          "pipeline", "pipeline_vs_ort", "pipeline_session_busy", "pipeline_session_vs_ort",
                                          "pipeline_session_first_batch_seconds", "pipeline_session_after_last_batch_seconds",
                                          "pipeline_extract_seconds", "pipeline_shards",
                                          "pipeline_vs_torch_fp16", "pipeline_plan_seconds", "pipeline_commit_seconds",
                                          "decode_workers", "pipeline_thread_cpu_us_per_image", "pipeline_busiest_thread",
                                          "pipeline_busiest_thread_busy", "pipeline_cores_idle")}
host_keys = ("decode_workers", "decode_images_per_s", "host_images_per_s", "host_vs_decode", "session_busy",
             "read_seconds", "decode_seconds", "write_seconds", "thread_cpu_us_per_image", "busiest_thread",
             "busiest_thread_busy", "cores_idle", "device_rate", "host_vs_device", "device_busy", "device_padding",
             "session_first_batch_seconds", "session_after_last_batch_seconds", "extract_seconds")
for name, key in (("host_cifar", "host_only_cifar10"), ("host_cifar_2w", "host_only_cifar10_2_workers"),
                  ("host_photos_2w", "host_only_photos_2_workers"), ("host_cifar_device", "host_cifar10_device_15000")):
    h = last_json(name) or {}
    summary[key] = {k: h.get(k) for k in host_keys}
summary["writer_pool_lite0"] = last_json("writer_pool") or {}
st = last_json("stages_lite0") or {}
summary["stages_lite0"] = {"cores": st.get("cores"), "serial_min_images_per_s": st.get("serial_min_images_per_s"),
                           "serial_one_core_images_per_s": st.get("serial_one_core_images_per_s"),
                           "projected_images_per_s": st.get("projected_images_per_s"), "bound_by": st.get("bound_by"),
                           "stages": {k: v["images_per_s"] for k, v in (st.get("stages") or {}).items()}}
extract_keys = ("rows", "plan_seconds", "extract_seconds", "commit_seconds", "session_open_seconds", "session_open_parts",
                "session_busy", "session_first_batch_seconds", "session_after_last_batch_seconds", "images_per_second",
                "writers", "writers_busy", "parquet_bytes")  # of tlfs extract's summary
c = last_json("cifar_resnet50") or {}
summary["cifar10_resnet50_all_taps"] = {k: c.get(k) for k in extract_keys}
if c:
    summary["cifar10_resnet50_all_taps"]["seconds_export_excluded"] = round(c["plan_seconds"] + c["extract_seconds"] + c["commit_seconds"], 1)
for name, key in (("cifar_lite0", "cifar10_lite0_all_taps"), ("cifar_lite0_one_set", "cifar10_lite0_all_taps_one_set")):
    l = last_json(name) or {}
    summary[key] = {k: l.get(k) for k in extract_keys}
f = last_json("finetune_lite0") or {}
summary["finetune_lite0"] = {"schedule": f"1 head epoch + {epochs} epochs, SGD lr 0.02 momentum 0.9 cosine, label smoothing 0.1, batch 128",
                             **{k: f.get(k) for k in ("test_accuracy", "validation_accuracy", "seconds", "backbone_version")}}
try:  # each epoch's line: its seconds, and its first and last steps' (cuDNN's search falls in a shape's first step)
    summary["finetune_lite0"]["epochs"] = [line.strip() for line in (out / "finetune_lite0.log").read_text().splitlines()
                                           if " epoch " in line and "first step" in line]
except FileNotFoundError:
    summary["finetune_lite0"]["epochs"] = []
for name in ("similar_photos", "similar_photos_1w"):  # its line: "searched for N images in Xs (Y images/s; ..."
    log = out / f"{name}.log"
    found = re.search(r"searched for (\d+) images in ([\d.]+)s \(([\d.]+) images/s", log.read_text() if log.exists() else "")
    summary[name] = {"images": int(found[1]), "seconds": float(found[2]), "images_per_s": float(found[3])} if found else None
one = summary["bench_lite0_one_set"]["pipeline"]
summary["lite0_two_sets_vs_one"] = round(summary["bench_lite0"]["pipeline"] / one, 3) if one and summary["bench_lite0"]["pipeline"] else None
targets = {
    "pipeline_ge_torch_fp16_lite0": (summary["bench_lite0"]["pipeline_vs_torch_fp16"] or 0) >= 1.0,
    "pipeline_ge_torch_fp16_resnet50": (summary["bench_resnet50"]["pipeline_vs_torch_fp16"] or 0) >= 1.0,
    "cifar10_resnet50_le_15s": bool(c) and summary["cifar10_resnet50_all_taps"]["seconds_export_excluded"] <= 15,
    "finetune_ge_96_5": (f.get("test_accuracy") or 0) >= 0.965,
    "host_only_2_workers_ge_0_9": all((summary[k]["host_vs_decode"] or 0) >= 0.9
                                      for k in ("host_only_cifar10_2_workers", "host_only_photos_2_workers")),
}
summary["targets_met"] = targets
print(json.dumps(summary))
(out / "summary.json").write_text(json.dumps(summary, indent=2))
PY
cp "$out/summary.json" "$results/" 2>/dev/null
tar -czf "$results/logs.tar.gz" -C "$out" .
