"""The engines `edgepack bench` compares, each on the same token ids: one class per engine.

load() builds it from files, run(ids, n) generates n tokens greedily and returns its timings.
Each runs inside its own worker process (worker.py), so its memory is its own.
"""
import json
import time

LOOKUP = "+lookup"  # the suffix of an engine that drafts from the prompt; the engine without it is its plain self


class _NoEos:
    """The artifact's tokenizer with no end-of-sequence ids: every run generates exactly N tokens."""

    eos_ids = ()

    def __init__(self, tok):
        self._tok = tok

    def __getattr__(self, name):
        return getattr(self._tok, name)


class _Engine:
    """load() builds the engine; run(ids, n) -> {"ttft_s", "prefill_s", "decode_s", "decode_steps", "ids"}."""

    detail = None

    def __init__(self, spec):
        self.spec = spec

    def settle(self):
        """After load, before anything is timed: finish background work (not part of load_s)."""


class EdgepackEngine(_Engine):
    def __init__(self, spec):
        super().__init__(spec)
        from .. import runtime  # noqa: F401  (imports onnxruntime or llama.cpp lazily, at load)

    def load(self):
        from ..runtime import load

        self.model = load(self.spec["root"], backend=self.spec["backend"], threads=self.spec["threads"], n_ctx=self.spec["n_ctx"])
        self.tok = _NoEos(self.model.tokenizer)

    def settle(self):
        # the idle-time huge-page collapse (runtime/hugepages.py) finishes here, while this worker is
        # alone, rather than in its idle gaps while the other engines are being timed
        hp = getattr(self.model.backend, "huge_pages", None)
        if hp is not None:
            hp.wait()
            self.detail = {"huge_pages_bytes": hp.bytes, "huge_pages_s": round(hp.seconds, 2), "huge_pages_error": hp.error}

    def run(self, ids, n):
        from ..runtime import Stats, generate

        s = Stats()
        lookup = self.spec["engine"].endswith(LOOKUP)
        for _ in generate(self.model.backend, self.tok, ids, max_new_tokens=n, stats=s, speculate=lookup,
                          controller=self.model._controller):  # its measured costs carry over, as in a chat
            pass
        return {"ttft_s": s.ttft_s, "prefill_s": s.prefill_s, "decode_s": s.decode_s, "decode_steps": s.decode_steps,
                "ids": s.ids, "drafted_tokens": s.drafted_tokens, "accepted_tokens": s.accepted_tokens,
                "verify_steps": s.verify_steps}

    def close(self):
        self.model.close()


class OrtGenaiEngine(_Engine):
    def __init__(self, spec):
        super().__init__(spec)
        import onnxruntime_genai as og

        self.og = og

    def load(self):
        og, th = self.og, self.spec["threads"]
        cfg = og.Config(self.spec["path"])
        cfg.clear_providers()  # CPU
        cfg.overlay(json.dumps({"model": {"decoder": {"session_options": {
            "intra_op_num_threads": th, "inter_op_num_threads": 1}}}}))
        self.model = og.Model(cfg)
        self.detail = {"intra_op_num_threads": th, "past_present_share_buffer": "as in genai_config.json"}

    def run(self, ids, n):
        og = self.og
        t0 = time.perf_counter()
        params = og.GeneratorParams(self.model)
        total = len(ids) + n
        params.set_search_options(do_sample=False, max_length=total, min_length=total)  # min_length: no early eos
        g = og.Generator(self.model, params)
        t1 = time.perf_counter()
        g.append_tokens(ids)
        prefill_s = time.perf_counter() - t1
        out, t_first = [], None
        while len(out) < n and not g.is_done():
            g.generate_next_token()
            out.append(int(g.get_next_tokens()[0]))
            if t_first is None:
                t_first = time.perf_counter()
        end = time.perf_counter()
        del g
        return {"ttft_s": t_first - t0, "prefill_s": prefill_s, "decode_s": end - t_first, "decode_steps": len(out) - 1,
                "ids": out}

    def close(self):
        del self.model


class LlamaCppEngine(_Engine):
    def __init__(self, spec):
        super().__init__(spec)
        import llama_cpp

        self.llama_cpp = llama_cpp

    def load(self):
        from ..runtime.gguf_backend import llama_class_params

        th = self.spec["threads"]
        draft = None
        if self.spec["engine"].endswith(LOOKUP):
            from llama_cpp.llama_speculative import LlamaPromptLookupDecoding

            draft = _CountingDraft(LlamaPromptLookupDecoding())  # its defaults: max_ngram_size 2, 10 tokens
        self.draft = draft
        # logits_all=True with a draft model: llama-cpp-python 0.3.36 sizes its scores buffer from the argument
        # (n_batch rows without it) though a draft model turns logits_all on, and crashes past n_batch tokens
        with llama_class_params() as extra:  # GGUFBackend's extra-buffer-type choice (AMX: gguf_backend.py)
            self.llm = self.llama_cpp.Llama(model_path=self.spec["path"], n_ctx=self.spec["n_ctx"], n_threads=th,
                                            n_threads_batch=th, n_batch=512, verbose=False, draft_model=draft,
                                            logits_all=draft is not None)
        self.detail = {"n_threads": th, "n_batch": 512, "use_extra_bufts": extra}
        if draft is not None:
            self.detail["draft_model"] = {"class": "LlamaPromptLookupDecoding", "max_ngram_size": draft.inner.max_ngram_size,
                                          "num_pred_tokens": draft.inner.num_pred_tokens}
            evals, orig = self, self.llm.eval

            def eval_counted(tokens):  # every eval after the prefill verifies one token + its draft
                evals.evals += 1
                return orig(tokens)

            self.llm.eval = eval_counted

    def run(self, ids, n):
        self.llm.reset()  # else generate() reuses the cached prefix and skips the prefill
        self.evals = 0
        if self.draft is not None:
            self.draft.drafted = 0
        t0 = time.perf_counter()
        out, t_first = [], None
        for tok in self.llm.generate(ids, top_k=1, top_p=1.0, min_p=0.0, temp=0.0, repeat_penalty=1.0):
            if t_first is None:
                t_first = time.perf_counter()
            out.append(int(tok))
            if len(out) == n:
                break
        end = time.perf_counter()
        r = {"ttft_s": t_first - t0, "prefill_s": t_first - t0, "decode_s": end - t_first,
             "decode_steps": len(out) - 1, "ids": out}
        if self.draft is not None:
            # tokens that came without an eval of their own were drafted and kept (the prefill's eval gave the first)
            r.update(drafted_tokens=self.draft.drafted, accepted_tokens=max(0, len(out) - self.evals),
                     verify_steps=max(0, self.evals - 1))
        return r

    def close(self):
        self.llm.close()


class _CountingDraft:
    """A llama-cpp-python draft model that counts the tokens it proposes (what its eval then verifies)."""

    def __init__(self, inner):
        self.inner, self.drafted = inner, 0

    def __call__(self, input_ids, **kw):
        out = self.inner(input_ids, **kw)
        self.drafted += len(out)
        return out


class TorchEngine(_Engine):
    def __init__(self, spec):
        super().__init__(spec)
        import torch

        torch.set_num_threads(spec["threads"])
        self.torch = torch

    def load(self):
        from ..model.checkpoint import load
        from ..model.reference import MiniCPM

        ckpt = load(self.spec["path"])
        self.model = MiniCPM.from_checkpoint(ckpt)
        ckpt.close()
        self.detail = {"dtype": "float32", "torch_threads": self.torch.get_num_threads()}

    def run(self, ids, n):
        from ..model.reference import KVCache

        torch, model = self.torch, self.model
        with torch.inference_mode():
            cache = KVCache(model.config.num_hidden_layers)
            t0 = time.perf_counter()
            logits = model(torch.tensor([ids]), cache)
            prefill_s = time.perf_counter() - t0
            out = [int(logits[0, -1].argmax())]
            t_first = time.perf_counter()
            while len(out) < n:
                logits = model(torch.tensor([[out[-1]]]), cache)
                out.append(int(logits[0, -1].argmax()))
            end = time.perf_counter()
        return {"ttft_s": t_first - t0, "prefill_s": prefill_s, "decode_s": end - t_first, "decode_steps": n - 1,
                "ids": out}

    def close(self):
        del self.model


ENGINE_CLASSES = {"edgepack": EdgepackEngine, "onnxruntime-genai": OrtGenaiEngine, "llama.cpp": LlamaCppEngine,
                  "torch-reference": TorchEngine, "edgepack+lookup": EdgepackEngine, "llama.cpp+lookup": LlamaCppEngine}
