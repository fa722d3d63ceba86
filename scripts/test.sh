#!/usr/bin/env bash
# `make test`: install and start the real services on loopback, run every test, stop the services
# whatever happens. Extra arguments go to pytest.
set -uo pipefail
cd "$(dirname "$0")/.."

scripts/services.sh install || exit 1
# Stop only what this run started, so a developer's running services survive.
if ! scripts/services.sh running; then trap 'scripts/services.sh stop' EXIT INT TERM; fi
eval "$(scripts/services.sh start)" || { echo "services failed to start" >&2; exit 1; }

.venv/bin/ruff check narrative_pipeline narrative_pipeline_tests benchmarks || exit 1
scripts/mypy_baseline.sh || exit 1
.venv/bin/python -m pytest -q -p no:cacheprovider --timeout=900 "$@"
