"""The picture path's app classes in the APK (OrtEngine, GenAiTokenizer, PictureRunner, PictureDecoder, ...):
in the dex beside the downgraded onnxruntime and genai classes, and every engine method they call defined
there (on the class javac named or one of its supertypes in the dex). onnxruntime's Java API has no desktop
build here, so this and the compile against the same jars are what is checked of OrtEngine without a phone.
"""
import functools
import re
import subprocess

ANDROID_JAR = "/usr/lib/android-sdk/platforms/android-23/android.jar"  # tools.sh's, what the app compiles against

APP = ("OrtEngine", "GenAiTokenizer", "PictureRunner", "PictureDecoder", "PictureChooser", "Engines", "BenchRun")
INVOKE = re.compile(r"\|[0-9a-f]{4}: invoke-\w+(?:/range)? \{[^}]*\}, L([^;]+);\.([^:]+):(\S+)")


def _dex(dex):
    """(defined {class: {(name, sig)}}, supertypes {class: [super, *interfaces]}, calls [(caller, owner, name, sig)])."""
    out = subprocess.run(["dexdump", "-d", str(dex)], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    defined, supers, calls = {}, {}, []
    cls = name = caller = None
    in_interfaces = False
    for line in out.stdout.splitlines():
        if m := re.match(r"\s*Class descriptor\s*:\s*'L(.+);'", line):
            cls, in_interfaces = m.group(1), False
            defined.setdefault(cls, set())
            supers.setdefault(cls, [])
        elif m := re.match(r"\s*Superclass\s*:\s*'L(.+);'", line):
            supers[cls].append(m.group(1))
        elif re.match(r"\s*Interfaces\s*-", line):
            in_interfaces = True
        elif in_interfaces and (m := re.match(r"\s*#\d+\s*:\s*'L(.+);'", line)):
            supers[cls].append(m.group(1))
        elif m := re.match(r"\s+name\s*:\s*'(.+)'", line):
            name, in_interfaces = m.group(1), False
        elif m := re.match(r"\s+type\s*:\s*'(.+)'", line):
            defined[cls].add((name, m.group(1)))
        elif m := re.search(r"\|\[[0-9a-f]+\] ([\w.$]+)\.[^.:]+:", line):
            caller = m.group(1).replace(".", "/")
        elif (m := INVOKE.search(line)) and caller:
            calls.append((caller, *m.groups()))
    return defined, supers, calls


@functools.lru_cache(maxsize=None)
def _framework(cls):
    """((name, sig) declared by a framework class of android.jar, its supertypes): javap -s."""
    out = subprocess.run(["javap", "-s", "-cp", ANDROID_JAR, cls.replace("/", ".")], capture_output=True, text=True,
                         timeout=60).stdout
    head = re.search(r"class \S+ (?:extends ([\w.$]+))?\s*(?:implements ([\w.$, ]+))?\s*\{", out)
    ups = [] if not head else [c.strip().replace(".", "/") for g in head.groups() if g for c in g.split(",")]
    methods, name = set(), None
    for line in out.splitlines():
        if m := re.search(r"\s([\w$<>]+)\(.*\);$", line):
            name = m.group(1)
        elif name and (m := re.match(r"\s*descriptor: (\S+)", line)):
            methods.add((name, m.group(1)))
            name = None
    return frozenset(methods), tuple(ups)


def _unresolved(defined, supers, calls, callers, owners=("ai/onnxruntime/",)):
    """Calls from callers (class name prefixes) to owners' classes whose method no class of its supertype
    chain defines (in the dex, or for the framework classes it reaches, in API 23's android.jar)."""
    def finds(c, name, sig, seen):
        if c in seen:
            return False
        seen.add(c)
        if c in defined:
            return (name, sig) in defined[c] or any(finds(s, name, sig, seen) for s in supers.get(c, ()))
        if c.startswith(owners):
            return False  # an engine class missing from the dex
        methods, ups = _framework(c)
        return (name, sig) in methods or any(finds(s, name, sig, seen) for s in ups)

    return sorted({(caller, owner, name, sig) for caller, owner, name, sig in calls
                   if caller.startswith(callers) and owner.startswith(owners) and not finds(owner, name, sig, set())})


def test_the_picture_path_calls_only_engine_methods_the_dex_defines(apk_files):
    defined, supers, calls = _dex(apk_files["classes.dex"])
    for name in APP:
        assert f"org/edgepack/demo/{name}" in defined, name
    callers = tuple(f"org/edgepack/demo/{n}" for n in APP)
    used = [c for c in calls if c[0].startswith(callers) and c[1].startswith("ai/onnxruntime/")]
    owners = {c[1] for c in used}
    assert {"ai/onnxruntime/OrtSession", "ai/onnxruntime/OnnxTensor", "ai/onnxruntime/OrtEnvironment",
            "ai/onnxruntime/genai/Tokenizer", "ai/onnxruntime/genai/Config"} <= owners, owners
    assert _unresolved(defined, supers, calls, callers) == []
    # the check can fail: without OnnxTensor's own methods in the dex, its calls are unresolved
    broken = dict(defined, **{"ai/onnxruntime/OnnxTensor": set()})
    missing = _unresolved(broken, supers, calls, callers)
    assert any(owner == "ai/onnxruntime/OnnxTensor" and name == "getFloatBuffer" for _, owner, name, _ in missing)
