"""Benchmark data sets: Mulan sparse ARFF (bibtex, delicious) and aol-q2site, cached as uncompressed npz.

Each data set is four CSR float32 matrices (X_train, Y_train, X_test, Y_test) written with
``scipy.sparse.save_npz(..., compressed=False)`` under ``experiments/.cache/<name>/`` so that other processes
(including the peers' venv with numpy<2 / scipy<1.14) can read them. CLI::

    python -m experiments.datasets build bibtex delicious aol-q2site aol-q2site-1k
    python -m experiments.datasets info aol-q2site
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from urllib.parse import urlsplit

import numpy as np
import scipy.sparse as sp

EXPERIMENTS = Path(__file__).resolve().parent
REPO = EXPERIMENTS.parent
CACHE = Path(os.environ.get("XMR_EXPERIMENTS_CACHE", EXPERIMENTS / ".cache"))
MATRICES = ("X_train", "Y_train", "X_test", "Y_test")
MULAN_SETS = ("bibtex", "delicious", "enron", "medical")
AOL = "aol-q2site"
AOL_SPLIT = "2006-05-01"
# Bump when the featurisation or a loader changes so stale caches are rebuilt rather than silently reused.
CACHE_VERSION = 2


class DatasetError(ValueError):
    """A data file is malformed or a data set name is unknown."""


# --------------------------------------------------------------------------------------------- locations
def shared_data_dir() -> Path:
    """The shared data folder: ``$XMR_SHARED_DATA`` or ``../shared/data`` beside the repository."""
    env = os.environ.get("XMR_SHARED_DATA")
    return Path(env) if env else REPO.parent / "shared" / "data"


def path_of(name: str) -> Path:
    """Cache folder of data set ``name`` (it may not exist yet)."""
    return CACHE / canonical_name(name)


def canonical_name(name: str) -> str:
    """Normalise a data set name (``aol-q2site-1000`` -> ``aol-q2site-1k``); raises DatasetError if unknown."""
    if name in MULAN_SETS or name == AOL:
        return name
    k = aol_restriction(name)
    if k is None:
        raise DatasetError(f"unknown data set {name!r}: expected one of {', '.join(MULAN_SETS)}, {AOL}, {AOL}-<K>")
    return f"{AOL}-{k // 1000}k" if k % 1000 == 0 else f"{AOL}-{k}"


def aol_restriction(name: str) -> int | None:
    """K of a restricted aol name ``aol-q2site-<K>`` (``1k`` = 1000), or None for any other name."""
    m = re.fullmatch(re.escape(AOL) + r"-(\d+)(k?)", name)
    if not m:
        return None
    k = int(m.group(1)) * (1000 if m.group(2) else 1)
    if k <= 0:
        raise DatasetError(f"data set {name!r}: the number of labels must be positive")
    return k


# --------------------------------------------------------------------------------------------- ARFF
class ArffError(DatasetError):
    """A malformed ARFF file; the message names the file and line."""


def read_mulan_labels(xml_path: str | Path) -> list[str]:
    """Label names, in file order, from a Mulan ``NAME.xml`` (``<label name="..."/>``, possibly nested)."""
    try:
        root = ET.parse(xml_path).getroot()
    except (ET.ParseError, OSError) as exc:
        raise DatasetError(f"{xml_path}: cannot read the Mulan label file: {exc}") from exc
    names = [el.attrib["name"] for el in root.iter() if el.tag.split("}")[-1] == "label" and "name" in el.attrib]
    if not names:
        raise DatasetError(f"{xml_path}: no <label name=...> elements")
    return names


def _unquote(token: str) -> str:
    if len(token) >= 2 and token[0] == token[-1] and token[0] in "'\"":
        return token[1:-1]
    return token


_ATTR = re.compile(r"""@attribute\s+('(?:[^'\\]|\\.)*'|"(?:[^"\\]|\\.)*"|\S+)\s+(.+)$""", re.IGNORECASE)


def parse_arff(lines: Iterable[str], nr_labels: int | None = None, label_names: list[str] | None = None,
               source: str = "<arff>") -> tuple[sp.csr_matrix, sp.csr_matrix, list[str], list[str]]:
    """Parse a Mulan ARFF (labels = the LAST attributes) into raw features X and 0/1 labels Y (CSR float32).

    Give ``label_names`` (from NAME.xml: checked against the last attributes) or ``nr_labels``. Data rows may be
    sparse (``{idx val, ...}``) or dense (comma-separated). Returns (X, Y, feature_names, label_names).
    """
    attrs: list[str] = []
    in_data = False
    rows_x: list[tuple[np.ndarray, np.ndarray]] = []
    rows_y: list[np.ndarray] = []
    nr_feat = -1
    for lineno, raw in enumerate(lines, start=1):
        line = raw.strip()
        if not line or line.startswith("%"):
            continue
        if not in_data:
            low = line.lower()
            if low.startswith("@relation"):
                continue
            if low.startswith("@attribute"):
                m = _ATTR.match(line)
                if not m:
                    raise ArffError(f"{source}:{lineno}: malformed @attribute line: {line[:80]!r}")
                attrs.append(_unquote(m.group(1)))
                continue
            if low.startswith("@data"):
                nr_feat = _split_attributes(attrs, nr_labels, label_names, source, lineno)
                in_data = True
                continue
            raise ArffError(f"{source}:{lineno}: unexpected header line: {line[:80]!r}")
        idx, val = _parse_row(line, len(attrs), source, lineno)
        is_label = idx >= nr_feat
        lab_idx, lab_val = idx[is_label] - nr_feat, val[is_label]
        if np.any((lab_val != 0) & (lab_val != 1)):
            raise ArffError(f"{source}:{lineno}: label values must be 0 or 1")
        rows_x.append((idx[~is_label], val[~is_label]))
        rows_y.append(lab_idx[lab_val != 0])
    if not in_data:
        raise ArffError(f"{source}: no @data section")
    names_y = attrs[nr_feat:]
    X = _csr_from_rows([r[0] for r in rows_x], [r[1] for r in rows_x], nr_feat)
    Y = _csr_from_rows(rows_y, [np.ones(len(r), np.float32) for r in rows_y], len(names_y))
    return X, Y, attrs[:nr_feat], names_y


def _split_attributes(attrs: list[str], nr_labels: int | None, label_names: list[str] | None, source: str,
                      lineno: int) -> int:
    if label_names is not None:
        nr_labels = len(label_names)
    if nr_labels is None:
        raise ArffError(f"{source}: give label_names or nr_labels (labels are the last attributes)")
    if not 0 < nr_labels <= len(attrs):
        raise ArffError(f"{source}:{lineno}: {nr_labels} labels but only {len(attrs)} attributes")
    if label_names is not None and attrs[len(attrs) - nr_labels:] != list(label_names):
        raise ArffError(f"{source}:{lineno}: the last {nr_labels} attributes are not the labels named in the XML file")
    return len(attrs) - nr_labels


def _parse_row(line: str, nr_attrs: int, source: str, lineno: int) -> tuple[np.ndarray, np.ndarray]:
    """(attribute indices, values) of one data row, sparse or dense; raises ArffError naming the line."""
    if line.startswith("{"):
        if not line.endswith("}"):
            raise ArffError(f"{source}:{lineno}: sparse row does not end with '}}': {line[-40:]!r}")
        body = line[1:-1].strip()
        pairs = [p.strip() for p in body.split(",")] if body else []
        idx = np.empty(len(pairs), np.int64)
        val = np.empty(len(pairs), np.float32)
        for j, pair in enumerate(pairs):
            parts = pair.split()
            if len(parts) != 2:
                raise ArffError(f"{source}:{lineno}: sparse entry {pair!r} is not 'index value'")
            try:
                idx[j] = int(parts[0])
                val[j] = float(_unquote(parts[1]))
            except ValueError:
                raise ArffError(f"{source}:{lineno}: sparse entry {pair!r} has a non-numeric index or value") from None
        if np.any(idx < 0) or np.any(idx >= nr_attrs):
            raise ArffError(f"{source}:{lineno}: attribute index out of range [0, {nr_attrs})")
        if np.any(np.diff(idx) <= 0):
            raise ArffError(f"{source}:{lineno}: sparse indices must be strictly increasing")
        if not np.all(np.isfinite(val)):
            raise ArffError(f"{source}:{lineno}: non-finite value")
        return idx, val
    parts = [p.strip() for p in line.split(",")]
    if len(parts) != nr_attrs:
        raise ArffError(f"{source}:{lineno}: dense row has {len(parts)} values, expected {nr_attrs}")
    try:
        dense = np.array([float(_unquote(p)) for p in parts], np.float32)
    except ValueError:
        raise ArffError(f"{source}:{lineno}: dense row has a non-numeric value (missing '?' is not supported)") from None
    if not np.all(np.isfinite(dense)):
        raise ArffError(f"{source}:{lineno}: non-finite value")
    nz = np.flatnonzero(dense)
    return nz, dense[nz]


def _csr_from_rows(indices: list[np.ndarray], values: list[np.ndarray], nr_cols: int) -> sp.csr_matrix:
    indptr = np.zeros(len(indices) + 1, np.int64)
    indptr[1:] = np.cumsum([len(r) for r in indices])
    ind = np.concatenate(indices).astype(np.int32) if indices else np.zeros(0, np.int32)
    val = np.concatenate(values).astype(np.float32) if values else np.zeros(0, np.float32)
    mat = sp.csr_matrix((val, ind, indptr.astype(np.int32)), shape=(len(indices), nr_cols), dtype=np.float32)
    mat.eliminate_zeros()
    return mat


def read_arff(path: str | Path, label_names: list[str] | None = None, nr_labels: int | None = None):
    """``parse_arff`` on a file (UTF-8)."""
    with open(path, encoding="utf-8") as f:
        return parse_arff(f, nr_labels=nr_labels, label_names=label_names, source=str(path))


def l2_normalize_rows(X: sp.csr_matrix) -> sp.csr_matrix:
    """Each row scaled to unit L2 norm (all-zero rows stay zero); CSR float32, sorted int32 indices."""
    X = sp.csr_matrix(X, dtype=np.float32, copy=True)
    X.sum_duplicates()
    X.sort_indices()
    sq = np.asarray(X.multiply(X).sum(axis=1), dtype=np.float64).ravel()
    norms = np.sqrt(sq)
    norms[norms == 0] = 1.0
    X.data /= np.repeat(norms, np.diff(X.indptr)).astype(np.float32)
    return X


def load_mulan(name: str, root: Path | None = None) -> tuple[dict[str, sp.csr_matrix], dict]:
    """Mulan set ``name`` from ``root/mulan/NAME``: features L2-normalised, labels in the XML's order."""
    folder = (root or shared_data_dir()) / "mulan" / name
    if not folder.is_dir():
        raise DatasetError(f"Mulan folder {folder} is missing")
    labels = read_mulan_labels(folder / f"{name}.xml")
    Xtr, Ytr, ftr, _ = read_arff(folder / f"{name}-train.arff", label_names=labels)
    Xte, Yte, fte, _ = read_arff(folder / f"{name}-test.arff", label_names=labels)
    if ftr != fte:
        raise DatasetError(f"{folder}: train and test ARFF files declare different feature attributes")
    mats = {"X_train": l2_normalize_rows(Xtr), "Y_train": Ytr, "X_test": l2_normalize_rows(Xte), "Y_test": Yte}
    return mats, {"labels": labels, "source": f"mulan/{name}"}


# --------------------------------------------------------------------------------------------- aol-q2site
def click_host(url: str) -> str:
    """Label of a clicked URL: its host (netloc, port kept) lowercased, one leading ``www.`` removed."""
    host = urlsplit(url.strip()).netloc.lower()
    return host[4:] if host.startswith("www.") else host


def read_aol_log(path: str | Path) -> Iterator[tuple[str, str, str, list[str]]]:
    """(user id, query, time, clicked URLs) of every row of the AOL tsv, in file order; DatasetError on bad rows."""
    with open(path, encoding="utf-8", newline="\n") as f:
        header = f.readline().rstrip("\r\n").split("\t")
        want = ["AnonID", "Query", "QueryTime", "ClickURLs"]
        if header[:4] != want:
            raise DatasetError(f"{path}:1: header {header!r}, expected {want!r}")
        for lineno, raw in enumerate(f, start=2):
            parts = raw.rstrip("\r\n").split("\t")
            if len(parts) != 4:
                raise DatasetError(f"{path}:{lineno}: {len(parts)} tab-separated fields, expected 4")
            user, query, when, clicks = parts
            if not re.fullmatch(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d", when):
                raise DatasetError(f"{path}:{lineno}: QueryTime {when!r} is not 'YYYY-MM-DD HH:MM:SS'")
            yield user, query, when, clicks.split()


def read_aol_rows(path: str | Path) -> Iterator[tuple[str, str, list[str]]]:
    """(query, time, clicked URLs) of each row of the AOL tsv that has at least one click."""
    for _, query, when, urls in read_aol_log(path):
        if urls:
            yield query, when, urls


def aol_instances(path: str | Path) -> tuple[list[str], list[list[int]], list[str], list[list[int]], list[str]]:
    """The aol-q2site split of anchors.md before featurisation.

    Returns (train queries, train label lists, test queries, test label lists, label names). Label ids number
    the hosts in order of first appearance in the training rows (file order; within a row, hosts sorted by
    name): this order reproduces the anchors' libpecos figures (k-means seeding depends on label order).
    Test labels unseen in training are dropped, then test rows left without labels.
    """
    train: list[tuple[str, set[str]]] = []
    test: list[tuple[str, set[str]]] = []
    for query, when, urls in read_aol_rows(path):
        hosts = {click_host(u) for u in urls} - {""}
        (train if when < AOL_SPLIT else test).append((query, hosts))
    ids: dict[str, int] = {}
    for _, hosts in train:
        for h in sorted(hosts):
            ids.setdefault(h, len(ids))
    names = list(ids)
    q_tr = [q for q, _ in train]
    y_tr = [sorted(ids[h] for h in hosts) for _, hosts in train]
    q_te, y_te = [], []
    for q, hosts in test:
        kept = sorted(ids[h] for h in hosts if h in ids)
        if kept:
            q_te.append(q)
            y_te.append(kept)
    return q_tr, y_tr, q_te, y_te, names


def label_matrix(label_lists: list[list[int]], nr_labels: int) -> sp.csr_matrix:
    """0/1 CSR float32 matrix from per-row sorted label id lists."""
    return _csr_from_rows([np.asarray(r, np.int64) for r in label_lists],
                          [np.ones(len(r), np.float32) for r in label_lists], nr_labels)


def aol_featurizer():
    """Unfitted word 1-2 gram + char_wb 3-gram (min_df=2) sublinear TF-IDF pair, as anchors.md defines."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    words = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True, dtype=np.float32)
    chars = TfidfVectorizer(analyzer="char_wb", ngram_range=(3, 3), min_df=2, sublinear_tf=True, dtype=np.float32)
    return words, chars


def load_aol(root: Path | None = None) -> tuple[dict[str, sp.csr_matrix], dict]:
    """aol-q2site from ``root/aol-querylog/aol_800_users.tsv``, featurised (fitted on train, rows L2-normalised)."""
    path = (root or shared_data_dir()) / "aol-querylog" / "aol_800_users.tsv"
    if not path.is_file():
        raise DatasetError(f"AOL log {path} is missing")
    q_tr, y_tr, q_te, y_te, names = aol_instances(path)
    words, chars = aol_featurizer()
    Xtr = sp.hstack([words.fit_transform(q_tr), chars.fit_transform(q_tr)], format="csr")
    Xte = sp.hstack([words.transform(q_te), chars.transform(q_te)], format="csr")
    mats = {"X_train": l2_normalize_rows(Xtr), "Y_train": label_matrix(y_tr, len(names)),
            "X_test": l2_normalize_rows(Xte), "Y_test": label_matrix(y_te, len(names))}
    meta = {"labels": names, "source": "aol-querylog/aol_800_users.tsv",
            "nr_word_features": len(words.vocabulary_), "nr_char_features": len(chars.vocabulary_)}
    return mats, meta


def restrict_labels(mats: dict[str, sp.csr_matrix], k: int) -> tuple[dict[str, sp.csr_matrix], np.ndarray]:
    """Keep the k most frequent training labels (ties: smaller id), renumbered in id order; drop label-less rows."""
    freq = np.bincount(mats["Y_train"].indices, minlength=mats["Y_train"].shape[1])
    order = np.lexsort((np.arange(len(freq)), -freq))
    keep = np.sort(order[: min(k, len(freq))])
    out = {}
    for split in ("train", "test"):
        Y = mats[f"Y_{split}"][:, keep].tocsr()
        rows = np.flatnonzero(np.diff(Y.indptr) > 0)
        out[f"X_{split}"] = mats[f"X_{split}"][rows]
        out[f"Y_{split}"] = Y[rows]
    return out, keep


# --------------------------------------------------------------------------------------------- cache
def _check(mats: dict[str, sp.csr_matrix]) -> dict[str, sp.csr_matrix]:
    out = {}
    for key in MATRICES:
        m = sp.csr_matrix(mats[key], dtype=np.float32)
        m.sort_indices()
        m.indices = m.indices.astype(np.int32, copy=False)
        m.indptr = m.indptr.astype(np.int32, copy=False)
        out[key] = m
    if out["X_train"].shape[1] != out["X_test"].shape[1] or out["Y_train"].shape[1] != out["Y_test"].shape[1]:
        raise DatasetError("train and test matrices disagree on the number of features or labels")
    return out


def write_cache(name: str, mats: dict[str, sp.csr_matrix], meta: dict, dest: Path | None = None,
                extra: Callable[[Path], None] | None = None) -> Path:
    """Write the 4 matrices + meta.json + labels.txt atomically (temp folder, then rename) to ``path_of(name)``.

    ``dest`` overrides the folder (a data set not in the registry, e.g. keyed by a feature spec); ``extra(tmp)``
    adds files to the temporary folder before it is renamed into place.
    """
    dest = path_of(name) if dest is None else Path(dest)
    dest.parent.mkdir(parents=True, exist_ok=True)
    mats = _check(mats)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}.", dir=dest.parent))
    try:
        for key, m in mats.items():
            # Plain csr_matrix + uncompressed: readable by old scipy (peers' venv) and mmap-friendly.
            sp.save_npz(tmp / f"{key}.npz", sp.csr_matrix(m), compressed=False)
        labels = meta.pop("labels", None)
        if labels is not None:
            (tmp / "labels.txt").write_text("".join(f"{s}\n" for s in labels), encoding="utf-8")
        if extra is not None:
            extra(tmp)
        info = {"name": dest.name, "cache_version": CACHE_VERSION, **meta,
                "nr_train": mats["X_train"].shape[0], "nr_test": mats["X_test"].shape[0],
                "nr_features": mats["X_train"].shape[1], "nr_labels": mats["Y_train"].shape[1],
                "created_utc": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}
        (tmp / "meta.json").write_text(json.dumps(info, indent=1) + "\n")
        if dest.exists():
            shutil.rmtree(dest)
        os.replace(tmp, dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return dest


def is_cached(name: str) -> bool:
    """True when ``path_of(name)`` holds all 4 matrices written by the current CACHE_VERSION."""
    d = path_of(name)
    try:
        meta = json.loads((d / "meta.json").read_text())
    except (OSError, ValueError):
        return False
    return meta.get("cache_version") == CACHE_VERSION and all((d / f"{k}.npz").is_file() for k in MATRICES)


def build(name: str, force: bool = False, root: Path | None = None, log=print) -> Path:
    """Build the cache of ``name`` unless already there (or ``force``); returns its folder."""
    name = canonical_name(name)
    if is_cached(name) and not force:
        return path_of(name)
    t0 = time.perf_counter()
    if name in MULAN_SETS:
        mats, meta = load_mulan(name, root)
    elif name == AOL:
        mats, meta = load_aol(root)
    else:
        k = aol_restriction(name)
        build(AOL, root=root, log=log)
        full = dict(zip(MATRICES, load(AOL)))
        mats, keep = restrict_labels(full, k)
        names = (path_of(AOL) / "labels.txt").read_text(encoding="utf-8").splitlines()
        meta = {"labels": [names[i] for i in keep], "source": f"{AOL} restricted to its {k} most frequent labels",
                "label_ids_in_full": [int(i) for i in keep]}
    dest = write_cache(name, mats, meta)
    log(f"[datasets] built {name} in {time.perf_counter() - t0:.1f}s -> {dest}")
    return dest


def load(name: str, build_missing: bool = True) -> tuple[sp.csr_matrix, sp.csr_matrix, sp.csr_matrix, sp.csr_matrix]:
    """(X_train, Y_train, X_test, Y_test) of data set ``name`` from the cache, building it first if missing."""
    name = canonical_name(name)
    if not is_cached(name):
        if not build_missing:
            raise DatasetError(f"data set {name} is not cached at {path_of(name)}; run "
                               f"`python -m experiments.datasets build {name}`")
        build(name)
    d = path_of(name)
    return tuple(sp.csr_matrix(sp.load_npz(d / f"{k}.npz")) for k in MATRICES)  # type: ignore[return-value]


def info(name: str) -> dict:
    """meta.json of a cached data set."""
    return json.loads((path_of(name) / "meta.json").read_text())


def main(argv: list[str] | None = None) -> int:
    """CLI entry point: ``build NAME...`` / ``info NAME...`` / ``path NAME``."""
    ap = argparse.ArgumentParser(prog="python -m experiments.datasets", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["build", "info", "path"])
    ap.add_argument("names", nargs="+", help="bibtex, delicious, enron, medical, aol-q2site, aol-q2site-<K>[k]")
    ap.add_argument("--force", action="store_true", help="rebuild even when cached")
    args = ap.parse_args(argv)
    try:
        for name in args.names:
            if args.command == "build":
                print(build(name, force=args.force))
            elif args.command == "path":
                print(path_of(name))
            else:
                meta = info(name)
                meta.pop("label_ids_in_full", None)
                print(json.dumps(meta, indent=1))
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
