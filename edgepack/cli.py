"""The `edgepack` command: a thin layer over the library. Errors become one `edgepack: error:` line."""
import errno
import json
import sys

import click

from . import interrupt
from .errors import EdgepackError


class EdgepackGroup(click.Group):
    """Turns library errors (and click's usage errors) into one line on stderr and an exit code.
    Ctrl-C and SIGTERM are both "interrupted", exit 130 (edgepack.interrupt)."""

    def main(self, args=None, **kw):
        with interrupt.installed():
            try:
                self._main(args, **kw)
            except SystemExit as e:
                interrupt.cleanup()  # a temporary folder whose own cleanup a second Ctrl-C cut short
                if e.code == 130 and args is None:  # the real command line (not a test's CliRunner):
                    interrupt.exit_now(130)  # everything is cleaned up; skip tearing down torch & co.
                raise

    def _main(self, args=None, **kw):
        args = list(sys.argv[1:] if args is None else args)
        debug = "--debug" in args
        try:
            rv = super().main(args=args, standalone_mode=False, **kw)
            sys.exit(rv if isinstance(rv, int) else 0)
        except click.exceptions.Exit as e:
            sys.exit(e.exit_code)
        except click.Abort:
            _fail("interrupted", 130, debug)
        except click.ClickException as e:  # usage errors: bad option, missing argument
            _fail(e.format_message(), 2, debug)
        except KeyboardInterrupt:
            _fail("interrupted", 130, debug)
        except Exception as e:
            if interrupt.received():  # a library turned the KeyboardInterrupt into an error of its own
                _fail("interrupted", 130, debug)
            if isinstance(e, EdgepackError):
                _fail(str(e), e.exit_code, debug)
            if isinstance(e, OSError):
                if e.errno == errno.ENOSPC:
                    _fail(f"no space left on device{' writing ' + e.filename if e.filename else ''}", 2, debug)
                _fail(f"{e.strerror or e}{': ' + str(e.filename) if e.filename else ''}", 1, debug)
            # a bug: say so, keep it to one line unless --debug
            if "No space left on device" in str(e) or "os error 28" in str(e):  # from Rust/C++ writers
                _fail("no space left on device", 2, debug)
            _fail(f"internal error: {type(e).__name__}: {e}".splitlines()[0], 1, debug)


def _fail(message, code, debug):
    if debug:
        import traceback

        traceback.print_exc()
    click.echo(f"edgepack: error: {message}", err=True)
    sys.exit(code)


# Shared options, declared once.
json_flag = click.option("--json", "as_json", is_flag=True, help="Print one JSON object instead of text.")
threads_option = click.option("--threads", type=click.IntRange(1, 256), default=None, help="CPU threads (default: all cores).")
no_speculate_flag = click.option("--no-speculate", is_flag=True,
                                 help="Decode one token per forward (no prompt-lookup drafts; the text is the same).")


@click.group(cls=EdgepackGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks on errors.")
@click.version_option(package_name="edgepack")
def main(debug):
    """Package MiniCPM for phones: int4 ONNX + GGUF, a streaming runtime, a benchmark."""


@main.command()
@click.argument("path")
@json_flag
def inspect(path, as_json):
    """Describe a checkpoint (a directory, a Hugging Face id org/name, or "demo") or an artifact folder."""
    from .inspect import format_checkpoint, inspect_path

    info = inspect_path(path)
    if as_json:
        click.echo(json.dumps(info, indent=2))
    elif info.get("kind") == "checkpoint":
        click.echo(format_checkpoint(info))
    else:
        from .formats.manifest import format_artifact

        click.echo(format_artifact(info))


def _not_yet(name, issue):
    def cmd(**_):
        raise EdgepackError(f"'edgepack {name}' is not implemented yet (issue {issue})")

    return cmd


@main.command()
@click.option("--int4", "int4", is_flag=True, help="Quantize weights to 4 bits (the default).")
@click.option("--dtype", type=click.Choice(["int4", "fp32", "f16"]), default=None,
              help="Weight type; fp32 (and f16 for GGUF) are conformance anchors.")
@click.option("--model", default="demo", show_default=True, help='Checkpoint directory, Hugging Face id org/name, or "demo".')
@click.option("--format", "formats", default="onnx,gguf", show_default=True, help="Comma-separated: onnx, gguf.")
@click.option("--out", type=click.Path(), default=None, help="Artifact folder (default: ./NAME-DTYPE).")
@click.option("--block-size", type=int, default=32, show_default=True, help="int4 block size (ONNX).")
@click.option("--gguf-type", type=click.Choice(["q4_0", "q4_k_m", "q4_k_s", "q5_k_m", "q4_k_m-llamacpp", "f16", "f32"]),
              default=None, help="GGUF quantization type (default: the measured best int4 type); the K types are "
              "edgepack's calibrated codes in llama.cpp's type mix, q4_k_m-llamacpp llama.cpp's own quantizer.")
@click.option("--method", default=None, help="int4 method: rtn, asym, mse, awq, gptq, awq_gptq, gptq_sym, "
              "awq_gptq_sym, awq_gptq_sym_ao (act-order), awq_gptq_sym_ls (least-squares scales), awq_gptq_sym_seq, "
              "awq_gptq_sym_ft (float target), awq_gptq_sym_ao_ls, awq_gptq_sym_ao_ft, each optionally +emb8/+emb5 (default: the measured best, "
              "awq_gptq_sym_ao+emb8 for ONNX, +emb5 for GGUF q4_0, awq_gptq_sym for the K types; see edgepack/quant/).")
@click.option("--calibration-tokens", type=int, default=None,
              help="Calibration text tokens for a calibrated int4 method, a multiple of 512 (default: by model "
              "size, 8192 for the demo, 4096 for MiniCPM-2B, 2048 from 4B on; more fit better and take longer; "
              "see benchmarks/README.md, int4 method).")
@click.option("--fidelity-tokens", type=click.IntRange(0), default=2048, show_default=True,
              help="Evaluation tokens for the fidelity report (0 skips it).")
@click.option("--context", type=int, default=None,
              help="Context the artifact serves (default: the model's own; LongRoPE picks its factors by it).")
@click.option("--kv-dtype", type=click.Choice(["float16", "float32"]), default=None,
              help="ONNX KV cache type (default: float16 for int4, float32 for fp32; see edgepack/formats/onnx_writer.py).")
@click.option("--mmproj-type", type=click.Choice(["f16", "q8_0", "f32"]), default="f16", show_default=True,
              help="MiniCPM-V: the vision half's GGUF (mmproj) weights.")
@click.option("--vision-dtype", type=click.Choice(["fp16", "int8", "fp32"]), default=None,
              help="MiniCPM-V: vision.onnx's weights (default: fp16 for int4, fp32 for fp32; int8 halves the tower).")
@click.option("--target", type=click.Choice(["desktop", "phone"]), default="desktop", show_default=True,
              help="int4 ONNX: MatMulNBits' activation accuracy for this CPU class (phone: arm64's result matches "
              "the x86 report; see edgepack/export.py TARGETS).")
@click.option("--force", is_flag=True, help="Replace an existing output folder.")
@threads_option
def export(int4, dtype, model, formats, out, block_size, gguf_type, method, calibration_tokens, fidelity_tokens, context,
           kv_dtype, mmproj_type, vision_dtype, target, force, threads):
    """Export a MiniCPM checkpoint to int4 ONNX and GGUF artifacts."""
    from .export import export as run_export

    if int4 and dtype not in (None, "int4"):
        raise click.UsageError("--int4 and --dtype %s contradict each other" % dtype)
    with _progress() as progress:
        path = run_export(model=model, out=out, formats=[f.strip() for f in formats.split(",") if f.strip()],
                          dtype=dtype or "int4", block_size=block_size, gguf_type=gguf_type, threads=threads,
                          force=force, fidelity_tokens=fidelity_tokens, progress=progress, method=method,
                          context=context, kv_dtype=kv_dtype, mmproj_type=mmproj_type, vision_dtype=vision_dtype,
                          target=target, calibration_tokens=calibration_tokens)
    from .formats.manifest import format_artifact
    from .formats.manifest import inspect_artifact

    click.echo(format_artifact(inspect_artifact(path)), err=True)
    click.echo(f"wrote {path}")


class _progress:
    """One rich progress bar per stage, on stderr; the library only calls progress(stage, done, total).
    Transient and started lazily, so an early error stays the only line on stderr.

    EDGEPACK_PROGRESS=lines prints one plain `progress: STAGE DONE/TOTAL` line per call instead, for
    scripts and tests that act at a stage (tests/test_interrupt.py); with it, EDGEPACK_PAUSE_AT="STAGE
    DONE/TOTAL" waits at that call until a signal ends the command (a test interrupts there, not by luck)."""

    def __enter__(self):
        import os

        self.p, self.tasks = None, {}
        self.lines = os.environ.get("EDGEPACK_PROGRESS") == "lines"
        self.pause_at = os.environ.get("EDGEPACK_PAUSE_AT") if self.lines else None
        return self

    def __call__(self, stage, done, total):
        if self.lines:
            click.echo(f"progress: {stage} {done}/{total}", err=True)
            if self.pause_at == f"{stage} {done}/{total}":
                import threading

                threading.Event().wait()  # only a signal (KeyboardInterrupt) leaves this
            return
        if self.p is None:
            from rich.console import Console

            if not Console(stderr=True).is_terminal:  # bars only for a person watching
                self.p = False
        if self.p is False:
            return
        if self.p is None:
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

            self.p = Progress(TextColumn("{task.description:24s}"), BarColumn(), MofNCompleteColumn(),
                              TimeElapsedColumn(), console=Console(stderr=True), transient=True)
            self.p.start()
        if stage not in self.tasks:
            self.tasks[stage] = self.p.add_task(stage, total=total)
        self.p.update(self.tasks[stage], completed=done, total=total)

    def __exit__(self, *exc):
        if self.p:
            self.p.stop()


def _prefill_lines():
    """With EDGEPACK_PROGRESS=lines, a `progress: prefill START/TOTAL` line before each piece of a long
    prefill (run, chat, and verify's evaluation), so a test can interrupt one mid-way (tests/test_interrupt_commands.py)."""
    import os
    from contextlib import nullcontext

    if os.environ.get("EDGEPACK_PROGRESS") != "lines":
        return nullcontext()
    from .runtime.backend import prefill_progress

    return prefill_progress(lambda start, total: click.echo(f"progress: prefill {start}/{total}", err=True))


def _generation_options(f):
    """Sampling and loading options shared by run and chat, declared once."""
    for opt in reversed([
        click.option("--max-tokens", type=click.IntRange(1), default=256, show_default=True, help="Most new tokens per reply."),
        click.option("--temperature", type=float, default=0.0, show_default=True, help="0 = greedy."),
        click.option("--top-k", type=int, default=0, show_default=True, help="Sample from the K likeliest tokens (0 = all)."),
        click.option("--top-p", type=float, default=1.0, show_default=True, help="Nucleus sampling mass (1 = off)."),
        click.option("--repetition-penalty", type=float, default=1.0, show_default=True, help="> 1 discourages repeats (1 = off)."),
        click.option("--seed", type=int, default=None, help="Make sampling reproducible."),
        click.option("--stop", multiple=True, help="Stop before this text (repeatable)."),
        click.option("--backend", type=click.Choice(["onnx", "gguf"]), default=None, help="Default: the manifest's first artifact."),
        threads_option,
        no_speculate_flag,
    ]):
        f = opt(f)
    return f


def _sampling(kw):
    return dict(max_new_tokens=kw["max_tokens"], temperature=kw["temperature"], top_k=kw["top_k"], top_p=kw["top_p"],
                repetition_penalty=kw["repetition_penalty"], seed=kw["seed"], stop=list(kw["stop"]),
                speculate=not kw["no_speculate"])


def _stream(model, out, err, thinking="show", **gen):
    """Print each piece as it comes (flushed), a live meter on stderr; return the Stats.
    thinking: how a <think>…</think> block is shown (edgepack.runtime.thinking)."""
    from .runtime.meter import LiveMeter
    from .runtime.thinking import ThinkingView

    live, view = LiveMeter(err), ThinkingView(thinking)
    pieces = model.generate(**gen)
    try:
        for piece in pieces:
            out.write(view.feed(piece))
            out.flush()
            live.update(model.stats)
    finally:
        pieces.close()  # a Ctrl-C between pieces still leaves model.stats complete
        out.write(view.flush())
        live.clear()
    return model.stats


def _say_image(enc, path, err):
    """One stderr line: how the image was cut and what was done to the file."""
    grid = f"{enc.grid[0]}x{enc.grid[1]} slices + overview" if enc.grid else "overview only"
    notes = f" ({'; '.join(enc.notes)})" if enc.notes else ""
    click.echo(f"{path}: {grid}, {enc.tokens} image tokens, encoded in {enc.encode_ms:.0f} ms{notes}", err=True)


def _thinking_mode(mode, out):
    """auto: a thinking block dimmed on a terminal, plain text when piped."""
    return ("dim" if out.isatty() else "show") if mode == "auto" else mode


thinking_option = click.option(
    "--thinking", type=click.Choice(["auto", "dim", "show", "hide"]), default="auto", show_default=True,
    help="How a thinking model's <think>…</think> block is shown (auto: dimmed on a terminal).")


@main.command()
@click.argument("artifact", type=click.Path())
@click.option("--prompt", "-p", required=True, help="The user's message (the chat template is applied).")
@click.option("--image", "images", multiple=True, type=click.Path(dir_okay=False),
              help="An image the message is about (MiniCPM-V artifacts; repeatable).")
@_generation_options
@thinking_option
@json_flag
def run(artifact, prompt, images, as_json, thinking, **kw):
    """Stream text from an artifact."""
    from .runtime import load

    out, err = click.get_text_stream("stdout"), click.get_text_stream("stderr")
    with _prefill_lines(), load(artifact, backend=kw["backend"], threads=kw["threads"]) as model:
        if images:  # read and encode now: a bad image is one error line before any text
            for path in images:
                _say_image(model.encode_image(path), path, err)
        if as_json:
            stats = model.complete(prompt, images=list(images), **_sampling(kw))
            click.echo(json.dumps(stats.summary(), ensure_ascii=False))
            return
        stats = _stream(model, out, err, thinking=_thinking_mode(thinking, out), prompt=prompt, images=list(images),
                        **_sampling(kw))
    out.write("\n")
    click.echo(stats.format(), err=True)


@main.command()
@click.argument("artifact", type=click.Path())
@click.option("--system", default=None, help="A system message to start the conversation with.")
@_generation_options
@thinking_option
def chat(artifact, system, thinking, **kw):
    """Chat interactively with an artifact (/image PATH attaches an image to the next message; /exit or end of
    input quits; Ctrl-C stops a reply)."""
    from .runtime import load

    out, err = click.get_text_stream("stdout"), click.get_text_stream("stderr")
    inp = click.get_text_stream("stdin")
    interactive = inp.isatty()
    from .runtime.vision import MARK, user_content

    history = [{"role": "system", "content": system}] if system else []
    images, pending = [], []  # images in the history (in order), images for the next message
    with _prefill_lines(), load(artifact, backend=kw["backend"], threads=kw["threads"]) as model:
        if interactive:
            click.echo(f"chatting with {artifact} ({model.name}); /exit or Ctrl-D quits, Ctrl-C stops a reply", err=True)
        while True:
            if interactive:
                err.write(">>> ")
                err.flush()
            try:
                line = inp.readline()
            except KeyboardInterrupt:
                if interrupt.terminated():  # SIGTERM ends the command (exit 130), Ctrl-C only the chat
                    raise
                break
            if not line or line.strip() in ("/exit", "/quit"):
                break
            if not line.strip():
                continue
            if line.startswith("/image"):  # attach an image to the next message
                path = line[len("/image"):].strip()
                try:
                    _say_image(model.encode_image(path), path, err)
                    pending.append(path)
                except EdgepackError as e:
                    click.echo(f"edgepack: error: {e}", err=True)
                continue
            history.append({"role": "user", "content": user_content(line.rstrip("\n"), len(pending)) if pending
                            else line.rstrip("\n")})
            images, pending = images + pending, []
            while len(model.prompt_ids(messages=history, images=images)) >= model.backend.n_ctx and len(history) > 2:
                first = history[1 if system else 0: 3 if system else 2]
                images = images[sum(m["content"].count(MARK) for m in first):]
                del history[1 if system else 0: 3 if system else 2]  # forget the oldest exchange
            try:
                stats = _stream(model, out, err, thinking=_thinking_mode(thinking, out), messages=history, images=images,
                                **_sampling(kw))
            except KeyboardInterrupt:
                if interrupt.terminated():  # SIGTERM ends the command; Ctrl-C only stops the reply
                    raise
                interrupt.forget()  # handled: the next error is an error again
                stats = model.stats
                err.write("\n[reply stopped]")
            except EdgepackError as e:  # e.g. one message longer than the context: say so, keep chatting
                history.pop()
                click.echo(f"edgepack: error: {e}", err=True)
                continue
            history.append({"role": "assistant", "content": stats.text if stats else ""})
            out.write("\n")
            out.flush()
            click.echo(stats.format() if stats else "", err=True)


@main.command()
@click.argument("artifact", required=False, type=click.Path())
@click.option("--device", default="cpu", show_default=True, help="Where to run; only cpu is supported.")
@threads_option
@click.option("--runs", type=click.IntRange(1), default=3, show_default=True, help="Timed runs per engine and prompt (after 1 warm-up).")
@click.option("--tokens", "new_tokens", type=click.IntRange(2), default=64, show_default=True, help="New tokens per run (tg).")
@click.option("--ctx", "n_ctx", type=click.IntRange(32), default=1024, show_default=True,
              help="Context for every engine; long prompts are cut to fit it with --tokens.")
@click.option("--prompts", default=None, help="Comma-separated subset of en-short,en-long,zh-short,zh-long.")
@click.option("--engines", default=None, help="Comma-separated subset: edgepack, onnxruntime-genai, llama.cpp, torch-reference.")
@click.option("--no-reference", is_flag=True, help="Skip the fp32 torch reference (it needs ~4 bytes per parameter).")
@click.option("--json", "json_file", type=click.Path(dir_okay=False), default=None, help="Write every figure and the machine to FILE.")
@click.option("--plot", "plot_file", type=click.Path(dir_okay=False), default=None, help="Write a PNG of decode speed per engine.")
@no_speculate_flag
def bench(artifact, device, threads, runs, new_tokens, n_ctx, prompts, engines, no_reference, json_file, plot_file,
          no_speculate):
    """Benchmark an artifact (default: the demo model's, exported if missing) against peer engines."""
    from rich.console import Console

    from .bench import harness as lib
    from .bench import report
    from .export import demo_artifact

    err = Console(stderr=True)
    log = lambda msg: err.print(msg, style="dim", highlight=False)  # noqa: E731
    split = lambda s: [x.strip() for x in s.split(",") if x.strip()] if s else None  # noqa: E731
    with err.status("benchmark starting") as status:
        def progress(engine, prompt, k, n):
            warm = " (warm-up, not recorded)" if k == 1 else ""
            status.update(f"{engine} · {prompt} · run {k} of {n}{warm}")
            err.print(f"{engine} · {prompt} · run {k} of {n}{warm}", style="dim", highlight=False)

        rep = lib.bench(artifact or (lambda: demo_artifact(threads, log)), device=device, threads=threads, runs=runs, new_tokens=new_tokens, n_ctx=n_ctx,
                        prompts=split(prompts), engines=split(engines), reference=not no_reference,
                        speculate=not no_speculate,
                        progress=progress, log=log)
    report.print_table(rep)
    if json_file:
        with interrupt.critical():  # the whole file or none (a signal meanwhile is raised after it)
            report.write_json(rep, json_file)
        err.print(f"wrote {json_file}")
    if plot_file:
        report.plot(rep, plot_file)
        err.print(f"wrote {plot_file}")


@main.command()
@click.argument("artifact", type=click.Path())
@click.option("--model", default=None, help="Source checkpoint, directory or Hugging Face id (default: the one recorded in the manifest).")
@click.option("--backend", type=click.Choice(["onnx", "gguf"]), default=None, help="Verify one format only.")
@click.option("--max-ppl-increase", type=float, default=None, help="Fail if perplexity rises more than PCT %.")
@click.option("--tokens", type=click.IntRange(2), default=None, help="Evaluation tokens (default: as at export).")
@threads_option
@json_flag
def verify(artifact, model, backend, max_ppl_increase, tokens, threads, as_json):
    """Recompute an artifact's fidelity report against the float reference."""
    from .verify import verify as run_verify

    with _progress() as progress, _prefill_lines():
        report = run_verify(artifact, model=model, fmt=backend, tokens=tokens, threads=threads, progress=progress)
    if as_json:
        click.echo(json.dumps(report, indent=2))
    for r in report["artifacts"]:
        f = r["fidelity"]
        if not as_json:
            click.echo(f"{r['format']:5s} ppl {f['ppl']:.3f} vs float {f['float_ppl']:.3f} ({f['ppl_increase_pct']:+.2f}%), "
                       f"top-1 {100 * f['top1_agreement']:.1f}%, KL {f['mean_kl']:.4f} on {f['tokens']} tokens")
    worst = max(r["fidelity"]["ppl_increase_pct"] for r in report["artifacts"])
    if max_ppl_increase is not None and worst > max_ppl_increase:
        from .errors import CheckFailed

        raise CheckFailed(f"{artifact}: perplexity increase {worst:+.2f}% exceeds --max-ppl-increase {max_ppl_increase}%")

@main.command("check-arm")
@click.argument("artifact", type=click.Path())
@click.option("--model", default=None, help="Source checkpoint (default: the one recorded in the manifest).")
@click.option("--cpu", type=click.Choice(["phone", "max", "a76", "a53"]), default="phone", show_default=True,
              help="Emulated core: phone = dotprod+i8mm+fp16+SVE2/128, no SME; max = qemu's default (adds SME); "
                   "a76 = dotprod+fp16; a53 = plain NEON.")
@click.option("--tokens", type=click.IntRange(2), default=None, help="Evaluation tokens (default: the manifest's).")
@click.option("--threads", type=click.IntRange(1, 64), default=2, show_default=True, help="onnxruntime threads on each side.")
@click.option("--format", "fmt", type=click.Choice(["onnx", "gguf"]), default="onnx", show_default=True,
              help="Which artifact: the ONNX on onnxruntime's arm64 kernels, or the GGUF on llama.cpp's arm64 build.")
@click.option("--record", is_flag=True, help="Add the arm64 figures to edgepack.json (fidelity_arm64 in the entry).")
@json_flag
def check_arm(artifact, model, cpu, tokens, threads, fmt, record, as_json):
    """Run the ONNX artifact on onnxruntime's arm64 kernels (or the GGUF on llama.cpp's) under qemu; compare with x86.

    Builds and caches an arm64 Debian root the first time (~/.cache/edgepack/arm64-root; debootstrap
    and qemu-user-static, as root). Prints no speed: emulated time says nothing about a phone.
    Exit status 3 when arm64 leaves the bounds."""
    from .check_arm import check_arm as run, format_report
    from .errors import CheckFailed

    log = lambda msg: click.echo(msg, err=True)  # noqa: E731
    report = run(artifact, model=model, cpu=cpu, tokens=tokens, threads=threads, log=log, fmt=fmt)
    click.echo(json.dumps(report, indent=2) if as_json else format_report(report))
    if record:
        from .check_arm import record as record_arm

        record_arm(artifact, report)
        log(f"recorded fidelity_arm64 in {artifact}/edgepack.json")
    if not report["ok"]:
        raise CheckFailed(f"{artifact}: arm64 left the bounds: {report['failures'][0]}")



from .android import android  # noqa: E402  (edgepack android push: sideloading, issue 8)

main.add_command(android)
