#!/usr/bin/env bash
# Builds app/ into a signed debug APK without Gradle, with Debian's Android packages:
#   aapt2 (resources, manifest) -> javac (Java 8, against android.jar API 23 and compile-only
#   stubs of onnxruntime-genai) -> dx (dex) -> zip -> zipalign -> apksigner.
# The stubs are not packaged, so this APK checks artifacts but cannot run a model: that needs
# the Android Studio build. Output: build/edgepack-demo-debug.apk. Safe to run again.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "$HERE/tools.sh"
ensure_tools

APP="$HERE/app/src/main"
OUT="$HERE/build"
APK="$OUT/edgepack-demo-debug.apk"
KEYSTORE="$OUT/debug.keystore"
PACKAGE=org.edgepack.demo
MIN_SDK=23

# Everything but the debug key is rebuilt from scratch.
rm -rf "$OUT/apk"
mkdir -p "$OUT/apk"/{res,gen,stub-classes,classes,dex}
W="$OUT/apk"

# The pure logic must run on the JVM too: no android.* in core/.
if grep -rlE '^import android\.' "$APP/java/org/edgepack/demo/core"; then
    echo "edgepack: error: org.edgepack.demo.core must not import android.*" >&2
    exit 1
fi

echo "== aapt2: resources and manifest"
# Gradle takes the package from build.gradle; aapt2 wants it in the manifest.
sed "s|<manifest |<manifest package=\"$PACKAGE\" |" "$APP/AndroidManifest.xml" > "$W/AndroidManifest.xml"
aapt2 compile --dir "$APP/res" -o "$W/res/compiled.zip"
aapt2 link -I "$ANDROID_JAR" --manifest "$W/AndroidManifest.xml" \
    --min-sdk-version "$MIN_SDK" --target-sdk-version "$MIN_SDK" \
    --version-code 1 --version-name 1.0 \
    --java "$W/gen" -o "$W/unsigned.apk" "$W/res/compiled.zip"

echo "== javac: Java 8 against android.jar (API $MIN_SDK)"
JAVAC_FLAGS=(-source 8 -target 8 -encoding UTF-8 -Xlint:-options -bootclasspath "$ANDROID_JAR")
find "$HERE/stubs" -name '*.java' > "$W/stubs.txt"
javac "${JAVAC_FLAGS[@]}" -d "$W/stub-classes" @"$W/stubs.txt"
find "$APP/java" "$W/gen" -name '*.java' > "$W/sources.txt"
javac "${JAVAC_FLAGS[@]}" -classpath "$W/stub-classes" -d "$W/classes" @"$W/sources.txt"
if [ -e "$W/classes/ai" ]; then
    echo "edgepack: error: onnxruntime-genai stubs leaked into the app classes" >&2
    exit 1
fi

echo "== dx: classes.dex"
dalvik-exchange --dex --min-sdk-version="$MIN_SDK" --output="$W/dex/classes.dex" "$W/classes"

echo "== zip, zipalign, apksigner"
(cd "$W/dex" && zip -q -j "$W/unsigned.apk" classes.dex)
zipalign -f -p 4 "$W/unsigned.apk" "$W/aligned.apk"
if [ ! -f "$KEYSTORE" ]; then
    keytool -genkeypair -keystore "$KEYSTORE" -storepass android -keypass android \
        -alias androiddebugkey -keyalg RSA -keysize 2048 -validity 10000 \
        -dname "CN=Android Debug,O=Android,C=US" >/dev/null 2>&1
fi
apksigner sign --ks "$KEYSTORE" --ks-pass pass:android --key-pass pass:android \
    --ks-key-alias androiddebugkey --out "$APK" "$W/aligned.apk"
rm -f "$APK.idsig"
apksigner verify "$APK"
echo "built $APK"
