#!/usr/bin/env bash
# The whole GPU check in one call, on a bare NVIDIA machine with PyTorch and transformers but no
# .NET SDK. Run from the repository root with the packed CLI carried along:
#   bash tools/device/run.sh            (writes results to $OUT, default ./device-out)
# Budget: at most 9 minutes including model creation; each step has its own time limit and a failed
# step is recorded and skipped, so one failure never loses the rest.
set -uo pipefail
cd "$(dirname "$0")/../.."
out="${OUT:-$PWD/device-out}"   # what comes back: results.json, results.md, summary.json, roofline.png, logs.tar.gz
work_out=/tmp/ilgpu-out            # every log; packed into logs.tar.gz at the end (the device tool returns at most 8 files)
mkdir -p "$out" "$work_out" /tmp/ilgpu-app
if [[ ! -x /tmp/ilgpu-app/ilgpu-llama/ilgpu-llama ]]; then
    xz -dc .device/pkg/ilgpu-llama-linux-x64.tar.xz | tar -C /tmp/ilgpu-app -xf - || { echo "cannot unpack .device/pkg (run tools/device/pack.sh and carry .device/pkg)"; exit 1; }
fi
nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,clocks.max.mem --format=csv > "$work_out/nvidia-smi.csv" 2>&1
cat "$work_out/nvidia-smi.csv"
PYTHONUNBUFFERED=1 python3 tools/device/gpu_check.py --cli /tmp/ilgpu-app/ilgpu-llama/ilgpu-llama --out "$work_out" --work /tmp/ilgpu-work "$@"
rc=$?
for f in results.json results.md summary.json roofline.png; do [[ -f "$work_out/$f" ]] && cp "$work_out/$f" "$out/"; done
tar -C "$work_out" -czf "$out/logs.tar.gz" .
exit $rc
