"""Fixed evaluation and calibration texts that every CPython install has offline.

Both come from CPython's own `pydoc_data.topics` (the language reference behind `help()`), which is
plain English prose with code. The evaluation text is the topics in sorted
order up to "c" (about 44k characters, starting with "assert"); the calibration text is every
topic from "c" on, so the two never overlap.
Fidelity figures (perplexity, top-1, KL) are always measured on EVAL; int4 calibration only
ever sees CALIBRATION.
"""
from pydoc_data.topics import topics

EVAL_SOURCE = "pydoc_data.topics, sorted keys before 'c' (CPython %s)"
CALIBRATION_SOURCE = "pydoc_data.topics, sorted keys from 'c' on (CPython %s)"
_SPLIT = "c"


def _join(keys):
    return "\n\n".join(topics[k].strip() for k in keys)


def eval_text():
    return _join(k for k in sorted(topics) if k < _SPLIT)


def calibration_text():
    return _join(k for k in sorted(topics) if k >= _SPLIT)


def sources():
    import platform

    v = platform.python_version()
    return EVAL_SOURCE % v, CALIBRATION_SOURCE % v
