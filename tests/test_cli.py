"""The ``xmr`` command line: a full train -> predict -> evaluate run, conversions, and exit codes on bad input."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from tests.pecos_fixture import random_tree, random_weights, write_pecos_model
from xmr.cli import main
from xmr.metrics import ranking_metrics
from xmr.model import XLinearModel

REPO = Path(__file__).resolve().parent.parent


def _data(rng, n=240, d=40, L=30):
    X = sp.random(n, d, density=0.2, format="csr", dtype=np.float32, random_state=rng)
    X.data = np.abs(X.data) + 0.1
    S = (X @ rng.normal(size=(d, L))).astype(np.float32)
    Y = np.zeros((n, L), dtype=np.float32)
    Y[np.arange(n)[:, None], np.argsort(-S, axis=1)[:, :2]] = 1.0
    return X, sp.csr_matrix(Y)


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    root = tmp_path_factory.mktemp("cli")
    rng = np.random.default_rng(0)
    X, Y = _data(rng)
    sp.save_npz(root / "X.npz", X)
    sp.save_npz(root / "Y.npz", Y)
    np.save(root / "Xdense.npy", X.toarray())
    return root


@pytest.fixture(scope="module")
def trained(files):
    rc = main(["train", "-x", str(files / "X.npz"), "-y", str(files / "Y.npz"), "-m", str(files / "model"),
               "--nr-splits", "2", "--max-leaf-size", "8", "--beam-size", "4", "--topk", "5", "--quiet",
               "--threads", "1"])
    assert rc == 0
    return files / "model"


def _error_line(capsys) -> str:
    err = capsys.readouterr().err.strip().splitlines()
    assert err, "expected a message on stderr"
    return err[-1]


# ------------------------------------------------------------------------------------------------ happy paths
@pytest.mark.parametrize("cmd", [[], ["train"], ["predict"], ["evaluate"], ["import-pecos"], ["export-pecos"]])
def test_help(cmd, capsys):
    assert main([*cmd, "--help"]) == 0
    assert "usage: xmr" in capsys.readouterr().out


def test_train_predict_evaluate(files, trained, capsys):
    model = XLinearModel.load(trained)
    assert (model.beam_size, model.topk, model.nr_labels, model.nr_features) == (4, 5, 30, 40)
    assert model.meta["indexing"]["nr_splits"] == 2 and model.meta["train_params"]["threads"] == 1
    out = files / "pred.npz"
    assert main(["predict", "-x", str(files / "X.npz"), "-m", str(trained), "-o", str(out), "-q"]) == 0
    P = sp.load_npz(out)
    assert P.shape == (240, 30) and np.all(np.diff(P.indptr) == 5)
    X = sp.load_npz(files / "X.npz")
    assert (P != model.predict(X)).nnz == 0
    # dense .npy features give the same predictions; options override the stored defaults
    out2 = files / "pred2.npz"
    assert main(["predict", "-x", str(files / "Xdense.npy"), "-m", str(trained), "-o", str(out2), "--topk", "3",
                 "--beam-size", "2", "--post-processor", "sigmoid", "-q"]) == 0
    P2 = sp.load_npz(out2)
    assert (P2 != model.predict(X, beam_size=2, topk=3, post_processor="sigmoid")).nnz == 0
    capsys.readouterr()
    assert main(["evaluate", "-y", str(files / "Y.npz"), "-p", str(out), "-k", "5", "--json"]) == 0
    got = json.loads(capsys.readouterr().out)
    want = ranking_metrics(sp.load_npz(files / "Y.npz"), P, k=5)
    assert set(got) == set(want) and {"P@1", "P@3", "P@5", "R@5", "nDCG@5", "MRR@5"} <= set(got)
    for key in want:
        assert got[key] == pytest.approx(100 * want[key], abs=1e-3)
    assert got["P@1"] > 50  # the labels are a simple function of X: training must have learnt something
    assert main(["evaluate", "-y", str(files / "Y.npz"), "-p", str(out), "-k", "3"]) == 0
    table = capsys.readouterr().out
    assert "P@k" in table and "MRR@3" in table


def test_pecos_conversions(files, trained, tmp_path):
    assert main(["export-pecos", str(trained), str(tmp_path / "pecos"), "-q"]) == 0
    assert (tmp_path / "pecos" / "ranker" / "param.json").is_file()
    assert main(["import-pecos", str(tmp_path / "pecos"), str(tmp_path / "back"), "-q"]) == 0
    a, b = XLinearModel.load(trained), XLinearModel.load(tmp_path / "back")
    X = sp.load_npz(files / "X.npz")
    assert (a.predict(X) != b.predict(X)).nnz == 0


def test_train_with_options(files, tmp_path):
    rng = np.random.default_rng(1)
    sp.save_npz(tmp_path / "LF.npz", sp.random(30, 40, density=0.3, format="csr", dtype=np.float32,
                                               random_state=rng))
    rc = main(["train", "-x", str(files / "X.npz"), "-y", str(files / "Y.npz"), "-m", str(tmp_path / "m"),
               "--nr-splits", "4", "--max-leaf-size", "10", "--loss", "logistic", "--negatives", "tfn+man",
               "--Cp", "2", "--Cn", "0.5", "--bias", "0", "--threshold", "0.05", "--max-nonzeros-per-label", "20",
               "--label-features", str(tmp_path / "LF.npz"), "--alpha", "0.5", "--seed", "3", "-q"])
    assert rc == 0
    m = XLinearModel.load(tmp_path / "m")
    assert m.bias == 0.0 and m.meta["indexing"]["label_embedding"] == "pifa+lf-convex"
    assert max(np.diff(W.indptr).max() for W in m.weights) <= 20


# ------------------------------------------------------------------------------------------------ exit codes
def _train_args(files, x, y, out):
    return ["train", "-x", str(x), "-y", str(y), "-m", str(out), "-q", "--max-leaf-size", "8"]


def test_bad_inputs_exit_2(files, trained, tmp_path, capsys):
    X = sp.load_npz(files / "X.npz")
    Y = sp.load_npz(files / "Y.npz")
    cases = []
    # missing file
    cases.append((_train_args(files, tmp_path / "nope.npz", files / "Y.npz", tmp_path / "m"), "does not exist"))
    # not an npz
    (tmp_path / "text.npz").write_text("hello")
    cases.append((_train_args(files, tmp_path / "text.npz", files / "Y.npz", tmp_path / "m"), "not a valid .npz"))
    # npz without a sparse matrix in it
    np.savez(tmp_path / "plain.npz", a=np.ones(3))
    cases.append((_train_args(files, tmp_path / "plain.npz", files / "Y.npz", tmp_path / "m"), "sparse"))
    # wrong shapes: Y has fewer rows than X
    sp.save_npz(tmp_path / "Yshort.npz", Y[:100])
    cases.append((_train_args(files, files / "X.npz", tmp_path / "Yshort.npz", tmp_path / "m"), "rows"))
    # non-finite features
    Xbad = X.copy()
    Xbad.data[3] = np.inf
    sp.save_npz(tmp_path / "Xinf.npz", Xbad)
    cases.append((_train_args(files, tmp_path / "Xinf.npz", files / "Y.npz", tmp_path / "m"), "non-finite"))
    # empty label rows
    Yempty = Y.tolil()
    Yempty[5, :] = 0
    Yempty[9, :] = 0
    sp.save_npz(tmp_path / "Yempty.npz", Yempty.tocsr())
    cases.append((_train_args(files, files / "X.npz", tmp_path / "Yempty.npz", tmp_path / "m"),
                  r"2 of 240 rows have no label \(first: 5, 9\)"))
    # negative labels
    Yneg = Y.copy()
    Yneg.data[0] = -1
    sp.save_npz(tmp_path / "Yneg.npz", Yneg)
    cases.append((_train_args(files, files / "X.npz", tmp_path / "Yneg.npz", tmp_path / "m"), "negative"))
    # option combinations
    cases.append((_train_args(files, files / "X.npz", files / "Y.npz", tmp_path / "m") + ["--alpha", "0.5"],
                  "--alpha needs --label-features"))
    # refusing to overwrite a foreign directory
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "a.txt").write_text("keep")
    cases.append((_train_args(files, files / "X.npz", files / "Y.npz", tmp_path / "docs"), "refusing"))
    # unknown model dirs
    (tmp_path / "emptydir").mkdir()
    cases.append((["predict", "-x", str(files / "X.npz"), "-m", str(tmp_path / "emptydir"), "-o",
                   str(tmp_path / "p.npz")], "not an xmr model directory"))
    cases.append((["predict", "-x", str(files / "X.npz"), "-m", str(tmp_path / "nowhere"), "-o",
                   str(tmp_path / "p.npz")], "does not exist"))
    rng = np.random.default_rng(0)
    tree = random_tree(rng, [2], 30)
    write_pecos_model(tmp_path / "pecos", tree.to_chain(), random_weights(rng, tree, 40, 1.0), 1.0)
    cases.append((["predict", "-x", str(files / "X.npz"), "-m", str(tmp_path / "pecos"), "-o",
                   str(tmp_path / "p.npz")], "import-pecos"))
    cases.append((["export-pecos", str(tmp_path / "pecos"), str(tmp_path / "out")], "import-pecos"))
    cases.append((["import-pecos", str(tmp_path / "emptydir"), str(tmp_path / "out")], "not a libpecos"))
    # corrupt model
    import shutil

    shutil.copytree(trained, tmp_path / "corrupt")
    (tmp_path / "corrupt" / "xmr-model.json").write_text("{")
    cases.append((["predict", "-x", str(files / "X.npz"), "-m", str(tmp_path / "corrupt"), "-o",
                   str(tmp_path / "p.npz")], "JSON"))
    # wrong feature dimension at predict time
    sp.save_npz(tmp_path / "Xnarrow.npz", X[:, :10])
    cases.append((["predict", "-x", str(tmp_path / "Xnarrow.npz"), "-m", str(trained), "-o",
                   str(tmp_path / "p.npz")], "has 10 feature columns but the model expects 40"))
    cases.append((["predict", "-x", str(files / "X.npz"), "-m", str(trained), "-o",
                   str(tmp_path / "no" / "such" / "dir.npz")], "does not exist"))
    # evaluate with mismatched shapes
    sp.save_npz(tmp_path / "Pwide.npz", sp.csr_matrix((240, 31), dtype=np.float32))
    cases.append((["evaluate", "-y", str(files / "Y.npz"), "-p", str(tmp_path / "Pwide.npz")], "shape"))
    for argv, pattern in cases:
        capsys.readouterr()
        assert main(argv) == 2, argv
        line = _error_line(capsys)
        assert line.startswith("xmr: error: "), (argv, line)
        import re

        assert re.search(pattern, line), (argv, line)
    assert not (tmp_path / "m").exists()
    assert (tmp_path / "docs" / "a.txt").read_text() == "keep"
    # empty label rows are accepted on request (PECOS uses them as negatives only)
    argv = _train_args(files, files / "X.npz", tmp_path / "Yempty.npz", tmp_path / "m") + ["--allow-empty-rows"]
    assert main(argv) == 0
    assert XLinearModel.load(tmp_path / "m").meta["empty_label_rows"] == 2


@pytest.mark.parametrize("argv", [
    ["train", "-x", "X.npz"],  # missing required options
    ["train", "-x", "X.npz", "-y", "Y.npz", "-m", "m", "--nr-splits", "zero"],
    ["predict", "-x", "X.npz", "-m", "m", "-o", "p.npz", "--post-processor", "magic"],
    ["predict", "-x", "X.npz", "-m", "m", "-o", "p.npz", "--topk", "0"],
    ["evaluate", "-y", "Y.npz", "-p", "p.npz", "-k", "-3"],
    ["frobnicate"],
])
def test_usage_errors_exit_2(argv, capsys):
    assert main(argv) == 2
    assert "error" in capsys.readouterr().err


def test_internal_error_exit_1(files, trained, monkeypatch, capsys, tmp_path):
    import xmr.model

    def boom(*args, **kwargs):
        raise RuntimeError("kaboom")

    monkeypatch.setattr(xmr.model.XLinearModel, "predict", boom)
    argv = ["predict", "-x", str(files / "X.npz"), "-m", str(trained), "-o", str(tmp_path / "p.npz"), "-q"]
    assert main(argv) == 1
    err = capsys.readouterr().err
    assert "internal error: RuntimeError: kaboom" in err and "Traceback" not in err
    assert main([*argv, "--debug"]) == 1
    assert "Traceback" in capsys.readouterr().err
    assert not (tmp_path / "p.npz").exists()


def test_subprocess_entry_point(files, tmp_path):
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    run = lambda *args: subprocess.run([sys.executable, "-m", *args], capture_output=True, text=True,  # noqa: E731
                                       cwd=tmp_path, env=env, timeout=300)
    r = run("xmr.cli", "--help")
    assert r.returncode == 0 and "import-pecos" in r.stdout
    r = run("xmr", "evaluate", "-y", str(files / "Y.npz"), "-p", str(tmp_path / "missing.npz"))
    assert r.returncode == 2
    assert r.stderr.strip().splitlines()[-1].startswith("xmr: error: predictions: file")
    Y = sp.load_npz(files / "Y.npz")
    sp.save_npz(tmp_path / "P.npz", Y * 0.5)
    r = run("xmr.cli", "evaluate", "-y", str(files / "Y.npz"), "-p", str(tmp_path / "P.npz"), "--json", "-k", "2")
    assert r.returncode == 0, r.stderr
    assert json.loads(r.stdout)["P@2"] == 100.0


# ------------------------------------------------------------------------------------ input validation helpers
def test_check_features_conversions():
    from xmr.validation import InputError, check_features

    # unsorted, duplicated, float64, int64-indexed: canonical float32 int32 CSR, caller's arrays untouched
    X = sp.csr_matrix((np.array([1.0, 2.0, 3.0]), np.array([2, 0, 2], dtype=np.int64),
                       np.array([0, 3], dtype=np.int64)), shape=(1, 4))
    before = X.indices.copy()
    m = check_features(X, 4)
    assert m.dtype == np.float32 and m.indices.dtype == np.int32 and m.has_canonical_format
    assert m.toarray().tolist() == [[2.0, 0.0, 4.0, 0.0]]
    assert np.array_equal(X.indices, before)
    d = check_features(np.ones((2, 3), dtype=np.float64))
    assert d.dtype == np.float32 and d.flags.c_contiguous
    with pytest.raises(InputError, match="expects 5"):
        check_features(d, 5)
    with pytest.raises(InputError, match=r"non-finite.*1 rows \(first: 1\)"):
        check_features(np.array([[0.0, 1.0], [np.nan, 0.0]]))
    with pytest.raises(InputError, match="float32 range"):
        check_features(np.array([[1e300]]))
    with pytest.raises(InputError, match="2-D"):
        check_features(np.ones(3))
    with pytest.raises(InputError, match="real numbers"):
        check_features(np.array([["a"]]))


def test_check_labels():
    from xmr.validation import InputError, check_labels

    Y = sp.csr_matrix(np.array([[1, 0, 2], [0, 0, 0], [0, 1, 0]], dtype=np.int64))
    with pytest.raises(InputError, match=r"1 of 3 rows have no label \(first: 1\)"):
        check_labels(Y, 3)
    m = check_labels(Y, 3, allow_empty_rows=True)
    assert m.dtype == np.float32 and m.nnz == 3
    with pytest.raises(InputError, match="X has 4"):
        check_labels(Y, 4, allow_empty_rows=True)
    with pytest.raises(InputError, match="negative"):
        check_labels(sp.csr_matrix(np.array([[-1.0]])), 1)
    with pytest.raises(InputError, match="non-finite"):
        check_labels(sp.csr_matrix(np.array([[np.inf]])), 1)
    # stored zeros do not count as labels
    Z = sp.csr_matrix((np.array([0.0, 1.0]), np.array([0, 1]), np.array([0, 1, 2])), shape=(2, 2))
    with pytest.raises(InputError, match="first: 0"):
        check_labels(Z, 2)


def test_load_csr_npz(tmp_path):
    from xmr.validation import InputError, load_csr_npz

    sp.save_npz(tmp_path / "c.npz", sp.csc_matrix(np.eye(3, dtype=np.float32)))
    m = load_csr_npz(tmp_path / "c.npz", "A")
    assert m.format == "csr" and m.shape == (3, 3)
    np.save(tmp_path / "d.npy", np.eye(2))
    with pytest.raises(InputError, match="plain .npy"):
        load_csr_npz(tmp_path / "d.npy", "A")
    with pytest.raises(InputError, match="directory"):
        load_csr_npz(tmp_path, "A")
    np.savez(tmp_path / "obj.npz", format=np.array(b"csr"), data=np.array([object()], dtype=object),
             indices=np.zeros(1, np.int32), indptr=np.array([0, 1]), shape=np.array([1, 1]))
    with pytest.raises(InputError, match="obj.npz"):
        load_csr_npz(tmp_path / "obj.npz", "A")
