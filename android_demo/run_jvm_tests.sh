#!/usr/bin/env bash
# Runs the JVM unit tests of the app's pure logic (org.edgepack.demo.core) with Debian's junit5
# and AOSP's org.json (libandroid-json-java), then prints "N passed, N failed".
# Exit status 0 only when at least one test ran and none failed.
# The image preprocessing tests (ImageFixturesTest) compare against edgepack.model.image: their expected
# files are generated first, by tests/android_image_fixtures.py with the python on PATH (PYTHON overrides),
# into a temporary folder removed at the end (EDGEPACK_IMAGE_FIXTURES names it for the JVM).
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "$HERE/tools.sh"
ensure_tools

W="$HERE/build/jvm-tests"
rm -rf "$W"
mkdir -p "$W/classes" "$W/test-classes"

JAVAC_FLAGS=(-source 8 -target 8 -encoding UTF-8 -Xlint:-options)
find "$HERE/app/src/main/java/org/edgepack/demo/core" -name '*.java' > "$W/main.txt"
javac "${JAVAC_FLAGS[@]}" -classpath "$ORG_JSON" -d "$W/classes" @"$W/main.txt"
find "$HERE/app/src/test/java" -name '*.java' > "$W/test.txt"
javac "${JAVAC_FLAGS[@]}" -classpath "$W/classes:$ORG_JSON:$JUNIT_API" -d "$W/test-classes" @"$W/test.txt"

PY="${PYTHON:-$(command -v python || command -v python3)}"
FIXTURES="$(mktemp -d "${TMPDIR:-/tmp}/edgepack-image-fixtures.XXXXXX")"
trap 'rm -rf "$FIXTURES"' EXIT
PYTHONPATH="$(dirname "$HERE")${PYTHONPATH:+:$PYTHONPATH}" "$PY" "$(dirname "$HERE")/tests/android_image_fixtures.py" "$FIXTURES"
export EDGEPACK_IMAGE_FIXTURES="$FIXTURES"

set +e
java -Xmx1g -jar "$JUNIT_CONSOLE" --disable-banner --disable-ansi-colors --details=tree --include-engine=junit-jupiter \
    --class-path "$W/test-classes:$W/classes:$ORG_JSON" --scan-class-path 2>&1 | tee "$W/report.txt"
status=${PIPESTATUS[0]}
set -e

# ConsoleLauncher's summary has lines like "[        36 tests successful      ]".
passed=$(sed -n 's/^\[ *\([0-9]*\) tests successful *\]$/\1/p' "$W/report.txt")
failed=$(sed -n 's/^\[ *\([0-9]*\) tests failed *\]$/\1/p' "$W/report.txt")
if [ -z "$passed" ] || [ -z "$failed" ]; then
    echo "edgepack: error: no JUnit summary in the output (exit status $status)" >&2
    exit 1
fi
echo "$passed passed, $failed failed"
if [ "$status" -ne 0 ] || [ "$failed" -ne 0 ] || [ "$passed" -eq 0 ]; then
    exit 1
fi
