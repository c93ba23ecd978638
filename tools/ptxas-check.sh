#!/usr/bin/env bash
# Static P100 check of every ILGPU kernel, with no GPU.
#
#   bash tools/ptxas-check.sh [--arch sm_60] [--out docs/kernels.md] [--update-doc] [--keep DIR]
#
# 1. Gets ptxas, cuobjdump and nvdisasm from Debian bookworm's nvidia-cuda-toolkit package
#    (CUDA 11.8, the last toolkit line that targets sm_60 without deprecation) WITHOUT installing
#    the toolkit: a private apt sources list for bookworm contrib/non-free, a private lists
#    directory, `apt-get download`, then `dpkg -x` into a cache directory (default .tools/cuda,
#    git-ignored, reused when present). Set ILGPU_LLAMA_CUDA_DIR to an already extracted tree
#    (the directory holding usr/bin/ptxas) to skip the download; DEBIAN_MIRROR overrides the
#    mirror (default http://deb.debian.org/debian).
# 2. Writes the PTX of every kernel (`ilgpu-llama ptx`, ISA 7.8 which CUDA 11.8's ptxas reads),
#    assembles each file with `ptxas -arch=ARCH -v` and disassembles the cubin with
#    `cuobjdump -sass`.
# 3. `ilgpu-llama ptxas-report` checks the results and fails (exit 1) on:
#      - any ptxas error;
#      - any local memory: spill stores > 0, spill loads > 0 or a stack frame > 0 in any function
#        (a stack frame without spills is a local array: just as slow, so it fails too), or any
#        LDL/STL instruction in the SASS;
#      - a decode matmul kernel (matvec_*) without 128-bit global loads: ld.global[.nc].v4 in its
#        PTX and LDG.E.128 in its SASS;
#    and builds the table for the ptxas-table markers of the --out markdown file. By default the
#    check writes nothing tracked: it builds the table in a temporary copy, compares, and on a
#    difference prints a warning with the diff (the check still passes: the table documents, the
#    checks above decide). `--update-doc` writes the new table into the file (through a temporary
#    file renamed over it): run `bash tools/ptxas-check.sh --update-doc` after changing a kernel.
# Runs as root on a fresh Debian 12 machine with network access (as CI does).
set -euo pipefail

arch=sm_60
doc=docs/kernels.md
keep=""
update_doc=0
while [[ $# -gt 0 ]]; do
    case "$1" in
        --arch) arch="$2"; shift 2 ;;
        --out) doc="$2"; shift 2 ;;
        --keep) keep="$2"; shift 2 ;;
        --update-doc) update_doc=1; shift ;;
        -h|--help) sed -n '2,35p' "$0"; exit 0 ;;
        *) echo "ptxas-check: unknown argument '$1' (use --arch, --out, --update-doc, --keep)" >&2; exit 2 ;;
    esac
done

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
start=$SECONDS
log() { echo "ptxas-check: $*" >&2; }
fail() { echo "ptxas-check: FAILED: $*" >&2; exit 1; }

# ---- 1. ptxas / cuobjdump / nvdisasm ---------------------------------------------------------
cuda_dir="${ILGPU_LLAMA_CUDA_DIR:-$root/.tools/cuda}"
bin="$cuda_dir/usr/bin"
if [[ ! -x "$bin/ptxas" || ! -x "$bin/cuobjdump" || ! -x "$bin/nvdisasm" ]]; then
    command -v apt-get >/dev/null && command -v dpkg >/dev/null \
        || fail "apt-get and dpkg are needed to fetch nvidia-cuda-toolkit (Debian 12), or set ILGPU_LLAMA_CUDA_DIR"
    mirror="${DEBIAN_MIRROR:-http://deb.debian.org/debian}"
    apt_dir="$root/.tools/apt"
    mkdir -p "$apt_dir/lists/partial" "$apt_dir/cache/archives/partial" "$apt_dir/debs"
    keyring=/usr/share/keyrings/debian-archive-keyring.gpg
    signed=""
    [[ -f "$keyring" ]] && signed="[signed-by=$keyring] "
    {
        echo "deb ${signed}$mirror bookworm contrib non-free"
        echo "deb ${signed}$mirror bookworm-updates contrib non-free"
    } > "$apt_dir/sources.list"
    apt_opts=(
        -o "Dir::Etc::SourceList=$apt_dir/sources.list"
        -o "Dir::Etc::SourceParts=/dev/null"
        -o "Dir::State::Lists=$apt_dir/lists"
        -o "Dir::Cache=$apt_dir/cache"
        -o "APT::Sandbox::User=root"
        -o "Acquire::Languages=none"
        -o "Acquire::IndexTargets::deb::DEP-11::DefaultEnabled=false"
        -o "Acquire::IndexTargets::deb::DEP-11-icons::DefaultEnabled=false"
        -q
    )
    log "fetching the package lists of bookworm contrib/non-free from $mirror"
    apt-get "${apt_opts[@]}" update >&2 || fail "apt-get update of the private bookworm contrib/non-free list failed"
    version="$(apt-cache "${apt_opts[@]}" policy nvidia-cuda-toolkit | awk '/Candidate:/ {print $2}')"
    [[ -n "$version" && "$version" != "(none)" ]] || fail "nvidia-cuda-toolkit is not in bookworm contrib/non-free at $mirror"
    log "downloading nvidia-cuda-toolkit $version (about 84 MB)"
    rm -f "$apt_dir/debs"/nvidia-cuda-toolkit_*.deb
    (cd "$apt_dir/debs" && apt-get "${apt_opts[@]}" download "nvidia-cuda-toolkit=$version" >&2) \
        || fail "apt-get download nvidia-cuda-toolkit=$version failed"
    deb="$(ls "$apt_dir/debs"/nvidia-cuda-toolkit_*.deb | head -n 1)"
    rm -rf "$cuda_dir.partial"
    mkdir -p "$cuda_dir.partial"
    dpkg -x "$deb" "$cuda_dir.partial" || fail "dpkg -x $deb failed"
    rm -rf "$cuda_dir"
    mv "$cuda_dir.partial" "$cuda_dir"
    rm -f "$deb"
    [[ -x "$bin/ptxas" && -x "$bin/cuobjdump" && -x "$bin/nvdisasm" ]] \
        || fail "the nvidia-cuda-toolkit package did not contain usr/bin/ptxas, cuobjdump and nvdisasm"
fi
ptxas_version="$("$bin/ptxas" --version | grep -m1 -o 'release [0-9.]*, V[0-9.]*' || true)"
log "using ptxas from $bin (${ptxas_version:-unknown version}) after $((SECONDS - start)) s"

# ---- 2. PTX, cubin, SASS ---------------------------------------------------------------------
work="${keep:-$(mktemp -d "${TMPDIR:-/tmp}/ptxas-check.XXXXXX")}"
mkdir -p "$work"
[[ -z "$keep" ]] && trap 'rm -rf "$work"' EXIT
cli=(dotnet run --project "$root/src/IlgpuLlama.Cli" -c Release)
log "building the CLI and writing PTX for $arch to $work"
"${cli[@]}" -- ptx --arch "$arch" --out "$work" >&2 || fail "ilgpu-llama ptx failed"

count=0
for ptx in "$work"/*.ptx; do
    name="$(basename "$ptx" .ptx)"
    if ! "$bin/ptxas" -arch="$arch" -v -o "$work/$name.cubin" "$ptx" 2> "$work/$name.ptxas.txt"; then
        cat "$work/$name.ptxas.txt" >&2
        fail "ptxas rejected $name.ptx for $arch (messages above)"
    fi
    "$bin/cuobjdump" -sass "$work/$name.cubin" > "$work/$name.sass" || fail "cuobjdump -sass failed on $name.cubin"
    count=$((count + 1))
done
[[ $count -gt 0 ]] || fail "no PTX files were written"
log "assembled $count kernels with ptxas -arch=$arch"

# ---- 3. checks and table ---------------------------------------------------------------------
doc_args=()
if [[ -n "$doc" ]]; then
    [[ -f "$doc" ]] || fail "--out $doc does not exist (it must contain the ptxas-table markers)"
    # The report rewrites a copy; the tracked file changes only with --update-doc.
    doc_copy="$work/$(basename "$doc")"
    cp "$doc" "$doc_copy"
    doc_args=(--doc "$doc_copy")
fi
if ! "${cli[@]}" --no-build -- ptxas-report --dir "$work" --arch "$arch" --tool-version "ptxas ${ptxas_version:-unknown}" "${doc_args[@]}"; then
    fail "static checks failed (FAIL lines above)"
fi
if [[ -n "$doc" ]]; then
    if cmp -s "$doc" "$doc_copy"; then
        log "the ptxas table in $doc is up to date"
    elif [[ $update_doc -eq 1 ]]; then
        cp "$doc_copy" "$doc.tmp.$$" && mv "$doc.tmp.$$" "$doc"
        log "rewrote the ptxas table in $doc"
    else
        out_arg=""
        [[ "$doc" != docs/kernels.md ]] && out_arg=" --out $doc"
        log "warning: the ptxas table in $doc differs from this run (left unchanged); to rewrite it: bash tools/ptxas-check.sh --update-doc$out_arg"
        diff -u "$doc" "$doc_copy" | head -n 40 >&2 || true
    fi
fi
log "passed in $((SECONDS - start)) s"
