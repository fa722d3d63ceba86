#!/usr/bin/env bash
# Type-check narrative_pipeline with mypy and fail when it reports more errors than the
# baseline recorded in scripts/mypy_baseline.txt (the count may only go down).
#
#   scripts/mypy_baseline.sh            check (run by scripts/test.sh, i.e. `make test`)
#   scripts/mypy_baseline.sh --update   after fixing errors: record the new, lower count
#
# To lower the baseline: fix some errors (`.venv/bin/mypy narrative_pipeline
# --ignore-missing-imports` lists them), run with --update, commit the .txt with the fix.
# --update refuses to raise the number.
set -uo pipefail
cd "$(dirname "$0")/.."

baseline_file=scripts/mypy_baseline.txt
baseline=$(tr -dc '0-9' < "$baseline_file")
output=$(.venv/bin/mypy narrative_pipeline --ignore-missing-imports 2>&1)
status=$?
summary=$(printf '%s\n' "$output" | tail -n 1)
if [ $status -ne 0 ] && ! printf '%s' "$summary" | grep -q '^Found [0-9]* error'; then
    printf '%s\n' "$output" >&2
    echo "mypy did not run to completion (exit $status)" >&2
    exit 2
fi
errors=$(printf '%s\n' "$output" | grep -c ': error:')

if [ "${1:-}" = "--update" ]; then
    if [ "$errors" -gt "$baseline" ]; then
        echo "mypy: $errors errors, more than the baseline $baseline: fix them, do not raise it" >&2
        exit 1
    fi
    echo "$errors" > "$baseline_file"
    echo "mypy baseline: $baseline -> $errors errors"
    exit 0
fi

if [ "$errors" -gt "$baseline" ]; then
    printf '%s\n' "$output" | grep ': error:' >&2
    echo "mypy: $errors errors, baseline $baseline ($baseline_file): fix the new ones" >&2
    exit 1
fi
if [ "$errors" -lt "$baseline" ]; then
    echo "mypy: $errors errors, below the baseline $baseline: lower it with $0 --update"
else
    echo "mypy: $errors errors (baseline $baseline)"
fi
