"""The anchors' libpecos XR-Linear protocol after the label embedding (peers' venv only; shared by the runners)."""

from __future__ import annotations

from typing import Any


def train_xlinear(X, Y, emb, seed: int, threads: int) -> Any:
    """Hierarchical k-means (nr_splits=16, max_leaf_size=100, seed) on ``emb``, then XR-Linear with the
    squared-hinge dual solver (L2R_L2LOSS_SVC_DUAL), tfn negatives, threshold=0.1, Cp=Cn=1, bias=1."""
    from pecos.xmc import Indexer
    from pecos.xmc.xlinear.model import XLinearModel

    chain = Indexer.gen(emb, indexer_type="hierarchicalkmeans", nr_splits=16, max_leaf_size=100, seed=seed,
                        threads=threads)
    return XLinearModel.train(X, Y, C=chain, threshold=0.1, solver_type="L2R_L2LOSS_SVC_DUAL",
                              negative_sampling_scheme="tfn", Cp=1.0, Cn=1.0, bias=1.0, threads=threads)
