"""Beam search started below the root from a given beam (what a shard does with its router's beam): the same
labels and bit-identical scores as the whole search."""

from __future__ import annotations

import numpy as np
import pytest

from indexing.tree import LabelTree
from tests.test_inference import LAYOUTS, build, make_model, make_queries
from xmr.inference import BeamSearchIndex, QueryError
from xmr.postprocess import NAMES


@pytest.fixture(scope="module")
def model():
    return make_model(nr_labels=200, nr_leaves=30, nr_splits=3)


def upper(model, levels: int, layout: str) -> BeamSearchIndex:
    """The index of the top ``levels`` levels alone (its labels are the nodes of level ``levels - 1``)."""
    tree, weights, bias = model
    return build((LabelTree([tree.parents(t) for t in range(levels)]), weights[:levels], bias), layout)


@pytest.mark.parametrize("layout", LAYOUTS)
@pytest.mark.parametrize("post_processor", NAMES)
def test_continuing_from_the_upper_levels_beam_is_the_whole_search(model, layout, post_processor):
    tree = model[0]
    whole = build(model, layout)
    X = make_queries(n=30, empty_rows=(3,))
    for level in range(1, tree.depth):
        top = upper(model, level, layout)
        for beam, topk in [(1, 1), (3, 10), (10, 7)]:
            for i in range(X.shape[0]):
                qi, qv = X.getrow(i).indices, X.getrow(i).data
                want = whole.predict_one_sparse(qi, qv, beam, topk, post_processor)
                # the beam the whole search keeps at level - 1 is the top-`beam` of the upper levels' search
                ids, sc = top.predict_one_sparse(qi, qv, beam, beam, post_processor)
                got = whole.continue_one_sparse(qi, qv, level, ids, sc, beam, topk, post_processor)
                np.testing.assert_array_equal(got[0], want[0])
                np.testing.assert_array_equal(got[1], want[1])  # bit-identical, not just close


def test_a_subset_of_the_beam_gives_its_share_of_the_answer(model):
    """Continuing from part of the beam (one shard's parents) yields exactly the hits whose parent is in it."""
    tree = model[0]
    whole = build(model)
    top = upper(model, tree.depth - 1, "hash")
    parent = tree.parents(tree.depth - 1)
    X = make_queries(n=20)
    for i in range(X.shape[0]):
        qi, qv = X.getrow(i).indices, X.getrow(i).data
        ids, sc = top.predict_one_sparse(qi, qv, 5, 5)
        full_ids, full_sc = whole.continue_one_sparse(qi, qv, tree.depth - 1, ids, sc, 5, tree.nr_labels)
        part = np.arange(ids.size) % 2 == 0
        got_ids, got_sc = whole.continue_one_sparse(qi, qv, tree.depth - 1, ids[part], sc[part], 5, tree.nr_labels)
        mine = np.isin(parent[full_ids], ids[part])
        np.testing.assert_array_equal(got_ids, full_ids[mine])
        np.testing.assert_array_equal(got_sc, full_sc[mine])


def test_bad_start_beams_are_refused(model):
    whole = build(model)
    qi, qv = np.array([1, 5], np.int32), np.array([0.5, 0.5], np.float32)
    above = model[0].level_sizes[0]
    for level, ids, sc, words in [
        (0, [0], [1.0], "level must be in"),
        (model[0].depth, [0], [1.0], "level must be in"),
        (1, [], [], "start beam needs"),
        (1, [0, 1], [1.0], "start beam needs"),
        (1, list(range(11)), [1.0] * 11, "start beam needs"),  # more than beam_size
        (1, [above], [1.0], "must lie in"),
        (1, [-1], [1.0], "must lie in"),
        (1, [0], [np.nan], "finite"),
    ]:
        with pytest.raises(QueryError, match=words):
            whole.continue_one_sparse(qi, qv, level, np.array(ids), np.array(sc), beam_size=10)
