#!/usr/bin/env bash
# Compiles the CUDA kernels to PTX for sm_80 and sm_90 when nvcc is on the PATH; otherwise the committed PTX
# (src/main/resources/io/pikv/kv/compute/cuda/) is packaged as it is. Each PTX starts with the SHA-256 of its
# source, which a test compares with the source so that a stale committed PTX fails the build.
# Usage: build-ptx.sh OUT_DIR   (the build passes target/generated-resources; --commit writes the committed copy)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
out="${1:?output directory}"
if [ "$out" = "--commit" ]; then
  out="$here/../resources/io/pikv/kv/compute/cuda"
fi
if ! command -v nvcc >/dev/null 2>&1; then
  echo "build-ptx: nvcc not on the PATH; packaging the committed PTX" >&2
  exit 0
fi
mkdir -p "$out"
src="$here/pikv_attention.cu"
sum="$(sha256sum "$src" | cut -d' ' -f1)"
for arch in sm_80 sm_90; do
  tmp="$(mktemp)"
  nvcc -ptx -O3 -arch="$arch" "$src" -o "$tmp"
  { echo "// pikv-source-sha256: $sum"; cat "$tmp"; } > "$out/pikv_attention.$arch.ptx"
  rm -f "$tmp"
done
