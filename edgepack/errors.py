"""Typed errors. The library raises these; the CLI turns them into one `edgepack: error:` line.

BadInput (exit 2) is the user's file, flag or environment; EdgepackError subclasses that are not
BadInput are internal failures (exit 1).
"""


class EdgepackError(Exception):
    """Base class; exit code 2 unless a subclass says otherwise."""

    exit_code = 2


class BadInput(EdgepackError):
    """A missing, corrupt or inconsistent file, or an invalid option."""


class ConfigError(BadInput):
    """config.json is missing a field, has a wrong type, or is inconsistent."""

    def __init__(self, path, field, problem):
        self.path, self.field = str(path), field
        super().__init__(f"{path}: field '{field}' {problem}")


class NotSupported(BadInput):
    """A valid checkpoint feature edgepack does not implement (rather than producing a wrong model)."""


class IntegrityError(BadInput):
    """A file does not match the sha256 or structure its manifest or header promises."""


class InternalError(EdgepackError):
    exit_code = 1


class CheckFailed(EdgepackError):
    """A check the user asked for did not pass (e.g. verify --max-ppl-increase)."""

    exit_code = 3
