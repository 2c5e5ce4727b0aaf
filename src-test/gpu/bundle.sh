#!/usr/bin/env bash
# Builds .gpu/ in the repository root: what a lent GPU machine (no Java, no Maven, no network) needs to run the
# engine's tests on the device, ./pikv gpu-check and the CUDA sanitizers. A jlinked JDK 17 runtime, the engine and its
# test classes with their test dependencies, gpu-check with its few dependencies, and run.sh; about 50 MiB. Carry
# .gpu to the machine and run .gpu/run.sh there (docs/gpu.md).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"; here="$root/src-test/gpu"; out="$root/.gpu"
cd "$root"
jlink_bin="${JAVA_HOME:+$JAVA_HOME/bin/}jlink"
command -v "$jlink_bin" >/dev/null || { echo "bundle: no jlink at '$jlink_bin' (set JAVA_HOME to a JDK 17+)" >&2; exit 1; }
echo "bundle: building the jars (./mvnw package, tests not run)..." >&2
./mvnw -q -B -DskipTests package >/dev/null
./mvnw -q -B -pl sidecar/engine dependency:build-classpath -Dmdep.includeScope=test \
  -Dmdep.outputFile="$root/sidecar/engine/target/test-classpath.txt" >/dev/null
rm -rf "$out"; mkdir -p "$out/lib" "$out/classes"
lib="$root/src-test/target/lib"
cp src-test/target/pikv-e2e.jar "$lib"/pikv-engine.jar "$lib"/jcuda.jar "$lib"/picocli.jar \
  "$lib"/jackson-core.jar "$lib"/jackson-databind.jar "$lib"/jackson-annotations.jar "$out/lib/"
launcher=""
for jar in $(tr ':' ' ' <sidecar/engine/target/test-classpath.txt); do
  case "$jar" in
    */jcuda-natives-*) natives="$jar" ;;
    */jcuda-*|*/byte-buddy-*) ;; # jcuda is copied above; byte-buddy only serves assertions the engine tests do not make
    *) cp "$jar" "$out/lib/"
       case "$jar" in */junit-platform-engine-*) launcher="${jar//junit-platform-engine/junit-platform-launcher}" ;; esac ;;
  esac
done
[ -n "${natives:-}" ] || { echo "bundle: jcuda-natives is not on the engine's test class path" >&2; exit 1; }
[ -f "$launcher" ] || { echo "bundle: $launcher is not in the local Maven repository" >&2; exit 1; }
cp "$launcher" "$out/lib/"
# The natives jar without the PTX compiler's library (24 MB; the backend loads PTX through the driver).
tmp="$(mktemp -d)"; trap 'rm -rf "$tmp"' EXIT
(cd "$tmp" && unzip -q "$natives" && rm -f lib/libJNvPTXCompiler* && zip -qr "$out/lib/jcuda-natives.jar" .)
(cd sidecar/engine/target && jar cf "$out/lib/engine-tests.jar" -C test-classes .)
javac -d "$out/classes" -cp "$out/lib/*" "$here/RunTests.java" "$here/GpuCheckMain.java"
"$jlink_bin" --add-modules java.base,java.instrument,java.logging,java.management,java.net.http,java.sql,java.xml,jdk.incubator.vector,jdk.jfr,jdk.management,jdk.unsupported,jdk.zipfs \
  --strip-debug --no-header-files --no-man-pages --compress=2 --output "$out/jre" 2>/dev/null
cp "$here/run.sh" "$out/run.sh"
echo "bundle: $(du -sh "$out" | cut -f1) in .gpu; on the GPU machine: .gpu/run.sh (carry .gpu)" >&2
