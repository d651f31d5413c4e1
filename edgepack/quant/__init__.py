"""Stage 2, quantization: a Checkpoint (edgepack.model) in, a Quantized model out (int4 codes and scales).

Open methods.py first: the method registry and quantize_model(), which the export calls once per
format. blocks.py is the block grid every method ends on (QTensor, RTN); calibrate.py streams the
calibration text through the float model layer by layer; awq.py and gptq.py are the two calibrated
steps; kquant.py the K-quant grids (Q4_K/Q5_K/Q6_K) and llama.cpp's per-tensor type mix that the
GGUF K types are calibrated onto; moe.py calibrates a mixture-of-experts layer's experts from the tokens routed to each. The writers in edgepack.formats only encode what leaves this stage; nothing here knows a format.
"""
