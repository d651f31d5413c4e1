#!/usr/bin/env bash
# Builds app/ into a signed debug APK without Gradle, with Debian's Android packages, around the
# real engine (onnxruntime-genai 0.15.2 + onnxruntime 1.29.0, fetched by fetch_engine.sh):
#   aapt2 (resources, manifest, license assets) -> tools/Downgrade.java (onnxruntime's Java API,
#   class version 61, rewritten as version 52 with Debian's ASM, since dx takes nothing newer) ->
#   javac (Java 8, against android.jar API 23, genai's classes.jar and the downgraded onnxruntime
#   jar) -> dx (app + genai + onnxruntime classes into one classes.dex, --min-sdk-version 24)
#   -> zip (+ lib/<abi>/ with the five native libraries) -> zipalign -> apksigner.
# Output: build/edgepack-demo-debug.apk. Safe to run again.
#
# Native libraries are stored compressed and the manifest says extractNativeLibs="true" (Gradle:
# useLegacyPackaging true): the installer unpacks them into the app's lib directory. The other
# choice (stored, 16 KB-aligned, mapped from the APK) doubles the APK to ~150 MB for a sideload and
# needs `zipalign -P 16`, which Debian's zipalign (10.0.0) lacks; and libmat.so's segments are 4 KB
# aligned upstream, so 16 KB zip alignment would not make the APK 16 KB-page ready anyway.
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
. "$HERE/tools.sh"
ensure_tools
. "$HERE/fetch_engine.sh"
fetch_engine

APP="$HERE/app/src/main"
OUT="$HERE/build"
APK="$OUT/edgepack-demo-debug.apk"
KEYSTORE="$OUT/debug.keystore"
PACKAGE=org.edgepack.demo
MIN_SDK=24      # onnxruntime-genai's and onnxruntime's AARs both say minSdkVersion 24
TARGET_SDK=34   # as app/build.gradle

# Everything but the debug key is rebuilt from scratch.
rm -rf "$OUT/apk"
mkdir -p "$OUT/apk"/{res,gen,classes,dex}
W="$OUT/apk"

# The pure logic must run on the JVM too: no android.* in core/.
if grep -rlE '^import android\.' "$APP/java/org/edgepack/demo/core"; then
    echo "edgepack: error: org.edgepack.demo.core must not import android.*" >&2
    exit 1
fi

echo "== aapt2: resources and manifest"
# Gradle takes the package from build.gradle and extractNativeLibs from useLegacyPackaging;
# aapt2 wants both in the manifest.
sed -e "s|<manifest |<manifest package=\"$PACKAGE\" |" \
    -e "s|<application|<application android:extractNativeLibs=\"true\"|" \
    "$APP/AndroidManifest.xml" > "$W/AndroidManifest.xml"
aapt2 compile --dir "$APP/res" -o "$W/res/compiled.zip"
aapt2 link -I "$ANDROID_JAR" --manifest "$W/AndroidManifest.xml" -A "$APP/assets" \
    --min-sdk-version "$MIN_SDK" --target-sdk-version "$TARGET_SDK" \
    --version-code 1 --version-name 1.0 \
    --java "$W/gen" -o "$W/unsigned.apk" "$W/res/compiled.zip"

echo "== Downgrade: onnxruntime's Java API, class version 61 -> 52 (tools/Downgrade.java, ASM)"
mkdir -p "$W/tools"
javac -source 8 -target 8 -encoding UTF-8 -Xlint:-options -classpath "$ASM_JARS" -d "$W/tools" \
    "$HERE/tools/Downgrade.java" "$HERE/tools/LambdaClass.java"
java -cp "$W/tools:$ASM_JARS" Downgrade "$ENGINE_DIR/ort-classes-61.jar" "$ENGINE_DIR/ort-classes.jar" "$ANDROID_JAR"

echo "== javac: Java 8 against android.jar (API 23), onnxruntime-genai's and onnxruntime's classes"
JAVAC_FLAGS=(-source 8 -target 8 -encoding UTF-8 -Xlint:-options -bootclasspath "$ANDROID_JAR")
find "$APP/java" "$W/gen" -name '*.java' > "$W/sources.txt"
javac "${JAVAC_FLAGS[@]}" -classpath "$ENGINE_DIR/classes.jar:$ENGINE_DIR/ort-classes.jar" -d "$W/classes" \
    @"$W/sources.txt"

echo "== dx: classes.dex (app + onnxruntime-genai + onnxruntime)"
dalvik-exchange --dex --min-sdk-version="$MIN_SDK" --output="$W/dex/classes.dex" \
    "$W/classes" "$ENGINE_DIR/classes.jar" "$ENGINE_DIR/ort-classes.jar"

echo "== zip, zipalign, apksigner"
(cd "$W/dex" && zip -q -j "$W/unsigned.apk" classes.dex)
(cd "$ENGINE_DIR" && zip -q -r "$W/unsigned.apk" lib)
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
