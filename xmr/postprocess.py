"""Post-processors of XR-Linear beam search: how a raw level score becomes a path score.

Each level's raw score ``s = w.x + beta*w_bias`` is transformed, then combined with the parent's path score:

===============  =============================  ==================================
name             transform f(s)                 combine(parent, child)
===============  =============================  ==================================
noop             s                              child (no combination)
sigmoid          1 / (1 + exp(-s))              parent * child
lp-hinge         exp(-max(0, 1 - s)^p)          parent * child      (p = 1..4)
log-sigmoid      log(sigmoid(s))                parent + child
log-lp-hinge     -max(0, 1 - s)^p               parent + child
===============  =============================  ==================================

Level 0 is never combined. ``postprocessor_code`` gives the integer the numba kernels switch on.
"""

from __future__ import annotations

import numpy as np

DEFAULT = "l3-hinge"

_NAMES = (
    "noop",
    "sigmoid",
    "l1-hinge",
    "l2-hinge",
    "l3-hinge",
    "l4-hinge",
    "log-sigmoid",
    "log-l1-hinge",
    "log-l2-hinge",
    "log-l3-hinge",
    "log-l4-hinge",
)
NAMES: tuple[str, ...] = _NAMES
_CODE = {name: i for i, name in enumerate(_NAMES)}

# combine kinds, indexed by code
COMBINE_NONE, COMBINE_MUL, COMBINE_ADD = 0, 1, 2


class PostProcessorError(ValueError):
    """An unknown post-processor name."""


def postprocessor_code(name: str) -> int:
    """Integer code of a post-processor name for the numba kernels (0 = noop ... 10 = log-l4-hinge)."""
    try:
        return _CODE[name]
    except (KeyError, TypeError):
        raise PostProcessorError(f"unknown post_processor {name!r}; expected one of {', '.join(_NAMES)}") from None


def combine_kind(code: int) -> int:
    """How a post-processor combines parent and child scores: COMBINE_NONE, COMBINE_MUL or COMBINE_ADD."""
    if code == 0:
        return COMBINE_NONE
    return COMBINE_MUL if code <= 5 else COMBINE_ADD


def root_score(name: str) -> float:
    """Neutral parent score of the implicit root (1 for multiply, 0 for add and noop)."""
    return 1.0 if combine_kind(postprocessor_code(name)) == COMBINE_MUL else 0.0


def _log_sigmoid(s: np.ndarray) -> np.ndarray:
    # stable for both signs: log(sigmoid(s)) = min(s, 0) - log1p(exp(-|s|))
    return np.minimum(s, 0.0) - np.log1p(np.exp(-np.abs(s)))


def transform(name: str, scores: np.ndarray) -> np.ndarray:
    """Apply a post-processor's transform to raw scores (float64 math, returns float32)."""
    code = postprocessor_code(name)
    s = np.asarray(scores, dtype=np.float64)
    if code == 0:
        out = s
    elif code == 1:
        with np.errstate(over="ignore"):
            out = 1.0 / (1.0 + np.exp(-s))
    elif code <= 5:
        out = np.exp(-np.maximum(0.0, 1.0 - s) ** (code - 1))
    elif code == 6:
        out = _log_sigmoid(s)
    else:
        out = -(np.maximum(0.0, 1.0 - s) ** (code - 6))
    return out.astype(np.float32)


def combine(name: str, parent: np.ndarray, child: np.ndarray) -> np.ndarray:
    """Combine parent path scores with transformed child scores (broadcasting), as float32."""
    kind = combine_kind(postprocessor_code(name))
    parent = np.asarray(parent, dtype=np.float32)
    child = np.asarray(child, dtype=np.float32)
    if kind == COMBINE_NONE:
        return np.broadcast_arrays(parent, child)[1].astype(np.float32)
    if kind == COMBINE_MUL:
        return (parent * child).astype(np.float32)
    return (parent + child).astype(np.float32)
