"""`edgepack android push`: sideload an artifact (and optionally the demo APK) with adb.

The Android demo (android_demo/) looks for artifacts in its external files directory, one folder
per artifact; this module builds the adb commands that put one there, prints them shell-quoted,
and runs them (or only prints them with --dry-run).
"""
import json
import shlex
import subprocess
from pathlib import Path

import click

from .errors import BadInput

PACKAGE = "org.edgepack.demo"
DEVICE_DIR = f"/sdcard/Android/data/{PACKAGE}/files"
MANIFEST = "edgepack.json"
ACTIVITY = f"{PACKAGE}/.MainActivity"


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


def run_commands(commands, dry_run=False, echo=click.echo):
    """Print each command shell-quoted, then run it unless dry_run; stop at the first failure."""
    for cmd in commands:
        echo(shlex.join(cmd))
        if dry_run:
            continue
        try:
            result = subprocess.run(cmd)
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
