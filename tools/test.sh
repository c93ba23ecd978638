#!/usr/bin/env bash
# The project's test command: build, run every test on the CPU accelerator and the library example, then the P100 static
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
bash tools/ptxas-check.sh --arch sm_60
