"""Machine description recorded beside every benchmark result."""
import os
import platform


def machine_info():
    import psutil

    cpu = platform.processor()
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    except OSError:
        pass
    versions = {}
    for mod in ("edgepack", "torch", "numpy", "onnx", "onnxruntime", "onnxruntime_genai", "llama_cpp", "gguf", "transformers"):
        try:
            versions[mod] = __import__(mod).__version__
        except Exception:
            versions[mod] = None
    return {"cpu": cpu, "cores": os.cpu_count(), "ram_bytes": psutil.virtual_memory().total,
            "os": platform.platform(), "python": platform.python_version(), "versions": versions}
