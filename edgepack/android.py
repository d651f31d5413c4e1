"""`edgepack android push` and `edgepack android bench`: sideload an artifact (and optionally the demo APK)
with adb, and time it on the phone.

The Android demo (android_demo/) looks for artifacts in its external files directory, one folder
per artifact; this module builds the adb commands that put one there, prints them shell-quoted,
and runs them (or only prints them with --dry-run). `bench` then starts the app with a bench intent
(core/BenchRequest.java): the app loads the newest artifact, answers one fixed prompt, and writes
bench/RUN.json (core/BenchReport.java: TTFT and decode tok/s from its own clock, × speech, peak memory
from /proc/self/status), which is pulled back and checked against BENCH_KEYS.
"""
import json
import re
import shlex
import subprocess
import time
from pathlib import Path

import click

from .errors import BadInput

PACKAGE = "org.edgepack.demo"
DEVICE_DIR = f"/sdcard/Android/data/{PACKAGE}/files"
MANIFEST = "edgepack.json"
ACTIVITY = f"{PACKAGE}/.MainActivity"
# BenchRequest.EXTRA_RUN, EXTRA_TOKENS, EXTRA_ARTIFACT
BENCH_EXTRA, BENCH_TOKENS_EXTRA, BENCH_ARTIFACT_EXTRA = f"{PACKAGE}.BENCH", f"{PACKAGE}.BENCH_TOKENS", f"{PACKAGE}.BENCH_ARTIFACT"
BENCH_IMAGE_EXTRA = f"{PACKAGE}.BENCH_IMAGE"  # BenchRequest.EXTRA_IMAGE
PLAIN_NAME = r"[A-Za-z0-9][A-Za-z0-9._-]{0,99}"  # BenchRequest.RUN_ID: run ids and artifact folder names
BENCH_PROMPT = "Write a short story about a lighthouse keeper who finds a message in a bottle."  # BenchRequest.PROMPT
BENCH_IMAGE_PROMPT = "Describe this picture in detail."  # BenchRequest.IMAGE_PROMPT
BENCH_SCHEMA = 1
BENCH_KEYS = ("schema", "run", "prompt", "prompt_tokens", "max_new_tokens", "tokens", "ttft_s", "decode_tok_s",
              "decode_s", "speech_ratio", "speech_units_per_s", "speech_unit", "peak_rss_bytes", "rss_bytes", "load_s",
              "threads", "artifact", "model", "device", "engine", "text", "error",
              "image", "slices", "encode_ms", "encode_ms_per_slice", "ttft_after_encode_s")  # BenchReport.KEYS
# What Android's BitmapFactory decodes on every phone from API 24 (HEIF only from API 28, so not listed).
PHONE_IMAGE_FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP")


def device_path(artifact):
    """Where the artifact lands on the phone: DEVICE_DIR/<artifact folder name>."""
    return f"{DEVICE_DIR}/{Path(artifact).resolve().name}"


def adb_commands(artifact, apk=None, serial=None, start=False):
    """The adb argument lists that install the APK (if given), push the artifact folder and, with
    start, (re)start the app so that it checks and loads what was pushed.

    The folder is pushed into DEVICE_DIR, which adb turns into DEVICE_DIR/<folder name>; pushing
    again overwrites in place.
    """
    root = Path(artifact).resolve()
    _check_artifact(root)
    adb = ["adb"] + (["-s", serial] if serial else [])
    commands = []
    if apk is not None:
        apk = Path(apk)
        if not apk.is_file():
            raise BadInput(f"{apk}: no such APK")
        commands.append(adb + ["install", "-r", str(apk.resolve())])
    commands.append(adb + ["shell", "mkdir", "-p", DEVICE_DIR])
    commands.append(adb + ["push", str(root), DEVICE_DIR + "/"])
    if start:  # -S: stop a running instance first, so the checks run on the new files
        commands.append(adb + ["shell", "am", "start", "-S", "-n", ACTIVITY])
    return commands


def bench_commands(artifact, run_id, apk=None, serial=None, tokens=128, out=None, image=None):
    """push's commands, then: remove an old result, start the app with the bench intent (-S: a fresh
    process, so the peak memory is this run's; -W: wait until it is up), wait until the app has written
    bench/RUN.json (it writes it through a rename, also when the run fails), pull it to `out`. The intent
    names the artifact folder, so the app loads the one just pushed whatever else the phone holds.
    image: a picture file for a MiniCPM-V artifact, pushed beside the artifact folder as RUN<suffix> and
    named by the intent (check_bench_image has checked both)."""
    if not re.fullmatch(PLAIN_NAME, run_id) or run_id.endswith(".tmp"):
        raise BadInput(f"bench run id {run_id!r}: letters, digits, '.', '_' or '-' only")
    name = Path(artifact).resolve().name
    if not re.fullmatch(PLAIN_NAME, name):
        raise BadInput(f"{artifact}: for a bench the folder name must be letters, digits, '.', '_' or '-' "
                       "(it travels in an intent through adb's shell); rename or copy it")
    adb = ["adb"] + (["-s", serial] if serial else [])
    result = f"{DEVICE_DIR}/bench/{run_id}.json"
    picture, extra = [], []
    if image is not None:
        on_phone = device_image_name(run_id, image)
        picture = [adb + ["push", str(Path(image).resolve()), f"{DEVICE_DIR}/{on_phone}"]]
        extra = ["--es", BENCH_IMAGE_EXTRA, on_phone]
    return adb_commands(artifact, apk=apk, serial=serial) + picture + [
        adb + ["shell", "rm", "-f", result],
        adb + ["shell", "am", "start", "-S", "-W", "-n", ACTIVITY, "--es", BENCH_EXTRA, run_id,
               "--ei", BENCH_TOKENS_EXTRA, str(int(tokens)), "--es", BENCH_ARTIFACT_EXTRA, name] + extra,
        adb + ["shell", f"until [ -f {result} ]; do sleep 1; done"],
        adb + ["pull", result, str(out or f"{run_id}.json")],
    ]


def device_image_name(run_id, image):
    """The picture's file name on the phone: the run id and the file's lower-case suffix (a plain name that
    survives adb's shell, and one per run, so a result always goes with the picture it names)."""
    suffix = Path(image).suffix.lower()
    return run_id + (suffix if re.fullmatch(r"\.[a-z0-9]{1,5}", suffix) else ".img")


def check_bench_image(artifact, image):
    """Before anything is pushed: the artifact is a MiniCPM-V one with its vision half, and the file is a
    picture within edgepack's limits (edgepack.model.image.read_image, the app's ImageLimits) in a format
    every phone's BitmapFactory decodes."""
    from PIL import Image

    from .model.image import read_image

    root = Path(artifact).resolve()
    _check_artifact(root)
    data = json.loads((root / MANIFEST).read_text(encoding="utf-8"))
    entry = next(e for e in data["artifacts"] if e.get("format") == "onnx")
    vision = ((data.get("model") or {}).get("config") or {}).get("vision")
    if not vision or not entry.get("multimodal"):
        raise BadInput(f"{root} is a text-only artifact: --image needs a MiniCPM-V artifact "
                       "(edgepack export of MiniCPM-V 4.0 or 2.0 with --format onnx)")
    files = {Path(f.get("path", "")).name for f in entry.get("files") or []}
    missing = [f for f in _multimodal_files(entry["multimodal"]) if f not in files]
    if missing:
        raise BadInput(f"{root}: the MiniCPM-V artifact lists no {', '.join(missing)}; export it again "
                       "(edgepack export --int4 --format onnx) with its vision half")
    read_image(image)  # one clear line for a file that is no picture, too big, too small or corrupt
    with Image.open(image) as im:
        fmt = im.format
    if fmt not in PHONE_IMAGE_FORMATS:
        raise BadInput(f"{image}: a {fmt} picture, which Android's BitmapFactory does not decode on every phone; "
                       f"convert it to JPEG or PNG")


def _multimodal_files(mm):
    """The graph files the manifest's multimodal entry names (vision.onnx, embedding.onnx, decoder_embeds.onnx)."""
    vision = mm.get("vision")
    names = [vision.get("path") if isinstance(vision, dict) else vision, mm.get("embedding"), mm.get("decoder")]
    return [n for n in names if isinstance(n, str) and n]


def check_bench(data, source="bench result", image=False):
    """The pulled report, checked: every BENCH_KEYS key, schema BENCH_SCHEMA, and either an error or figures
    (with image: also the slices, the encode ms per slice and the TTFT after the encode)."""
    if not isinstance(data, dict):
        raise BadInput(f"{source}: not a JSON object")
    missing = [k for k in BENCH_KEYS if k not in data]
    if missing:
        raise BadInput(f"{source}: missing {', '.join(missing)} (an app older than this edgepack?)")
    if data["schema"] != BENCH_SCHEMA:
        raise BadInput(f"{source}: schema {data['schema']!r}, this edgepack reads {BENCH_SCHEMA}")
    if data["error"] is not None:
        raise BadInput(f"{source}: the app could not run the benchmark: {data['error']}")
    numbers = ["ttft_s", "decode_tok_s", "speech_ratio", "load_s"]
    counts = ["tokens", "prompt_tokens", "peak_rss_bytes", "threads"]
    if image:
        if data["image"] is None:
            raise BadInput(f"{source}: the app answered without the picture (an app older than this edgepack?)")
        numbers += ["encode_ms", "encode_ms_per_slice", "ttft_after_encode_s"]
        counts.append("slices")
    for k in numbers:
        if not isinstance(data[k], (int, float)) or data[k] < 0:
            raise BadInput(f"{source}: {k} is {data[k]!r}, not a number >= 0")
    for k in counts:
        if not isinstance(data[k], int) or data[k] <= 0:
            raise BadInput(f"{source}: {k} is {data[k]!r}, not a positive integer")
    return data


def format_bench(d):
    """One README row: device, model, TTFT, decode tok/s, × speech, peak RSS (a picture run: then its slices,
    encode ms per slice and the TTFT after the encode)."""
    dev = d.get("device") or {}
    row = (f"| {dev.get('manufacturer', '')} {dev.get('model', '?')} ({dev.get('abi', '?')}, {d['threads']} threads) "
           f"| {d['model'] or d['artifact']} | {d['ttft_s']:.2f} s | {d['decode_tok_s']:.1f} tok/s "
           f"| {d['speech_ratio']:.1f}x | {d['peak_rss_bytes'] / 2**20:.0f} MiB | {d['tokens']} tokens |")
    if d.get("image") is not None and d.get("slices"):
        row += (f" {d['slices']} slices | {d['encode_ms_per_slice']:.0f} ms/slice "
                f"| TTFT after encode {d['ttft_after_encode_s']:.2f} s |")
    return row


def _check_artifact(root):
    """An artifact folder with a readable manifest and an onnx entry (the only format the app runs)."""
    manifest = root / MANIFEST
    if not root.is_dir():
        raise BadInput(f"{root}: no such artifact folder")
    if not manifest.is_file():
        raise BadInput(f"{root} has no {MANIFEST}: not an edgepack artifact (make one with edgepack export)")
    try:
        data = json.loads(manifest.read_text(encoding="utf-8"))
        formats = [entry["format"] for entry in data["artifacts"]]
    except (ValueError, KeyError, TypeError) as e:
        raise BadInput(f"{manifest}: not a valid manifest ({type(e).__name__}: {e})") from None
    if "onnx" not in formats:
        raise BadInput(f"{root} has no onnx artifact (it has: {', '.join(formats) or 'none'}); "
                       "the Android app runs ONNX: export with --format onnx")


def run_commands(commands, dry_run=False, echo=click.echo, timeouts=None):
    """Print each command shell-quoted, then run it unless dry_run; stop at the first failure.
    timeouts: {index: seconds} for commands that may wait (the bench's wait for its result)."""
    for i, cmd in enumerate(commands):
        echo(shlex.join(cmd))
        if dry_run:
            continue
        limit = (timeouts or {}).get(i)
        try:
            result = subprocess.run(cmd, timeout=limit)
        except subprocess.TimeoutExpired:
            raise BadInput(f"no result after {limit} s from '{shlex.join(cmd)}'; the app's log: "
                           "adb logcat -s edgepack") from None
        except FileNotFoundError:
            raise BadInput("adb not found on PATH: install Android platform-tools "
                           "(Debian: apt-get install adb)") from None
        if result.returncode != 0:
            raise BadInput(f"'{shlex.join(cmd)}' failed with exit code {result.returncode}")


@click.group()
def android():
    """Sideload artifacts to the Android demo app (android_demo/)."""


@android.command()
@click.argument("artifact", type=click.Path(file_okay=False, path_type=Path))
@click.option("--install", "apk", type=click.Path(dir_okay=False, path_type=Path),
              help="Install (or update) this APK first.")
@click.option("--serial", "-s", help="Device serial, as adb devices lists it.")
@click.option("--start", is_flag=True, help="Then (re)start the app on the phone.")
@click.option("--dry-run", is_flag=True, help="Only print the adb commands.")
def push(artifact, apk, serial, start, dry_run):
    """Push ARTIFACT into the demo app's files directory, printing each adb command."""
    run_commands(adb_commands(artifact, apk=apk, serial=serial, start=start), dry_run=dry_run)
    if not dry_run:
        click.echo(f"pushed to {device_path(artifact)}; open 'edgepack demo' on the phone", err=True)


@android.command()
@click.argument("artifact", type=click.Path(file_okay=False, path_type=Path))
@click.option("--install", "apk", type=click.Path(dir_okay=False, path_type=Path),
              help="Install (or update) this APK first.")
@click.option("--serial", "-s", help="Device serial, as adb devices lists it.")
@click.option("--tokens", type=click.IntRange(1, 2048), default=128, show_default=True, help="New tokens to generate.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where the pulled JSON goes (default: RUN.json here).")
@click.option("--timeout", type=click.IntRange(1), default=900, show_default=True,
              help="Seconds to wait for the phone's result (sha256 checks, load, answer).")
@click.option("--image", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Ask about this picture (a MiniCPM-V artifact): adds slices, encode ms per slice, TTFT after it.")
@click.option("--dry-run", is_flag=True, help="Only print the adb commands.")
def bench(artifact, apk, serial, tokens, out, timeout, image, dry_run):
    """Push ARTIFACT, answer one fixed prompt in the app, pull back its figures (JSON): TTFT, decode tok/s,
    × speech, peak memory, from the app's own clock and /proc/self/status."""
    run_id = f"{Path(artifact).resolve().name}-{time.strftime('%Y%m%dT%H%M%S')}"
    run_id = re.sub(r"[^A-Za-z0-9._-]", "_", run_id).lstrip("._-")[-94:] or "bench"  # room for the picture's suffix
    out = out or Path(f"{run_id}.json")
    if image is not None:
        check_bench_image(artifact, image)
    commands = bench_commands(artifact, run_id, apk=apk, serial=serial, tokens=tokens, out=out, image=image)
    run_commands(commands, dry_run=dry_run, timeouts={len(commands) - 2: timeout})
    if dry_run:
        return
    try:
        data = json.loads(Path(out).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise BadInput(f"{out}: cannot read the pulled result ({e})") from None
    click.echo(format_bench(check_bench(data, str(out), image=image is not None)))
    click.echo(f"wrote {out}", err=True)
