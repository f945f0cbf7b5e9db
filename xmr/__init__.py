"""xmr: extreme multi-label retrieval (XR-Linear) in numpy/scipy/numba.

Public API (imported lazily, so ``import xmr`` stays cheap and does not compile kernels)::

    from xmr import XLinearModel, TrainParams, ranking_metrics, import_pecos, export_pecos

    model = XLinearModel.train(X, Y)            # X: N x d CSR float32, Y: N x L CSR 0/1
    model.save("model-dir")                     # atomic, JSON + .npy (see xmr.model_io)
    model = XLinearModel.load("model-dir")      # validated, memory-mapped
    P = model.predict(X_test, beam_size=10, topk=10)
    ranking_metrics(Y_test, P, k=10)            # {"P@1": ..., "R@10": ..., "nDCG@5": ..., "MRR@10": ...}

From raw text (featurisation, labels as strings, metadata returned with every hit)::

    from xmr import Retriever

    r = Retriever.train(texts, label_lists, features="word+char", label_metadata=meta)
    r.save("retriever-dir")
    Retriever.load("retriever-dir").retrieve(["wooden train set"], k=10)   # [Retrieval(hits=(Hit(...), ...))]
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "XLinearModel": "xmr.model",
    "TrainParams": "xmr.train",
    "BeamSearchIndex": "xmr.inference",
    "LabelTree": "indexing.tree",
    "ranking_metrics": "xmr.metrics",
    "import_pecos": "xmr.pecos_io",
    "export_pecos": "xmr.pecos_io",
    "ModelFormatError": "xmr.model_io",
    "InputError": "xmr.validation",
    "load_csr_npz": "xmr.validation",
    "Retriever": "xmr.retriever",
    "Retrieval": "xmr.retriever",
    "Hit": "xmr.retriever",
    "TextFeaturizer": "xmr.text.featurizer",
    "LabelSet": "xmr.labels",
    "RerankConfig": "xmr.rerank",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'xmr' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
