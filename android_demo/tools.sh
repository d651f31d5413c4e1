# Sourced by build_apk.sh and run_jvm_tests.sh: finds the Debian-packaged Android and JUnit tools,
# and installs them with apt when any is missing (once: installed packages are the cache).
#
#   bullseye: libandroid-23-java (android.jar, API 23), dalvik-exchange (dx)
#   bookworm: aapt (aapt2 and aapt), zipalign, apksigner, dexdump, binutils (readelf), junit5,
#             libandroid-json-java, libasm-java (ASM, for tools/Downgrade.java), a JDK, zip/unzip,
#             and npm when there is none (fetch_engine.sh)

ANDROID_JAR=/usr/lib/android-sdk/platforms/android-23/android.jar
JUNIT_CONSOLE=/usr/share/java/junit-platform-console-standalone.jar
JUNIT_API=/usr/share/java/junit-jupiter-api.jar
ORG_JSON=/usr/share/java/com.android.json.jar
ASM_JARS=/usr/share/java/asm.jar:/usr/share/java/asm-tree.jar

EDGEPACK_APT_PACKAGES="default-jdk-headless zip unzip aapt zipalign apksigner dexdump binutils junit5 libandroid-json-java libasm-java libandroid-23-java dalvik-exchange"

tools_present() {
    local cmd
    for cmd in javac java keytool zip unzip aapt aapt2 zipalign apksigner dalvik-exchange dexdump readelf npm; do
        command -v "$cmd" >/dev/null 2>&1 || return 1
    done
    local f
    for f in "$ANDROID_JAR" "$JUNIT_CONSOLE" "$JUNIT_API" "$ORG_JSON" ${ASM_JARS//:/ }; do
        [ -f "$f" ] || return 1
    done
}

ensure_tools() {
    if tools_present; then
        return 0
    fi
    echo "edgepack: installing the Android build tools with apt (first run only)" >&2
    if [ "$(id -u)" != 0 ]; then
        echo "edgepack: error: tools are missing and apt needs root: $EDGEPACK_APT_PACKAGES" >&2
        return 1
    fi
    # dalvik-exchange and libandroid-23-java are gone from bookworm: take them from bullseye,
    # pinned low so bullseye never replaces a bookworm package.
    if [ ! -f /etc/apt/sources.list.d/edgepack-bullseye.sources ]; then
        cat > /etc/apt/sources.list.d/edgepack-bullseye.sources <<'SRC'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bullseye
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
SRC
    fi
    if [ ! -f /etc/apt/preferences.d/edgepack-bullseye ]; then
        cat > /etc/apt/preferences.d/edgepack-bullseye <<'PIN'
Package: *
Pin: release n=bullseye
Pin-Priority: 100
PIN
    fi
    # A failing third-party source should not stop us: the install below says if Debian's failed.
    apt-get update -q || echo "edgepack: warning: apt-get update reported errors" >&2
    # npm only when missing: one installed another way (e.g. with its own nodejs) is left alone.
    local extra=""
    command -v npm >/dev/null 2>&1 || extra="npm"
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        $EDGEPACK_APT_PACKAGES $extra || return 1
    tools_present || { echo "edgepack: error: apt finished but tools are still missing" >&2; return 1; }
}
