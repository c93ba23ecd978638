#!/usr/bin/env bash
# The project's test command: build, run every test on the CPU accelerator and the examples (library, IChatClient), the
# device script's CPU smoke (tools/device/run.sh --cpu-smoke), then the P100 static
# check (ptxas for sm_60 on every kernel; downloads CUDA 11.8's ptxas once into .tools/). It leaves
# tracked files alone: a ptxas table in docs/kernels.md that no longer matches is reported as a
# warning; `bash tools/ptxas-check.sh --update-doc` rewrites it.
#
# Every stage runs (one that needs the build is skipped, and says so, when the build failed); the
# tests print a progress line every 30 s; the end is a table of every stage with pass/FAIL and its
# time, and the exit status is 1 if any stage failed. About 13 minutes on a 2-core machine.
set -uo pipefail
cd "$(dirname "$0")/.."

start_all=$(date +%s)
names=() results=() times=()
say() { echo "[test.sh $(elapsed $start_all)] $*"; }
elapsed() { local s=$(( $(date +%s) - $1 )); printf '%dm%02ds' $((s / 60)) $((s % 60)); }
record() { names+=("$1"); results+=("$2"); times+=("$3"); }

# run NAME COMMAND...: runs one stage, records pass or FAIL and its time.
run() {
    local name=$1; shift
    local t0; t0=$(date +%s)
    say "$name: started"
    if "$@"; then
        record "$name" pass "$(elapsed "$t0")"
        say "$name: pass ($(elapsed "$t0"))"
    else
        record "$name" FAIL "$(elapsed "$t0")"
        say "$name: FAILED ($(elapsed "$t0"))"
    fi
}

build() { dotnet build IlgpuLlama.sln -c Release; }

# The chat page's browser test (tests/IlgpuLlama.Tests/Serving/ChatPageTests.cs) drives Debian's
# chromium through chromedriver: installed here when missing (about 25 s, 26 packages; needs root and
# apt-get), so this one command sets a fresh machine up. Without them that test fails saying how to install them.
browser() {
    command -v chromedriver >/dev/null 2>&1 && command -v chromium >/dev/null 2>&1 && return 0
    echo "test.sh: installing chromium and chromium-driver for the chat page's browser test" >&2
    (apt-get update && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends chromium chromium-driver) >&2 \
        || { echo "test.sh: could not install chromium and chromium-driver; run as root: apt-get update && apt-get install -y chromium chromium-driver" >&2; return 1; }
}

# The tests, with a progress line every 30 s (tests passed and failed so far). A test that hangs (a
# command that should have failed but serves forever) is killed after 10 minutes of silence and named,
# instead of holding CI to its time limit.
tests() {
    local log; log="$(mktemp)"
    dotnet test IlgpuLlama.sln -c Release --no-build --logger "console;verbosity=normal" \
        --blame-hang-timeout 10m --blame-hang-dump-type none > "$log" 2>&1 &
    local pid=$!
    while kill -0 "$pid" 2>/dev/null; do
        for _ in $(seq 30); do
            kill -0 "$pid" 2>/dev/null || break
            sleep 1
        done
        kill -0 "$pid" 2>/dev/null || break
        say "tests: $(grep -c '^  Passed ' "$log") passed, $(grep -c '^  Failed ' "$log") failed so far"
    done
    wait "$pid"
    local rc=$?
    # The failures with their messages, then the summary line.
    grep -A 20 '^  Failed ' "$log" | head -200 || true
    grep -E '^(Passed|Failed)!|^Test Run |^Total tests:|^ +(Passed|Failed|Skipped): |^ Total time:|[Aa]borted' "$log" || true
    rm -f "$log"
    return $rc
}

# The examples, run as a user would (on the demo model without weights): the library's, the
# Microsoft.Extensions.AI IChatClient's, and the server endpoints inside an ASP.NET Core application.
# All run; the stage fails if any does.
example() {
    local rc=0 p
    for p in IlgpuLlama.Example IlgpuLlama.ChatClientExample IlgpuLlama.ServerExample; do
        if ! dotnet run --project "examples/$p" -c Release --no-build; then
            echo "example examples/$p FAILED" >&2
            rc=1
        fi
    done
    return $rc
}

# The GPU check's CPU smoke (tiny sizes, no torch, no GPU, in a temporary folder): the device script and
# every CLI flag it uses stay working between GPU windows.
smoke() {
    command -v python3 >/dev/null || { echo "tools/test.sh: python3 (standard library only) is needed for the device script's CPU smoke" >&2; return 1; }
    local dir; dir="$(mktemp -d)"
    local rc=0
    if ! OUT="$dir/out" LOGS="$dir/logs" WORK="$dir/work" bash tools/device/run.sh --cpu-smoke \
            --cli "dotnet $PWD/src/IlgpuLlama.Cli/bin/Release/net10.0/ilgpu-llama.dll" > "$dir/run.log" 2>&1; then
        tail -40 "$dir/run.log"
        echo "device script CPU smoke FAILED (tools/device/run.sh --cpu-smoke; full log above)" >&2
        rc=1
    else
        grep -E '^\[.*\] (done|[a-z_]+: (ok|skipped|failed|timeout))' "$dir/run.log" | tail -20 || true
    fi
    rm -rf "$dir"
    return $rc
}

ptxas() { bash tools/ptxas-check.sh --arch sm_60; }

run build build
if [[ "${results[0]}" == pass ]]; then
    run browser browser
    run tests tests
    run example example
    run "cpu smoke" smoke
    run "ptxas sm_60" ptxas
else
    for s in browser tests example "cpu smoke" "ptxas sm_60"; do
        record "$s" "skipped (the build failed)" "-"
    done
fi

echo
echo "tools/test.sh: every stage ($(elapsed "$start_all") in all)"
failed=0
for i in "${!names[@]}"; do
    printf '  %-12s %-28s %s\n' "${names[$i]}" "${results[$i]}" "${times[$i]}"
    [[ "${results[$i]}" == pass ]] || failed=1
done
exit $failed
