"""XR-Linear beam-search inference: fast in-memory layouts built at load time and numba kernels."""

from xmr.inference.index import BeamSearchIndex, QueryError
from xmr.inference.layout import ModelShapeError

__all__ = ["BeamSearchIndex", "QueryError", "ModelShapeError"]
