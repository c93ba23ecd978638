#!/usr/bin/env bash
# The project's test command: build, run every test on the CPU accelerator and the library example, the
# device script's CPU smoke (tools/device/run.sh --cpu-smoke), then the P100 static
# check (ptxas for sm_60 on every kernel; downloads CUDA 11.8's ptxas once into .tools/). It leaves
# tracked files alone: a ptxas table in docs/kernels.md that no longer matches is reported as a
# warning; `bash tools/ptxas-check.sh --update-doc` rewrites it.
set -euo pipefail
cd "$(dirname "$0")/.."
dotnet build IlgpuLlama.sln -c Release
# A test that hangs (a command that should have failed but serves forever) is killed after 10 minutes
# of silence and named, instead of holding CI to its time limit.
dotnet test IlgpuLlama.sln -c Release --no-build --logger "console;verbosity=minimal" \
    --blame-hang-timeout 10m --blame-hang-dump-type none
# The library example, run as a user would (on the demo model without weights).
dotnet run --project examples/IlgpuLlama.Example -c Release --no-build
# The GPU check's CPU smoke (tiny sizes, no torch, no GPU, in a temporary folder): the device script and
# every CLI flag it uses stay working between GPU windows. Exit 1 names the failed steps.
command -v python3 >/dev/null || { echo "tools/test.sh: python3 (standard library only) is needed for the device script's CPU smoke" >&2; exit 1; }
smoke="$(mktemp -d)"
trap 'rm -rf "$smoke"' EXIT
if ! OUT="$smoke/out" LOGS="$smoke/logs" WORK="$smoke/work" bash tools/device/run.sh --cpu-smoke \
        --cli "dotnet $PWD/src/IlgpuLlama.Cli/bin/Release/net10.0/ilgpu-llama.dll" > "$smoke/run.log" 2>&1; then
    tail -40 "$smoke/run.log"
    echo "device script CPU smoke FAILED (tools/device/run.sh --cpu-smoke; full log above)" >&2
    exit 1
fi
grep -E '^\[.*\] (done|[a-z_]+: (ok|skipped|failed|timeout))' "$smoke/run.log" | tail -20  || true
bash tools/ptxas-check.sh --arch sm_60
