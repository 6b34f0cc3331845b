#!/usr/bin/env bash
# Installs lumbarjax with its test extra (and Chromium for the report-rendering test), then runs the tests.
set -euo pipefail
cd "$(dirname "$0")/.."
python -m pip install --quiet --disable-pip-version-check -e ".[test]"
if ! command -v chromium >/dev/null 2>&1; then
  echo "installing Chromium (headless report test)…"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null
fi
python -m pytest -q tests "$@"
