"""The README's default run, on the bundled Amazon toys catalogue: category tagging, then product search.

1. Category tagging, measured: a product's text (name and manufacturer) -> every node of its category path
   ("Hobbies", "Hobbies > Model Trains & Railway Sets", ...), a real hierarchical multi-label problem with a few
   hundred labels that trains in seconds. Products without a category are left out; a fixed hash of the product
   id puts 20% of them in the test set. Features: xmr's own text featurizer (word 1-2-grams + marked character
   trigrams), fitted on the train split.
2. Product search, shown: the default product retriever (:func:`xmr.catalogue.default_retriever`, trained on
   first use and cached) answers a few shopper questions with products and their metadata.
"""

from __future__ import annotations

import argparse
import hashlib
import logging
import sys
import time
from pathlib import Path

import numpy as np
import scipy.sparse as sp

from xmr.catalogue import Product, load_catalogue

__all__ = ["Product", "load_catalogue", "build_task", "main"]  # Product/load_catalogue live in xmr.catalogue

LOGGER = logging.getLogger("xmr.quickstart")


def _is_test(uid: str) -> bool:
    return hashlib.sha1(uid.encode()).digest()[0] < 256 * 0.2


def build_task(products: list[Product]):
    """Split into train/test and featurise: returns (X_tr, Y_tr, X_te, Y_te, label_names, test_products)."""
    from xmr.text import TextFeaturizer

    usable = [p for p in products if p.categories and p.name.strip()]
    train = [p for p in usable if not _is_test(p.uid)]
    test = [p for p in usable if _is_test(p.uid)]
    labels = sorted({c for p in train for c in p.categories})
    label_id = {c: i for i, c in enumerate(labels)}
    test = [p for p in test if any(c in label_id for c in p.categories)]

    def text(p: Product) -> str:
        return f"{p.name} {p.manufacturer}"

    featurizer = TextFeaturizer.from_spec("word1-2+char").fit([text(p) for p in train])
    X_tr = featurizer.transform([text(p) for p in train])
    X_te = featurizer.transform([text(p) for p in test])

    def label_matrix(ps: list[Product]) -> sp.csr_matrix:
        rows, cols = [], []
        for i, p in enumerate(ps):
            for c in p.categories:
                if c in label_id:
                    rows.append(i)
                    cols.append(label_id[c])
        data = np.ones(len(rows), dtype=np.float32)
        return sp.csr_matrix((data, (rows, cols)), shape=(len(ps), len(labels)))

    return X_tr, label_matrix(train), X_te, label_matrix(test), labels, test


def main(argv: list[str] | None = None) -> int:
    """Train on the bundled catalogue, evaluate on its held-out products, print metrics and examples."""
    parser = argparse.ArgumentParser(
        prog="python -m xmr.quickstart",
        description="Train and evaluate XR-Linear on the bundled Amazon toys catalogue (product text -> category "
        "path), save the model and print P@k / R@k / MRR and a few predictions; then answer a few shopper "
        "questions with the default product retriever (trained on first use, about 30 s, then cached).",
    )
    parser.add_argument("--catalogue", type=Path, help="catalogue CSV (default: the bundled sample)")
    parser.add_argument("-m", "--model-dir", type=Path, default=Path("models/quickstart"),
                        help="where to save the trained model (default: %(default)s)")
    parser.add_argument("--threads", type=int, default=-1, help="threads (-1 = all cores)")
    parser.add_argument("--examples", type=int, default=5, help="test products to print (default: %(default)s)")
    parser.add_argument("--query", action="append", dest="queries", metavar="TEXT",
                        help="a shopper question for the product retriever (repeatable; default: three examples)")
    parser.add_argument("--no-products", action="store_true", help="skip the product-search part")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")

    from xmr.metrics import ranking_metrics
    from xmr.model import XLinearModel

    try:
        products = load_catalogue(args.catalogue)
    except (OSError, ValueError, UnicodeDecodeError) as e:
        print(f"xmr quickstart: error: cannot read catalogue: {e}", file=sys.stderr)
        return 2
    X_tr, Y_tr, X_te, Y_te, labels, test = build_task(products)
    LOGGER.info("catalogue: %d products, %d train / %d test, %d category labels, %d features",
                len(products), X_tr.shape[0], X_te.shape[0], len(labels), X_tr.shape[1])

    t0 = time.perf_counter()
    model = XLinearModel.train(X_tr, Y_tr, threads=args.threads, progress=True)
    train_s = time.perf_counter() - t0
    model.save(args.model_dir)
    model = XLinearModel.load(args.model_dir)
    t0 = time.perf_counter()
    pred = model.predict(X_te, beam_size=10, topk=10, threads=args.threads)
    predict_s = time.perf_counter() - t0
    m = ranking_metrics(Y_te, pred, k=10, skip_empty=True)

    print(f"\nmodel: {model!r}, saved to {args.model_dir}")
    print(f"train {train_s:.2f}s, predict {X_te.shape[0]} products {predict_s * 1e3:.1f} ms")
    print("  ".join(f"{key} {100 * m[key]:.2f}" for key in ("P@1", "P@3", "R@5", "R@10", "MRR@10")))
    for row in np.linspace(0, len(test) - 1, num=min(args.examples, len(test)), dtype=int):
        p = test[row]
        ids, scores = model.predict_one(X_te[row], topk=3)
        print(f"\n{p.name[:90]}\n  truth: {p.categories[-1]}")
        for i, s in zip(ids, scores):
            print(f"  {s:.3f}  {labels[i]}")
    if not args.no_products:
        search_products(args.queries or DEMO_QUERIES, args.catalogue, args.threads)
    return 0


DEMO_QUERIES = ["wooden train set for a 3 year old", "hornby coach", "lego star wars"]


def search_products(queries: list[str], catalogue: Path | None, threads: int) -> None:
    """Print the top 3 products (title, price, rating) of each query from the default product retriever."""
    from xmr.catalogue import default_retriever

    retriever = default_retriever(catalogue=catalogue, threads=threads)
    print(f"\nproduct search: {retriever!r}")
    for q in queries:
        t0 = time.perf_counter()
        result = retriever.retrieve_one(q, k=3)
        ms = (time.perf_counter() - t0) * 1e3
        print(f"\n{q!r} ({ms:.2f} ms)" + (f": no hits ({result.reason})" if result.reason else ""))
        for hit in result.hits:
            m = hit.metadata
            price = f"£{m['price']:.2f}" if m.get("price") is not None else "price n/a"
            print(f"  {hit.score:.3f}  {m.get('title', hit.label)[:80]}  ({price}, rating {m.get('rating')})")


if __name__ == "__main__":
    sys.exit(main())
