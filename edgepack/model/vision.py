"""MiniCPM-V's image path in one file (torch, readable: the ground truth every export is measured against).

    slices (3, h·14, w·14) ─ vision tower ─ (h·w, Hv) ─ resampler ─ (query_num, D) image embeddings

- Vision tower: SigLIP. A 14×14 patch Conv2d, a learned position table, pre-norm blocks (LayerNorm,
  multi-head attention, LayerNorm, gelu-tanh MLP), a final LayerNorm. Slices of different sizes run as one
  batch, padded, with a key mask (Idefics2's patch_attention_mask). The position of patch (i, j) of an h×w
  slice is what the version says:
    "bucketed" (4.0, NaViT): row bucketize(i/h) and column bucketize(j/w) over the table's grid (70×70),
    "interpolated" (2.0, timm ViT): the 27×27 table resized to h×w (bicubic, antialiased, as timm does).
- Resampler: one cross-attention from query_num learned queries (ln_q) to the patches (kv_proj, ln_kv),
  the keys carrying a 2D sin-cos table of the slice's h×w grid (first half of each row: the column,
  second half: the row); 2.0 also adds an 8×8 sin-cos table to the queries. Then ln_post and x @ proj.
- Splice: the LLM's token embeddings (× scale_emb under μP) with the image embeddings written, unscaled,
  over the placeholder positions.

Module and tensor names follow Idefics2VisionTransformer (= MiniCPM-V 4.0's `vpm.*`) and OpenBMB's
Resampler (`resampler.*`); the family adapter maps 2.0's timm names onto them.
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from .image import sincos_2d


def bucketed_position_ids(h, w, grid):
    """NaViT position ids of an h×w patch grid over a grid×grid table, as Idefics2VisionEmbeddings computes
    them (float32 fractional coordinates, clamped, bucketized against arange(1/grid, 1, 1/grid))."""
    boundaries = torch.arange(1 / grid, 1.0, 1 / grid)
    fh = torch.clamp(torch.arange(h, dtype=torch.float32) * (1.0 / torch.tensor(h)), max=1.0 - 1e-6)
    fw = torch.clamp(torch.arange(w, dtype=torch.float32) * (1.0 / torch.tensor(w)), max=1.0 - 1e-6)
    bh = torch.bucketize(fh, boundaries, right=True)
    bw = torch.bucketize(fw, boundaries, right=True)
    return (bh[:, None] * grid + bw[None, :]).reshape(-1)


class Attention(nn.Module):
    def __init__(self, d, heads):
        super().__init__()
        self.heads = heads
        self.q_proj, self.k_proj, self.v_proj, self.out_proj = (nn.Linear(d, d) for _ in range(4))

    def forward(self, x, mask):
        B, T, D = x.shape
        split = lambda t: t.view(B, T, self.heads, D // self.heads).transpose(1, 2)  # noqa: E731  (B, h, T, hd)
        y = F.scaled_dot_product_attention(split(self.q_proj(x)), split(self.k_proj(x)), split(self.v_proj(x)),
                                           attn_mask=mask[:, None, None, :])  # padded keys masked out
        return self.out_proj(y.transpose(1, 2).reshape(B, T, D))


class MLP(nn.Module):
    def __init__(self, d, f):
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(d, f), nn.Linear(f, d)

    def forward(self, x):
        return self.fc2(F.gelu(self.fc1(x), approximate="tanh"))


class EncoderLayer(nn.Module):
    def __init__(self, v):
        super().__init__()
        self.layer_norm1 = nn.LayerNorm(v.hidden_size, eps=v.layer_norm_eps)
        self.self_attn = Attention(v.hidden_size, v.num_attention_heads)
        self.layer_norm2 = nn.LayerNorm(v.hidden_size, eps=v.layer_norm_eps)
        self.mlp = MLP(v.hidden_size, v.intermediate_size)

    def forward(self, x, mask):
        x = x + self.self_attn(self.layer_norm1(x), mask)
        return x + self.mlp(self.layer_norm2(x))


class VisionTower(nn.Module):
    def __init__(self, v):
        super().__init__()
        self.v = v
        self.embeddings = nn.Module()
        self.embeddings.patch_embedding = nn.Conv2d(3, v.hidden_size, v.patch_size, v.patch_size)
        self.embeddings.position_embedding = nn.Embedding(v.position_grid ** 2, v.hidden_size)
        self.encoder = nn.Module()
        self.encoder.layers = nn.ModuleList(EncoderLayer(v) for _ in range(v.num_hidden_layers))
        self.post_layernorm = nn.LayerNorm(v.hidden_size, eps=v.layer_norm_eps)

    def positions(self, h, w):
        """(h·w, Hv) position embeddings of an h×w patch grid."""
        v, table = self.v, self.embeddings.position_embedding.weight
        if v.position == "bucketed":
            return table[bucketed_position_ids(h, w, v.position_grid)]
        g = v.position_grid  # "interpolated": timm's resample_abs_pos_embed (bicubic, antialias)
        t = table.reshape(1, g, g, -1).permute(0, 3, 1, 2)
        t = F.interpolate(t, size=(h, w), mode="bicubic", antialias=True, align_corners=False)
        return t.permute(0, 2, 3, 1).reshape(h * w, -1)

    def forward(self, slices):
        """slices: list of (3, h·p, w·p) float tensors -> (B, L, Hv) padded states, (B, L) bool mask, sizes."""
        p = self.v.patch_size
        sizes = [(s.shape[1] // p, s.shape[2] // p) for s in slices]
        L = max(h * w for h, w in sizes)
        x = torch.zeros(len(slices), L, self.v.hidden_size)
        mask = torch.zeros(len(slices), L, dtype=torch.bool)
        for b, (s, (h, w)) in enumerate(zip(slices, sizes)):
            e = self.embeddings.patch_embedding(s[None]).flatten(2)[0].T  # (h·w, Hv), row-major patches
            x[b, : h * w] = e + self.positions(h, w)
            mask[b, : h * w] = True
        for layer in self.encoder.layers:
            x = layer(x, mask)
        return self.post_layernorm(x), mask, sizes


class Resampler(nn.Module):
    def __init__(self, v):
        super().__init__()
        self.v, D = v, v.embed_dim
        self.query = nn.Parameter(torch.zeros(v.query_num, D))
        self.kv_proj = nn.Linear(v.hidden_size, D, bias=False)
        self.attn = nn.MultiheadAttention(D, v.resampler_heads, batch_first=True)
        self.ln_q, self.ln_kv, self.ln_post = (nn.LayerNorm(D, eps=1e-6) for _ in range(3))
        self.proj = nn.Parameter(torch.zeros(D, D))
        self.pos_embed = nn.Parameter(torch.zeros(v.query_num, D)) if v.query_pos else None

    def forward(self, x, mask, sizes):
        """x (B, L, Hv), mask (B, L), sizes [(h, w)] -> (B, query_num, D)."""
        D = self.v.embed_dim
        kv = self.ln_kv(self.kv_proj(x))  # (B, L, D)
        pos = torch.zeros_like(kv)
        for b, (h, w) in enumerate(sizes):
            pos[b, : h * w] = torch.from_numpy(sincos_2d(D, h, w))
        q = self.ln_q(self.query)
        if self.pos_embed is not None:  # 2.0: the queries' own sin-cos grid
            q = q + self.pos_embed
        q = q[None].expand(len(sizes), -1, -1)
        out = self.attn(q, kv + pos, kv, key_padding_mask=~mask, need_weights=False)[0]
        return self.ln_post(out) @ self.proj


class ImageEncoder(nn.Module):
    """vpm + resampler: slices -> (n_slices, query_num, D) image embeddings."""

    def __init__(self, v):
        super().__init__()
        self.vpm, self.resampler = VisionTower(v), Resampler(v)

    @torch.no_grad()
    def forward(self, slices):
        return self.resampler(*self.vpm(slices))

    @classmethod
    def from_weights(cls, v, get):
        """get(canonical name) -> float32 tensor; names as in edgepack.model.config.vision_shapes."""
        with torch.device("meta"):
            m = cls(v)
        for name, _ in m.named_parameters():
            *path, leaf = name.split(".")
            mod = m
            for part in path:
                mod = getattr(mod, part)
            setattr(mod, leaf, nn.Parameter(get(name).float(), requires_grad=False))
        return m.eval()
