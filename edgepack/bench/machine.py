"""The machine a figure was measured on: CPU vendor and flags, cores, load average (in every report)."""
import os
import platform
import time

# the CPU features that change which kernels torch, onnxruntime and llama.cpp run (and so their rounding)
CPU_FLAGS = ("avx2", "fma", "f16c", "avx512f", "avx512_vnni", "avx512_bf16", "avx_vnni", "amx_tile", "amx_int8", "amx_bf16")


def cpu_info():
    """{"cpu": model name, "vendor", "flags": the CPU_FLAGS present} from /proc/cpuinfo (Linux)."""
    info = {"cpu": platform.processor() or "?", "vendor": "?", "flags": []}
    try:
        with open("/proc/cpuinfo") as f:
            fields = {}
            for ln in f:
                if not ln.strip():
                    break  # the first processor describes them all
                k, _, v = ln.partition(":")
                fields[k.strip()] = v.strip()
    except OSError:
        return info
    have = set(fields.get("flags", "").split())
    return {"cpu": fields.get("model name", info["cpu"]), "vendor": fields.get("vendor_id", "?"),
            "flags": [f for f in CPU_FLAGS if f in have]}


def machine_info():
    import importlib.metadata as md

    import psutil

    ci = cpu_info()
    cpu = ci["cpu"]
    libs = {}
    for name in ("edgepack", "numpy", "onnxruntime", "onnxruntime-genai", "llama_cpp_python", "torch", "gguf",
                 "onnx", "tokenizers", "sentencepiece"):
        try:
            libs[name] = md.version(name)
        except md.PackageNotFoundError:
            libs[name] = None
    return {"cpu": cpu, "cpu_vendor": ci["vendor"], "cpu_flags": ci["flags"], "cores_logical": os.cpu_count(), "cores_physical": psutil.cpu_count(logical=False),
            "ram_bytes": psutil.virtual_memory().total, "os": platform.platform(), "python": platform.python_version(),
            "libraries": libs, "load_average_at_start": list(os.getloadavg()),
            "date": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
