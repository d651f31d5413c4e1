"""onnxruntime's own Java API (ai.onnxruntime: OrtEnvironment, OrtSession, OnnxTensor) in the APK, for the
picture path, which runs vision.onnx and decoder_embeds.onnx with its own KV-cache loop.

onnxruntime.aar's classes.jar is class version 61, which dx refuses; build_apk.sh rewrites it with
android_demo/tools/Downgrade.java (ASM) as version 52 and dexes that. These tests hold the rewrite to
what a Java 8 VM and dx need, run the rewritten code where it can run without the native library
(TensorInfo.toString, whose lambda became a class) against the shipped classes on this JDK 17, and
make the downgrader refuse the Java 9+ constructs it does not know.
"""
import re
import subprocess
import zipfile

import pytest
from test_android import ABIS, DEMO, _dex_natives, _dynamic_symbols, _jni_escape, _run

ENGINE = DEMO / "build" / "engine"
ANDROID_JAR = "/usr/lib/android-sdk/platforms/android-23/android.jar"
ASM = "/usr/share/java/asm.jar:/usr/share/java/asm-tree.jar"
ANDROID_SYSTEM_LIBS = {"libc.so", "libm.so", "libdl.so", "liblog.so"}  # the NDK's stable system libraries


def _class_versions(jar):
    with zipfile.ZipFile(jar) as z:
        return {n: int.from_bytes(z.read(n)[6:8], "big") for n in z.namelist() if n.endswith(".class")}


@pytest.fixture(scope="module")
def tools(apk, tmp_path_factory):
    """Downgrade and LinkCheck compiled here (build_apk.sh compiles its own Downgrade into build/apk)."""
    out = tmp_path_factory.mktemp("tools")
    sources = [str(DEMO / "tools" / f) for f in ("Downgrade.java", "LambdaClass.java", "LinkCheck.java")]
    r = _run(["javac", "-Xlint:-options", "-cp", ASM, "-d", str(out), *sources], timeout=300)
    assert r.returncode == 0, r.stderr
    return out


def _java(tools, main, *args):
    return _run(["java", "-cp", f"{tools}:{ASM}", main, *map(str, args)], timeout=300)


def test_dex_holds_onnxruntimes_java_api(apk_files):
    out = _run(["dexdump", "-h", str(apk_files["classes.dex"])], timeout=120).stdout
    classes = set(re.findall(r"Class descriptor\s*:\s*'L(.+);'", out))
    assert {"ai/onnxruntime/OrtEnvironment", "ai/onnxruntime/OrtSession", "ai/onnxruntime/OrtSession$SessionOptions",
            "ai/onnxruntime/OrtSession$Result", "ai/onnxruntime/OnnxTensor", "ai/onnxruntime/OnnxValue",
            "ai/onnxruntime/TensorInfo", "ai/onnxruntime/OnnxRuntime", "ai/onnxruntime/TensorInfo$Lambda$0"} <= classes
    shipped = {n[:-6] for n in _class_versions(ENGINE / "ort-classes-61.jar")}
    assert len(shipped) == 78 and shipped <= classes  # every class of the AAR, none dropped
    # one dex: well under dx's 65,536 method references
    header = _run(["dexdump", "-f", str(apk_files["classes.dex"])], timeout=120).stdout
    assert int(re.search(r"method_ids_size\s*:\s*(\d+)", header).group(1)) < 65536


INVOKE = re.compile(r"\|[0-9a-f]{4}: (invoke-\w+)(?:/range)? \{[^}]*\}, L([^;]+);\.([^:]+):(\S+)")


def _bad_calls(dex, prefix):
    """Calls from classes under prefix that ART would run wrongly or refuse: invoke-super to a method that
    is not a superclass's, invoke-direct to a method that is neither private nor a constructor (what dx
    makes of an invokespecial to the class's own non-private method, e.g. a de-privatized one), and
    invoke-virtual/-interface to a private (direct) method."""
    out = _run(["dexdump", "-d", str(dex)], timeout=300).stdout
    supers, private, calls = {}, set(), []
    cls = name = sig = caller = None
    for line in out.splitlines():
        if m := re.match(r"\s*Class descriptor\s*:\s*'L(.+);'", line):
            cls = m.group(1)
        elif m := re.match(r"\s*Superclass\s*:\s*'L(.+);'", line):
            supers[cls] = m.group(1)
        elif m := re.match(r"\s+name\s*:\s*'(.+)'", line):
            name = m.group(1)
        elif m := re.match(r"\s+type\s*:\s*'(.+)'", line):
            sig = m.group(1)
        elif re.match(r"\s+access\s*:.*\bPRIVATE\b", line):
            private.add((cls, name, sig))
        elif m := re.search(r"\|\[[0-9a-f]+\] ([\w.$]+)\.[^.:]+:", line):
            caller = m.group(1).replace(".", "/")
        elif (m := INVOKE.search(line)) and caller.startswith(prefix) and "/genai/" not in caller:
            calls.append((caller, *m.groups()))
    bad = []
    for caller, op, owner, meth, sig in calls:
        ancestors, c = set(), caller
        while c in supers:
            c = supers[c]
            ancestors.add(c)
        if ((op == "invoke-super" and owner not in ancestors)
                or (op == "invoke-direct" and meth != "<init>" and (owner, meth, sig) not in private)
                or (op in ("invoke-virtual", "invoke-interface") and (owner, meth, sig) in private)):
            bad.append((caller, op, owner, meth))
    return calls, bad


def test_the_dex_calls_onnxruntimes_methods_as_art_needs(apk_files):
    calls, bad = _bad_calls(apk_files["classes.dex"], "ai/onnxruntime/")
    assert len(calls) > 1000 and not bad, bad


def test_the_dex_call_check_finds_a_direct_call_to_a_virtual_method(apk, tmp_path):
    """What the check is for: an invokespecial to the class's own non-private method (javac never writes
    one; here patched into a tiny class) comes out of dx as invoke-direct to a virtual method, which ART's
    verifier refuses, and the check says so. (dx itself turns invokevirtual to a private method into
    invoke-direct; Downgrade writes invokespecial for those anyway, as a Java 8 class file has it.)"""
    (tmp_path / "Own.java").write_text("public class Own { void f() {} void g() { f(); } }")
    r = _run(["javac", "--release", "8", "-d", str(tmp_path), str(tmp_path / "Own.java")], timeout=120)
    assert r.returncode == 0, r.stderr
    cls = (tmp_path / "Own.class").read_bytes()
    assert cls.count(b"\x2a\xb6") == 1  # aload_0; invokevirtual f
    (tmp_path / "Own.class").write_bytes(cls.replace(b"\x2a\xb6", b"\x2a\xb7"))  # -> invokespecial
    dex = tmp_path / "own.dex"
    r = subprocess.run(["dalvik-exchange", "--dex", "--min-sdk-version=24", f"--output={dex}", "Own.class"],
                       capture_output=True, text=True, timeout=120, cwd=tmp_path)
    assert r.returncode == 0, r.stderr
    _, bad = _bad_calls(dex, "Own")
    assert bad == [("Own", "invoke-direct", "Own", "f")]


def test_every_onnxruntime_native_method_is_in_its_jni_library(apk_files):
    natives = [n for n in _dex_natives(apk_files["classes.dex"])
               if n[0].startswith("ai/onnxruntime/") and not n[0].startswith("ai/onnxruntime/genai/")]
    assert len(natives) >= 150, natives
    # what a session loop needs: environment, options, session, run, tensors in and out
    used = {"OnnxRuntime.initialiseAPIBase", "OrtEnvironment.createHandle", "OrtSession$SessionOptions.createOptions",
            "OrtSession$SessionOptions.setIntraOpNumThreads", "OrtSession.createSession", "OrtSession.run",
            "OrtSession.getInputNames", "OnnxTensor.createTensorFromBuffer", "OnnxTensor.getBuffer",
            "OnnxTensor.close", "OrtSession.closeSession", "OrtEnvironment.setTelemetry"}
    assert used <= {f"{c.rsplit('/', 1)[1]}.{m}" for c, m, _ in natives}
    telemetry = {n for n in natives if n[0].startswith("ai/onnxruntime/telemetry/")}
    assert len(telemetry) == 8  # its HTTP client's natives live in libonnxruntime.so itself
    for abi in ABIS:
        ort4j = _dynamic_symbols(apk_files[f"lib/{abi}/libonnxruntime4j_jni.so"])
        ort = _dynamic_symbols(apk_files[f"lib/{abi}/libonnxruntime.so"])
        missing = [(c, m, s) for c, m, s in natives if not {
                   f"Java_{_jni_escape(c)}_{_jni_escape(m)}",
                   f"Java_{_jni_escape(c)}_{_jni_escape(m)}__{_jni_escape(s[1:s.index(')')])}"}
                   & (ort if (c, m, s) in telemetry else ort4j)]
        assert not missing, (abi, missing)


def test_the_jni_librarys_needed_libraries_are_all_packaged(apk_files):
    for abi in ABIS:
        lib = apk_files[f"lib/{abi}/libonnxruntime4j_jni.so"]
        dyn = _run(["readelf", "-d", "-W", str(lib)], timeout=60).stdout
        needed = set(re.findall(r"\(NEEDED\)\s+Shared library: \[(.+?)\]", dyn))
        packaged = {p.name for p in lib.parent.iterdir()}
        assert "libonnxruntime.so" in needed
        assert needed <= packaged | ANDROID_SYSTEM_LIBS, (abi, needed - packaged - ANDROID_SYSTEM_LIBS)


def test_no_class_in_the_dex_path_is_above_version_52(apk):
    """What dx reads: the app's classes, genai's jar and the downgraded onnxruntime jar."""
    app = [p for p in (DEMO / "build" / "apk" / "classes").rglob("*.class")]
    assert app and all(int.from_bytes(p.read_bytes()[6:8], "big") <= 52 for p in app)
    assert max(_class_versions(ENGINE / "classes.jar").values()) <= 52
    ort = _class_versions(ENGINE / "ort-classes.jar")
    assert len(ort) == 82 and set(ort.values()) == {52}  # 78 + the 4 lambda classes
    assert set(_class_versions(ENGINE / "ort-classes-61.jar").values()) == {61}
    names = sorted(n[:-6].replace("/", ".") for n in ort)
    javap = _run(["javap", "-v", "-p", "-cp", str(ENGINE / "ort-classes.jar"), *names], timeout=300)
    assert javap.returncode == 0, javap.stderr
    assert javap.stdout.count("major version: 52") == 82
    for java9 in ("NestHost", "NestMembers", "invokedynamic", "BootstrapMethods", "Record", "PermittedSubclasses"):
        assert java9 not in javap.stdout, java9


def test_downgraded_classes_link_and_resolve_on_this_jvm(apk, tools, tmp_path):
    """LinkCheck: this JVM verifies each class (frames included) and resolves each reference inside the
    jar with the referrer's own access. The shipped jar with only its version byte set to 52 fails it:
    the nest-mate private access and the private invokevirtual calls Java 8 and dex cannot take."""
    ok = _java(tools, "LinkCheck", ENGINE / "ort-classes.jar", ANDROID_JAR)
    assert ok.returncode == 0, ok.stdout[-3000:] + ok.stderr[-3000:]
    assert re.fullmatch(r"linked 82 classes, resolved \d{4,} references\n", ok.stdout), ok.stdout

    patched = tmp_path / "version-only.jar"
    with zipfile.ZipFile(ENGINE / "ort-classes-61.jar") as zi, zipfile.ZipFile(patched, "w") as zo:
        for n in zi.namelist():
            b = zi.read(n)
            zo.writestr(n, b[:6] + b"\x00\x34" + b[8:] if n.endswith(".class") else b)
    bad = _java(tools, "LinkCheck", patched, ANDROID_JAR)
    assert bad.returncode == 1, bad.stdout[-2000:]
    assert "OrtEnvironment$ThreadingOptions.nativeHandle" in bad.stdout and "member is private" in bad.stdout
    assert "invokevirtual/invokeinterface on a private method" in bad.stdout


TENSOR_INFO = """
import java.lang.reflect.Constructor;
public class ShowTensorInfo {
    public static void main(String[] a) throws Exception {
        Class<?> k = Class.forName("ai.onnxruntime.TensorInfo");
        Constructor<?> c = k.getDeclaredConstructor(long[].class, String[].class, int.class);
        c.setAccessible(true);
        System.out.println(c.newInstance(new long[] {1, 3, 448, 448}, new String[] {"batch", "", "h", "w"}, 1));
        System.out.println(c.newInstance(new long[] {2, 5}, new String[] {"", ""}, 7));
    }
}
"""


def test_tensor_info_to_string_runs_the_same_as_shipped(apk, tmp_path):
    """TensorInfo.toString's lambda is now a class: it prints what the shipped class prints on JDK 17."""
    (tmp_path / "ShowTensorInfo.java").write_text(TENSOR_INFO)
    r = _run(["javac", "-d", str(tmp_path), str(tmp_path / "ShowTensorInfo.java")], timeout=120)
    assert r.returncode == 0, r.stderr
    shown = {}
    for jar in ("ort-classes-61.jar", "ort-classes.jar"):
        r = _run(["java", "-Xverify:all", "-cp", f"{tmp_path}:{ENGINE / jar}", "ShowTensorInfo"], timeout=120)
        assert r.returncode == 0, r.stderr
        shown[jar] = r.stdout
    assert "dimNames=[" in shown["ort-classes.jar"] and "shape=[1, 3, 448, 448]" in shown["ort-classes.jar"]
    assert shown["ort-classes.jar"] == shown["ort-classes-61.jar"]


REFUSED = {
    "record": ("public record Point(int x, int y) {}", "is a record"),
    "string-concat": ("public class Concat { String f(int x) { return \"x=\" + x; } }",
                      "bootstrap java/lang/invoke/StringConcatFactory.makeConcatWithConstants"),
    "capturing-lambda": ("public class Capture { Runnable f(String s) { return () -> System.out.println(s); } }",
                         "capturing lambda"),
    "version-62": ("public class Later {}", "has class version 62 (Java 18)"),
}


@pytest.mark.parametrize("case", sorted(REFUSED))
def test_downgrader_refuses_what_it_cannot_rewrite(apk, tools, tmp_path, case):
    source, message = REFUSED[case]
    name = re.search(r"(?:class|record) (\w+)", source).group(1)
    (tmp_path / f"{name}.java").write_text(source)
    r = _run(["javac", "--release", "17", "-d", str(tmp_path / "c"), str(tmp_path / f"{name}.java")], timeout=120)
    assert r.returncode == 0, r.stderr
    cls = (tmp_path / "c" / f"{name}.class").read_bytes()
    if case == "version-62":
        cls = cls[:6] + b"\x00\x3e" + cls[8:]
    jar, out = tmp_path / "in.jar", tmp_path / "out.jar"
    with zipfile.ZipFile(jar, "w") as z:
        z.writestr(f"{name}.class", cls)
        with zipfile.ZipFile(ENGINE / "ort-classes-61.jar") as ort:  # one bad class among good ones
            z.writestr("ai/onnxruntime/TensorInfo.class", ort.read("ai/onnxruntime/TensorInfo.class"))
    r = _java(tools, "Downgrade", jar, out, ANDROID_JAR)
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stderr.count("\n") == 1 and r.stderr.startswith("edgepack: error: ") and message in r.stderr, r.stderr
    assert not out.exists() and not (tmp_path / "out.jar.tmp").exists()


def test_downgrader_output_is_reproducible(apk, tools, tmp_path):
    r = _java(tools, "Downgrade", ENGINE / "ort-classes-61.jar", tmp_path / "again.jar", ANDROID_JAR)
    assert r.returncode == 0, r.stderr
    assert "82 classes to version 52 (4 lambdas as classes" in r.stderr
    assert (tmp_path / "again.jar").read_bytes() == (ENGINE / "ort-classes.jar").read_bytes()
