#!/usr/bin/env bash
# Runs every benchmark once with the services they compare against; results go to benchmarks/RESULTS.md.
set -uo pipefail
cd "$(dirname "$0")/.."
scripts/services.sh install || exit 1
trap 'scripts/services.sh stop' EXIT INT TERM
eval "$(scripts/services.sh start)" || exit 1
for b in benchmarks/bench_*.py; do
  echo "== $b"
  .venv/bin/python "$b" || echo "benchmark failed: $b"
done
