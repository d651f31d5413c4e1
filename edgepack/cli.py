"""The `edgepack` command: a thin layer over the library. Errors become one `edgepack: error:` line."""
import errno
import json
import sys

import click

from .errors import EdgepackError


class EdgepackGroup(click.Group):
    """Turns library errors (and click's usage errors) into one line on stderr and an exit code."""

    def main(self, args=None, **kw):
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
        except EdgepackError as e:
            _fail(str(e), e.exit_code, debug)
        except KeyboardInterrupt:
            _fail("interrupted", 130, debug)
        except OSError as e:
            if e.errno == errno.ENOSPC:
                _fail(f"no space left on device{' writing ' + e.filename if e.filename else ''}", 2, debug)
            _fail(f"{e.strerror or e}{': ' + str(e.filename) if e.filename else ''}", 1, debug)
        except Exception as e:  # a bug: say so, keep it to one line unless --debug
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


@click.group(cls=EdgepackGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--debug", is_flag=True, help="Show tracebacks on errors.")
@click.version_option(package_name="edgepack")
def main(debug):
    """Package MiniCPM for phones: int4 ONNX + GGUF, a streaming runtime, a benchmark."""


@main.command()
@click.argument("path")
@json_flag
def inspect(path, as_json):
    """Describe a checkpoint directory ("demo" for the demo model) or an artifact folder."""
    from .inspect import format_checkpoint, inspect_path

    info = inspect_path(path)
    if as_json:
        click.echo(json.dumps(info, indent=2))
    elif info.get("kind") == "checkpoint":
        click.echo(format_checkpoint(info))
    else:
        from .manifest import format_artifact

        click.echo(format_artifact(info))


def _not_yet(name, issue):
    def cmd(**_):
        raise EdgepackError(f"'edgepack {name}' is not implemented yet (issue {issue})")

    return cmd


main.command("export", context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
             help="Export a MiniCPM checkpoint to int4 ONNX and GGUF artifacts.")(_not_yet("export", 3))
main.command("run", context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
             help="Stream text from an artifact.")(_not_yet("run", 5))
main.command("chat", context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
             help="Chat interactively with an artifact.")(_not_yet("chat", 5))
main.command("bench", context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
             help="Benchmark an artifact against peer engines.")(_not_yet("bench", 6))
main.command("verify", context_settings={"ignore_unknown_options": True, "allow_extra_args": True},
             help="Recompute an artifact's fidelity report against the float reference.")(_not_yet("verify", 3))

from .android import android  # noqa: E402  (edgepack android push: sideloading, issue 8)

main.add_command(android)
