#!/usr/bin/env bash
# Builds what the GPU machine needs (it has no .NET SDK): a self-contained linux-x64 publish of the
# CLI, compressed to stay well under the device tool's 64 MiB carry limit.
#   bash tools/device/pack.sh   ->   .device/pkg/ilgpu-llama-linux-x64.tar.xz
set -euo pipefail
cd "$(dirname "$0")/../.."
rm -rf .device/app .device/pkg
mkdir -p .device/pkg
dotnet publish src/IlgpuLlama.Cli -c Release -r linux-x64 --self-contained true -p:DebugType=none -o .device/app/ilgpu-llama >/dev/null
tar -C .device/app -cf - ilgpu-llama | xz -T0 -6 > .device/pkg/ilgpu-llama-linux-x64.tar.xz
ls -l .device/pkg/ilgpu-llama-linux-x64.tar.xz
