"""One engine per fresh subprocess (`python -m edgepack.bench --worker`), driven over a pipe.

Its peak RSS is then its own. The engines are loaded one at a time, then run round-robin, so the
drift of a busy machine hits every engine alike.
"""
import json
import os
import subprocess
import sys
import time

from ..errors import InternalError
from .engines import ENGINE_CLASSES

_MARK = "@@edgepack-bench "


PAUSE_S = 0.2  # between runs of different engines: lets the last one's spinning worker threads go to sleep


class _Worker:
    """One engine in a fresh interpreter (`python -m edgepack.bench --worker`), driven over stdin/stdout."""

    def __init__(self, spec):
        import threading

        self.spec, self.label = spec, f"{spec['engine']}/{spec['backend']}"
        self.proc = subprocess.Popen([sys.executable, "-m", "edgepack.bench", "--worker"], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     env=dict(os.environ, PYTHONUNBUFFERED="1"))
        self.err = []
        threading.Thread(target=lambda: self.err.extend(self.proc.stderr), daemon=True).start()
        self.send(spec)

    def send(self, msg):
        try:
            self.proc.stdin.write(json.dumps(msg) + "\n")
            self.proc.stdin.flush()
        except OSError:
            pass  # it died: recv() says how

    def quit(self, log):
        """Ask the worker to close its engine and exit; returns its closing report (peak RSS, engine detail)."""
        self.send({"quit": True})
        done = self.recv(log)["done"]  # InternalError if it died instead
        self.proc.wait()
        return done

    def recv(self, log):
        """The worker's next message; other lines on its stdout (library chatter) go to the log."""
        for line in self.proc.stdout:
            if line.startswith(_MARK):
                return json.loads(line[len(_MARK):])
            if line.strip():
                log(f"{self.label}: {line.rstrip()}")
        rc = self.proc.wait()
        time.sleep(0.1)  # let the stderr reader catch up
        tail = " | ".join(x.strip() for x in self.err[-3:] if x.strip())[:300]
        why = f"signal {-rc}" if rc < 0 else f"exit code {rc}"
        raise InternalError(f"{self.label} worker failed ({why}){': ' + tail if tail else ''}")


def _run_interleaved(specs, plan, prompt_ids, warmup, new_tokens, progress, log):
    """Load every engine (one at a time), then run the plan round-robin: for each (prompt, run k), each engine
    once, in reverse order every other round. Drift on a busy machine then hits every engine alike instead
    of whichever ran last.
    Returns {(engine, backend): figures, or the reason it failed}."""
    workers, outs = [], {}
    try:
        for spec in specs:
            log(f"{spec['engine']}/{spec['backend']}: loading {spec['path']}")
            w = _Worker(spec)
            try:
                w.loaded = w.recv(log)["loaded"]
                workers.append(w)
                w.runs = {}
            except InternalError as e:
                outs[(spec["engine"], spec["backend"])] = str(e)
                log(str(e))
        n = len(plan) // max(1, len({p for p, _ in plan}))
        for r, (p, k) in enumerate(plan):
            # every other round in reverse: the engine that runs right after another one's threads went
            # idle was measured a few % off, and that must not always be the same engine
            for w in (list(workers) if r % 2 == 0 else workers[::-1]):
                if progress:
                    progress(w.label, p, k + 1, n)
                w.send({"prompt": p, "ids": prompt_ids[p], "n": new_tokens})
                try:
                    r = w.recv(log)["run"]
                except InternalError as e:
                    outs[(w.spec["engine"], w.spec["backend"])] = str(e)
                    log(str(e))
                    workers.remove(w)
                    continue
                if k >= warmup:
                    w.runs.setdefault(p, []).append(r)
                time.sleep(PAUSE_S)
        for w in workers:
            try:
                done = w.quit(log)
            except InternalError as e:
                outs[(w.spec["engine"], w.spec["backend"])] = str(e)
                continue
            outs[(w.spec["engine"], w.spec["backend"])] = dict(
                w.loaded, **done, prompts=[{"name": p, "prompt_tokens": len(prompt_ids[p]), "runs": w.runs[p]}
                                           for p in dict.fromkeys(p for p, _ in plan)])
    finally:
        for w in workers:
            if w.proc.poll() is None:
                w.proc.kill()
                w.proc.wait()
    return outs


def worker():
    """The subprocess side: read the spec, load the engine, then answer run requests until told to quit."""
    def say(**msg):
        sys.stdout.write(_MARK + json.dumps(msg) + "\n")
        sys.stdout.flush()

    spec = json.loads(sys.stdin.readline())
    eng = ENGINE_CLASSES[spec["engine"]](spec)  # imports its library (counted: it is part of the footprint)
    rss_before = _rss()
    t = time.perf_counter()
    eng.load()
    load_s = time.perf_counter() - t
    eng.settle()
    say(loaded={"load_s": load_s, "rss_before_load_bytes": rss_before, "rss_after_load_bytes": _rss()})
    for line in sys.stdin:
        msg = json.loads(line)
        if msg.get("quit"):
            break
        say(run=eng.run(msg["ids"], msg["n"]))
    peak = _peak_rss()
    eng.close()
    say(done={"peak_rss_bytes": peak, "detail": eng.detail})


def _rss():
    import psutil

    return psutil.Process().memory_info().rss


def _peak_rss():
    """This process's own peak RSS. Not ru_maxrss: Linux carries that across fork+exec, so every worker
    reported its parent's high-water mark (2.9 GiB for each engine after an in-process demo export).
    VmHWM belongs to the current address space, which exec replaces."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KiB on Linux
