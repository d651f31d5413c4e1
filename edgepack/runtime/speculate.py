"""Prompt-lookup speculative decoding: drafts from the text itself, checked in one forward.

The generation loop calls `Speculator.logits_after(tok)` where it would call `backend.forward([tok])`:

    draft    the longest n-gram (MAX_NGRAM = 8 tokens down to 1) that ends the history (prompt + reply so
             far) and occurred before: the k tokens that followed its latest earlier occurrence (no
             second model)
    verify   one forward of [tok] + draft with the logits of every position; row i is what the model
             predicts after draft[:i], so it is the right row only if the loop's sampler drew draft[:i]
    accept   the loop's own sampler draws from the rows in turn; a row is handed out only while the
             drawn tokens equal the draft. The first token that differs is still a real draw from a
             correct row, so every verify yields at least one token
    rollback the cache drops the positions of the rejected draft tokens (Backend.truncate)

Why the text does not change: every token is drawn by the same sampler from the logits of the same
context; the draft only decides which logits were computed ahead of time. Greedy: the same argmax.
Sampling: drawing t ~ p and keeping the draft token d iff t == d keeps d with probability p(d), and when
it does not, t is distributed as p without d, renormalised. That is the speculative sampling rule
(accept with min(1, p(d)/q(d)), else draw from norm(max(0, p - q))) for a draft distribution q that puts
all its mass on d, which is what a lookup draft is. It also draws one random number per token, as the
plain loop does, so a seed gives the same text with speculation on or off whenever the logits agree.

What can differ: the logits themselves. A (1 + k)-token forward runs batched kernels whose rounding can
differ from the one-token kernel's (int4 MatMulNBits and llama.cpp quantize activations per batch; fp32
matmuls block differently). So greedy output is identical except at a step where the reference's top-1
and top-2 logits are closer than that rounding (tests/test_speculate.py states and checks the bound).

When it pays: the Controller keeps the measured seconds of a forward of 1 + k tokens on this machine and
model, and the measured acceptance of drafted tokens by match length m: the n-gram the draft was found by
plus the draft tokens before this one (a token j tokens into a draft from an n-gram has m = n + j, with
decay; m >= MAX_MATCH share one estimate). A copy that has matched many tokens runs on; a one-token match
is mostly chance. On the demo model's greedy replies to the grounded bench prompts (128 tokens each;
benchmarks/bench_lookup_replay.py) a drafted token was kept 17% of the time at m = 1, 48-56% at m = 2-3,
~80% at m = 4-7 and 95-99% from m = 8 on; one estimate per n-gram length of 1-3 (as before) made every
draft of a long copy start short and grow slowly. While speculation is off it still drafts, for free,
and scores each draft against the tokens that do come ("shadow" drafts), so it notices when a reply
starts copying the prompt. Before each forward it picks the k that maximises the expected tokens per
second, (1 + a(n) + a(n)a(n+1) + ... + a(n)...a(n+k-1)) / cost(k); k = 0 (a plain step) unless that
beats one-token decoding by MIN_GAIN.

Whether a text copies is one property of the whole text, not of each match length: a reply that does not
copy misses at every m. So each estimate is scaled by the text's record, min(1, (hits + 1) / (expected
hits + 1)), the tokens kept against the tokens the per-m estimates said would be kept, decayed like them.
Without it a non-copying reply paid one failed verify per match length before drafting stopped; with it
the first misses hold back the next drafts, and a copying text (hits at least as many as expected) is not
scaled at all. The demo's open-ended en-short at 64 tokens, quiet machine (benchmarks/bench_speculate.py,
speculate_demo_onnx_64_quiet.json): 0.95x plain decoding before (16 tokens drafted over 4 runs, none
kept), 0.99x with it (33 drafted over 8 runs, 1 kept); the grounded geomean stayed at 1.60x (was 1.61x).
"""
import time

MAX_K = 8  # longest draft verified in one forward
MAX_NGRAM = 8  # longest n-gram looked up
MAX_MATCH = 16  # match lengths from here on share one acceptance estimate
MIN_GAIN = 1.1  # draft only when the expected tokens/s beat plain decoding by 10%
DECAY = 0.95  # weight of older draft outcomes (half-life ~14 drafted tokens)
COST_DECAY = 0.8  # weight of older timings of a forward
PRIOR_SLOPE = 0.15  # assumed extra cost per drafted token until one k > 0 has been timed
PRIOR_MISS = 0.9  # acceptance assumed after a match of m tokens, before any draft was scored: 1 - PRIOR_MISS / m
PRIOR_TRIALS = 2.0  # ... held with the weight of this many scored tokens


class Drafter:
    """The n-grams of the history, each mapped to the position that followed its latest occurrence."""

    def __init__(self, ids=(), max_ngram=MAX_NGRAM):
        self.ids, self.max_ngram = [], max_ngram
        self.index = [None] + [{} for _ in range(max_ngram)]  # index[n][n-gram] -> position after it
        for t in ids:
            self.append(t)

    def append(self, tok):
        ids, i = self.ids, len(self.ids)
        ids.append(int(tok))
        for n in range(1, min(self.max_ngram, i) + 1):
            self.index[n][tuple(ids[i - n:i])] = i

    def draft(self, k):
        """(up to k tokens, the n-gram length they were found by), or ([], 0) when nothing matches."""
        ids, L = self.ids, len(self.ids)
        for n in range(min(self.max_ngram, L), 0, -1):
            p = self.index[n].get(tuple(ids[L - n:]))
            if p is not None:
                out = []
                for j in range(k):  # a copy that runs into the end continues from what it copied
                    t = ids[p + j] if p + j < L else out[p + j - L]
                    if t < 0:  # an image row (runtime/vision.py) is never a token to draft
                        break
                    out.append(t)
                return (out, n) if out else ([], 0)
        return [], 0


class Controller:
    """Draft length from measured costs and acceptance (see the module docstring)."""

    def __init__(self, max_k=MAX_K):
        self.max_k = max_k
        self.cost = [None] * (max_k + 1)  # seconds of a forward of 1 + k tokens (decayed mean)
        self.new_text()

    def new_text(self):
        """Forget the acceptance measured so far (a new generation may copy more or less); keep the costs,
        which belong to the machine and model."""
        self.hits = [0.0] + [PRIOR_TRIALS * (1 - PRIOR_MISS / m) for m in range(1, MAX_MATCH + 1)]
        self.trials = [0.0] + [PRIOR_TRIALS] * MAX_MATCH
        self.kept, self.expected = 0.0, 0.0  # this text's record: tokens kept, and kept by the estimates

    def timed(self, k, seconds):
        c = self.cost[k]
        self.cost[k] = seconds if c is None else COST_DECAY * c + (1 - COST_DECAY) * seconds

    def scored(self, m, accepted):
        """One drafted token, m tokens into a match (the n-gram it was found by, plus the draft tokens before
        it), that the sampler kept or did not."""
        m = min(m, MAX_MATCH)
        self.kept = DECAY * self.kept + accepted
        self.expected = DECAY * self.expected + self.hits[m] / self.trials[m]
        self.hits[m] = DECAY * self.hits[m] + accepted
        self.trials[m] = DECAY * self.trials[m] + 1

    def acceptance(self, m):
        """The chance a drafted token m tokens into a match is kept: the estimate for m, scaled down by how
        far this text has fallen short of the estimates (module docstring)."""
        m = min(m, MAX_MATCH)
        return self.hits[m] / self.trials[m] * min(1.0, (self.kept + 1) / (self.expected + 1))

    def cost_of(self, k):
        """Measured, or c0 * (1 + slope * k) with the slope the timed k's show (PRIOR_SLOPE before any)."""
        if self.cost[k] is not None:
            return self.cost[k]
        c0 = self.cost[0]
        slopes = [(c / c0 - 1) / j for j, c in enumerate(self.cost) if j and c is not None]
        slope = sum(slopes) / len(slopes) if slopes else PRIOR_SLOPE
        return c0 * (1 + max(slope, 0.0) * k)

    def choose(self, n, available):
        """How many of `available` drafted tokens (found by an n-gram of length n) to verify; 0 = plain step."""
        if self.cost[0] is None or not available:
            return 0  # a plain step first: its cost is what every draft is weighed against
        c0 = self.cost[0]
        best, best_rate, expect, reach = 0, MIN_GAIN / c0, 1.0, 1.0
        for k in range(1, min(available, self.max_k) + 1):
            reach *= self.acceptance(n + k - 1)  # the chance that draft tokens 1..k are all kept
            expect += reach  # expected tokens from a verify of k
            rate = expect / self.cost_of(k)
            if rate > best_rate:
                best, best_rate = k, rate
        return best


class Speculator:
    """Hands the generation loop the logits after each token, from a verify it already ran when the
    token matched the draft, else from a new forward (of [tok] + a draft when the Controller says it pays).

    `limit` is the most positions the generation can need (prompt + max_new_tokens - 1): no draft
    reaches past it or past the context. `enabled=False` (or a backend that cannot roll back) gives
    plain one-token forwards, still through here.
    """

    def __init__(self, backend, cache, history, limit, stats, enabled=True, controller=None):
        self.backend, self.cache, self.stats = backend, cache, stats
        self.enabled = enabled and can_roll_back(backend)
        self.limit = min(limit, backend.n_ctx)
        self.drafter = Drafter(history) if self.enabled else None
        self.ctl = controller or Controller()
        self.ctl.new_text()
        self.pending = []  # (draft token, logits after it, its match length) not yet reached by the sampler
        self.shadow = []  # (draft token, match length) of a draft not verified, scored against the tokens that come

    def logits_after(self, tok):
        if not self.enabled:
            return self.cache.forward(self.backend, [tok])
        self.drafter.append(tok)
        self._score_shadow(tok)
        if self.pending:
            d, row, m = self.pending.pop(0)
            if d == tok:  # the sampler drew the draft token: its row is already computed
                self.ctl.scored(m, 1)
                self.stats.accepted_tokens += 1
                return row
            self.ctl.scored(m, 0)
            n, self.pending = len(self.pending) + 1, []
            self._roll_back(n)  # d and everything drafted after it
        room = self.limit - self.backend.n_past - 1
        draft, n = self.drafter.draft(min(MAX_K, room)) if room > 0 else ([], 0)
        k = self.ctl.choose(n, len(draft))
        if k == 0 and draft and not self.shadow:
            self.shadow = [(d, n + j) for j, d in enumerate(draft)]
        t = time.perf_counter()
        if k == 0:
            logits = self.cache.forward(self.backend, [tok])
        else:
            rows = self.cache.forward(self.backend, [tok] + draft[:k], all_logits=True)
            logits = rows[0]
            self.pending = [(d, row, n + j) for j, (d, row) in enumerate(zip(draft[:k], rows[1:]))]
            self.stats.drafted_tokens += k
            self.stats.verify_steps += 1
            self.shadow = []  # the verify scores this stretch itself
        self.ctl.timed(k, time.perf_counter() - t)
        return logits

    def _score_shadow(self, tok):
        if self.shadow:
            d, m = self.shadow.pop(0)
            hit = d == tok
            self.ctl.scored(m, hit)
            if not hit:
                self.shadow = []

    def _roll_back(self, n):
        self.cache.truncate(self.backend, self.backend.n_past - n)

    def close(self):
        """Drop the drafted positions no token reached, so the cache holds exactly prompt + reply."""
        n, self.pending = len(self.pending), []
        if n and self.cache.ids is not None:  # None: a forward was interrupted, the cache is reset next time
            self._roll_back(n)


def can_roll_back(backend):
    from .backend import Backend

    if getattr(backend, "has_rows", False):  # vision.WithImages: the backend it wraps decides
        backend = backend.inner
    return type(backend).truncate is not Backend.truncate
