"""Machine description recorded beside every benchmark result (one definition: edgepack.bench)."""
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
from edgepack.bench import machine_info  # noqa: E402,F401
