"""Where calibration time goes: cProfile over the first N layers of a checkpoint's calibration.

    python benchmarks/profile_calibration.py /tmp/minicpm2b [--layers 2] [--method NAME]

Prints the seconds per layer and the 18 functions with the most own time. (Used to find what to cut
from the 2B calibration: the per-ratio argmax of the clip search, single-threaded factorizations and
one GPTQ pass per linear were ~40% of a ~39 s layer before edgepack.quant was changed.)
"""
import argparse
import cProfile
import dataclasses
import pstats
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--method", default=None)
    a = ap.parse_args()
    from edgepack import quant
    from edgepack.checkpoint import load

    ck = load(a.model)
    ck.config = dataclasses.replace(ck.config, num_hidden_layers=a.layers)
    last = [time.time()]

    def progress(stage, done, total):
        print(f"{stage} {done}/{total} {time.time() - last[0]:.1f} s", flush=True)
        last[0] = time.time()

    pr = cProfile.Profile()
    pr.enable()
    quant.quantize_model(ck, a.method or quant.DEFAULT_METHOD, progress=progress)
    pr.disable()
    pstats.Stats(pr).sort_stats("tottime").print_stats(18)


if __name__ == "__main__":
    main()
