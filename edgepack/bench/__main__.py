"""`python -m edgepack.bench --worker`: one engine's side of the bench (worker.py); use `edgepack bench`."""
import sys

from .worker import worker

if sys.argv[1:] == ["--worker"]:
    worker()
else:
    sys.exit("usage: python -m edgepack.bench --worker (internal, driven over stdin; use `edgepack bench`)")
