#!/usr/bin/env bash
# Installs lumbarjax with its test extra into a brand-new virtual environment (.venv-ci, made
# afresh on every run, so a package installed by hand on this machine cannot hide a missing
# dependency), installs Chromium for the report-rendering test when absent, and runs the tests.
# Extra arguments go to pytest (e.g. `bash scripts/test.sh -m slow` for the slow tests).
# LUMBARJAX_REUSE_VENV=1 keeps an existing .venv-ci (quicker local reruns; not what CI does).
set -euo pipefail
cd "$(dirname "$0")/.."
venv=.venv-ci
if [ "${LUMBARJAX_REUSE_VENV:-0}" != 1 ] || [ ! -x "$venv/bin/python" ]; then
  rm -rf "$venv"
  python3 -m venv "$venv"
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check -e ".[test]"
if ! command -v chromium >/dev/null 2>&1; then
  echo "installing Chromium (headless report test)…"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
"$venv/bin/python" -m pytest -q tests "$@"
