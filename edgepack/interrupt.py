"""Ctrl-C and SIGTERM: one KeyboardInterrupt in the main thread, never lost, never splitting a step in two.

The CLI calls install() before anything else, so both signals raise KeyboardInterrupt (exit 130, one
`edgepack: error: interrupted` line) from the first moment of every command, imports and loading included.

Two ways an interrupt went wrong before (issue 24):

- Lost. Python runs a signal's handler at the main thread's next bytecode. When that bytecode belongs to
  a callback that native code made (llama.cpp's log callback while a model loads, any ctypes callback, a
  `__del__`, a weakref callback), the KeyboardInterrupt is raised there and then discarded as
  "unraisable", and the command runs on to the end. install() watches sys.unraisablehook: a discarded
  KeyboardInterrupt is raised again in the main thread a moment later, until it lands in ordinary code.
- Turned into an error. Some libraries catch a KeyboardInterrupt raised inside their own Python calls and
  raise an error of their own instead; received() tells the CLI the error came from an interrupt.
- Half-made. A signal between creating a folder and registering it for removal, or between the two
  renames of `--force`, leaves a folder behind. critical() holds the signal until its block ends;
  scratch_dir() creates, removes and commits a temporary folder only inside such blocks, and whatever
  an interrupted cleanup missed, cleanup() (called by the CLI on its way out) removes.
"""
import shutil
import signal
import sys
import tempfile
import threading
import time
from contextlib import contextmanager
from pathlib import Path

SIGNALS = (signal.SIGINT, signal.SIGTERM)
REARM_S = 0.01  # a discarded interrupt is raised again this long after (lets the callback return first)

_received = 0  # the signal that came during this command, 0 if none (received(), forget()); SIGTERM stays
_depth = 0  # > 0 inside critical()
_held = None  # the signal that arrived inside critical(), raised when it ends
_lost = threading.Event()
_hooked = False
_wakeup_w = -1  # the write end of the signal wakeup pipe (_watch reads the other end)
_scratch = set()  # temporary folders not yet removed or committed
_armed = 0  # > 0 while installed (install(), or inside installed()): abort native calls, re-raise lost interrupts
_arm_lock = threading.Lock()


def _native(name):
    """edgepack.runtime.backend's abort_native / clear_abort, if the runtime is loaded (else no native call runs)."""
    mod = sys.modules.get("edgepack.runtime.backend")
    return getattr(mod, name, lambda: None)


def _watch(fd):
    """The wakeup fd's reader: Python writes each signal's number to it from its C-level handler, at once,
    even while the main thread is inside a native call that holds off the Python-level handler."""
    import os

    while True:
        try:
            data = os.read(fd, 64)
        except OSError:
            return
        if any(b in SIGNALS for b in data):
            with _arm_lock:  # only while installed: a signal a process sends itself later must not stop its runs
                if _armed:
                    _native("abort_native")()


def _on_signal(signum, frame):
    global _held, _received
    if _received != signal.SIGTERM:  # a re-raise of a lost SIGTERM arrives as SIGINT (_rearm): it stays SIGTERM
        _received = signum
    if _depth:
        _held = signum
        return
    raise KeyboardInterrupt


def received():
    """Whether a signal came since install() (or forget()): an error raised after it is its consequence.
    Some libraries turn a KeyboardInterrupt raised inside their own callbacks into an error of theirs
    (safetensors reading a tensor: "could not determine the shape of object type 'torch.storage.UntypedStorage'")."""
    return bool(_received)


def terminated():
    """Whether the signal was SIGTERM: a request to end the command, which even a handler that takes
    Ctrl-C as "stop this step" (chat stops a reply) must not swallow."""
    return _received == signal.SIGTERM


def forget():
    """The interrupt was handled (chat stopped a reply): later errors are errors again."""
    global _received
    _received = 0
    _native("clear_abort")()


def _main_thread():
    return threading.current_thread() is threading.main_thread()


def install():
    """SIGINT and SIGTERM raise KeyboardInterrupt in the main thread, and a discarded one is raised again;
    the moment one arrives, a native call of the runtime under way stops at its next step (_watch).
    Returns the handlers it replaced (and "wakeup_fd": the signal wakeup fd it replaced)."""
    global _hooked, _wakeup_w, _armed
    if not _main_thread():
        return {}
    forget()
    with _arm_lock:
        _armed += 1
    previous = {s: signal.signal(s, _on_signal) for s in SIGNALS}
    if _hooked:
        previous["wakeup_fd"] = signal.set_wakeup_fd(_wakeup_w, warn_on_full_buffer=False)
        return previous
    _hooked = True
    import os

    r, _wakeup_w = os.pipe()
    os.set_blocking(_wakeup_w, False)
    previous["wakeup_fd"] = signal.set_wakeup_fd(_wakeup_w, warn_on_full_buffer=False)
    threading.Thread(target=_watch, args=(r,), name="edgepack-abort", daemon=True).start()
    chained = sys.unraisablehook

    def hook(unraisable):
        if isinstance(unraisable.exc_value, KeyboardInterrupt) and _armed:
            _lost.set()  # quietly: the interrupt is not over, it is only postponed
        else:
            chained(unraisable)

    sys.unraisablehook = hook
    threading.Thread(target=_rearm, name="edgepack-interrupt", daemon=True).start()
    return previous


@contextmanager
def installed():
    """install() for the length of a block (a command run in-process, e.g. by a test, gets its handlers back)."""
    global _armed
    previous = install()
    try:
        yield
    finally:
        for s, h in previous.items():
            if s == "wakeup_fd":
                signal.set_wakeup_fd(h)
            else:
                signal.signal(s, h)
        if previous:
            with _arm_lock:  # disarmed and the abort flag down: the process's later native calls run again
                _armed -= 1
                if not _armed:
                    _native("clear_abort")()


def exit_now(code):
    """Leave at once, after the cleanup: flush and os._exit, skipping the interpreter's teardown of torch,
    onnxruntime and llama.cpp (seconds on a busy 2-core machine, after the interrupt was already handled)."""
    import os

    for f in (sys.stdout, sys.stderr):
        try:
            f.flush()
        except Exception:
            pass
    os._exit(code)


def _rearm():
    import _thread

    while True:
        _lost.wait()
        _lost.clear()
        time.sleep(REARM_S)
        if _armed:  # a block that ended meanwhile (installed()) has had its interrupt
            _thread.interrupt_main()  # runs the SIGINT handler in the main thread, as a real Ctrl-C would


@contextmanager
def critical():
    """A block no signal may cut: a signal inside it is held and raised (KeyboardInterrupt) when it ends."""
    global _depth, _held
    if not _main_thread():
        yield
        return
    previous = {}
    try:
        _depth += 1
        for s in SIGNALS:
            previous[s] = signal.signal(s, _on_signal)
        yield
    finally:
        _depth -= 1
        if not _depth:
            for s, h in previous.items():
                signal.signal(s, h)
            held, _held = _held, None
            if held is not None:
                raise KeyboardInterrupt


@contextmanager
def scratch_dir(parent, prefix):
    """A new temporary folder in `parent`, removed when the block fails or is interrupted, whenever that
    happens. Inside the block, commit(path, move) moves it into place (the moving is never cut in two)."""
    term = signal.getsignal(signal.SIGTERM) if _main_thread() else None
    if term == signal.SIG_DFL:  # a library caller without install(): SIGTERM cleans up too, meanwhile
        signal.signal(signal.SIGTERM, _on_signal)
    try:
        with critical():
            path = Path(tempfile.mkdtemp(prefix=prefix, dir=parent))
            _scratch.add(path)
        try:
            yield path
        finally:
            _remove(path)
    finally:
        if term == signal.SIG_DFL:
            signal.signal(signal.SIGTERM, term)


def commit(path, move):
    """Run move() (which takes `path` away, e.g. renames it into place) uninterrupted; the folder is then
    no longer scratch. A signal that came during move() is raised after it: the result stays complete."""
    with critical():
        move()
        _scratch.discard(path)


def _remove(path):
    with critical():
        if path in _scratch:
            shutil.rmtree(path, ignore_errors=True)
            _scratch.discard(path)


def cleanup():
    """Remove every scratch folder an interrupted cleanup left (the CLI calls this on its way out; a
    further Ctrl-C meanwhile does not stop it)."""
    while _scratch:
        try:
            for path in list(_scratch):
                _remove(path)
        except KeyboardInterrupt:
            continue
