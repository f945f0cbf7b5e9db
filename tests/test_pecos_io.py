"""libpecos model import/export on directories written by the independent fixture writer (tests/pecos_fixture.py)."""

from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest
import scipy.sparse as sp

from tests.pecos_fixture import random_tree, random_weights, scramble_chain, write_pecos_model
from tests.reference_beam import reference_beam_search
from xmr.model import XLinearModel
from xmr.model_io import ModelFormatError
from xmr.pecos_io import export_pecos, import_pecos


def _parts(seed=0, sizes=(3, 9), L=50, d=30, bias=1.0):
    rng = np.random.default_rng(seed)
    tree = random_tree(rng, list(sizes), L)
    # small weights keep raw scores below 1, where lp-hinge saturates to exactly 1.0 (ties would then depend on
    # node numbering, which import legitimately changes)
    weights = [W * np.float32(0.3) for W in random_weights(rng, tree, d, bias)]
    X = sp.random(40, d, density=0.3, format="csr", dtype=np.float32, random_state=rng)
    return rng, tree, weights, X


def _assert_same_predictions(P, R, atol=1e-6):
    assert P.shape == R.shape
    for i in range(P.shape[0]):
        p = slice(P.indptr[i], P.indptr[i + 1])
        r = slice(R.indptr[i], R.indptr[i + 1])
        assert np.array_equal(P.indices[p], R.indices[r]), i
        np.testing.assert_allclose(P.data[p], R.data[r], atol=atol, rtol=0)


@pytest.mark.parametrize("post_processor", ["l3-hinge", "sigmoid", "log-l2-hinge", "noop"])
def test_import_contiguous(tmp_path, post_processor):
    _, tree, weights, X = _parts()
    write_pecos_model(tmp_path / "p", tree.to_chain(), weights, 1.0, beam_size=4, topk=7,
                      post_processor=post_processor)
    m = import_pecos(tmp_path / "p")
    assert m.tree == tree
    assert (m.beam_size, m.topk, m.post_processor, m.bias) == (4, 7, post_processor, 1.0)
    ref = reference_beam_search(tree, weights, 1.0, X, 4, 7, post_processor)
    _assert_same_predictions(m.predict(X), ref)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_import_non_contiguous_chain(tmp_path, seed):
    rng, tree, weights, X = _parts(seed=seed, sizes=(3, 7, 15), L=60)
    chain, scrambled = scramble_chain(rng, tree, weights)
    # the chain really is non-contiguous
    assert any((np.diff(sp.csr_matrix(c).indices) < 0).any() for c in chain[:-1])
    write_pecos_model(tmp_path / "p", chain, scrambled, 1.0, beam_size=3, topk=5, post_processor="sigmoid")
    m = import_pecos(tmp_path / "p")
    assert m.meta["imported_from"]["renumbered_levels"]
    ref = reference_beam_search(tree, weights, 1.0, X, 3, 5, "sigmoid")
    _assert_same_predictions(m.predict(X), ref)


@pytest.mark.parametrize("bias", [0.0, -1.0, 2.5])
def test_import_bias_variants(tmp_path, bias):
    _, tree, weights, X = _parts(bias=bias)
    write_pecos_model(tmp_path / "p", tree.to_chain(), weights, bias, beam_size=5, topk=5)
    m = import_pecos(tmp_path / "p")
    assert m.bias == bias and m.nr_features == 30
    _assert_same_predictions(m.predict(X), reference_beam_search(tree, weights, bias, X, 5, 5))


def test_import_without_layer0_c(tmp_path):
    _, tree, weights, X = _parts()
    write_pecos_model(tmp_path / "p", tree.to_chain(), weights, 1.0, omit_c0=True)
    assert not (tmp_path / "p" / "ranker" / "0.model" / "C.npz").exists()
    m = import_pecos(tmp_path / "p")
    assert m.tree == tree


def test_import_compressed_csr_no_meta_and_ranker_dir(tmp_path):
    _, tree, weights, X = _parts()
    write_pecos_model(tmp_path / "p", tree.to_chain(), weights, 1.0, compressed=True, w_format="csr",
                      with_meta=False)
    m = import_pecos(tmp_path / "p")
    m2 = import_pecos(tmp_path / "p" / "ranker")  # the ranker folder itself
    ref = reference_beam_search(tree, weights, 1.0, X, 10, 20)
    _assert_same_predictions(m.predict(X), ref)
    _assert_same_predictions(m2.predict(X), ref)


def test_import_one_vs_all(tmp_path):
    rng = np.random.default_rng(5)
    tree = random_tree(rng, [], 12)
    weights = random_weights(rng, tree, 9, 1.0)
    write_pecos_model(tmp_path / "p", tree.to_chain(), weights, 1.0, topk=4)
    m = import_pecos(tmp_path / "p")
    assert m.depth == 1 and m.topk == 4 and m.beam_size == 10


def test_export_import_round_trip(tmp_path):
    _, tree, weights, X = _parts(sizes=(2, 6, 12), L=70)
    m = XLinearModel(tree, weights, bias=1.0, beam_size=3, topk=8, post_processor="log-sigmoid")
    export_pecos(m, tmp_path / "e")
    m2 = import_pecos(tmp_path / "e")
    assert m2.tree == m.tree
    assert (m2.beam_size, m2.topk, m2.post_processor, m2.bias) == (3, 8, "log-sigmoid", 1.0)
    for a, b in zip(m.weights, m2.weights):
        assert (a != b).nnz == 0
    _assert_same_predictions(m2.predict(X), m.predict(X), atol=0)


def test_export_layout_matches_libpecos_requirements(tmp_path):
    _, tree, weights, _ = _parts()
    m = XLinearModel(tree, weights, bias=1.0, beam_size=4, topk=9)
    export_pecos(m, tmp_path / "e")
    root = tmp_path / "e"
    assert json.loads((root / "param.json").read_text())["__meta__"]["class_fullname"].endswith("XLinearModel")
    rp = json.loads((root / "ranker" / "param.json").read_text())
    assert rp["model"] == "HierarchicalMLModel" and rp["depth"] == 3
    for t in range(3):
        lp = json.loads((root / "ranker" / f"{t}.model" / "param.json").read_text())
        assert lp["model"] == "MLModel" and lp["bias"] == 1.0
        assert lp["pred_kwargs"]["only_topk"] == (4 if t < 2 else 9)
        assert lp["pred_kwargs"]["post_processor"] == "l3-hinge"
        for name in ("W.npz", "C.npz"):
            path = root / "ranker" / f"{t}.model" / name
            with zipfile.ZipFile(path) as z:  # the C++ loader only reads uncompressed archives
                assert all(info.compress_type == zipfile.ZIP_STORED for info in z.infolist())
                assert sorted(z.namelist()) == ["data.npy", "format.npy", "indices.npy", "indptr.npy", "shape.npy"]
            M = sp.load_npz(path)  # scipy's own reader, independent of ours
            assert M.format == "csc" and M.dtype == np.float32 and M.has_sorted_indices
        W = sp.load_npz(root / "ranker" / f"{t}.model" / "W.npz")
        assert W.shape == (31, tree.level_sizes[t]) and (W != weights[t]).nnz == 0
        C = sp.load_npz(root / "ranker" / f"{t}.model" / "C.npz")
        assert (C != tree.to_chain()[t]).nnz == 0


def test_export_refuses_foreign_dir_and_replaces_pecos_dir(tmp_path):
    _, tree, weights, _ = _parts()
    m = XLinearModel(tree, weights)
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("keep")
    with pytest.raises(ModelFormatError, match="refusing"):
        export_pecos(m, tmp_path / "docs")
    export_pecos(m, tmp_path / "e")
    export_pecos(m, tmp_path / "e")  # replacing an earlier export is fine
    assert sorted(p.name for p in tmp_path.iterdir()) == ["docs", "e"]


# ---------------------------------------------------------------------------------------------------- errors
@pytest.fixture()
def pecos_dir(tmp_path):
    _, tree, weights, _ = _parts()
    return write_pecos_model(tmp_path / "p", tree.to_chain(), weights, 1.0)


def test_rejects_mmap_models(tmp_path):
    _, tree, weights, _ = _parts()
    write_pecos_model(tmp_path / "p", tree.to_chain(), weights, 1.0, is_mmap=True)
    with pytest.raises(ModelFormatError, match="memory-mapped"):
        import_pecos(tmp_path / "p")
    write_pecos_model(tmp_path / "q", tree.to_chain(), weights, 1.0)
    (tmp_path / "q" / "ranker" / "1.model" / "W.npz").rename(tmp_path / "q" / "ranker" / "1.model" / "W.mmap_store")
    with pytest.raises(ModelFormatError, match="memory-mapped"):
        import_pecos(tmp_path / "q")


def test_missing_w(pecos_dir):
    (pecos_dir / "ranker" / "1.model" / "W.npz").unlink()
    with pytest.raises(ModelFormatError, match=r"1.model/W.npz.*missing"):
        import_pecos(pecos_dir)


def test_missing_c_below_layer0(pecos_dir):
    (pecos_dir / "ranker" / "2.model" / "C.npz").unlink()
    with pytest.raises(ModelFormatError, match=r"2.model/C.npz.*missing"):
        import_pecos(pecos_dir)


def test_pickled_npz_refused(pecos_dir):
    np.savez(pecos_dir / "ranker" / "0.model" / "W.npz", data=np.array([object()], dtype=object),
             indices=np.zeros(1, np.int32), indptr=np.array([0, 1]), format=np.array(b"csc"),
             shape=np.array([31, 3]))
    with pytest.raises(ModelFormatError, match="W.npz"):
        import_pecos(pecos_dir)


def test_unsupported_sparse_format(pecos_dir):
    sp.save_npz(pecos_dir / "ranker" / "0.model" / "W.npz", sp.coo_matrix(np.eye(31, 3, dtype=np.float32)))
    with pytest.raises(ModelFormatError, match="coo"):
        import_pecos(pecos_dir)


def test_not_a_zip(pecos_dir):
    (pecos_dir / "ranker" / "1.model" / "C.npz").write_text("garbage")
    with pytest.raises(ModelFormatError, match="C.npz"):
        import_pecos(pecos_dir)


def test_bad_param_json(pecos_dir):
    (pecos_dir / "ranker" / "1.model" / "param.json").write_text("{")
    with pytest.raises(ModelFormatError, match=r"1.model/param.json.*JSON"):
        import_pecos(pecos_dir)


def test_different_biases(pecos_dir):
    p = pecos_dir / "ranker" / "1.model" / "param.json"
    lp = json.loads(p.read_text())
    lp["bias"] = 2.0
    p.write_text(json.dumps(lp))
    with pytest.raises(ModelFormatError, match="bias"):
        import_pecos(pecos_dir)


def test_inconsistent_shapes(pecos_dir):
    sp.save_npz(pecos_dir / "ranker" / "1.model" / "W.npz", sp.csc_matrix((31, 4), dtype=np.float32),
                compressed=False)
    with pytest.raises(ModelFormatError, match="1.model"):
        import_pecos(pecos_dir)


def test_not_a_pecos_dir(tmp_path):
    with pytest.raises(ModelFormatError, match="does not exist"):
        import_pecos(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelFormatError, match="not a libpecos"):
        import_pecos(tmp_path / "empty")
    _, tree, weights, _ = _parts()
    XLinearModel(tree, weights).save(tmp_path / "ours")
    with pytest.raises(ModelFormatError, match="is an xmr model"):
        import_pecos(tmp_path / "ours")
