#!/usr/bin/env bash
# Installs lumbarjax, writes the synthetic demo cohort (if absent) and runs the whole demo job:
# index, grader cross-validation, outcome cross-validation, baselines, heat maps, report.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet --disable-pip-version-check -e .
# Two XLA CPU devices share the batch: 1.4-1.5x faster steps on 2 cores (benchmarks/history/2026-11.md).
export XLA_FLAGS="${XLA_FLAGS:---xla_force_host_platform_device_count=2}"
python launch.py --config=configs/demo.py --workdir="${1:-runs/demo}" "${@:2}"
