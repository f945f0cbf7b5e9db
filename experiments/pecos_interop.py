"""xmr <-> libpecos model interop, measured on real data: import, export, same top-k, scores within 1e-5.

Per data set (cached by experiments/datasets.py) and tree shape (--trees nr_splits/max_leaf_size: 16/100 is the
protocol of experiments/README.md; 4/20 adds a deeper tree so the intermediate layers and beam pruning matter):

1. **import**: libpecos 1.2.8 (peers' venv, ``peers/interop_libpecos.py train``) trains an XLinearModel (PIFA,
   hierarchical k-means with that shape, seed 0, threshold=0.1, other libpecos defaults), saves
   it and predicts the test rows after a predict-only reload. xmr reads that folder with
   ``xmr.pecos_io.import_pecos`` and predicts the same rows with the same settings.
2. **export**: xmr trains (``XLinearModel.train``, same hyper-parameters), ``export_pecos`` writes a libpecos
   folder, libpecos loads it (``is_predict_only=True`` and ``False``: ``peers/interop_libpecos.py predict``)
   and predicts; compared with xmr's own predictions of the trained model.
3. **round trip**: ``import_pecos`` of xmr's export, predicted by xmr, against the trained model.

Every comparison runs several prediction settings (beam size, top-k, post-processor; "saved" passes nothing, so
each library uses the pred_kwargs saved in the model folder). Per comparison: rows whose ranked lists are
identical, rows with identical sets, rows whose order differs only between labels with exactly equal scores (in
both libraries), rows whose order differs only between labels whose scores differ by at most --tol (float32
rounding near-ties), rows whose sets differ only by labels within --tol of the cut-off score, the max |score
difference| over labels present in both, and the rows left unexplained. A comparison passes when no row is
unexplained and the max difference is <= --tol (1e-5). The script exits 1 if any comparison or step fails.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from experiments.datasets import build, canonical_name, is_cached, path_of
from experiments.peers._common import load_data
from experiments.peers.launch import REPO, child_env
from experiments.peers.venv import ensure_peers_venv
from experiments.report import log, publish

HELPER = Path(__file__).resolve().parent / "peers" / "interop_libpecos.py"
DEFAULT_OUT = Path(__file__).resolve().parent / "results" / "pecos_interop.md"
DEFAULT_WORK = Path(__file__).resolve().parent / ".cache" / "runs" / "pecos_interop"
# (name, beam_size, topk, post_processor); None = not passed, the model folder's saved pred_kwargs apply.
SETTINGS = [
    ("beam10-top10", 10, 10, None),
    ("saved", None, None, None),
    ("sigmoid-beam3-top5", 3, 5, "sigmoid"),
    ("noop-beam10-top10", 10, 10, "noop"),
    ("log-l2-hinge-beam20-top15", 20, 15, "log-l2-hinge"),
    ("l1-hinge-beam1-top1", 1, 1, "l1-hinge"),
]


def _settings_json() -> str:
    return json.dumps([{"name": n, "beam_size": b, "only_topk": k, "post_processor": p} for n, b, k, p in SETTINGS])


def _describe(name: str, b: int | None, k: int | None, pp: str | None) -> str:
    if name == "saved":
        return "saved"
    return f"{pp or 'default (l3-hinge)'}, beam {b}, top {k}"


# ------------------------------------------------------------------------------------------------ comparison
def _rows(P: sp.csr_matrix, i: int) -> tuple[np.ndarray, np.ndarray]:
    s = slice(P.indptr[i], P.indptr[i + 1])
    return P.indices[s], P.data[s]


def _ranked(lab: np.ndarray, sc: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """A row in descending score order; a stable sort keeps the library's own order among equal scores."""
    order = np.argsort(-sc, kind="stable")
    return lab[order], sc[order]


def _tie_order_only(al, asc, bl, bsc, tol: float) -> bool:
    """Same set, and at every rank the two labels' scores differ by at most ``tol`` in both lists."""
    a_of, b_of = dict(zip(al.tolist(), asc.tolist())), dict(zip(bl.tolist(), bsc.tolist()))
    return all(abs(a_of[y] - a_of[x]) <= tol and abs(b_of[y] - b_of[x]) <= tol
               for x, y in zip(al.tolist(), bl.tolist()))


def _cutoff_tie(al, asc, bl, bsc, tol: float) -> bool:
    """Same length; every label in only one list scores within ``tol`` of that list's lowest score."""
    if len(al) != len(bl) or len(al) == 0:
        return False
    only_a, only_b = np.isin(al, bl, invert=True), np.isin(bl, al, invert=True)
    return bool((asc[only_a] - asc.min() <= tol).all() and (bsc[only_b] - bsc.min() <= tol).all())


def compare(ref: sp.csr_matrix, got: sp.csr_matrix, tol: float) -> dict:
    """Row-by-row agreement of two prediction matrices (``ref`` = the reference library)."""
    if ref.shape != got.shape:
        return {"ok": False, "error": f"shapes differ: {ref.shape} vs {got.shape}"}
    n = ref.shape[0]
    ranked = same_set = tie_order = near_tie_order = cutoff = 0
    max_diff = 0.0
    unexplained: list[int] = []
    examples: list[dict] = []  # every row that is not identical: what differs, for the .json

    def note(kind: str, i: int, al, asc, bl, bsc) -> None:
        if len(examples) < 20:
            examples.append({"row": i, "kind": kind, "ref_labels": al.tolist(), "ref_scores": asc.tolist(),
                             "got_labels": bl.tolist(), "got_scores": bsc.tolist()})

    for i in range(n):
        al, asc = _ranked(*_rows(ref, i))
        bl, bsc = _ranked(*_rows(got, i))
        common, ia, ib = np.intersect1d(al, bl, assume_unique=True, return_indices=True)
        if common.size:
            max_diff = max(max_diff, float(np.abs(asc[ia].astype(np.float64) - bsc[ib]).max()))
        if np.array_equal(al, bl):
            ranked += 1
            same_set += 1
        elif len(al) == len(bl) and common.size == len(al):
            same_set += 1
            if _tie_order_only(al, asc, bl, bsc, 0.0):
                tie_order += 1
                note("exact-tie order", i, al, asc, bl, bsc)
            elif _tie_order_only(al, asc, bl, bsc, tol):
                near_tie_order += 1
                note("near-tie order", i, al, asc, bl, bsc)
            else:
                unexplained.append(i)
                note("unexplained", i, al, asc, bl, bsc)
        elif _cutoff_tie(al, asc, bl, bsc, tol):
            cutoff += 1
            note("cut-off tie", i, al, asc, bl, bsc)
        else:
            unexplained.append(i)
            note("unexplained", i, al, asc, bl, bsc)
    return {
        "ok": not unexplained and max_diff <= tol,
        "rows": n, "ranked_identical": ranked, "set_identical": same_set, "tie_order_only": tie_order,
        "near_tie_order_only": near_tie_order, "cutoff_tie_only": cutoff, "unexplained": len(unexplained),
        "unexplained_rows": unexplained[:20], "differing_rows": examples,
        "max_abs_score_diff": max_diff, "nnz_ref": int(ref.nnz), "nnz_got": int(got.nnz),
    }


# ----------------------------------------------------------------------------------------------- the steps
def _run_helper(args: list[str], log_path: Path, threads: int, timeout: float) -> str | None:
    """Run interop_libpecos.py under the peers' venv; None on success, else an error with the log's tail."""
    py = str(ensure_peers_venv(quiet=True))
    with open(log_path, "w") as f:
        try:
            rc = subprocess.run([py, str(HELPER), *args, "--threads", str(threads)], stdout=f,
                                stderr=subprocess.STDOUT, env=child_env(threads), cwd=REPO, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            rc = None
    if rc == 0:
        return None
    tail = "\n".join(log_path.read_text(errors="replace").splitlines()[-15:])
    return f"{' '.join(args[:1])} {'timed out' if rc is None else f'exit code {rc}'}: {tail}"


def _load_pred(folder: Path, mode: str, name: str) -> sp.csr_matrix:
    return sp.csr_matrix(sp.load_npz(folder / f"{mode}__{name}.npz"), dtype=np.float32)


def _xmr_predict(model, Xt: sp.csr_matrix, threads: int) -> dict[str, sp.csr_matrix]:
    return {n: model.predict(Xt, beam_size=b, topk=k, post_processor=p, threads=threads)
            for n, b, k, p in SETTINGS}


def run_dataset(name: str, tree: tuple[int, int], work: Path, threads: int, seed: int, tol: float,
                timeout: float) -> dict:
    """All three directions on one data set and tree shape; returns the comparisons and any step failures."""
    from xmr.model import XLinearModel
    from xmr.pecos_io import export_pecos, import_pecos
    from xmr.train import TrainParams

    work.mkdir(parents=True, exist_ok=True)
    data = path_of(name)
    d = load_data(data)
    Xt = d["X_test"]
    nr_splits, max_leaf = tree
    res: dict = {"dataset": name, "tree": f"{nr_splits}/{max_leaf}", "nr_splits": nr_splits,
                 "max_leaf_size": max_leaf, "n_train": d["X_train"].shape[0], "n_test": Xt.shape[0],
                 "n_features": Xt.shape[1], "n_labels": d["Y_train"].shape[1], "comparisons": [], "errors": [],
                 "steps_s": {}}
    common = ["--data", str(data), "--settings", _settings_json(), "--seed", str(seed), "--nr-splits",
              str(nr_splits), "--max-leaf-size", str(max_leaf)]

    def add(short: str, direction: str, ref_name: str, got_name: str, ref: dict[str, sp.csr_matrix],
            got: dict[str, sp.csr_matrix]) -> None:
        for n, b, k, p in SETTINGS:
            cmp = compare(ref[n], got[n], tol)
            res["comparisons"].append({"short": short, "direction": direction, "reference": ref_name,
                                       "compared": got_name, "setting": n, "settings": _describe(n, b, k, p),
                                       **cmp})
            log(f"[interop] {name} {nr_splits}/{max_leaf} {short} {n}: ranked "
                f"{cmp.get('ranked_identical')}/{cmp.get('rows')}, "
                f"max diff {cmp.get('max_abs_score_diff', float('nan')):.2e} -> {'ok' if cmp['ok'] else 'FAIL'}")

    # 1. libpecos trains and predicts; xmr imports and predicts
    t0 = time.perf_counter()
    lp_model, lp_pred = work / "libpecos_model", work / "libpecos_pred"
    err = _run_helper(["train", "--model-dir", str(lp_model), "--out", str(lp_pred), "--modes", "predict-only",
                       *common], work / "libpecos_train.log", threads, timeout)
    res["steps_s"]["libpecos_train_predict"] = time.perf_counter() - t0
    if err:
        res["errors"].append(f"libpecos train/predict: {err}")
    else:
        res["libpecos_train"] = json.loads((lp_pred / "manifest.json").read_text())
        t0 = time.perf_counter()
        try:
            imported = import_pecos(lp_model)
            res["imported"] = {"level_sizes": list(imported.tree.level_sizes), "beam_size": imported.beam_size,
                               "topk": imported.topk, "post_processor": imported.post_processor,
                               "bias": imported.bias,
                               "renumbered_levels": imported.meta["imported_from"]["renumbered_levels"]}
            got = _xmr_predict(imported, Xt, threads)
            ref = {n: _load_pred(lp_pred, "predict-only", n) for n, *_ in SETTINGS}
            add("import", "import: libpecos model -> xmr", "libpecos", "xmr", ref, got)
        except Exception as e:  # noqa: BLE001 - a failure is a result to report, not a crash
            res["errors"].append(f"import: {type(e).__name__}: {e}")
        res["steps_s"]["xmr_import_predict"] = time.perf_counter() - t0

    # 2. xmr trains, exports; libpecos loads both ways and predicts
    t0 = time.perf_counter()
    try:
        params = TrainParams(loss="squared-hinge", threshold=0.1, negatives="tfn", Cp=1.0, Cn=1.0, bias=1.0,
                             threads=threads)
        model = XLinearModel.train(d["X_train"], d["Y_train"], nr_splits=nr_splits, max_leaf_size=max_leaf, seed=seed,
                                   train_params=params, beam_size=10, topk=10, threads=threads,
                                   allow_empty_rows=True)
        res["xmr_train_s"] = time.perf_counter() - t0
        res["xmr_model"] = {"level_sizes": list(model.tree.level_sizes), "nnz": int(sum(W.nnz for W in model.weights))}
        own = _xmr_predict(model, Xt, threads)
        export_dir = export_pecos(model, work / "xmr_export")
    except Exception as e:  # noqa: BLE001
        res["errors"].append(f"xmr train/export: {type(e).__name__}: {e}")
        return res
    res["steps_s"]["xmr_train_predict_export"] = time.perf_counter() - t0
    t0 = time.perf_counter()
    ex_pred = work / "xmr_export_pred"
    err = _run_helper(["predict", "--model-dir", str(export_dir), "--out", str(ex_pred), "--modes",
                       "predict-only,python", *common], work / "libpecos_load_export.log", threads, timeout)
    res["steps_s"]["libpecos_load_predict_export"] = time.perf_counter() - t0
    if err:
        res["errors"].append(f"libpecos load of the xmr export: {err}")
    else:
        res["libpecos_load_export"] = json.loads((ex_pred / "manifest.json").read_text())
        for mode, flag in (("predict-only", True), ("python", False)):
            got = {n: _load_pred(ex_pred, mode, n) for n, *_ in SETTINGS}
            add("export/C++" if flag else "export/py", f"export: xmr model -> libpecos (is_predict_only={flag})",
                "xmr", "libpecos", own, got)

    # 3. round trip through the libpecos format
    t0 = time.perf_counter()
    try:
        add("round trip", "round trip: xmr -> export -> import -> xmr", "xmr", "xmr (re-imported)", own,
            _xmr_predict(import_pecos(export_dir), Xt, threads))
    except Exception as e:  # noqa: BLE001
        res["errors"].append(f"round trip: {type(e).__name__}: {e}")
    res["steps_s"]["round_trip"] = time.perf_counter() - t0
    return res


# ------------------------------------------------------------------------------------------------ report
def _git(*args: str) -> str:
    try:
        return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.TimeoutExpired):
        return "?"


def _summary(payload: dict) -> list[str]:
    out = ["| data | direction | comparisons | rows compared | ranked = | set = | order differs by ties only | "
           "set differs by a cut-off tie | unexplained | worst max abs diff | pass |",
           "|---|---|---:|---:|---:|---:|---:|---:|---:|---:|:---:|"]
    groups: dict[tuple[str, str], list[dict]] = {}
    for ds in payload["datasets"]:
        for c in ds["comparisons"]:
            groups.setdefault((ds["dataset"], c["short"]), []).append(c)
    for (name, short), cs in groups.items():
        ok = [c for c in cs if "error" not in c]
        tot = lambda k: sum(c[k] for c in ok)  # noqa: E731
        rows = tot("rows")
        worst = max((c["max_abs_score_diff"] for c in ok), default=float("nan"))
        out.append(f"| {name} | {short} | {len(cs)} | {rows} | {100 * tot('ranked_identical') / max(rows, 1):.2f}% | "
                   f"{100 * tot('set_identical') / max(rows, 1):.2f}% | "
                   f"{tot('tie_order_only') + tot('near_tie_order_only')} | {tot('cutoff_tie_only')} | "
                   f"{tot('unexplained')} | {worst:.2e} | {'yes' if all(c['ok'] for c in cs) else '**NO**'} |")
    return out


def _differences(payload: dict) -> list[str]:
    out = []
    for ds in payload["datasets"]:
        for c in ds["comparisons"]:
            for e in c.get("differing_rows", []):
                ra = dict(zip(e["ref_labels"], e["ref_scores"]))
                ga = dict(zip(e["got_labels"], e["got_scores"]))
                moved = [(j, x, y) for j, (x, y) in enumerate(zip(e["ref_labels"], e["got_labels"])) if x != y]
                desc = "; ".join(
                    f"rank {j + 1}: {c['reference']} has label {x} ({ra[x]:.9g}), {c['compared']} has {y} "
                    f"({ga[y]:.9g}; {c['reference']} scores {y} {ra[y]:.9g})" if y in ra else
                    f"rank {j + 1}: {c['reference']} has label {x} ({ra[x]:.9g}), {c['compared']} has {y} "
                    f"({ga[y]:.9g})"
                    for j, x, y in moved[:4])
                out.append(f"- {ds['dataset']} {ds['tree']} {c['short']} ({c['settings']}), test row {e['row']}, "
                           f"{e['kind']}: {desc}")
    return out


def render(payload: dict) -> str:
    """Markdown report."""
    lines = [
        "# xmr <-> libpecos model interop",
        "",
        f"Run {payload['started_utc']} -> {payload['finished_utc']} ({payload['wall_s']:.0f} s), xmr at commit "
        f"{payload['commit']}{' + uncommitted changes' if payload['dirty'] else ''}, libpecos "
        f"{payload.get('libpecos_version', '?')}, {payload['threads']} threads, score tolerance {payload['tol']:g}. "
        "Produced by `python -m experiments.pecos_interop`.",
        "",
        "Models: PIFA, hierarchical k-means (tree = nr_splits/max_leaf_size; 16/100 is the protocol of "
        f"experiments/README.md, smaller ones give deeper trees), seed {payload['seed']}, threshold=0.1, "
        "squared-hinge, tfn, bias 1, each trained by its own library. "
        "Prediction on all test rows.",
        "",
        "Directions: **import** = libpecos trains and saves, xmr `import_pecos` predicts, compared with libpecos's "
        "own predictions (predict-only load); **export/C++** and **export/py** = xmr trains and `export_pecos` "
        "writes, libpecos loads it with `is_predict_only=True` / `False` and predicts, compared with xmr's "
        "predictions; **round trip** = xmr's export read back by `import_pecos`, compared with xmr. Settings: "
        "post-processor, beam, top-k passed to both libraries (\"saved\": nothing passed, each uses the "
        "pred_kwargs saved in the folder). Columns: rows whose ranked lists are identical / whose sets are "
        "identical / whose order differs only between labels with exactly equal scores / only between labels "
        f"whose scores differ by <= {payload['tol']:g} (float32 rounding) / whose sets differ only by labels within "
        f"{payload['tol']:g} of the cut-off score / none of these (unexplained); max |score difference| over labels "
        "in both lists. Pass: no unexplained row and max diff <= tolerance.",
        "",
        "## Summary (all trees and settings of a data set and direction together)",
        "",
        *_summary(payload),
        "",
        "## Every comparison",
        "",
        "| data | tree | direction | setting | rows | ranked = | set = | exact-tie order | near-tie order | "
        "cut-off tie | unexplained | max abs diff | pass |",
        "|---|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|:---:|",
    ]
    for ds in payload["datasets"]:
        for c in ds["comparisons"]:
            if "error" in c:
                lines.append(f"| {ds['dataset']} | {ds['tree']} | {c['short']} | {c['settings']} | | | | | | | | | "
                             f"FAIL: {c['error']} |")
                continue
            pct = lambda k: f"{c[k]} ({100 * c[k] / max(c['rows'], 1):.1f}%)"  # noqa: E731
            lines.append(
                f"| {ds['dataset']} | {ds['tree']} | {c['short']} | {c['settings']} | {c['rows']} | "
                f"{pct('ranked_identical')} | {pct('set_identical')} | {c['tie_order_only']} | "
                f"{c['near_tie_order_only']} | {c['cutoff_tie_only']} | {c['unexplained']} | "
                f"{c['max_abs_score_diff']:.2e} | "
                f"{'yes' if c['ok'] else '**NO**'} |")
    diffs = _differences(payload)
    lines += ["", "## Rows that are not identical", ""]
    lines += diffs or ["None."]
    if diffs:
        real = sum(c.get("unexplained", 0) for ds in payload["datasets"] for c in ds["comparisons"])
        lines += ["", f"{real} unexplained rows (real disagreements)." if real else
                  "All are labels whose scores agree to within the tolerance (float32 sums in a different order in "
                  "the two libraries), swapped in rank or at the top-k cut-off: no disagreement about the model."]
    lines += ["", "## Models and steps", ""]
    for ds in payload["datasets"]:
        imp = ds.get("imported", {})
        saved = ds.get("libpecos_train", {}).get("saved_pred_kwargs", [])
        lines.append(
            f"- **{ds['dataset']}, tree {ds['tree']}** ({ds['n_train']} train / {ds['n_test']} test rows, "
            f"{ds['n_features']} features, {ds['n_labels']} labels): libpecos model level sizes "
            f"{imp.get('level_sizes', '?')}, saved "
            f"pred_kwargs {[(p.get('only_topk'), p.get('post_processor')) for p in saved]} -> imported as beam "
            f"{imp.get('beam_size', '?')}, top {imp.get('topk', '?')}, {imp.get('post_processor', '?')}, renumbered "
            f"levels {imp.get('renumbered_levels', '?')}; xmr model level sizes "
            f"{ds.get('xmr_model', {}).get('level_sizes', '?')}. Step times (s): "
            + ", ".join(f"{k} {v:.1f}" for k, v in ds["steps_s"].items()) + ".")
        for e in ds["errors"]:
            lines.append(f"  - **FAILED**: {e}")
    n_cmp = sum(len(ds["comparisons"]) for ds in payload["datasets"])
    lines += ["", f"Result: {'all ' + str(n_cmp) + ' comparisons pass' if not payload['failures'] else 'FAILED'}."]
    if payload["failures"]:
        lines += [f"- {f}" for f in payload["failures"]]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    """CLI entry point; returns 1 if any check failed."""
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--datasets", default="bibtex,delicious", help="comma list of cached data sets")
    ap.add_argument("--out", type=Path, default=DEFAULT_OUT, help="markdown report (a .json twin is written too)")
    ap.add_argument("--work-dir", type=Path, default=DEFAULT_WORK, help="models, predictions and logs per data set")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--seed", type=int, default=0, help="clustering seed (both libraries)")
    ap.add_argument("--trees", default="16/100,4/20",
                    help="comma list of nr_splits/max_leaf_size (16/100: the protocol; 4/20: a deeper tree)")
    ap.add_argument("--tol", type=float, default=1e-5, help="max allowed |score difference|")
    ap.add_argument("--timeout", type=float, default=900, help="seconds allowed per libpecos subprocess")
    a = ap.parse_args(argv)
    try:
        names = [canonical_name(n.strip()) for n in a.datasets.split(",") if n.strip()]
    except ValueError as e:
        ap.error(str(e))
    try:
        trees = [(int(t.split("/")[0]), int(t.split("/")[1])) for t in a.trees.split(",") if t.strip()]
    except (ValueError, IndexError):
        ap.error(f"--trees must look like 16/100,4/20, got {a.trees!r}")
    started, t_all = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), time.perf_counter()
    ensure_peers_venv(quiet=True)
    results = []
    for name in names:
        if not is_cached(name):
            log(f"[interop] building the {name} cache")
            build(name)
        for tree in trees:
            log(f"[interop] {name}, tree {tree[0]}/{tree[1]}")
            results.append(run_dataset(name, tree, a.work_dir / name / f"tree{tree[0]}-{tree[1]}", a.threads,
                                       a.seed, a.tol, a.timeout))
    failures = []
    for ds in results:
        failures += [f"{ds['dataset']} tree {ds['tree']}: {e}" for e in ds["errors"]]
        failures += [f"{ds['dataset']} tree {ds['tree']}: {c['direction']}, {c['settings']}: "
                     + (c["error"] if "error" in c else f"{c['unexplained']} unexplained rows "
                        f"{c['unexplained_rows'][:5]}, max abs diff {c['max_abs_score_diff']:.2e} (tolerance "
                        f"{a.tol:g})")
                     for c in ds["comparisons"] if not c["ok"]]
    lp_version = next((ds["libpecos_train"]["version"] for ds in results if "libpecos_train" in ds), "?")
    payload = {
        "started_utc": started, "finished_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
        "wall_s": time.perf_counter() - t_all, "commit": _git("rev-parse", "--short", "HEAD"),
        "dirty": bool(_git("status", "--porcelain", "--", "xmr", "indexing")), "libpecos_version": lp_version,
        "python": sys.version.split()[0], "threads": a.threads, "seed": a.seed, "tol": a.tol,
        "trees": [f"{t[0]}/{t[1]}" for t in trees],
        "settings": [dict(zip(("name", "beam_size", "topk", "post_processor"), s)) for s in SETTINGS],
        "datasets": results, "failures": failures,
    }
    return publish(a.out, render(payload), payload, failures, "interop")


if __name__ == "__main__":
    raise SystemExit(main())
