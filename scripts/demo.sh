#!/usr/bin/env bash
# Installs lumbarjax, writes the synthetic demo cohort (if absent) and runs the whole demo job:
# index, grader cross-validation, outcome cross-validation, baselines, heat maps, report.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet --disable-pip-version-check -e .
python launch.py --config=configs/demo.py --workdir="${1:-runs/demo}" "${@:2}"
