#!/usr/bin/env bash
# One command from a fresh machine to the example matrix's report.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
set +e
reprocheck run --json reports/example.json --html reports/example.html --md reports/example.md --junit reports/example.junit.xml
code=$?
set -e
echo "exit code $code (0 consistent, 1 drift beyond tolerance, 2 error)"
echo "open the report: $(pwd)/reports/example.html"
[ "$code" -le 1 ]
