"""The bench report: per-engine records, ratios, the bandwidth bound, and its printers (table, JSON, plot)."""
import json
import statistics
import time
from pathlib import Path

from .engines import LOOKUP
from .prompts import OPEN_ENDED

OVERHEAD_FILE = "edgepack.bench.json"  # beside edgepack.json: measured runtime overhead, read by inspect


def _summary(xs):
    return {"median": statistics.median(xs), "min": min(xs), "max": max(xs), "samples": list(xs)}


def _record(engine, backend, p, out, art_bytes, tok, new_tokens, threads):
    from ..runtime.meter import SpeechMeter

    runs = p["runs"]
    ttft = [r["ttft_s"] for r in runs]
    prefill = [p["prompt_tokens"] / r["prefill_s"] for r in runs]
    decode = [r["decode_steps"] / r["decode_s"] for r in runs]
    ids = runs[-1]["ids"]
    text = tok.decode(ids)  # random-weight models pick ids past the tokenizer: it drops them
    meter = SpeechMeter()
    meter.feed(text)
    d = statistics.median(decode)
    words_s, cjk_s, ratio = meter.rates(len(ids), d)
    return {
        "engine": engine, "backend": backend, "prompt": p["name"],
        "label": f"pp{p['prompt_tokens']}+tg{new_tokens}", "prompt_tokens": p["prompt_tokens"], "new_tokens": len(ids),
        "load_s": out["load_s"], "ttft_s": statistics.median(ttft), "prefill_tok_s": statistics.median(prefill),
        "decode_tok_s": _summary(decode), "ttft_s_runs": _summary(ttft), "prefill_tok_s_runs": _summary(prefill),
        "peak_rss_bytes": out["peak_rss_bytes"], "rss_after_load_bytes": out["rss_after_load_bytes"],
        "rss_before_load_bytes": out["rss_before_load_bytes"], "artifact_bytes": art_bytes,
        "words_per_s": words_s, "cjk_chars_per_s": cjk_s, "speech_ratio": ratio,
        "speech_unit": "cjk_chars" if meter.cjk_dominant else "words",
        "tokens_per_word": len(ids) / meter.words if meter.words else None,
        "tokens_per_cjk_char": len(ids) / meter.cjk_chars if meter.cjk_chars else None,
        "text_head": text[:160], "threads": threads, "engine_detail": out.get("detail"),
        "prompt_kind": "open-ended" if p["name"] in OPEN_ENDED else "grounded", **_lookup_figures(runs, engine.endswith(LOOKUP)),
    }


def _lookup_figures(runs, lookup):
    """Speculation counts summed over the timed runs (None for an engine that does not draft)."""
    if not lookup:
        return {"drafted_tokens": None, "accepted_tokens": None, "acceptance_rate": None, "mean_accepted_length": None}
    drafted, accepted = sum(r["drafted_tokens"] for r in runs), sum(r["accepted_tokens"] for r in runs)
    verifies = sum(r["verify_steps"] for r in runs)
    return {"drafted_tokens": drafted, "accepted_tokens": accepted, "verify_steps": verifies,
            "acceptance_rate": accepted / drafted if drafted else 0.0,
            "mean_accepted_length": accepted / verifies if verifies else 0.0}


def _add_ratios(results, default_backend):
    """Each record's figures ÷ edgepack's runtime on the same prompt (same format; the default for torch), and
    a drafting engine's decode tok/s ÷ its plain self's (speedup_vs_plain)."""
    ours = {(r["backend"], r["prompt"]): r for r in results if r["engine"] == "edgepack"}
    by_engine = {(r["engine"], r["backend"], r["prompt"]): r for r in results}
    for r in results:
        plain = by_engine.get((r["engine"][:-len(LOOKUP)], r["backend"], r["prompt"])) if r["engine"].endswith(LOOKUP) else None
        r["speedup_vs_plain"] = r["decode_tok_s"]["median"] / plain["decode_tok_s"]["median"] if plain else None
        base = ours.get((r["backend"], r["prompt"])) or ours.get((default_backend, r["prompt"]))
        if base is None:
            r["vs_edgepack"] = None
            continue
        r["vs_edgepack"] = {
            "against": f"edgepack/{base['backend']}",
            "decode_tok_s": r["decode_tok_s"]["median"] / base["decode_tok_s"]["median"],
            "prefill_tok_s": r["prefill_tok_s"] / base["prefill_tok_s"],
            "ttft_s": r["ttft_s"] / base["ttft_s"], "load_s": r["load_s"] / base["load_s"],
            "peak_rss_bytes": r["peak_rss_bytes"] / base["peak_rss_bytes"]}


def _add_bounds(results, bandwidth, m, formats):
    """Each record's read-bandwidth bound (tok/s) and its decode median as a fraction of it (None for the
    float reference, which reads no artifact)."""
    from .bandwidth import decode_bound_tok_s
    from ..formats.manifest import kv_cache_bytes, kv_cache_dtype

    for r in results:
        a = formats.get(r["backend"])
        if a is None:
            r["decode_bound_tok_s"] = r["decode_fraction_of_bound"] = None
            continue
        weights = sum(f["bytes"] for f in a["files"] if f["path"].endswith((".onnx.data", ".gguf")))
        per_token = kv_cache_bytes(m["model"]["config"], 1, kv_cache_dtype(a)[1], a)
        bound = decode_bound_tok_s(bandwidth, weights, per_token, r["prompt_tokens"] + r["new_tokens"] // 2)
        r["decode_bound_tok_s"] = bound
        r["decode_fraction_of_bound"] = r["decode_tok_s"]["median"] / bound


def _record_overhead(root, m, raw, formats, log):
    """Measured runtime overhead per format = edgepack's peak RSS − weight file bytes − KV cache in use at the
    peak (longest prompt + new tokens). Written to OVERHEAD_FILE beside the manifest for `edgepack inspect`."""
    from ..formats.manifest import kv_cache_bytes, kv_cache_dtype

    cfg = m["model"]["config"]
    over = {}
    for (engine, backend), out in raw.items():
        if engine != "edgepack":
            continue
        weights = sum(f["bytes"] for f in formats[backend]["files"])
        held = max(p["prompt_tokens"] + len(p["runs"][-1]["ids"]) for p in out["prompts"])
        kv = kv_cache_bytes(cfg, held, kv_cache_dtype(formats[backend])[1], formats[backend])
        over[backend] = {"runtime_overhead_bytes": max(0, out["peak_rss_bytes"] - weights - kv),
                         "peak_rss_bytes": out["peak_rss_bytes"], "weights_bytes": weights, "kv_cache_bytes": kv,
                         "tokens_held": held, "method": "peak RSS of `edgepack bench`'s runtime worker − weights − KV in use",
                         "measured_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")}
    if over:
        try:
            (root / OVERHEAD_FILE).write_text(json.dumps({"runtime_overhead": over}, indent=2) + "\n")
        except OSError as e:
            log(f"could not record the measured overhead in {root / OVERHEAD_FILE}: {e.strerror}")
    return over


def _fp32_bytes(m):
    c = m["model"]["config"]
    h, L, ff, v = c["hidden_size"], c["num_hidden_layers"], c["intermediate_size"], c["vocab_size"]
    kvd = c["num_key_value_heads"] * (h // c["num_attention_heads"])
    per_layer = 2 * h * h + 2 * h * kvd + 3 * h * ff
    return 4 * (L * per_layer + v * h * (1 if c["tie_word_embeddings"] else 2))


def _dir_weight_bytes(path):
    return sum(p.stat().st_size for p in Path(path).iterdir() if p.suffix in (".safetensors", ".bin"))


def _gb(n):
    return f"{n / 2**30:.1f} GiB"


def _num(x):
    return f"{x:.0f}" if x >= 100 else f"{x:.1f}" if x >= 10 else f"{x:.2f}"


def _bytes(n):
    from ..formats.manifest import human_bytes

    return human_bytes(n)


def print_table(report, console=None):
    """A rich table: one row per engine and prompt, the ratio to edgepack's runtime (×ep) beside each figure."""
    from rich.console import Console
    from rich.table import Table

    if console is None:
        console = Console()
        if not console.is_terminal:
            console = Console(width=170)  # a file or pipe: do not squeeze the table into 80 columns
    s = report["settings"]
    t = Table(title=f"edgepack bench · {s['model']} · {s['threads']} threads · {s['runs']} runs "
                    f"(+{s['warmup_runs']} warm-up) · median [min–max] · ×ep = ratio to edgepack's runtime")
    for col in ("engine", "prompt", "test", "load s", "TTFT s", "prefill tok/s", "decode tok/s", "min–max", "×ep",
                "lookup", "speech", "peak RSS", "artifact"):
        t.add_column(col, justify="left" if col in ("engine", "prompt", "test") else "right", no_wrap=True)
    for r in report["results"]:
        d, v = r["decode_tok_s"], r.get("vs_edgepack") or {}

        def x(key):
            return f" {v[key]:.2f}×" if key in v and r["engine"] != "edgepack" else ""

        rate = f"{_num(r['cjk_chars_per_s'])} ch/s" if r["speech_unit"] == "cjk_chars" else f"{_num(r['words_per_s'])} w/s"
        t.add_row(f"{r['engine']} {r['backend']}", r["prompt"], r["label"], f"{r['load_s']:.2f}", f"{r['ttft_s']:.3f}",
                  f"{_num(r['prefill_tok_s'])}{x('prefill_tok_s')}", _num(d["median"]) + _of_bound(r), f"{_num(d['min'])}–{_num(d['max'])}",
                  x("decode_tok_s").strip(), _lookup_cell(r), f"{rate} = {_num(r['speech_ratio'])}×",
                  f"{_bytes(r['peak_rss_bytes'])}{x('peak_rss_bytes')}", _bytes(r["artifact_bytes"]))
    console.print(t)
    mc = report["machine"]
    console.print(f"machine: {mc['cpu']}, {mc['cores_logical']} cores, {_bytes(mc['ram_bytes'])} RAM, "
                  f"Python {mc['python']}, load average {mc['load_average_at_start'][0]:.2f} at start, "
                  f"{mc.get('load_average_at_end', [0])[0]:.2f} at end (other processes compete for the cores)")
    bw = report.get("read_bandwidth")
    if bw:
        console.print(f"(NN% of B): decode as a fraction of the read-bandwidth bound B tok/s = {bw['bytes_per_s'] / 1e9:.1f} GB/s "
                      f"(probed in this run, {s['threads']} threads) ÷ (weight bytes + KV bytes at mid-decode).")
    console.print("lookup: accepted/drafted tokens · accepted tokens per verify · decode tok/s ÷ the same engine "
                  "without prompt lookup.")
    console.print("×ep: ratio to edgepack's runtime on the same format and prompt (torch: the artifact's first format). "
                  "speech: words/s (ch/s when the text is mostly CJK) of the generated text, × human speech "
                  "(2.5 words/s, 5.2 ch/s).")
    console.print(f"timed: {s['timed']}", style="dim")
    for sk in report["skipped"]:
        console.print(f"skipped {sk['engine']}/{sk['backend']}: {sk['reason']}", style="yellow")


def _of_bound(r):
    frac, bound = r.get("decode_fraction_of_bound"), r.get("decode_bound_tok_s")
    return f" ({100 * frac:.0f}% of {_num(bound)})" if frac else ""


def _lookup_cell(r):
    """acceptance rate · mean accepted length · ×plain, for an engine that drafts."""
    if r.get("drafted_tokens") is None:
        return ""
    sp = r.get("speedup_vs_plain")
    return (f"{100 * r['acceptance_rate']:.0f}% · {r['mean_accepted_length']:.1f}"
            + (f" · {sp:.2f}×" if sp else ""))


def write_json(report, path):
    Path(path).write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n", encoding="utf-8")


def speech_line_tok_s(report):
    """Human speech rates in tokens/s: 2.5 words/s × tokens per word (and 5.2 ch/s × tokens per CJK character),
    measured on edgepack's generated text (falls back to any engine's)."""
    from ..runtime.meter import CJK_CHARS_PER_S, WORDS_PER_S

    out = {}
    for unit, key, rate in (("words", "tokens_per_word", WORDS_PER_S), ("cjk_chars", "tokens_per_cjk_char", CJK_CHARS_PER_S)):
        rs = [r for r in report["results"] if r["speech_unit"] == unit and r[key]]
        ours = [r for r in rs if r["engine"] == "edgepack"] or rs
        if ours:
            out[unit] = (rate * statistics.median(r[key] for r in ours), statistics.median(r[key] for r in ours))
    return out


def plot(report, path):
    """Bar chart of median decode tok/s per engine (one bar per prompt, min–max whiskers) with the human
    speech rate converted to tokens/s drawn as horizontal lines."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    res = report["results"]
    engines = list(dict.fromkeys(f"{r['engine']}/{r['backend']}" for r in res))
    prompts = list(dict.fromkeys(r["prompt"] for r in res))
    width = 0.8 / max(1, len(prompts))
    fig, ax = plt.subplots(figsize=(max(8, 1.8 * len(engines)), 6), dpi=110)
    for j, p in enumerate(prompts):
        xs, ys, lo, hi = [], [], [], []
        for i, e in enumerate(engines):
            r = next((r for r in res if f"{r['engine']}/{r['backend']}" == e and r["prompt"] == p), None)
            if r is None:
                continue
            d = r["decode_tok_s"]
            xs.append(i + (j - (len(prompts) - 1) / 2) * width)
            ys.append(d["median"])
            lo.append(d["median"] - d["min"])
            hi.append(d["max"] - d["median"])
        ax.bar(xs, ys, width, yerr=[lo, hi], capsize=2, label=p)
    styles = {"words": ("--", "English speech: 2.5 words/s × %.2f tokens/word = %.1f tok/s"),
              "cjk_chars": (":", "Mandarin speech: 5.2 chars/s × %.2f tokens/char = %.1f tok/s")}
    for unit, (tok_s, per) in speech_line_tok_s(report).items():
        ls, fmt = styles[unit]
        ax.axhline(tok_s, color="black", ls=ls, lw=1.2, label=fmt % (per, tok_s) + " (tokens/unit measured on the generated text)")
    s = report["settings"]
    ax.set_xticks(range(len(engines)))
    ax.set_xticklabels(engines, fontsize=8)
    ax.set_ylabel("decode tokens/s (median, min–max)")
    ax.set_title(f"{s['model']}: decode speed, {s['threads']} threads, {s['runs']} runs, {report['machine']['cpu']}", fontsize=9)
    ax.legend(fontsize=7, loc="upper center", bbox_to_anchor=(0.5, -0.08), ncol=2, frameon=False)
    fig.tight_layout()
    fig.savefig(path, format="png")
    plt.close(fig)
