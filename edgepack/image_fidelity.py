"""Image-conditioned fidelity of a MiniCPM-V artifact: teacher-forced agreement with the float reference.

Two fixed pictures (448×448: the overview alone; 896×448: an overview and two slices, cut alike by
MiniCPM-V's processor and by llama.cpp's mtmd), each in a chat prompt ("Describe this picture.") followed by a
fixed reply (the first tokens of the evaluation text). The reference runs its own image path (torch tower,
resampler, splice); the artifact runs its own (mtmd + mmproj, or vision.onnx) and its decoder. Over the
reply positions: mean KL(reference || artifact) and top-1 agreement, as the text report measures them. The
figures land in the manifest beside the text fidelity (`fidelity.image`).
"""
import numpy as np

from .errors import InternalError

SIZES = ((448, 448), (896, 448))
REPLY_TOKENS = 48
QUESTION = "Describe this picture."


def pictures():
    """The fixed pictures: smooth random colour fields (bilinear-upsampled noise, seeded)."""
    from PIL import Image

    out = []
    for k, (w, h) in enumerate(SIZES):
        a = (np.random.default_rng(100 + k).random((h // 16, w // 16, 3)) * 255).astype(np.uint8)
        out.append(Image.fromarray(a).resize((w, h), Image.Resampling.BILINEAR))
    return out


def reference_cases(ckpt, tokenizer):
    """[(picture, grid, ids, reference logits (T, V))] for the fixed image prompts."""
    import torch

    from .fidelity import eval_ids
    from .model.image import slice_image
    from .model.reference import MiniCPM
    from .model.vision import ImageEncoder
    from .runtime.vision import EncodedImage, prompt_with_images, user_content

    v = ckpt.config.vision
    enc = ImageEncoder.from_weights(v, ckpt.vision)
    model = MiniCPM.from_checkpoint(ckpt)
    reply = eval_ids(tokenizer, REPLY_TOKENS)
    reply = reply[1:] if reply and reply[0] == tokenizer.bos_id else reply
    cases = []
    for im in pictures():
        s = slice_image(im, v)
        img = EncodedImage(enc([torch.from_numpy(x) for x in s.all]).numpy(), s.grid, 0.0)
        ids, rows = prompt_with_images(tokenizer, v, [{"role": "user", "content": user_content(QUESTION)}], [img])
        ids = ids + reply
        cases.append((im, s.grid, ids, len(ids) - len(reply), model(None, x=model.embed(ids, rows))[0].numpy()))
    del model, enc
    return cases


def artifact_agreement(backend, tokenizer, v, cases):
    """The fidelity.image figures of one opened backend (with its image encoder) over reference_cases."""
    from .fidelity import agreement
    from .runtime.vision import EncodedImage, WithImages, prompt_with_images, user_content

    kl = top1 = n = 0.0
    for im, grid, ids, start, ref in cases:
        emb, got_grid = backend.image_encoder.encode(np.asarray(im, np.uint8))
        if got_grid != grid:
            raise InternalError(f"the artifact cut a {im.size[0]}x{im.size[1]} picture {got_grid}, the reference {grid}")
        _, rows = prompt_with_images(tokenizer, v, [{"role": "user", "content": user_content(QUESTION)}],
                                     [EncodedImage(emb, got_grid, 0.0)])
        backend.reset()
        got = WithImages(backend, rows).forward(ids, all_logits=True)
        backend.reset()
        a = agreement(ref[start - 1:-1], got[start - 1:-1])  # the predictions of the reply's tokens
        kl, top1, n = kl + a["mean_kl"] * a["positions"], top1 + a["top1"] * a["positions"], n + a["positions"]
    return {"prompts": len(cases), "images": [f"{w}x{h}" for w, h in SIZES], "positions": int(n),
            "mean_kl": round(kl / n, 6), "top1_agreement": round(top1 / n, 4)}


def image_fidelity(fmt, path, cfg, tokenizer, cases, threads=None, mmproj=None):
    """Open the written artifact part (ONNX folder or GGUF file + mmproj) and measure it on the cases."""
    if fmt == "onnx":
        from .runtime.onnx_backend import OnnxBackend

        backend = OnnxBackend(path, threads=threads, vision=cfg.vision, huge_pages=False)
    else:
        from .model.rope import llama_cpp_n_ctx
        from .runtime.gguf_backend import GGUFBackend

        n = max(len(c[2]) for c in cases) + 16
        backend = GGUFBackend(path, threads=threads, n_ctx=llama_cpp_n_ctx(cfg, n), mmproj=mmproj)
    with backend:
        return artifact_agreement(backend, tokenizer, cfg.vision, cases)
