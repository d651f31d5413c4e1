"""Back a loaded model's weights with 2 MB pages (Linux transparent huge pages).

Decode reads every weight once per token. onnxruntime copies the int4 weights into its own prepacked
buffers with plain malloc, and where THP is in "madvise" mode (the usual default, and this machine's)
Linux backs those buffers with 4 KB pages: ~0.5 M pages for the MiniCPM-2B shape, far past the TLB,
so every token pays page walks. After the session is built we ask for huge pages on the anonymous
memory its creation mapped with MADV_COLLAPSE (Linux 6.1+), which moves each 2 MB range into one huge
page in place. MADV_HUGEPAGE is deliberately not set: it would make later faults in those ranges take
whole 2 MB pages, growing RSS once the weights are freed and the memory reused.

Measured on the 2B shape, 2 threads, this 2-core machine, one run, both load orders: OnnxBackend
decoded at 8.56 tok/s with the weights collapsed and 7.73 on 4 KB pages, onnxruntime-genai at 7.89;
collapsing the 2.1 GB took 3.2 and 6.7 s (`python benchmarks/bench_runtime.py --onnx DIR --gguf FILE
--engines runtime-onnx,runtime-onnx-4k,ortgenai,llama.cpp`, results/bench_runtime.json).

The collapse runs in a daemon thread, one 4 MB chunk at a time, and only while its owner says it is
idle (OnnxBackend: no forward for 0.2 s): concurrent with a generation it slowed that generation down
(benchmarks/README.md, decision log). close() stops it after the chunk in flight. Only 2 MB ranges that
are fully resident are collapsed (MADV_COLLAPSE fills holes, which would grow RSS). Where this is not
supported (not Linux, THP "never", a kernel before 6.1) madvise fails and nothing changes. Memory
mapped before the snapshot (another model in the same process) is never touched, so a model whose
buffers reuse heap memory freed by an earlier one gets that part left on 4 KB pages (large weight
buffers are fresh mappings from malloc, so this is mostly small models).
"""
import ctypes
import errno
import os
import sys
import threading
import time

HUGE = 2 << 20
PAGE = os.sysconf("SC_PAGE_SIZE") if hasattr(os, "sysconf") else 4096
MADV_COLLAPSE = 25
LOW_BIT = bytes(i & 1 for i in range(256))
CHUNK = 4 << 20  # per madvise call (0.7-3 ms per 2 MB here): the most a forward or close() waits for
IDLE_POLL_S = 0.05


def supported():
    """True on Linux with THP not set to "never" (an administrator's "never" is respected)."""
    if not sys.platform.startswith("linux"):
        return False
    try:
        with open("/sys/kernel/mm/transparent_hugepage/enabled") as f:
            return "[never]" not in f.read()
    except OSError:
        return False


def anon_ranges():
    """[(start, end)] of this process's private writable anonymous mappings (malloc's and the heap)."""
    out = []
    try:
        with open("/proc/self/maps") as f:
            for line in f:
                p = line.split()
                if p[1].startswith("rw") and p[1].endswith("p") and (len(p) == 5 or p[5] == "[heap]"):
                    a, b = p[0].split("-")
                    out.append((int(a, 16), int(b, 16)))
    except OSError:
        pass
    return out


def subtract(after, before):
    """The parts of the ranges in `after` that no range in `before` covers (both lists of (start, end))."""
    before = sorted(before)
    out = []
    for a, b in sorted(after):
        for c, d in before:
            if d <= a or c >= b:
                continue
            if c > a:
                out.append((a, c))
            a = max(a, d)
            if a >= b:
                break
        if a < b:
            out.append((a, b))
    return out


def huge_runs(ranges, resident):
    """2 MB-aligned runs inside `ranges` whose every page is resident (resident(a, n) -> bool)."""
    runs = []
    for a, b in ranges:
        a, b = (a + HUGE - 1) & ~(HUGE - 1), b & ~(HUGE - 1)
        start = None
        for x in range(a, b, HUGE):
            if resident(x, HUGE):
                start = x if start is None else start
            elif start is not None:
                runs.append((start, x))
                start = None
        if start is not None:
            runs.append((start, b))
    return runs


class Collapser:
    """Collapse the anonymous memory mapped since `before` (a snapshot from anon_ranges()) into huge
    pages, in a daemon thread, one CHUNK at a time and only while `idle()` is True (None: the owner is
    gone, stop). `.bytes` counts what
    the kernel accepted; `.seconds` the time from start to the last chunk (waits for idleness included)."""

    def __init__(self, before, background=True, idle=None):
        self.bytes, self.seconds, self.error = 0, None, None
        self._idle = idle
        self._stop = threading.Event()
        self._thread = None
        if not supported():
            self.seconds = 0.0
            return
        self._libc = ctypes.CDLL(None, use_errno=True)
        self._libc.madvise.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_int]
        self._libc.mincore.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_char_p]
        self._vec = ctypes.create_string_buffer(HUGE // PAGE)
        runs = huge_runs(subtract(anon_ranges(), before), self._resident)
        if background:
            self._thread = threading.Thread(target=self._run, args=(runs,), name="edgepack-hugepages", daemon=True)
            self._thread.start()
        else:
            self._run(runs)

    def _resident(self, addr, n):
        if self._libc.mincore(addr, n, self._vec) != 0:
            return False
        return b"\0" not in self._vec.raw[: n // PAGE].translate(LOW_BIT)  # bit 0 = resident

    def _run(self, runs):
        t0 = time.perf_counter()
        chunks = [(x, min(b, x + CHUNK)) for a, b in runs for x in range(a, b, CHUNK)]
        for a, e in chunks:
            poll = IDLE_POLL_S
            while self._idle is not None:
                state = self._idle()
                if state is None:  # the owner is gone, and its memory with it
                    self._stop.set()
                if state is not False or self._stop.wait(poll):  # False: a generation has the cores,
                    break  # so wait, waking less often the longer it runs (<= 1/s)
                poll = min(2 * poll, 1.0)
            if self._stop.is_set():
                break
            err = self._collapse(a, e)
            if err == errno.EAGAIN:  # a transient lock or page state: one more try, then move on
                err = self._collapse(a, e)
            if err:
                self.error = os.strerror(err)
                if err == errno.EINVAL:  # a kernel without MADV_COLLAPSE: no chunk will do better
                    break
            else:
                self.bytes += e - a
        self.seconds = time.perf_counter() - t0

    def _collapse(self, a, e):
        """0, or the errno of the madvise that failed."""
        if self._libc.madvise(a, e - a, MADV_COLLAPSE):
            return ctypes.get_errno()
        return 0

    def wait(self, timeout=None):
        """Block until the collapse is done, or `timeout` seconds (benchmarks time the steady state)."""
        if self._thread is not None:
            self._thread.join(timeout)
        return self

    def stop(self):
        """Stop after the chunk in flight and wait for it: the memory is about to be freed."""
        self._stop.set()
        self.wait()
