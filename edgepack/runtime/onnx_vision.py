"""Image embeddings from vision.onnx, for the ONNX backend (no torch: Pillow and numpy prepare the inputs).

MiniCPM-V's slicing (edgepack.model.image: the processor's grid, Pillow bicubic, mean/std 0.5), then one
session run per slice with the inputs the graph expects: pixel_values, the position inputs (4.0's NaViT bucket
ids; 2.0's antialiased-bicubic resize matrices of the 27×27 table) and the resampler's sin-cos key table.
"""
import os

import numpy as np

from ..formats.onnx_files import DECODER_EMBEDS_FILE, EMBEDDING_FILE, VISION_FILE  # noqa: F401  (re-exported)
from ..model.image import aa_bicubic_matrix, bucketed_ids, sincos_2d, slice_image


def session(path, threads):
    import onnxruntime as ort

    from ..errors import BadInput

    so = ort.SessionOptions()
    so.intra_op_num_threads = int(threads or os.cpu_count() or 1)
    so.inter_op_num_threads = 1
    try:
        return ort.InferenceSession(str(path), so, providers=["CPUExecutionProvider"])
    except Exception as e:  # onnxruntime raises its own exception types
        raise BadInput(f"{path}: onnxruntime cannot load it ({str(e).splitlines()[0][:200]})") from None


class OnnxImageEncoder:
    def __init__(self, folder, v, threads):
        self.v = v
        self.sess = session(os.path.join(folder, VISION_FILE), threads)

    def inputs(self, pixels):
        """The graph's feeds for one normalized slice (3, h·p, w·p)."""
        v = self.v
        h, w = pixels.shape[1] // v.patch_size, pixels.shape[2] // v.patch_size
        feed = {"pixel_values": pixels[None], "key_pos": sincos_2d(v.embed_dim, h, w)}
        if v.position == "bucketed":
            feed["position_ids"] = bucketed_ids(h, w, v.position_grid)
        else:
            feed["pos_rows"] = aa_bicubic_matrix(h, v.position_grid)
            feed["pos_cols"] = aa_bicubic_matrix(w, v.position_grid)
        return feed

    def encode_slices(self, slices):
        return np.concatenate([self.sess.run(None, self.inputs(s))[0] for s in slices])

    def encode(self, rgb):
        """(H, W, 3) uint8 -> ((n_slices, query_num, D) float32 embeddings, overview first; (cols, rows) or None)."""
        from PIL import Image

        s = slice_image(Image.fromarray(np.asarray(rgb, np.uint8), "RGB"), self.v)
        return self.encode_slices(s.all), s.grid

    def close(self):
        self.sess = None
