"""xmr model directories: round trips, atomic replacement, and clear errors on every kind of corruption."""

from __future__ import annotations

import json
import os
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from indexing.tree import LabelTree
from tests.pecos_fixture import random_tree, random_weights, write_pecos_model
from tests.reference_beam import reference_beam_search
from xmr import model_io
from xmr.model import XLinearModel
from xmr.model_io import MANIFEST_NAME, ModelFormatError, load_model, read_manifest, save_model


def _model(seed: int = 0, bias: float = 1.0, sizes=(3, 8), L: int = 40, d: int = 25) -> XLinearModel:
    rng = np.random.default_rng(seed)
    tree = random_tree(rng, list(sizes), L)
    weights = random_weights(rng, tree, d, bias)
    return XLinearModel(tree, weights, bias=bias, beam_size=4, topk=6, post_processor="sigmoid",
                        meta={"note": "test", "numbers": [1, 2.5]})


def _queries(d: int = 25, n: int = 20, seed: int = 1) -> sp.csr_matrix:
    return sp.random(n, d, density=0.3, format="csr", dtype=np.float32, random_state=np.random.default_rng(seed))


def _is_mapped(arr: np.ndarray) -> bool:
    while arr is not None:
        if isinstance(arr, np.memmap):
            return True
        arr = getattr(arr, "base", None)
    return False


def assert_same_model(a: XLinearModel, b: XLinearModel) -> None:
    assert a.tree == b.tree
    assert (a.bias, a.beam_size, a.topk, a.post_processor) == (b.bias, b.beam_size, b.topk, b.post_processor)
    assert a.nr_features == b.nr_features and a.nr_labels == b.nr_labels
    for Wa, Wb in zip(a.weights, b.weights):
        assert Wa.shape == Wb.shape
        assert np.array_equal(Wa.indptr, Wb.indptr) and np.array_equal(Wa.indices, Wb.indices)
        assert np.array_equal(Wa.data, Wb.data)


# ------------------------------------------------------------------------------------------------ round trips
@pytest.mark.parametrize("mmap", [True, False])
@pytest.mark.parametrize("bias", [1.0, 0.5, 0.0, -1.0])
def test_round_trip(tmp_path, mmap, bias):
    m = _model(bias=bias)
    m.save(tmp_path / "m")
    m2 = XLinearModel.load(tmp_path / "m", mmap=mmap)
    assert_same_model(m, m2)
    assert m2.meta == m.meta
    X = _queries()
    P, P2 = m.predict(X), m2.predict(X)
    assert np.array_equal(P.indptr, P2.indptr) and np.array_equal(P.indices, P2.indices)
    assert np.array_equal(P.data, P2.data)
    ref = reference_beam_search(m2.tree, m2.weights, m2.bias, X, 4, 6, "sigmoid")
    assert np.abs((P2 - ref).toarray()).max() < 1e-5
    if mmap:
        for W in m2.weights:
            assert _is_mapped(W.data) and _is_mapped(W.indices) and not W.data.flags.writeable
    else:
        assert not any(_is_mapped(W.data) for W in m2.weights)


def test_manifest_contents(tmp_path):
    m = _model()
    save_model(m, tmp_path / "m")
    man = json.loads((tmp_path / "m" / MANIFEST_NAME).read_text())
    assert man["format"] == "xmr.xlinear" and man["version"] == 1
    assert man["level_sizes"] == [3, 8, 40] and man["nr_features"] == 25 and man["nr_labels"] == 40
    assert man["pred_params"] == {"beam_size": 4, "topk": 6, "post_processor": "sigmoid"}
    files = sorted(str(p.relative_to(tmp_path / "m")) for p in (tmp_path / "m").rglob("*") if p.is_file())
    assert set(files) == set(man["arrays"]) | {MANIFEST_NAME}
    assert all(f.endswith((".npy", ".json")) for f in files)
    for rel, spec in man["arrays"].items():
        arr = np.load(tmp_path / "m" / rel, mmap_mode="r", allow_pickle=False)
        assert list(arr.shape) == spec["shape"] and arr.dtype.str == spec["dtype"]
    assert read_manifest(tmp_path / "m")["depth"] == 3


def test_one_vs_all_and_empty_level(tmp_path):
    rng = np.random.default_rng(3)
    tree = LabelTree.one_vs_all(12)
    W = random_weights(rng, tree, 7, 1.0)
    m = XLinearModel(tree, W)
    m.save(tmp_path / "ova")
    assert_same_model(m, XLinearModel.load(tmp_path / "ova"))
    # a level whose weights were all pruned away: zero-length arrays must survive mmap loading
    tree2 = random_tree(rng, [2], 6)
    W2 = [sp.csc_matrix((8, 2), dtype=np.float32), random_weights(rng, tree2, 7, 1.0)[1]]
    m2 = XLinearModel(tree2, W2)
    m2.save(tmp_path / "empty")
    m3 = XLinearModel.load(tmp_path / "empty", mmap=True)
    assert m3.weights[0].nnz == 0
    assert_same_model(m2, m3)


def test_properties_and_warm(tmp_path):
    m = _model()
    assert (m.nr_features, m.nr_labels, m.depth) == (25, 40, 3)
    assert m.nbytes > sum(W.data.nbytes for W in m.weights)
    m.save(tmp_path / "m")
    m2 = XLinearModel.load(tmp_path / "m", warm=True)
    labels, scores = m2.predict_one(_queries()[0])
    assert labels.dtype == np.int32 and scores.dtype == np.float32 and labels.size == 6
    assert np.all(np.diff(scores) <= 0)


def test_overwrite_existing_model(tmp_path):
    a, b = _model(seed=1), _model(seed=2)
    a.save(tmp_path / "m")
    b.save(tmp_path / "m")
    assert_same_model(b, XLinearModel.load(tmp_path / "m"))
    assert [p.name for p in tmp_path.iterdir()] == ["m"]


def test_overwrite_loaded_mmapped_model_in_place(tmp_path):
    a = _model(seed=1)
    a.save(tmp_path / "m")
    loaded = XLinearModel.load(tmp_path / "m", mmap=True)
    loaded.save(tmp_path / "m")  # reads from the very files being replaced
    assert_same_model(a, XLinearModel.load(tmp_path / "m"))


def test_refuses_to_replace_foreign_directory(tmp_path):
    target = tmp_path / "precious"
    target.mkdir()
    (target / "thesis.txt").write_text("do not delete")
    with pytest.raises(ModelFormatError, match="refusing to overwrite"):
        _model().save(target)
    assert (target / "thesis.txt").read_text() == "do not delete"
    empty = tmp_path / "empty"
    empty.mkdir()
    _model().save(empty)  # an empty directory is fine
    assert (empty / MANIFEST_NAME).is_file()


# -------------------------------------------------------------------------------------------------- atomicity
class Crash(RuntimeError):
    pass


def test_crash_while_writing_keeps_old_model(tmp_path, monkeypatch):
    old, new = _model(seed=1), _model(seed=2)
    old.save(tmp_path / "m")
    calls = {"n": 0}
    real = model_io.save_npy

    def flaky(path, arr):
        calls["n"] += 1
        if calls["n"] == 5:
            raise Crash("disk on fire")
        return real(path, arr)

    monkeypatch.setattr(model_io, "save_npy", flaky)
    with pytest.raises(Crash):
        new.save(tmp_path / "m")
    assert_same_model(old, XLinearModel.load(tmp_path / "m"))
    assert [p.name for p in tmp_path.iterdir()] == ["m"]  # the partial temp dir was removed


@pytest.mark.parametrize("exchange", [True, False])
def test_crash_between_renames(tmp_path, monkeypatch, exchange):
    """Without RENAME_EXCHANGE the swap takes two renames; a crash between them must still leave a model."""
    old, new = _model(seed=1), _model(seed=2)
    old.save(tmp_path / "m")
    if exchange:
        new.save(tmp_path / "m")
        assert_same_model(new, XLinearModel.load(tmp_path / "m"))
        return
    monkeypatch.setattr(model_io, "_rename_exchange", lambda a, b: False)
    real_rename = os.rename
    calls = {"n": 0}

    def rename(src, dst):
        calls["n"] += 1
        if calls["n"] == 2:  # old -> aside happened; new -> target "crashes"
            raise Crash("power cut")
        return real_rename(src, dst)

    monkeypatch.setattr(model_io.os, "rename", rename)
    with pytest.raises(Crash):
        new.save(tmp_path / "m")
    monkeypatch.setattr(model_io.os, "rename", real_rename)
    assert not (tmp_path / "m").exists()
    assert_same_model(old, XLinearModel.load(tmp_path / "m"))  # falls back to the directory set aside
    new.save(tmp_path / "m")  # the next save restores, cleans up, then replaces
    assert_same_model(new, XLinearModel.load(tmp_path / "m"))
    assert [p.name for p in tmp_path.iterdir()] == ["m"]


def test_fallback_two_rename_path(tmp_path, monkeypatch):
    monkeypatch.setattr(model_io, "_rename_exchange", lambda a, b: False)
    old, new = _model(seed=1), _model(seed=2)
    old.save(tmp_path / "m")
    new.save(tmp_path / "m")
    assert_same_model(new, XLinearModel.load(tmp_path / "m"))
    assert [p.name for p in tmp_path.iterdir()] == ["m"]


def test_stale_temp_dirs_are_cleaned(tmp_path):
    stale = tmp_path / ".m.tmp-deadbeef0000"
    (stale / "weights").mkdir(parents=True)
    (stale / "weights" / "junk.npy").write_bytes(b"partial")
    _model().save(tmp_path / "m")
    assert [p.name for p in tmp_path.iterdir()] == ["m"]


def test_meta_must_be_json(tmp_path):
    m = _model()
    m.meta["bad"] = object()
    with pytest.raises(TypeError, match="JSON"):
        m.save(tmp_path / "m")
    assert not (tmp_path / "m").exists()


# ----------------------------------------------------------------------------------------------- corruption
@pytest.fixture()
def saved(tmp_path) -> Path:
    _model().save(tmp_path / "m")
    return tmp_path / "m"


def _edit_manifest(path: Path, fn) -> None:
    man = json.loads((path / MANIFEST_NAME).read_text())
    fn(man)
    (path / MANIFEST_NAME).write_text(json.dumps(man))


def test_truncated_array(saved):
    f = saved / "weights" / "2" / "data.npy"
    f.write_bytes(f.read_bytes()[:-8])
    with pytest.raises(ModelFormatError, match=r"weights/2/data.npy.*truncated"):
        load_model(saved)


def test_wrong_dtype(saved):
    f = saved / "weights" / "1" / "data.npy"
    np.save(f, np.load(f).astype(np.float64))
    with pytest.raises(ModelFormatError, match=r"weights/1/data.npy.*manifest"):
        load_model(saved)


def test_wrong_dtype_consistent_with_manifest(saved):
    f = saved / "weights" / "1" / "data.npy"
    np.save(f, np.load(f).astype(np.float64))
    _edit_manifest(saved, lambda m: m["arrays"]["weights/1/data.npy"].update(dtype="<f8"))
    with pytest.raises(ModelFormatError, match="float32"):
        load_model(saved)


def test_missing_file(saved):
    (saved / "tree" / "parents_1.npy").unlink()
    with pytest.raises(ModelFormatError, match=r"tree/parents_1.npy.*missing"):
        load_model(saved)


def test_missing_manifest_entry(saved):
    _edit_manifest(saved, lambda m: m["arrays"].pop("weights/0/indices.npy"))
    with pytest.raises(ModelFormatError, match="weights/0/indices.npy"):
        load_model(saved)


def test_not_an_npy(saved):
    (saved / "weights" / "0" / "indptr.npy").write_text("hello")
    with pytest.raises(ModelFormatError, match=r"weights/0/indptr.npy.*not a valid .npy"):
        load_model(saved)


def test_pickled_array_refused(saved):
    f = saved / "tree" / "parents_0.npy"
    np.save(f, np.array([{"evil": 1}], dtype=object), allow_pickle=True)
    with pytest.raises(ModelFormatError, match="parents_0.npy"):
        load_model(saved)


def test_bad_json(saved):
    (saved / MANIFEST_NAME).write_text("{not json")
    with pytest.raises(ModelFormatError, match=r"xmr-model.json.*JSON"):
        load_model(saved)


def test_newer_version(saved):
    _edit_manifest(saved, lambda m: m.update(version=99, created_by="xmr 9.0"))
    with pytest.raises(ModelFormatError, match=r"version 99.*newer xmr.*upgrade"):
        load_model(saved)


@pytest.mark.parametrize("field,value,match", [
    ("format", "something.else", "format"),
    ("version", "one", "version"),
    ("nr_features", "25", "nr_features"),
    ("level_sizes", [3, 8], "level_sizes"),
    ("nr_labels", 41, "nr_labels"),
    ("bias", None, "bias"),
    ("pred_params", {"beam_size": 4}, "pred_params"),
])
def test_bad_manifest_fields(saved, field, value, match):
    _edit_manifest(saved, lambda m: m.update({field: value}))
    with pytest.raises(ModelFormatError, match=match):
        load_model(saved)


def test_bad_post_processor_in_manifest(saved):
    _edit_manifest(saved, lambda m: m["pred_params"].update(post_processor="magic"))
    with pytest.raises(ModelFormatError, match="magic"):
        load_model(saved)


def test_pecos_dir_given_to_load(tmp_path):
    m = _model()
    write_pecos_model(tmp_path / "pecos", m.tree.to_chain(), m.weights, m.bias)
    with pytest.raises(ModelFormatError, match=r"libpecos model.*xmr import-pecos"):
        load_model(tmp_path / "pecos")


def test_foreign_and_missing_dirs(tmp_path):
    (tmp_path / "foreign").mkdir()
    (tmp_path / "foreign" / "x.txt").write_text("x")
    with pytest.raises(ModelFormatError, match="not an xmr model directory"):
        load_model(tmp_path / "foreign")
    with pytest.raises(ModelFormatError, match="does not exist"):
        load_model(tmp_path / "nowhere")
    (tmp_path / "file").write_text("x")
    with pytest.raises(ModelFormatError, match="is a file"):
        load_model(tmp_path / "file")


def _rewrite(path: Path, rel: str, arr: np.ndarray) -> None:
    np.save(path / rel, arr)
    _edit_manifest(path, lambda m: m["arrays"][rel].update(shape=list(arr.shape), dtype=arr.dtype.str))


def test_broken_tree(saved):
    p = np.load(saved / "tree" / "parents_1.npy")
    p[:] = 0  # nodes 1 and 2 of level 0 lose all their children
    _rewrite(saved, "tree/parents_1.npy", p)
    with pytest.raises(ModelFormatError, match=r"tree/.*empty cluster"):
        load_model(saved)


def test_indices_out_of_range(saved):
    idx = np.load(saved / "weights" / "2" / "indices.npy")
    idx[-1] = 10_000
    _rewrite(saved, "weights/2/indices.npy", idx)
    with pytest.raises(ModelFormatError, match=r"weights/2/.*out of range"):
        load_model(saved)


def test_unsorted_indices(saved):
    indptr = np.load(saved / "weights" / "2" / "indptr.npy")
    idx = np.load(saved / "weights" / "2" / "indices.npy")
    col = int(np.flatnonzero(np.diff(indptr) >= 2)[0])
    a = indptr[col]
    idx[a], idx[a + 1] = idx[a + 1], idx[a]
    _rewrite(saved, "weights/2/indices.npy", idx)
    with pytest.raises(ModelFormatError, match=r"weights/2/.*sorted"):
        load_model(saved)
    load_model(saved, verify=False)  # content checks can be skipped for trusted huge models


def test_non_monotone_indptr(saved):
    indptr = np.load(saved / "weights" / "0" / "indptr.npy")
    indptr[1], indptr[2] = indptr[2], indptr[1]
    _rewrite(saved, "weights/0/indptr.npy", indptr)
    with pytest.raises(ModelFormatError, match=r"weights/0/.*monotone"):
        load_model(saved)


def test_nan_weights(saved):
    data = np.load(saved / "weights" / "1" / "data.npy")
    data[0] = np.nan
    _rewrite(saved, "weights/1/data.npy", data)
    with pytest.raises(ModelFormatError, match=r"weights/1/.*non-finite"):
        load_model(saved)


def test_weights_inconsistent_with_level_sizes(saved):
    indptr = np.load(saved / "weights" / "1" / "indptr.npy")
    _rewrite(saved, "weights/1/indptr.npy", indptr[:-1])
    with pytest.raises(ModelFormatError, match=r"weights/1/.*columns"):
        load_model(saved)


def test_nr_features_mismatch(saved):
    _edit_manifest(saved, lambda m: m.update(nr_features=3))
    with pytest.raises(ModelFormatError, match="out of range"):
        load_model(saved)


def test_constructor_rejects_inconsistent_parts():
    m = _model()
    with pytest.raises(ValueError, match="weight matrices"):
        XLinearModel(m.tree, m.weights[:2])
    with pytest.raises(ValueError, match="shape"):
        XLinearModel(m.tree, [m.weights[0], m.weights[1][:, :3], m.weights[2]])
    with pytest.raises(ValueError, match="beam_size"):
        XLinearModel(m.tree, m.weights, beam_size=0)
    with pytest.raises(ValueError, match="post_processor"):
        XLinearModel(m.tree, m.weights, post_processor="nope")
