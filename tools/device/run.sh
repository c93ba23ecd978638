#!/usr/bin/env bash
# The whole GPU check in one call, on a bare NVIDIA machine with PyTorch and transformers but no
# .NET SDK, run from the repository root with the packed CLI carried along. The one command:
#
#   bash tools/device/pack.sh                                 # here, before GPU time starts (~2 min)
#   OUT=... bash tools/device/run.sh --deadline 540           # on the GPU, carrying .device/pkg
#   OUT=... bash tools/device/run.sh --only STEP,... --deadline 540   # a second call: rerun steps into the same summary
#
# (with the device tool: run(command="OUT=$OUT bash tools/device/run.sh --deadline 540",
# carry=[".device/pkg"], timeout_s=600)). Steps, their order and caps are STEPS in gpu_check.py.
#
# Nothing is lost to a timeout: gpu_check.py writes results.json, summary.json and results.md
# straight to $OUT after every step; every step's time is min(its cap, time left to the deadline
# minus a margin), steps that cannot start are recorded `skipped (deadline)`, so the run ends on its
# own before the tool's 600 s. --deadline SECONDS (default 540) counts from the start of this
# script. On exit, TERM or INT the logs are packed into $OUT/logs.tar.gz (the device tool returns
# few files, so the per-command logs travel as one archive).
#
#   --cpu-smoke      check the script on this machine's CPU accelerator: demo model, 4 new tokens,
#                    pp16, tg4, 1 repeat, tiny shapes, no torch (tools/test.sh runs it)
#   --cli COMMAND    the ilgpu-llama to run (e.g. "dotnet src/IlgpuLlama.Cli/bin/Release/net10.0/ilgpu-llama.dll");
#                    default $ILGPU_LLAMA_CLI, else the packed CLI from .device/pkg
# Other arguments go to gpu_check.py (--only, --skip, --tg, ...). LOGS and WORK name the log and
# work folders (default /tmp/ilgpu-logs, /tmp/ilgpu-work).
set -uo pipefail
start=$(date +%s)
cd "$(dirname "$0")/../.."
deadline=540
cli="${ILGPU_LLAMA_CLI:-}"
smoke=0
args=()
while [[ $# -gt 0 ]]; do
    case "$1" in
        --deadline) deadline="$2"; shift 2 ;;
        --cli) cli="$2"; shift 2 ;;
        --cpu-smoke) smoke=1; args+=("$1"); shift ;;
        *) args+=("$1"); shift ;;
    esac
done
out="${OUT:-$PWD/device-out}"   # what comes back: results.json, results.md, summary.json, roofline.png, logs.tar.gz
logs="${LOGS:-/tmp/ilgpu-logs}"
work="${WORK:-/tmp/ilgpu-work}"
mkdir -p "$out" "$logs" "$work"
py=""

pack_logs() {
    tar -C "$logs" -czf "$out/logs.tar.gz.tmp" . 2>/dev/null && mv -f "$out/logs.tar.gz.tmp" "$out/logs.tar.gz"
}
on_signal() {
    # Forward to gpu_check.py (it records the running step as killed, kills its CLI process group and writes the summary).
    [[ -n "$py" ]] && kill -TERM "$py" 2>/dev/null && wait "$py"
    exit 143
}
trap pack_logs EXIT
trap on_signal TERM INT

if [[ -z "$cli" ]]; then
    if [[ ! -x /tmp/ilgpu-app/ilgpu-llama/ilgpu-llama ]]; then
        mkdir -p /tmp/ilgpu-app
        xz -dc .device/pkg/ilgpu-llama-linux-x64.tar.xz | tar -C /tmp/ilgpu-app -xf - || { echo "cannot unpack .device/pkg (run tools/device/pack.sh and carry .device/pkg)"; exit 1; }
    fi
    cli=/tmp/ilgpu-app/ilgpu-llama/ilgpu-llama
fi
if [[ $smoke -eq 0 ]]; then
    nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,clocks.max.mem --format=csv > "$logs/nvidia-smi.csv" 2>&1
    cat "$logs/nvidia-smi.csv"
fi
# In the background so that the TERM trap runs at once (bash defers traps while a foreground child runs).
PYTHONUNBUFFERED=1 python3 tools/device/gpu_check.py --cli "$cli" --out "$out" --logs "$logs" --work "$work" \
    --deadline-at "$((start + deadline))" "${args[@]}" &
py=$!
wait "$py"
rc=$?
py=""
exit $rc
