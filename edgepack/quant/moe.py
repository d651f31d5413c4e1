"""Per-expert calibration of a mixture-of-experts layer (MiniCPM-MoE): each expert from the tokens routed to it.

calibrate.py captures the layer's MoE input (the post-attention-norm output of the float layer) and hands
it here. The rows go through the layer's float router exactly as the reference routes them
(model.reference.route: softmax over the router logits, top-k, renormalised); each expert then gets

    w1 | w3   GPTQ with the Hessian of the rows routed to it (one pass over their stacked rows),
    w2        GPTQ with the Hessian of its own silu(w1 x)·(w3 x) on those rows (float w1, w3, as the
              dense down_proj's input is captured from the float layer).

Without GPTQ in the method (`awq` alone) the routed rows weight each block's clip search instead, as the
dense layers' non-GPTQ path does. No AWQ on experts: an AWQ scale of w1|w3 folds into
post_attention_layernorm, which all the layer's experts and the router read, so one scale would have to
serve every expert and would move the router's input (and its choices); w2's would fold into w3's rows,
but without the first there is little left to gain. Attention keeps the method's full treatment.

Expert codes are always symmetric 4-bit on the format's block (zero point 8): the grid the RTN path
writes, and the only one both consumers take (onnxruntime's QMoE without zero points, GGUF's Q4_0).
An expert routed fewer than MIN_EXPERT_TOKENS calibration rows falls back to that RTN.
"""
import torch
import torch.nn.functional as F

from ..model.reference import route
from .blocks import quantize
from .gptq import gptq, hessian

# Below this many routed calibration rows an expert is RTN. GPTQ's Hessian X^T X / n of a few dozen rows
# has rank n, far below hidden (2304 for MoE-8x2B; 64 in the tiny tests) and mostly the 1% damping: the
# error feedback then fits those few tokens rather than the expert's input distribution. 128 is a quarter
# of the even share at the default calibration (2048 tokens x 2 used / 8 experts = 512 rows per expert)
# and four GPTQ blocks' worth of columns of 32: a judgement, not a measured optimum.
MIN_EXPERT_TOKENS = 128
ROLES = ("w1", "w3", "w2")


def router_name(i):
    return f"model.layers.{i}.mlp.gate.weight"


def expert_name(i, e, w):
    return f"model.layers.{i}.mlp.experts.{e}.{w}.weight"


def is_router(name):
    return name.startswith("model.layers.") and name.endswith(".mlp.gate.weight")


def is_expert(name):
    return ".mlp.experts." in name


def rtn(w, block):
    """The RTN an expert falls back to: symmetric round-to-nearest on the block grid (Q4_0's / the packer's rule,
    with the scale rounded to fp16 first, as every edgepack.quant tensor, so both formats store it exactly; the
    formats' own RTN of a --method rtn export rounds codes with the unrounded scale: a few codes differ)."""
    return quantize(w.float(), 4, sym=True, block=block)


def routed_rows(x, router, k):
    """{expert: indices of the rows of x (N, H) routed to it} under the reference's routing."""
    _, idx = route(x @ router.T, k)
    return {e: (idx == e).any(-1).nonzero()[:, 0] for e in range(router.shape[0])}  # top-k ids are distinct


def _fit(w, x, m, block):
    if m.gptq:
        return gptq(w, hessian(x), 4, True, m.clip, block=block, damp=m.gptq_damp, act_order=m.act_order)
    return quantize(w.float(), 4, True, m.clip, imp=x.pow(2).mean(0) if m.clip else None, block=block)


@torch.no_grad()
def calibrate_experts(ckpt, i, x, m, block, release=lambda: None):
    """Quantize layer i's experts from x (N, H), the MoE input of the calibration rows (float64);
    release() after each expert lets go of the checkpoint's mapped pages (a MoE-8x2B expert is 80 MB of bf16).

    Returns ({name: QTensor} of the layer's experts, {expert: routed rows}, router float64)."""
    c = ckpt.config
    router = ckpt.torch(router_name(i)).to(x.dtype)
    rows = routed_rows(x, router, c.num_experts_per_tok)
    out, Fi = {}, c.intermediate_size
    weight = lambda e, w: ckpt.torch(expert_name(i, e, w)).to(x.dtype)  # noqa: E731
    for e in range(c.num_experts):
        if len(rows[e]) >= MIN_EXPERT_TOKENS:
            # one float64 weight alive at a time besides GPTQ's own (MoE-8x2B's w1|w3 is 212 MB of it)
            xe = x[rows[e]]
            W13 = torch.cat([weight(e, "w1"), weight(e, "w3")])
            xd = F.silu(xe @ W13[:Fi].T) * (xe @ W13[Fi:].T)  # w2's input, from the float w1 and w3
            qt = _fit(W13, xe, m, block)
            del W13
            out[expert_name(i, e, "w1")], out[expert_name(i, e, "w3")] = qt.rows(slice(0, Fi)), qt.rows(slice(Fi, 2 * Fi))
            out[expert_name(i, e, "w2")] = _fit(weight(e, "w2"), xd, m, block)
        else:
            for w in ROLES:
                out[expert_name(i, e, w)] = rtn(weight(e, w), block)
        release()
    return out, rows, router


class Tap(torch.nn.Module):
    """Stands in for a layer's MoE while its linears' inputs are captured: keeps its input, adds nothing."""

    def forward(self, x):
        self.x = x.reshape(-1, x.shape[-1])
        return torch.zeros_like(x)


class Routed(torch.nn.Module):
    """reference.MoE's forward on given weights, one expert's dequantized weights alive at a time:
    weights(e) -> (w1, w3, w2) in x's dtype."""

    def __init__(self, router, k, weights):
        super().__init__()
        self.router, self.k, self.weights = router, k, weights

    def forward(self, x):
        shape, x = x.shape, x.reshape(-1, x.shape[-1])
        w, idx = route(x @ self.router.T, self.k)
        out = torch.zeros_like(x)
        for e in range(self.router.shape[0]):
            tok, slot = (idx == e).nonzero(as_tuple=True)
            if len(tok):
                w1, w3, w2 = self.weights(e)
                xe = x[tok]
                out.index_add_(0, tok, (F.silu(xe @ w1.T) * (xe @ w3.T)) @ w2.T * w[tok, slot, None].to(x.dtype))
        return out.reshape(shape)
