"""The file names of an artifact's onnx/ folder, apart from the writers so that the runtime can name them
without importing the onnx package (a phone, and the runtime, have onnxruntime only)."""
MODEL_FILE, DATA_FILE = "model.onnx", "model.onnx.data"
EMBEDDING_FILE, DECODER_EMBEDS_FILE, VISION_FILE = "embedding.onnx", "decoder_embeds.onnx", "vision.onnx"
