#!/usr/bin/env bash
# Runs on a GPU machine from the .gpu/ that src-test/gpu/bundle.sh made, inside the repository's work tree: the
# engine's whole suite on the device (CudaAttentionTest's shapes and shard tests included), ./pikv gpu-check with its
# defaults, and CudaAttentionTest under compute-sanitizer memcheck and racecheck. Writes the logs and gpu-check.json to
# $OUT (default /tmp/out), about 90 s on an H100. Exit 0 only when every step passed (a GPU test skipped fails it).
set -u
R="$(cd "$(dirname "$0")/.." && pwd)"; J="$R/.gpu/jre/bin/java"; CP="$R/.gpu/classes:$R/.gpu/lib/*"
F="--add-modules jdk.incubator.vector --enable-native-access=ALL-UNNAMED -Dpikv.expect.vector=true"
OUT="${OUT:-/tmp/out}"; mkdir -p "$OUT"; failed=""
# The bundle must be of this work tree's sources (bundle.sh records their fingerprint): an older one would test old code.
sources() { (cd "$R" && find sidecar/engine/src src-test/gpu src-test/src/main -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1); }
built="$(sed -n 's/^sources //p' "$R/.gpu/SOURCES" 2>/dev/null)"
if [ "$built" != "$(sources)" ]; then
  echo "run.sh: .gpu was built from other sources than this work tree's (${built:-no record}): run src-test/gpu/bundle.sh again and carry the new .gpu" >&2
  exit 1
fi
echo "bundle of $(sed -n 's/^commit //p' "$R/.gpu/SOURCES")" | tee "$OUT/bundle.txt"
step() { echo "== $1 ($(date +%T))"; }
nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.max.sm --format=csv 2>&1 | tee "$OUT/device.txt"

step "engine suite on the device"
(cd "$R/sidecar/engine" && timeout 200 "$J" -Xmx16g $F -cp "$CP" RunTests 'io.pikv.*') >"$OUT/tests.log" 2>&1 \
  || failed="$failed tests"
grep -E "^(FAILED|ABORTED)" "$OUT/tests.log" | head -30
# A GPU test skipped (no usable device) is not a pass here: this script runs only where the GPU is meant to be used.
if grep -q "^ABORTED io.pikv.kv.compute.Cuda" "$OUT/tests.log"; then failed="$failed gpu-tests-skipped"; fi
echo "CudaAttentionTest:"; grep -E "^[A-Z]+ io.pikv.kv.compute.CudaAttentionTest" "$OUT/tests.log" | cut -d" " -f1 | sort | uniq -c
grep -A14 "Test run finished" "$OUT/tests.log"

step "gpu-check"
timeout 200 "$J" -Xmx16g $F -cp "$CP" io.pikv.cli.GpuCheckMain --json "$OUT/gpu-check.json" >"$OUT/gpu-check.log" 2>&1 \
  || failed="$failed gpu-check"
cat "$OUT/gpu-check.log"

sanitizer="$(command -v compute-sanitizer || true)"
[ -n "$sanitizer" ] || [ ! -x /usr/local/cuda/bin/compute-sanitizer ] || sanitizer=/usr/local/cuda/bin/compute-sanitizer
for tool in memcheck racecheck; do
  if [ -z "$sanitizer" ]; then
    echo "== compute-sanitizer $tool: no compute-sanitizer on PATH or in /usr/local/cuda/bin"; failed="$failed $tool"
    continue
  fi
  step "compute-sanitizer $tool over CudaAttentionTest"
  (cd "$R/sidecar/engine" && timeout 110 "$sanitizer" --tool $tool --error-exitcode 3 "$J" -Xmx8g $F -cp "$CP" \
    RunTests io.pikv.kv.compute.CudaAttentionTest) >"$OUT/$tool.log" 2>&1 || failed="$failed $tool"
  grep -E "ERROR SUMMARY|RACECHECK SUMMARY|tests (successful|failed|aborted)" "$OUT/$tool.log"
  grep -m5 -E "^========= (Invalid|Error|Race)" "$OUT/$tool.log"
  # Under the sanitizer too, skipped GPU tests (a probe that failed there) checked nothing: not a pass.
  if grep -q "^ABORTED io.pikv.kv.compute.Cuda" "$OUT/$tool.log"; then failed="$failed $tool-gpu-tests-skipped"; fi
done
step "done"
if [ -n "$failed" ]; then echo "run.sh: failed:$failed (logs in $OUT)"; exit 1; fi
echo "run.sh: all passed"
