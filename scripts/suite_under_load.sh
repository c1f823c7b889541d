#!/usr/bin/env bash
# The flakiness check: the full test suite RUNS times in a row (default 5)
# while two busy loops keep both cores of a 2-core machine loaded.  A test
# that fails once here fails one CI run in a few: fix it, do not rerun.
#
#   bash scripts/suite_under_load.sh [RUNS] [pytest arguments...]
#
# Run it in the environment the README's test command installs.
set -uo pipefail
cd "$(dirname "$0")/.."
runs=${1:-5}
shift || true
python=${PYTHON:-python}

loops=()
for _ in 1 2; do
    "$python" -c 'while True: pass' &
    loops+=($!)
done
trap 'kill "${loops[@]}" 2>/dev/null' EXIT

failed=0
for run in $(seq 1 "$runs"); do
    started=$SECONDS
    if "$python" -m pytest -p no:cacheprovider "$@" > "/tmp/suite-under-load-$run.log" 2>&1; then
        echo "run $run of $runs: passed in $((SECONDS - started)) s ($(tail -n 1 "/tmp/suite-under-load-$run.log"))"
    else
        failed=$((failed + 1))
        echo "run $run of $runs: FAILED in $((SECONDS - started)) s; see /tmp/suite-under-load-$run.log"
        grep -E '^(FAILED|ERROR) ' "/tmp/suite-under-load-$run.log"
    fi
done
echo "$((runs - failed)) passed, $failed failed"
[ "$failed" -eq 0 ]
