#!/usr/bin/env bash
# Run the whole test suite (the README's command) N times while every core is kept busy by
# another process, as on a user's loaded machine (issue 10: the suite hung there, not in an idle
# CI). Prints each run's wall time and result; exits non-zero if any run failed.
#
#   bash scripts/stress_tests.sh 5            # five runs
#   bash scripts/stress_tests.sh 1 -x -k gui  # extra arguments go to pytest
set -u

runs="${1:-5}"
shift || true
cd "$(dirname "$0")/.."
python=.venv/bin/python
[ -x "$python" ] || { echo "stress_tests: $python is missing; run scripts/setup_env.sh first" >&2; exit 2; }

cores="$(getconf _NPROCESSORS_ONLN 2>/dev/null || echo 2)"
load_pids=()
test_pid=""
stop_load() {  # the load, and a test run still going when the script is interrupted
    for pid in "${load_pids[@]}" $test_pid; do kill "$pid" 2>/dev/null; done
    wait "${load_pids[@]}" $test_pid 2>/dev/null
}
trap stop_load EXIT
trap 'exit 130' INT TERM
for _ in $(seq "$cores"); do
    yes >/dev/null &
    load_pids+=("$!")
done
echo "stress_tests: $runs run(s) of the suite with $cores busy-looping process(es) beside it"

failed=0
for run in $(seq "$runs"); do
    log="$(mktemp -t hcviewer-stress-XXXXXX.log)"
    start=$(date +%s)
    QT_QPA_PLATFORM=offscreen "$python" -m pytest -q "$@" >"$log" 2>&1 &
    test_pid=$!
    wait "$test_pid"  # in the background: an INT or TERM reaches the trap at once
    status=$?
    test_pid=""
    seconds=$(( $(date +%s) - start ))
    summary="$(tail -n 1 "$log")"
    if [ "$status" -eq 0 ]; then
        echo "run $run/$runs: passed in ${seconds} s ($summary)"
        rm -f "$log"
    else
        failed=$((failed + 1))
        echo "run $run/$runs: FAILED (exit $status) in ${seconds} s ($summary); log: $log"
    fi
done
echo "stress_tests: $((runs - failed))/$runs passed"
[ "$failed" -eq 0 ]
