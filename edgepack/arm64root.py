"""An arm64 Debian root that runs edgepack's ONNX backend under qemu user-mode emulation, built once and cached.

    root = ensure_root()                  # ~/.cache/edgepack/arm64-root (or $EDGEPACK_CACHE/arm64-root)
    cmd = python_command(root, "phone")   # [qemu-aarch64-static, -cpu, ..., -L, root, root/usr/bin/python3.11]

How it is built, and why this way (all on the host, nothing runs emulated while building):
1. `debootstrap --foreign --variant=minbase --include=python3.11` downloads bookworm's arm64 packages and
   unpacks the base set. The second stage (dpkg configuring every package) is skipped: it would run
   maintainer scripts under emulation and needs binfmt_misc, which a sandbox or CI runner may not allow.
2. The python3.11 packages it downloaded are unpacked with `dpkg-deb -x`: an interpreter with its
   standard library and shared libraries is all that is needed.
3. The aarch64 manylinux wheels are installed by the host's pip (`--target`, `--platform`,
   `--only-binary`): onnxruntime pinned to the Android app's version (android_demo: 1.29.0) and numpy.
4. The standard library is compiled to bytecode by the host's Python 3.11 (Debian's postinst would do it
   under emulation): an emulated import then reads .pyc instead of compiling (7.3 s -> 4.2 s of CPU for
   numpy + onnxruntime), and the emulated Python runs with PYTHONDONTWRITEBYTECODE, so it never writes.
5. `proc/cpuinfo` inside the root describes an arm64 CPU. qemu-user reads files under `-L ROOT` first,
   and qemu 7.2 does not emulate /proc/cpuinfo for aarch64, so onnxruntime's cpuinfo library would
   otherwise parse the host's x86 /proc/cpuinfo and crash (SIGSEGV at import). CPU features themselves
   come from the auxiliary vector (AT_HWCAP/AT_HWCAP2), which qemu sets from the emulated core.

Binaries run as `qemu-aarch64-static -cpu MODEL -L ROOT ROOT/usr/bin/python3.11`, no chroot and no
binfmt_misc. The root is built in a temporary directory under a lock and renamed into place with a stamp
(PINS) only when complete; a changed PINS rebuilds it.
"""
import fcntl
import os
import shutil
import struct
import subprocess
import sys
import tempfile
from pathlib import Path

from .errors import BadInput, InternalError

SUITE = "bookworm"  # Debian 12: python3.11, glibc 2.36 (the wheels need manylinux_2_28)
PYTHON = "usr/bin/python3.11"
WHEELS = ("onnxruntime==1.29.0", "numpy==2.4.6")  # onnxruntime: the APK's version (android_demo)
PLATFORMS = ("manylinux_2_28_aarch64", "manylinux_2_27_aarch64", "manylinux2014_aarch64")
PINS = f"{SUITE} minbase python3.11 {' '.join(WHEELS)} v2"
SITE = "opt/edgepack/site"  # inside the root: where the wheels go (PYTHONPATH)

# Emulated cores. qemu 7.2's default for qemu-aarch64 is "max" (same AT_HWCAP/AT_HWCAP2, measured).
CPUS = {
    "phone": ("max,sme=off,sve-default-vector-length=16",
              "an Armv9 phone big core (Cortex-X2..X4, A710..A720 class): dotprod, i8mm, fp16, bf16, SVE2 at 128 bits, no SME"),
    "max": ("max", "qemu's default -cpu max: everything qemu 7.2 emulates, SME and 512-bit SVE included"),
    "a76": ("cortex-a76", "Cortex-A76 (2019-2021 phones): dotprod and fp16, no i8mm, no SVE"),
    "a53": ("cortex-a53", "Cortex-A53 (little cores): plain NEON, no dotprod, no fp16 arithmetic"),
}
# Linux arm64 hwcap bits (arch/arm64/include/uapi/asm/hwcap.h): the features the kernels are chosen by.
HWCAP = {"asimddp": 1 << 20, "fphp": 1 << 9, "asimdhp": 1 << 10, "sve": 1 << 22, "asimdfhm": 1 << 23}
HWCAP2 = {"sve2": 1 << 1, "i8mm": 1 << 13, "bf16": 1 << 14, "sme": 1 << 23, "sme2": 1 << 37}


def cache_dir():
    base = os.environ.get("EDGEPACK_CACHE")
    return Path(base) if base else Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "edgepack"


def hwcap_features(auxv: bytes):
    """Feature names from the bytes of /proc/self/auxv (AT_HWCAP = 16, AT_HWCAP2 = 26)."""
    vec = dict(struct.iter_unpack("<QQ", auxv[: len(auxv) // 16 * 16]))
    h1, h2 = vec.get(16, 0), vec.get(26, 0)
    return [n for n, b in HWCAP.items() if h1 & b] + [n for n, b in HWCAP2.items() if h2 & b]


def debian_mirror():
    """The Debian mirror apt uses here (deb822 or one-line sources), else deb.debian.org."""
    for f in [Path("/etc/apt/sources.list"), *sorted(Path("/etc/apt/sources.list.d").glob("*"))]:
        try:
            text = f.read_text(encoding="utf-8", errors="replace")
        except OSError:
            continue
        for line in text.splitlines():
            words = line.split()
            if f.suffix == ".sources" and words[:1] == ["URIs:"]:
                urls = words[1:]
            elif words[:1] == ["deb"]:
                urls = [w for w in words[1:] if "://" in w][:1]
            else:
                continue
            for url in urls:
                if url.rstrip("/").endswith("/debian"):
                    return url
    return "http://deb.debian.org/debian"


def tool(name, package):
    """The path of a host tool; installed with apt-get when missing and running as root."""
    path = shutil.which(name) or (f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None)
    if path:
        return path
    if os.geteuid() == 0 and shutil.which("apt-get"):
        r = subprocess.run(["apt-get", "install", "-y", "-q", package], capture_output=True, text=True,
                           env=dict(os.environ, DEBIAN_FRONTEND="noninteractive"), timeout=900)
        path = shutil.which(name) or (f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None)
        if r.returncode == 0 and path:
            return path
    raise BadInput(f"{name} not found: install it (Debian: apt-get install {package})")


def root_dir():
    return cache_dir() / "arm64-root"


def ensure_root(log=None):
    """The cached root's path, built first if missing or built with other PINS (see the module doc)."""
    root, stamp = root_dir(), root_dir() / ".edgepack-ready"
    if stamp.is_file() and stamp.read_text() == PINS:
        return root
    root.parent.mkdir(parents=True, exist_ok=True)
    with open(root.parent / "arm64-root.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # another process may be building it right now
        if stamp.is_file() and stamp.read_text() == PINS:
            return root
        debootstrap, _ = tool("debootstrap", "debootstrap"), tool("qemu-aarch64-static", "qemu-user-static")
        if os.geteuid() != 0:
            raise BadInput("building the arm64 root runs debootstrap, which needs root (run once as root, "
                           f"or copy a built {root} here)")
        tmp = Path(tempfile.mkdtemp(prefix="arm64-root.", dir=root.parent))
        try:
            _build(tmp, debootstrap, log or (lambda msg: None))
            (tmp / ".edgepack-ready").write_text(PINS)
            shutil.rmtree(root, ignore_errors=True)
            os.rename(tmp, root)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return root


def _run(cmd, what, timeout):
    r = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout)
    if r.returncode != 0:
        tail = (r.stderr.strip() or r.stdout.strip()).splitlines()[-1:] or ["(no output)"]
        raise InternalError(f"{what} failed (exit {r.returncode}): {tail[0][:300]}")
    return r


def _build(tmp, debootstrap, log):
    mirror = debian_mirror()
    log(f"debootstrap --foreign arm64 {SUITE} from {mirror}")
    _run([debootstrap, "--foreign", "--arch=arm64", "--variant=minbase", "--include=python3.11",
          SUITE, str(tmp), mirror], "debootstrap", 1800)
    log("unpacking python3.11 and its libraries")
    for deb in sorted((tmp / "var/cache/apt/archives").glob("*.deb")):
        _run(["dpkg-deb", "-x", str(deb), str(tmp)], f"dpkg-deb -x {deb.name}", 300)
        deb.unlink()  # 60 MB of archives nobody reads again
    if not (tmp / PYTHON).is_file():
        raise InternalError(f"debootstrap gave no {PYTHON} in the arm64 root")
    if sys.version_info[:2] == (3, 11):  # bytecode is the same on every CPU: compile the stdlib once, here
        subprocess.run([sys.executable, "-m", "compileall", "-q", "-j", "0", "-d", "/usr/lib/python3.11",
                        str(tmp / "usr/lib/python3.11")], capture_output=True, timeout=900)
    log(f"pip: {' '.join(WHEELS)} (aarch64 wheels)")
    plat = [a for p in PLATFORMS for a in ("--platform", p)]
    _run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps",
          "--only-binary=:all:", "--implementation", "cp", "--python-version", "3.11", *plat,
          "--target", str(tmp / SITE), *WHEELS], "pip install of the aarch64 wheels", 1800)
    (tmp / "proc").mkdir(exist_ok=True)
    (tmp / "proc" / "cpuinfo").write_text(_CPUINFO)


# What the arm64 kernel prints for a core qemu emulates (implementer 0, architecture 0xf... is qemu's own
# "max" MIDR); two processors, as `nproc` here. onnxruntime reads features from AT_HWCAP, not from here.
_CPUINFO = "".join(f"processor\t: {i}\nBogoMIPS\t: 2000.00\nFeatures\t: fp asimd cpuid\n"
                   "CPU implementer\t: 0x00\nCPU architecture: 8\nCPU variant\t: 0x0\nCPU part\t: 0x051\n"
                   "CPU revision\t: 0\n\n" for i in range(2))


def python_command(root, cpu="phone"):
    """argv prefix that runs the root's python3.11 on the named emulated core (CPUS)."""
    if cpu not in CPUS:
        raise BadInput(f"unknown --cpu {cpu!r}: one of {', '.join(CPUS)}")
    qemu = tool("qemu-aarch64-static", "qemu-user-static")
    return [qemu, "-cpu", CPUS[cpu][0], "-L", str(root), str(Path(root) / PYTHON)]


def site_path(root):
    return str(Path(root) / SITE)


def ensure_host_site():
    """onnxruntime at the root's version for the host's own Python (pip --target, cached), so the x86 side of
    a comparison runs the same onnxruntime release as the arm64 side and only the CPU kernels differ."""
    ort = next(w for w in WHEELS if w.startswith("onnxruntime=="))
    site = cache_dir() / f"host-{ort.replace('==', '-')}"
    stamp = site / ".edgepack-ready"
    if stamp.is_file() and stamp.read_text() == ort:
        return site
    site.parent.mkdir(parents=True, exist_ok=True)
    with open(site.parent / f"{site.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.is_file() and stamp.read_text() == ort:
            return site
        tmp = Path(tempfile.mkdtemp(prefix=site.name + ".", dir=site.parent))
        try:
            _run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps",
                  "--only-binary=:all:", "--target", str(tmp), ort], f"pip install {ort} for the host", 1800)
            (tmp / ".edgepack-ready").write_text(ort)
            shutil.rmtree(site, ignore_errors=True)
            os.rename(tmp, site)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return site


# llama.cpp's arm64 build for the GGUF check: the llama-cpp-python sdist the host runs, its vendored llama.cpp
# cross-compiled with Debian's gcc-aarch64-linux-gnu for a phone-class core (no -march=native: armv8.2-a with
# dotprod and fp16, what GGML_CPU_ARM_ARCH gives Android builds), its Python package beside the libraries.
LLAMA_ARCH = "armv8.2-a+dotprod+fp16"
# llama-cpp-python's dependencies, and gguf (+ pyyaml) for edgepack's GGUF header reader, at the host's version
LLAMA_DEPS = ("typing_extensions", "diskcache", "jinja2", "markupsafe", "pyyaml")
LLAMA_CMAKE = ("-DCMAKE_BUILD_TYPE=Release", "-DCMAKE_SYSTEM_NAME=Linux", "-DCMAKE_SYSTEM_PROCESSOR=aarch64",
               "-DCMAKE_C_COMPILER=aarch64-linux-gnu-gcc", "-DCMAKE_CXX_COMPILER=aarch64-linux-gnu-g++",
               "-DBUILD_SHARED_LIBS=ON", "-DGGML_NATIVE=OFF", f"-DGGML_CPU_ARM_ARCH={LLAMA_ARCH}", "-DGGML_OPENMP=OFF",
               "-DLLAMA_BUILD_TESTS=OFF", "-DLLAMA_BUILD_EXAMPLES=OFF", "-DLLAMA_BUILD_TOOLS=OFF",
               "-DLLAMA_BUILD_SERVER=OFF", "-DLLAMA_CURL=OFF", "-DLLAMA_BUILD_COMMON=OFF",
               "-DCMAKE_BUILD_WITH_INSTALL_RPATH=ON", "-DCMAKE_INSTALL_RPATH=$ORIGIN")  # libllama finds libggml beside it


def ensure_llama(log=None):
    """A site folder with llama_cpp (the host's llama-cpp-python version) and its arm64 libllama/libggml in
    llama_cpp/lib (what LLAMA_CPP_LIB_PATH names), cross-built once from the sdist and cached."""
    import importlib.metadata as md

    log = log or (lambda msg: None)
    version = md.version("llama_cpp_python")
    pin = f"llama_cpp_python=={version} {LLAMA_ARCH} gguf=={md.version('gguf')} v2"
    site = cache_dir() / f"llama-arm64-{version}"
    stamp = site / ".edgepack-ready"
    if stamp.is_file() and stamp.read_text() == pin:
        return site
    for name, package in (("aarch64-linux-gnu-g++", "g++-aarch64-linux-gnu"), ("aarch64-linux-gnu-gcc", "gcc-aarch64-linux-gnu"),
                          ("cmake", "cmake"), ("ninja", "ninja-build")):
        tool(name, package)
    site.parent.mkdir(parents=True, exist_ok=True)
    with open(site.parent / f"{site.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if stamp.is_file() and stamp.read_text() == pin:
            return site
        tmp = Path(tempfile.mkdtemp(prefix=site.name + ".", dir=site.parent))
        try:
            log(f"pip download llama-cpp-python=={version} (sdist)")
            _run([sys.executable, "-m", "pip", "download", "-q", "--disable-pip-version-check", "--no-binary", ":all:",
                  "--no-deps", "-d", str(tmp / "sdist"), f"llama-cpp-python=={version}"], "pip download of the sdist", 1800)
            sdist = next((tmp / "sdist").glob("*.tar.gz"))
            _run(["tar", "xzf", str(sdist), "-C", str(tmp / "sdist")], "tar of the sdist", 600)
            src = next(p for p in (tmp / "sdist").iterdir() if p.is_dir())
            log(f"cross-compiling llama.cpp for aarch64 ({LLAMA_ARCH}): minutes")
            _run(["cmake", "-S", str(src / "vendor" / "llama.cpp"), "-B", str(tmp / "build"), "-G", "Ninja", *LLAMA_CMAKE],
                 "cmake for aarch64", 900)
            _run(["ninja", "-C", str(tmp / "build"), "llama"], "the aarch64 build of llama.cpp", 7200)
            llama_site(src, tmp / "build", tmp / "site")
            (tmp / "site" / ".edgepack-ready").write_text(pin)
            shutil.rmtree(site, ignore_errors=True)
            os.rename(tmp / "site", site)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return site


def llama_site(src, build, site):
    """The site folder from an unpacked sdist `src` and its aarch64 `build`: llama_cpp with the libraries
    (and their soname links) in llama_cpp/lib, and llama-cpp-python's dependencies as aarch64 wheels."""
    import importlib.metadata as md

    pkg = Path(site) / "llama_cpp"
    shutil.copytree(Path(src) / "llama_cpp", pkg)
    (pkg / "lib").mkdir(exist_ok=True)
    for so in sorted((Path(build) / "bin").glob("lib*.so*")):
        if so.is_symlink():
            os.symlink(os.readlink(so), pkg / "lib" / so.name)
        else:
            shutil.copy2(so, pkg / "lib" / so.name)
    plat = [a for p in PLATFORMS for a in ("--platform", p)]
    _run([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "--no-deps",
          "--only-binary=:all:", "--implementation", "cp", "--python-version", "3.11", *plat,
          "--target", str(site), *LLAMA_DEPS, f"gguf=={md.version('gguf')}"], "pip install of llama-cpp-python's dependencies", 1800)
