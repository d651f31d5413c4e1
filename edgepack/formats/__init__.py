"""Stage 3, the formats: the canonical model (and the Quantized one from edgepack.quant) in, files out.

Encode only: onnx_writer.py writes the ONNX folder onnxruntime-genai loads (its pieces in
onnx_graph.py, genai.py, onnx_mla.py and onnx_moe.py), gguf_writer.py the GGUF file llama.cpp loads (its vocabulary in
gguf_vocab.py, experts in gguf_moe.py, K-quant and Q5_0 block packing in gguf_kquant.py); neither calls back into
quantization. manifest.py writes and checks edgepack.json (sizes, sha256, fidelity) and
gguf_reader.py reads a GGUF header strictly: both are what the runtime trusts an artifact through.
"""
