#!/usr/bin/env bash
# One GPU run, ready to go: on a machine with one NVIDIA GPU (jax[cuda] installed), in about
# 8 minutes, writes benchmarks/results/<date>-gpu/ with one JSON per part and summary.json:
#   1. train-step table and IG (benchmarks/run.py --only train,ig,compile: lumbarjax vs the
#      PyTorch twin on the same GPU; bf16 steps and MFU are added on a GPU backend),
#   2. the demo end to end with its per-stage breakdown (benchmarks/demo_breakdown.py, one run,
#      cold compilation cache),
#   3. the two-process check (tests/test_train_multiprocess.py; on CPU devices, gloo).
# Each part has its own time limit and a failed part is recorded, not fatal: the summary says
# which parts ran. Usage: bash benchmarks/gpu.sh [OUT_DIR]
set -uo pipefail
cd "$(dirname "$0")/.."
out="${1:-benchmarks/results/$(date +%F)-gpu}"
mkdir -p "$out"
python - <<'EOF' > "$out/device.json"
import json, jax
print(json.dumps({"backend": jax.default_backend(), "devices": [str(d) for d in jax.devices()],
                  "jax": jax.__version__}))
EOF
status() { echo "\"$1\": {\"rc\": $2, \"seconds\": $3}"; }
parts=()
t0=$SECONDS
timeout 240 python benchmarks/run.py --only train,ig,compile --rounds 3 --skip-resnet18 \
  --out "$out/run.json" > "$out/run.log" 2>&1
parts+=("$(status run $? $((SECONDS - t0)))")
t0=$SECONDS
XLA_FLAGS="" timeout 300 python benchmarks/demo_breakdown.py --runs=1 \
  --out "$out/demo.json" > "$out/demo.log" 2>&1
parts+=("$(status demo $? $((SECONDS - t0)))")
t0=$SECONDS
JAX_PLATFORMS=cpu timeout 180 python -m pytest -q -m slow tests/test_train_multiprocess.py \
  > "$out/two_process.log" 2>&1
parts+=("$(status two_process $? $((SECONDS - t0)))")
(IFS=,; echo "{${parts[*]}}") > "$out/summary.json"
cat "$out/summary.json"
