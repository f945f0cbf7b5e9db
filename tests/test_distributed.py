"""Distributed training on a real 2-node local Ray cluster gives exactly the single-process model."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp

from indexing.tree import LabelTree
from tests.test_model_io import assert_same_model
from xmr.model import XLinearModel
from xmr.train import TrainParams

try:
    import ray
    from ray.cluster_utils import Cluster
except ImportError:  # Ray is the optional extra xmr[ray]
    ray = None


@pytest.fixture(scope="module")
def cluster():
    """Two Ray nodes of one CPU each (Ray's own testing cluster), this process connected as the driver."""
    if ray is None:
        if os.environ.get("CI") == "true":
            pytest.fail("Ray is not installed under CI=true (.ci/run installs xmr[ray])")
        pytest.skip("Ray is not installed (pip install 'xmr[ray]')")
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    c.add_node(num_cpus=1)
    c.wait_for_nodes()
    ray.init(address=c.address, logging_level="WARNING")
    yield c
    ray.shutdown()
    c.shutdown()


def _data(n=900, d=120, L=230, seed=0, dense=False):
    """Sparse features and 1-3 labels per row drawn with power-law label frequencies."""
    rng = np.random.default_rng(seed)
    X = sp.random(n, d, density=0.06, format="csr", random_state=seed, dtype=np.float32)
    X = X + sp.csr_matrix((np.ones(n, np.float32), (np.arange(n), rng.integers(0, d, n))), shape=(n, d))
    p = 1.0 / np.arange(1, L + 1)
    rows = np.repeat(np.arange(n), rng.integers(1, 4, n))
    Y = sp.csr_matrix((np.ones(rows.size, np.float32), (rows, rng.choice(L, rows.size, p=p / p.sum()))), (n, L))
    Y.data[:] = 1
    return (X.toarray() if dense else X.tocsr()), Y


def _assert_same_model(a: XLinearModel, b: XLinearModel, X) -> None:
    assert_same_model(a, b)
    Pa, Pb = a.predict(X, topk=5), b.predict(X, topk=5)
    assert (Pa != Pb).nnz == 0


@pytest.mark.parametrize("case", ["sparse", "dense", "relevance", "logistic-no-bias"])
def test_same_model_as_one_process(cluster, case):
    X, Y = _data(dense=case == "dense")
    R = None
    if case == "relevance":
        R = Y.copy()
        R.data = np.random.default_rng(1).uniform(0.5, 3.0, R.nnz).astype(np.float32)
    params = TrainParams(loss="logistic", bias=0.0) if case == "logistic-no-bias" else TrainParams()
    kw = dict(nr_splits=4, max_leaf_size=8, seed=3, train_params=params, relevance=R)
    single = XLinearModel.train(X, Y, **kw)
    assert single.depth >= 4  # several levels under the top, so subtrees are real trees
    spread = XLinearModel.train(X, Y, ray_address=cluster.address, **kw)
    _assert_same_model(single, spread, X)
    tasks = spread.meta["distributed"]["tasks"]
    assert {t["task"] for t in tasks} == {"kmeans", "train-top", "train-subtree"}
    assert len({t["node"] for t in tasks}) == 2  # both Ray nodes did work
    assert all(t["peak_rss_mb"] > 0 for t in tasks)


def test_shallow_trees(cluster):
    # one-vs-all (no subtrees) and a tree whose binary depth is below the driver's top split
    X, Y = _data(L=20)
    for leaf in (100, 8):
        single = XLinearModel.train(X, Y, nr_splits=2, max_leaf_size=leaf)
        _assert_same_model(single, XLinearModel.train(X, Y, nr_splits=2, max_leaf_size=leaf,
                                                      ray_address=cluster.address), X)


def test_empty_rows_only_train_the_top_level(cluster):
    X, Y = _data()
    keep = np.ones(Y.shape[0], np.float32)
    keep[::7] = 0
    Y = sp.csr_matrix(sp.diags(keep) @ Y)
    Y.eliminate_zeros()
    kw = dict(nr_splits=4, max_leaf_size=8, allow_empty_rows=True)
    _assert_same_model(XLinearModel.train(X, Y, **kw), XLinearModel.train(X, Y, ray_address=cluster.address, **kw), X)


def test_refuses_mined_negatives(cluster):
    X, Y = _data()
    with pytest.raises(ValueError, match="negatives='tfn'"):
        XLinearModel.train(X, Y, ray_address=cluster.address, train_params=TrainParams(negatives="man"))


def test_subtree_slices():
    from xmr.distributed import _subtree

    tree = LabelTree([np.zeros(2, np.int32), np.array([0, 0, 1, 1, 1], np.int32), np.array([4, 0, 2, 1, 3, 4, 0])])
    parents, ids = _subtree(tree, 1)
    np.testing.assert_array_equal(ids[0], [2, 3, 4])
    np.testing.assert_array_equal(parents[0], [0, 0, 0])
    np.testing.assert_array_equal(ids[1], [0, 2, 4, 5])  # labels under nodes 2, 3, 4, in label order
    np.testing.assert_array_equal(parents[1], [2, 0, 1, 2])
    LabelTree(parents)  # a valid tree of its own


def test_cli_against_the_cluster(cluster, tmp_path):
    X, Y = _data()
    sp.save_npz(tmp_path / "X.npz", X)
    sp.save_npz(tmp_path / "Y.npz", Y)
    common = ["-x", str(tmp_path / "X.npz"), "-y", str(tmp_path / "Y.npz"), "--nr-splits", "4", "--max-leaf-size",
              "8", "-q"]
    run = [sys.executable, "-m", "xmr", "train"]
    subprocess.run(run + common + ["-m", str(tmp_path / "one")], check=True, timeout=300)
    subprocess.run(run + common + ["-m", str(tmp_path / "ray"), "--ray", cluster.address], check=True, timeout=300)
    _assert_same_model(XLinearModel.load(tmp_path / "one"), XLinearModel.load(tmp_path / "ray"), X)
    for address, words in [("local:0", "local:N needs a number of CPUs"), ("nonsense", "--ray needs host:port"),
                           ("127.0.0.1:1", "cannot reach the Ray cluster")]:  # not minutes of Ray's own retries
        bad = subprocess.run(run + common + ["-m", str(tmp_path / "bad"), "--ray", address], capture_output=True,
                             text=True, timeout=120)
        assert bad.returncode == 2 and words in bad.stderr, bad.stderr
    bad = subprocess.run(run + common + ["-m", str(tmp_path / "bad"), "--ray", cluster.address, "--negatives", "man"],
                         capture_output=True, text=True, timeout=300)
    assert bad.returncode == 2 and "--ray needs --negatives tfn" in bad.stderr
    assert not (tmp_path / "bad").exists()
