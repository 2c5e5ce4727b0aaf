#!/usr/bin/env bash
# Builds .gpu/ in the repository root: what a lent GPU machine (no Java, no Maven, no network) needs to run the
# engine's tests on the device, gpu-check and the CUDA sanitizers, beside this repository's work tree (run.sh reads
# the engine's sources for the PTX freshness test). A jlinked JDK 17 runtime, the engine and its test classes with
# their test dependencies, gpu-check with its few dependencies, and run.sh; about 50 MiB. Carry .gpu with the work
# tree to the machine and run .gpu/run.sh there (docs/gpu.md).
set -euo pipefail
root="$(cd "$(dirname "$0")/../.." && pwd)"; here="$root/src-test/gpu"; out="$root/.gpu"
cd "$root"
jdk="${JAVA_HOME:+$JAVA_HOME/bin/}"
for tool in "${jdk}jlink" "${jdk}javac" "${jdk}jar" zip unzip; do
  command -v "$tool" >/dev/null || { echo "bundle: '$tool' is missing (set JAVA_HOME to a JDK 17+; zip and unzip are needed too)" >&2; exit 1; }
done
log="$root/.gpu-bundle.log"
echo "bundle: building the jars (./mvnw package, tests not run; log in $log)..." >&2
if ! { ./mvnw -q -B -DskipTests package && ./mvnw -q -B -pl sidecar/engine dependency:build-classpath \
    -Dmdep.includeScope=test -Dmdep.outputFile="$root/sidecar/engine/target/test-classpath.txt"; } >"$log" 2>&1; then
  tail -n 30 "$log" >&2
  echo "bundle: the build failed; see $log" >&2
  exit 1
fi
work="$(mktemp -d "$root/.gpu-new.XXXXXX")"; trap 'rm -rf "$work"' EXIT; chmod 755 "$work"
mkdir -p "$work/lib" "$work/classes"
lib="$root/src-test/target/lib"
cp src-test/target/pikv-e2e.jar "$lib"/pikv-engine.jar "$lib"/jcuda.jar "$lib"/picocli.jar \
  "$lib"/jackson-core.jar "$lib"/jackson-databind.jar "$lib"/jackson-annotations.jar "$work/lib/"
launcher=""; natives=""
for jar in $(tr ':' ' ' <sidecar/engine/target/test-classpath.txt); do
  case "$jar" in
    */jcuda-natives-*) natives="$jar" ;;
    */jcuda-*|*/byte-buddy-*) ;; # jcuda is copied above; byte-buddy only serves assertions the engine tests do not make
    *) cp "$jar" "$work/lib/"
       case "$jar" in */junit-platform-engine-*) launcher="${jar//junit-platform-engine/junit-platform-launcher}" ;; esac ;;
  esac
done
[ -n "$natives" ] || { echo "bundle: jcuda-natives is not on the engine's test class path" >&2; exit 1; }
if [ ! -f "$launcher" ]; then
  echo "bundle: the JUnit launcher ${launcher:-(junit-platform-launcher)} is not in the local Maven repository;" \
    "run ./mvnw -B verify once (surefire fetches it)" >&2
  exit 1
fi
cp "$launcher" "$work/lib/"
# The natives jar without the PTX compiler's library (24 MB; the backend loads PTX through the driver).
mkdir "$work/natives"
(cd "$work/natives" && unzip -q "$natives" && rm -f lib/libJNvPTXCompiler* && zip -qr "$work/lib/jcuda-natives.jar" .)
rm -rf "$work/natives"
(cd sidecar/engine/target && "${jdk}jar" cf "$work/lib/engine-tests.jar" -C test-classes .)
"${jdk}javac" --release 17 -d "$work/classes" -cp "$work/lib/*" "$here/RunTests.java" "$here/GpuCheckMain.java"
"${jdk}jlink" --add-modules java.base,java.instrument,java.logging,java.management,java.net.http,java.sql,java.xml,jdk.incubator.vector,jdk.jfr,jdk.management,jdk.unsupported,jdk.zipfs \
  --strip-debug --no-header-files --no-man-pages --compress=2 --output "$work/jre" 2>&1 | grep -v "Using incubator modules" >&2 || true
[ -x "$work/jre/bin/java" ] || { echo "bundle: jlink made no runtime (a JDK without jmods? Debian's needs openjdk-17-jmods)" >&2; exit 1; }
cp "$here/run.sh" "$work/run.sh"
# The sources the bundle was built from, as run.sh fingerprints them on the device (no git there): it refuses to run
# a bundle older than the work tree it is carried with.
sources() { find sidecar/engine/src src-test/gpu src-test/src/main -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum | sha256sum | cut -d' ' -f1; }
{ echo "sources $(sources)"; echo "commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown)$(git diff --quiet HEAD 2>/dev/null || echo ' (with changes not committed)')"; } >"$work/SOURCES"
rm -rf "$out"; mv "$work" "$out"; trap - EXIT
echo "bundle: $(du -sh "$out" | cut -f1) in .gpu; on the GPU machine, with the work tree: .gpu/run.sh" >&2
