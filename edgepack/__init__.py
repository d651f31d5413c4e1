"""edgepack: package MiniCPM for phones and edge devices (int4 ONNX + GGUF, a reference runtime, a bench)."""
__version__ = "0.1.0"
