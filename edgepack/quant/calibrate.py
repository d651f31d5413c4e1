"""Calibration: stream the calibration tokens through the float model one layer at a time.

The hidden states go through one float layer, the inputs of its linears are captured (seven, or
MiniCPM3's latent-attention projections: each calibrated like any linear),
AWQ scales and GPTQ Hessians computed from them, the layer quantized, and the *quantized* layer
produces the next layer's input. Only one layer's weights and activations are alive at a time.
Everything runs in float64 (CALIBRATION_DTYPE says why), so the codes are the same on every CPU.
"""
import math

import torch

from ..errors import BadInput
from .awq import _awq_layer, _awq_mla_layer, _gqa_tie
from .blocks import quantize
from .gptq import gptq, hessian, refine_scales
from .kquant import quantize_as
from .moe import MIN_EXPERT_TOKENS, Routed, Tap, calibrate_experts, router_name


CALIBRATION_TOKENS = 2048  # the smallest default calibration (tokens of texts.calibration_text())
MAX_CALIBRATION_TOKENS = 8192  # the largest: on the demo 16384 did no better (benchmarks/README.md)
CALIBRATION_BUDGET = 1.2e13  # tokens x transformer-layer weights the default calibration may cost: 4096
                             # tokens on MiniCPM-2B's 2.44e9 (act-order, 27.7 min on 2 cores), 8192 on
                             # a model up to ~1.4e9, 2048 from ~2.9e9 (MiniCPM3-4B: ~22 min at 2048)
CALIBRATION_SEQ = 512      # tokens per calibration sequence
# Calibration computes in float64 so that its discrete choices (AWQ's α, each block's clip ratio, every
# GPTQ rounding) do not depend on the CPU: float32 sums and matmuls round differently with the SIMD
# width and BLAS kernel a CPU gets (AVX2 vs AVX-512 vs AMX), which moved the demo's ONNX Δppl from
# +4.0% to +6.5% between an Intel and an AMD machine. tests/test_quant.py checks the codes are
# bit-identical across torch's and MKL's kernel choices and thread counts (and
# the decision log in benchmarks/README.md on the demo). Cost, against float32: demo 1.47x time; 2B shape, 40 layers: 28.2 min,
# 4.3 GB peak RSS vs 19.5 min, 5.3 GB (benchmarks/bench_calibration_2b.py, quiet machine).
CALIBRATION_DTYPE = torch.float64


def default_tokens(ckpt):
    """The default calibration size for ckpt: the largest power of two from CALIBRATION_TOKENS to
    MAX_CALIBRATION_TOKENS whose cost, tokens x the transformer layers' weights, fits CALIBRATION_BUDGET.
    More tokens fit better (act-order on the demo, fake-quant Δppl: +4.6% at 2048, +3.2% at 4096, +2.7% at
    8192) and the calibration time grows with them, so a small model gets more of them at the same cost."""
    weights = sum(math.prod(ckpt.shape(n)) for n in ckpt.names
                  if n.startswith("model.layers.") and len(ckpt.shape(n)) == 2)
    n = CALIBRATION_TOKENS
    while 2 * n <= MAX_CALIBRATION_TOKENS and 2 * n * weights <= CALIBRATION_BUDGET:
        n *= 2
    return n


def calibration_ids(tokenizer, n_tokens=CALIBRATION_TOKENS, seq=CALIBRATION_SEQ):
    """(n_seq, seq) token ids: consecutive windows of texts.calibration_text(), each starting with
    bos when the tokenizer adds one (as the evaluation text does)."""
    from ..model.texts import calibration_text

    ids = tokenizer.encode(calibration_text(), add_bos=False)
    head = [tokenizer.bos_id] if tokenizer.add_bos and tokenizer.bos_id is not None else []
    body = seq - len(head)
    n_seq = max(1, n_tokens // seq)
    if len(ids) < n_seq * body:
        raise BadInput(f"calibration text has {len(ids)} tokens, fewer than the {n_seq * body} asked for")
    return torch.tensor([head + ids[i * body:(i + 1) * body] for i in range(n_seq)])


def _attach(module, name, tensor):
    *path, leaf = name.split(".")
    for p in path:
        module = getattr(module, p)
    setattr(module, leaf, torch.nn.Parameter(tensor, requires_grad=False))


@torch.no_grad()
def _calibrate(q, ids, progress=None, float_only=False):
    """float_only: apply the AWQ scales but keep every weight float (q.floats), to check the fold."""
    from ..model.reference import Block

    ckpt, m, c = q.ckpt, q.method, q.ckpt.config
    B, T = ids.shape
    pos = torch.arange(T)
    emb_name = "model.embed_tokens.weight"
    if float_only:
        q.floats[emb_name] = ckpt.torch(emb_name)
    # (B, T, H) from the float table, so the layers' results do not depend on the embedding's bits.
    # All of the calibration runs in float64 (CALIBRATION_DTYPE's note says why)
    h = ckpt.rows(emb_name, ids).to(CALIBRATION_DTYPE) * c.embedding_scale
    hf = h if m.ft else None  # the float model's hidden states (the _ft methods)
    tie = _gqa_tie(c) if c.attention != "mla" else None
    groups = shared_input(c)
    moe = bool(c.num_experts)  # the routed FFN: quant/moe.py, after the attention linears
    if moe:
        q.info["experts"] = {"calibrated_experts": 0, "rtn_experts": 0, "min_routed_tokens": MIN_EXPERT_TOKENS,
                             "routed_tokens": []}
    L = c.num_hidden_layers
    # mmapped safetensors (and a MoE's memory-mapped .bin) pages count in RSS while the file is open: let go
    # of them after each layer
    release = ckpt.close if any(ckpt.path.glob("*.safetensors")) or moe else (lambda: None)
    if progress:
        progress("calibrate", 0, L)
    for i in range(L):
        p = f"model.layers.{i}."
        W = {n: ckpt.torch(p + n + ".weight").to(CALIBRATION_DTYPE) for group in groups for n in group}
        norms = {n: ckpt.torch(p + n + ".weight").to(CALIBRATION_DTYPE) for n in layer_norms(c)}
        with torch.device("meta"):
            block = Block(c)
        for n, t in {**W, **norms}.items():
            _attach(block, n + ".weight", t)
        if moe:
            block.mlp = Tap()
        X = _capture(block, h, pos, groups)  # inputs of the layer's linears, float layer
        if m.awq:  # MoE: attention only (quant/moe.py says why experts get no AWQ)
            (_awq_mla_layer if c.attention == "mla" else _awq_layer)(W, norms, X, m, c, tie, q.block, mlp=not moe)
        if m.seq:  # the block computes with the AWQ-scaled weights, so recaptured inputs are the scaled ones
            for n, t in {**W, **norms}.items():
                _attach(block, n + ".weight", t)
        if m.ft:  # the float model's own stream: the same AWQ-scaled float layer on the float hidden states
            with torch.device("meta"):
                fblock = Block(c)
            for n, t in {**W, **norms}.items():
                _attach(fblock, n + ".weight", t)
            XF = _capture(fblock, hf, pos, groups)
        for gi, group in enumerate(groups):
            if m.seq and gi:
                X = _capture(block, h, pos, groups)
            x = X[group[0]]
            if float_only:
                for n in group:
                    q.floats[p + n + ".weight"] = W[n].float()
                    _attach(block, n + ".weight", W[n])
                continue
            if q.kmix:  # per tensor: its own grid from the mix, one Hessian per group
                H = hessian(x) if m.gptq else None
                imp = x.pow(2).mean(0)
                by_kind = {}  # the group's linears on one grid: one pass over their stacked rows (rows are independent)
                for n in group:
                    by_kind.setdefault(q.kind(p + n + ".weight"), []).append(n)
                for kind, names in by_kind.items():
                    qt, lo = quantize_as(torch.cat([W[n] for n in names]), kind, H, m.clip, imp, damp=m.gptq_damp), 0
                    for n in names:
                        q.tensors[p + n + ".weight"], lo = qt.rows(slice(lo, lo + len(W[n]))), lo + len(W[n])
                del H
            elif m.gptq:  # one pass over the stacked rows: GPTQ treats rows independently given H
                if m.ft or m.refine:  # these need the (aimed-at) weights and H after GPTQ has run
                    H, w = hessian(x), torch.cat([W[n] for n in group])
                    if m.ft:
                        w += float_target(w, x, XF[group[0]], H)
                    qt = gptq(w, H, 4, m.sym, m.clip, block=q.block, damp=m.gptq_damp, act_order=m.act_order)
                    if m.refine:
                        qt = refine_scales(qt, w, H)
                    del H, w
                else:  # temporaries gptq frees as it goes (peak RSS)
                    qt = gptq(torch.cat([W[n] for n in group]), hessian(x), 4, m.sym, m.clip, block=q.block,
                              damp=m.gptq_damp, act_order=m.act_order)
                lo = 0
                for n in group:
                    q.tensors[p + n + ".weight"], lo = qt.rows(slice(lo, lo + len(W[n]))), lo + len(W[n])
            else:
                imp = x.pow(2).mean(0) if m.clip else None
                for n in group:
                    q.tensors[p + n + ".weight"] = quantize(W[n], 4, m.sym, m.clip, imp=imp, block=q.block)
            for n in group:  # the float64 original goes as soon as its quantized twin is attached (peak RSS)
                _attach(block, n + ".weight", torch.from_numpy(q.tensors[p + n + ".weight"].dequantize()).to(CALIBRATION_DTYPE))
                del W[n]
        for n, t in norms.items():
            q.floats[p + n + ".weight"] = t.float()
            _attach(block, n + ".weight", t)
        if moe:
            block.mlp = _experts(q, i, block.mlp.x, m, release) if not float_only else _float_experts(ckpt, i, h.dtype)
        del X, W
        release()
        _trim_heap()
        h = block(h, pos, None)  # the quantized layer feeds the next one
        if m.ft:
            hf = fblock(hf, pos, None)
            del fblock, XF
        if moe and not float_only:
            _spill_experts(q, block.mlp.layer)
        if progress:
            progress("calibrate", i + 1, L)


FT_DAMP = 3.0  # float_target's damping, x H's mean diagonal: weaker damping overfits 2048 tokens (decision log)


def float_target(w, x, xf, H, damp=None):
    """ΔW with ‖W·x_f − Ŵ·x‖² = ‖(W + ΔW)·x − Ŵ·x‖² + const for any Ŵ: W + ΔW is the least-squares
    W·x_fᵀx (xᵀx)⁻¹, so GPTQ on W + ΔW with x's Hessian aims at the float model's outputs from the
    inputs the quantized model really sees (GPTAQ's asymmetric target). x, xf (T, K); H = hessian(x).
    Opt-in (`_ft` methods): on the demo KL 0.061 against the default's 0.074 at the same Δppl, but the float
    stream makes a 2B calibration 2019 s against 940 s (benchmarks/README.md, decision log "int4 method")."""
    damp = FT_DAMP if damp is None else damp
    C = (xf - x).T @ x * (2 / len(x))  # (K, K), scaled like H
    Hd = H.clone()
    d = Hd.diagonal()
    d += damp * d.mean() + (d == 0)
    L, info = torch.linalg.cholesky_ex(Hd)  # damped H is positive-definite (MKL's LU misbehaved: gptq.refine_scales)
    if info.item():
        raise torch.linalg.LinAlgError(f"float target: the damped Hessian is not positive-definite (leading minor {info.item()})")
    return torch.cholesky_solve((w @ C).T, L).T  # w C H⁻¹ (H symmetric)


def _experts(q, i, x, m, release):
    """Calibrate layer i's experts from x (their float MoE input); the Routed module that runs them quantized."""
    ckpt, c = q.ckpt, q.ckpt.config
    layer, rows, router = calibrate_experts(ckpt, i, x, m, q.block, release)
    q.floats[router_name(i)] = router.float()  # the router stays float in both formats
    info = q.info["experts"]
    n_cal = sum(len(r) >= MIN_EXPERT_TOKENS for r in rows.values())
    info["calibrated_experts"] += n_cal
    info["rtn_experts"] += c.num_experts - n_cal
    info["routed_tokens"].append([len(rows[e]) for e in range(c.num_experts)])

    def weights(e):  # dequantized for this expert only, while the block runs
        return tuple(torch.from_numpy(mod.layer[f"model.layers.{i}.mlp.experts.{e}.{w}.weight"].dequantize()).to(x.dtype)
                     for w in ("w1", "w3", "w2"))

    mod = Routed(router, c.num_experts_per_tok, weights)
    mod.layer = layer  # the codes, until _spill_experts takes them
    return mod


def _float_experts(ckpt, i, dtype):
    c = ckpt.config
    return Routed(ckpt.torch(router_name(i)).to(dtype), c.num_experts_per_tok,
                  lambda e: tuple(ckpt.torch(f"model.layers.{i}.mlp.experts.{e}.{w}.weight").to(dtype) for w in ("w1", "w3", "w2")))


def _spill_experts(q, layer):
    """The layer's expert codes leave memory (q.put spills them to q's scratch folder when it has one)."""
    for n in list(layer):
        q.put(n, layer.pop(n))


def _trim_heap():
    """Give the layer's freed float64 temporaries back to the OS (glibc keeps them in its heap
    otherwise, and RSS climbed by ~20 MB per demo layer more than the codes kept)."""
    import ctypes
    import sys

    if sys.platform.startswith("linux"):
        try:
            ctypes.CDLL("libc.so.6").malloc_trim(0)
        except (OSError, AttributeError):  # not glibc (musl): nothing to trim
            pass


# linears that read the same activations: one Hessian, one GPTQ pass over their stacked rows (2B shape:
# 12,672 column steps per layer instead of 19,584, 4 Cholesky factorizations instead of 7)
SHARED_INPUT = (("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"), ("self_attn.o_proj",),
                ("mlp.gate_proj", "mlp.up_proj"), ("mlp.down_proj",))


# MLA (MiniCPM3): the same grouping over its low-rank projections; q_a and kv_a read the layer's normed input
MLA_SHARED_INPUT = (("self_attn.q_a_proj", "self_attn.kv_a_proj_with_mqa"), ("self_attn.q_b_proj",),
                    ("self_attn.kv_b_proj",), ("self_attn.o_proj",), ("mlp.gate_proj", "mlp.up_proj"), ("mlp.down_proj",))


def shared_input(c):
    """One layer's linears grouped by the activation they read (each group: one Hessian, one GPTQ pass);
    a mixture-of-experts layer's MLP is calibrated per expert instead (quant/moe.py)."""
    groups = MLA_SHARED_INPUT if c.attention == "mla" else SHARED_INPUT
    return tuple(g for g in groups if not g[0].startswith("mlp.")) if c.num_experts else groups


def layer_norms(c):
    """One layer's RMSNorm weights (where AWQ folds its scales)."""
    extra = ("self_attn.q_a_layernorm", "self_attn.kv_a_layernorm") if c.attention == "mla" else ()
    return ("input_layernorm", *extra, "post_attention_layernorm")


class _Captured(Exception):
    """Raised by _capture's hook once the last linear's input is kept (skips down_proj's product: 1/6 of
    the capture pass)."""


def _capture(block, h, pos, groups=SHARED_INPUT):
    """Run the float block on h; return {linear: its input as (tokens, K)} (a group shares one)."""
    X, hooks = {}, []

    def keep(mod, args, n):
        X[n] = args[0].reshape(-1, args[0].shape[-1])
        if n == "mlp.down_proj":  # the last linear the block calls: its product and the rest are not needed
            raise _Captured

    for n in (group[0] for group in groups):
        hooks.append(block.get_submodule(n).register_forward_pre_hook(lambda mod, args, n=n: keep(mod, args, n)))
    try:
        block(h, pos, None)
    except _Captured:
        pass
    finally:
        for hk in hooks:
            hk.remove()
    for group in groups:
        for n in group[1:]:
            X[n] = X[group[0]]
    return X
