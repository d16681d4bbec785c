#!/usr/bin/env bash
# Set up (idempotent) and run every test tier: unit, engine (real Docker) and end-to-end.
set -euo pipefail
cd "$(dirname "$0")/.."
REPROCHECK_WITH_CHROMIUM=1 REPROCHECK_WITH_ARM64=1 REPROCHECK_WITH_REMOTE=1 REPROCHECK_WITH_CPUS=1 \
  bash scripts/setup.sh
ruff check reprocheck tests bench
mypy reprocheck
python3 -m pytest -q "$@"
