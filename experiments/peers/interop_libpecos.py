"""libpecos side of the xmr <-> libpecos interop check (run under the peers' venv python).

Two sub-commands, both writing libpecos's raw predictions (CSR exactly as libpecos returns it) for the test rows:

- ``train``: PIFA -> hierarchical k-means (--nr-splits 16, --max-leaf-size 100, --seed) -> XLinearModel.train
  (threshold=0.1, otherwise libpecos defaults: squared-hinge dual solver, tfn, Cp=Cn=1, bias=1), ``save`` to
  ``--model-dir``, reload with ``is_predict_only=True`` and predict every setting.
- ``predict``: load ``--model-dir`` (e.g. a model exported by xmr) with each ``--modes`` value
  (``predict-only`` = ``is_predict_only=True``, ``python`` = ``is_predict_only=False``) and predict every setting.

A setting is ``{"name": str, "beam_size": int|null, "only_topk": int|null, "post_processor": str|null}``; null
means "not passed" (the model's saved pred_kwargs apply). Output in ``--out``: ``<mode>__<setting>.npz`` and
``manifest.json`` (library version, timings, the model's saved pred_kwargs). numpy/scipy/pecos only.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as c  # noqa: E402

MODES = {"predict-only": True, "python": False}


def _settings(text: str) -> list[dict]:
    settings = json.loads(text)
    if not isinstance(settings, list) or not all(isinstance(s, dict) and "name" in s for s in settings):
        raise SystemExit("--settings must be a JSON list of objects with a 'name'")
    return settings


def _saved_pred_kwargs(model_dir: Path) -> list[dict]:
    out = []
    for layer in sorted((model_dir / "ranker").glob("*.model"), key=lambda p: int(p.name.split(".")[0])):
        param = json.loads((layer / "param.json").read_text())
        pk = {k: v for k, v in param.get("pred_kwargs", {}).items() if k != "__meta__"}
        out.append({"layer": layer.name, "bias": param.get("bias"), **pk})
    return out


def _predict_all(model_dir: Path, Xt: sp.csr_matrix, settings: list[dict], modes: list[str], out: Path,
                 threads: int) -> dict:
    from pecos.xmc.xlinear.model import XLinearModel

    timings = {}
    for mode in modes:
        t0 = time.perf_counter()
        model = XLinearModel.load(str(model_dir), is_predict_only=MODES[mode])
        timings[f"load_{mode}_s"] = time.perf_counter() - t0
        for s in settings:
            kw = {k: s[k] for k in ("beam_size", "only_topk", "post_processor") if s.get(k) is not None}
            t0 = time.perf_counter()
            P = sp.csr_matrix(model.predict(Xt, threads=threads, **kw), dtype=np.float32)
            timings[f"predict_{mode}__{s['name']}_s"] = time.perf_counter() - t0
            sp.save_npz(out / f"{mode}__{s['name']}.npz", P, compressed=False)
            c.log(f"libpecos: {mode} {s['name']} {kw}: {P.nnz} scores for {P.shape[0]} rows")
        del model
    return timings


def main(argv: list[str] | None = None) -> int:
    """Train (or load) a libpecos model and write its predictions for each setting."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=("train", "predict"))
    ap.add_argument("--data", type=Path, required=True, help="data set cache folder (X_train.npz, ...)")
    ap.add_argument("--model-dir", type=Path, required=True, help="libpecos model folder (written by train)")
    ap.add_argument("--out", type=Path, required=True, help="folder for <mode>__<setting>.npz and manifest.json")
    ap.add_argument("--settings", required=True, help="JSON list of prediction settings")
    ap.add_argument("--modes", default="predict-only", help="comma list of load modes: predict-only,python")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--nr-splits", type=int, default=16)
    ap.add_argument("--max-leaf-size", type=int, default=100)
    a = ap.parse_args(argv)
    import pecos

    settings = _settings(a.settings)
    modes = [m for m in a.modes.split(",") if m]
    if bad := [m for m in modes if m not in MODES]:
        raise SystemExit(f"unknown --modes {bad}: expected {', '.join(MODES)}")
    a.out.mkdir(parents=True, exist_ok=True)
    d = c.load_data(a.data)
    manifest: dict = {"library": "libpecos", "version": getattr(pecos, "__version__", "?"), "command": a.command,
                      "modes": modes, "settings": settings, "n_test": d["X_test"].shape[0]}
    if a.command == "train":
        from pecos.xmc import Indexer, LabelEmbeddingFactory
        from pecos.xmc.xlinear.model import XLinearModel

        X, Y = d["X_train"], d["Y_train"]
        c.log(f"libpecos: training on {X.shape[0]} x {X.shape[1]}, {Y.shape[1]} labels")
        t0 = time.perf_counter()
        emb = LabelEmbeddingFactory.create(Y, X, method="pifa", threads=a.threads)
        chain = Indexer.gen(emb, indexer_type="hierarchicalkmeans", nr_splits=a.nr_splits,
                            max_leaf_size=a.max_leaf_size, seed=a.seed, threads=a.threads)
        model = XLinearModel.train(X, Y, C=chain, threshold=0.1, threads=a.threads)
        manifest["train_s"] = time.perf_counter() - t0
        if a.model_dir.exists():
            shutil.rmtree(a.model_dir)
        model.save(str(a.model_dir))
        del model, emb, chain
        manifest["train_params"] = {"embedding": "pifa", "indexer": "hierarchicalkmeans",
                                    "nr_splits": a.nr_splits, "max_leaf_size": a.max_leaf_size, "seed": a.seed,
                                    "threshold": 0.1, "other": "defaults"}
    manifest["saved_pred_kwargs"] = _saved_pred_kwargs(a.model_dir)
    manifest["timings"] = _predict_all(a.model_dir, d["X_test"], settings, modes, a.out, a.threads)
    (a.out / "manifest.json").write_text(json.dumps(manifest, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
