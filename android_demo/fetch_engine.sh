#!/usr/bin/env bash
# Fetches the Android engine (onnxruntime-genai 0.15.2 + onnxruntime 1.29.0, Microsoft's MIT builds)
# from the npm registry, the one registry here that serves Android binaries, and puts it where both
# builds read it:
#
#   app/libs/onnxruntime-genai.aar, app/libs/onnxruntime.aar   the two AARs, byte for byte as
#                                                               shipped (Gradle uses these)
#   app/src/main/assets/licenses/                               LICENSE, ThirdPartyNotices.txt of
#                                                               both, and genai's 1DS telemetry license
#   build/engine/classes.jar                                    genai's Java API (build_apk.sh)
#   build/engine/ort-classes-61.jar                             onnxruntime's Java API, class version
#                                                               61 as shipped (build_apk.sh downgrades it)
#   build/engine/lib/<abi>/*.so                                 the five native libraries per ABI
#
# The tarballs (100 MB and 150 MB) are fetched once with `npm pack NAME@VERSION` into
# $EDGEPACK_CACHE/android (default ~/.cache/edgepack/android), outside the repository, and their
# sha256 is checked every run. Nothing fetched is committed (see android_demo/.gitignore).
# Run it directly or source it (build_apk.sh does); safe to run again.
set -euo pipefail

EDGEPACK_DEMO="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ENGINE_CACHE="${EDGEPACK_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/edgepack}/android"
ENGINE_DIR="$EDGEPACK_DEMO/build/engine"
ENGINE_ABIS="arm64-v8a x86_64"
# What the app loads: genai's JNI library, which needs genai, which needs libmat.so (Microsoft's
# telemetry library; it also carries the libc++ genai imports); genai dlopens libonnxruntime.so.
# onnxruntime's own Java API (the picture path) loads libonnxruntime4j_jni.so, which needs libonnxruntime.so.
ENGINE_LIBS="libonnxruntime-genai-jni.so libonnxruntime-genai.so libmat.so libonnxruntime.so libonnxruntime4j_jni.so"
ORT_LIBS="libonnxruntime.so libonnxruntime4j_jni.so"   # taken from onnxruntime.aar, the rest from genai's

# name@version  sha256 of the tarball npm serves  AAR inside it
GENAI_PKG=com.github.asus4.onnxruntime-genai@0.4.9
GENAI_SHA256=80d03d6afe24dbf6bcde5bfcf424b26c9a2a4161a495e2dc71ac2e08288e7af4
GENAI_AAR=package/Plugins/Android/onnxruntime-genai.aar
ORT_PKG=com.github.asus4.onnxruntime@0.4.9
ORT_SHA256=e59788788818fdde1b2e522e766a21ba0f7d8391de55737abf81e32cc801785d
ORT_AAR=package/Plugins/Android/onnxruntime.aar

# The tarball of $1 (name@version) in the cache, fetched if missing, checked against $2.
_engine_tarball() {
    local pkg="$1" want="$2"
    local tgz="$ENGINE_CACHE/${pkg%@*}-${pkg#*@}.tgz"
    if [ ! -f "$tgz" ]; then
        command -v npm >/dev/null 2>&1 || {
            echo "edgepack: error: npm is needed to fetch $pkg (Debian: apt-get install npm)" >&2
            return 1
        }
        echo "== npm pack $pkg (once, into $ENGINE_CACHE)" >&2
        mkdir -p "$ENGINE_CACHE"
        local tmp
        tmp="$(mktemp -d "$ENGINE_CACHE/.pack.XXXXXX")"
        (cd "$tmp" && npm pack --silent "$pkg" >/dev/null) || { rm -rf "$tmp"; return 1; }
        mv "$tmp/$(basename "$tgz")" "$tgz"
        rm -rf "$tmp"
    fi
    local got
    got="$(sha256sum "$tgz" | cut -d' ' -f1)"
    if [ "$got" != "$want" ]; then
        echo "edgepack: error: $tgz has sha256 $got, expected $want: delete it to fetch again" >&2
        return 1
    fi
    printf '%s\n' "$tgz"
}

fetch_engine() {
    local genai_tgz ort_tgz
    genai_tgz="$(_engine_tarball "$GENAI_PKG" "$GENAI_SHA256")"
    ort_tgz="$(_engine_tarball "$ORT_PKG" "$ORT_SHA256")"

    local libs="$EDGEPACK_DEMO/app/libs" lic="$EDGEPACK_DEMO/app/src/main/assets/licenses"
    local x="$ENGINE_DIR/tgz"
    rm -rf "$ENGINE_DIR" "$lic"
    mkdir -p "$libs" "$lic" "$x/genai" "$x/ort"
    # One pass over each tarball: the AAR and the license files only.
    tar -xzf "$genai_tgz" -C "$x/genai" "$GENAI_AAR" package/LICENSE package/ThirdPartyNotices.txt
    tar -xzf "$ort_tgz" -C "$x/ort" "$ORT_AAR" package/LICENSE package/ThirdPartyNotices.txt
    mv "$x/genai/$GENAI_AAR" "$libs/onnxruntime-genai.aar"
    mv "$x/ort/$ORT_AAR" "$libs/onnxruntime.aar"
    mv "$x/genai/package" "$lic/onnxruntime-genai"
    mv "$x/ort/package" "$lic/onnxruntime"
    rm -rf "$lic"/*/Plugins "$x"
    mkdir -p "$ENGINE_DIR/aar"

    unzip -q -o "$libs/onnxruntime-genai.aar" classes.jar 'jni/*' -d "$ENGINE_DIR/aar/genai"
    unzip -q -o "$libs/onnxruntime.aar" classes.jar 'jni/*/libonnxruntime.so' 'jni/*/libonnxruntime4j_jni.so' \
        -d "$ENGINE_DIR/aar/ort"
    mv "$ENGINE_DIR/aar/genai/classes.jar" "$ENGINE_DIR/classes.jar"
    mv "$ENGINE_DIR/aar/ort/classes.jar" "$ENGINE_DIR/ort-classes-61.jar"
    # genai's classes.jar carries the license of the 1DS telemetry SDK libmat.so is built from.
    unzip -q -p "$ENGINE_DIR/classes.jar" META-INF/LICENSE-1DS-ORTGENAI > "$lic/onnxruntime-genai/LICENSE-1DS-ORTGENAI"
    local abi lib src
    for abi in $ENGINE_ABIS; do
        mkdir -p "$ENGINE_DIR/lib/$abi"
        for lib in $ENGINE_LIBS; do
            src="$ENGINE_DIR/aar/genai/jni/$abi/$lib"
            case " $ORT_LIBS " in *" $lib "*) src="$ENGINE_DIR/aar/ort/jni/$abi/$lib" ;; esac
            if [ ! -f "$src" ]; then
                echo "edgepack: error: $lib for $abi is not in the AAR" >&2
                return 1
            fi
            mv "$src" "$ENGINE_DIR/lib/$abi/$lib"
        done
    done
    rm -rf "$ENGINE_DIR/aar"
    echo "engine: onnxruntime-genai 0.15.2 ($GENAI_PKG), onnxruntime 1.29.0 ($ORT_PKG), ABIs $ENGINE_ABIS" >&2
}

if [ "${BASH_SOURCE[0]}" = "$0" ]; then
    fetch_engine
fi
