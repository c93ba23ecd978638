#!/usr/bin/env bash
# Runs the test suite several times in a row beside CPU hogs, as a loaded CI machine would see it
# (issue 17, item 9). Each hog is a bounded busy loop, killed by its PID when the runs end or the
# script is interrupted. Prints each run's result and duration.
#   bash tools/test-under-load.sh [RUNS=3] [HOGS=2]
set -euo pipefail
cd "$(dirname "$0")/.."
runs="${1:-3}" hogs="${2:-2}"
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; }
trap cleanup EXIT INT TERM
dotnet build IlgpuLlama.sln -c Release >/dev/null
for ((h = 0; h < hogs; h++)); do
    timeout 10800 sh -c 'while :; do :; done' &
    pids+=("$!")
done
echo "load: $hogs busy loops (PIDs ${pids[*]}) on $(nproc) cores"
failed=0
for ((r = 1; r <= runs; r++)); do
    start=$(date +%s)
    if dotnet test IlgpuLlama.sln -c Release --no-build --logger "console;verbosity=minimal" \
        --blame-hang-timeout 10m --blame-hang-dump-type none > "/tmp/ilgpu-llama-load-run-$r.log" 2>&1; then
        result=passed
    else
        result=FAILED
        failed=1
    fi
    echo "run $r: $result in $(( $(date +%s) - start )) s ($(grep -E '^(Passed|Failed)!' "/tmp/ilgpu-llama-load-run-$r.log" | tail -1))"
done
exit $failed
