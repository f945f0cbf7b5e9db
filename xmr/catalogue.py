"""The bundled product catalogue and the product retriever trained from it without any query log.

Labels are product ids (``uniq_id``) with their metadata (title, manufacturer, category, price, rating, ...) so
hits can be shown as products. Having no shopper queries, training is self-supervised: every product yields
pseudo-queries drawn from its own text (full text, title, manufacturer + category, 16 random 2-4-word title
fragments; see :func:`pseudo_queries`), and its full text is also given as label-side features
(``Retriever.train(label_texts=...)``), which the engine folds into the label embedding that builds the tree
(PIFA + label features), so products with similar text share clusters even when their pseudo-queries differ.
The same product-text features serve the ranking stage (:mod:`xmr.rerank`, ``DEFAULTS["rerank"]``): beam search
fetches 100 candidates and each is re-scored by blending its model score with its exact cosine to the query.
How well that works, measured on held-out title variants against exhaustive baselines:
experiments/results/catalogue_eval.md.

``default_retriever()`` is the model the server serves out of the box: trained from the bundled catalogue on
first use (16-21 s on 2 cores, about 45 s when they are busy; 1.45 GB peak RSS, measured with the save and the
reload) and cached (atomically, 93 MB, 9 MB of it the rerank stage's product-text features) under
``$XMR_HOME/models/catalogue-v1`` (``~/.cache/xmr`` when ``XMR_HOME`` is unset); loading the cache takes
about 2 s.
"""

from __future__ import annotations

import contextlib
import csv
import hashlib
import io
import json
import logging
import os
import random
import re
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import TYPE_CHECKING, Any

from xmr.validation import InputError, decode_text

if TYPE_CHECKING:
    from xmr.retriever import Retriever

__all__ = [
    "Product", "load_catalogue", "parse_catalogue", "product_text", "product_metadata", "pseudo_queries",
    "product_instances", "train_product_retriever", "default_retriever", "default_cache_path", "RECIPE",
]

LOGGER = logging.getLogger(__name__)

REQUIRED_COLUMNS = ("uniq_id", "product_name", "amazon_category_and_sub_category", "manufacturer")
_STOCK = re.compile(r"^(\d+)\s+(new|used|collectible|refurbished)$")


@dataclass(frozen=True)
class Product:
    """One catalogue row: id, name, manufacturer, category path (as its prefixes) and shop data."""

    uid: str
    name: str
    manufacturer: str
    categories: tuple[str, ...]  # "Hobbies", "Hobbies > Model Trains & Railway Sets", ... ; () when unknown
    price: float | None = None  # GBP
    rating: float | None = None  # average stars, 1..5
    reviews: int | None = None
    stock: int | None = None  # number of offers available
    stock_condition: str | None = None  # "new", "used", "collectible" or "refurbished"

    @property
    def category(self) -> str:
        """The full category path ("A > B > C"), or "" when unknown."""
        return self.categories[-1] if self.categories else ""


def _number(value: str, column: str, where: str, kind: type, lo: float, hi: float) -> Any:
    value = value.strip().replace(",", "")
    if not value:
        return None
    try:
        x = kind(value)
    except ValueError:
        raise InputError(f"{where}: column {column}: {value!r} is not a valid {kind.__name__}") from None
    if not lo <= x <= hi or x != x:
        raise InputError(f"{where}: column {column}: {value!r} is outside [{lo:g}, {hi:g}]")
    return x


def parse_catalogue(text: str, source: str = "<catalogue>") -> list[Product]:
    """Products of a ``;``-separated catalogue text; :class:`InputError` naming ``source:line`` on a bad row."""
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=";")
    try:
        header = next(reader)
    except StopIteration:
        raise InputError(f"{source}: the catalogue is empty (expected a header line)") from None
    except csv.Error as e:
        raise InputError(f"{source}:1: malformed header: {e}") from None
    header = [h.strip().lstrip("\ufeff") for h in header]
    missing = [c for c in REQUIRED_COLUMNS if c not in header]
    if missing:
        raise InputError(f"{source}:1: missing columns {missing} (header has {header}); columns are ';'-separated")
    col = {name: header.index(name) for name in header}
    products: list[Product] = []
    seen: dict[str, int] = {}
    line = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            break
        except csv.Error as e:
            raise InputError(f"{source}:{reader.line_num}: malformed row: {e}") from None
        line, where = reader.line_num, f"{source}:{reader.line_num}"
        if not row or (len(row) == 1 and not row[0].strip()):
            continue  # blank line
        if len(row) != len(header):
            raise InputError(f"{where}: {len(row)} fields, expected {len(header)} (';'-separated, as the header); "
                             "quote fields that contain ';'")

        def get(name: str) -> str:
            return row[col[name]] if name in col else ""

        uid = get("uniq_id").strip()
        if not uid:
            raise InputError(f"{where}: empty uniq_id")
        if uid in seen:
            raise InputError(f"{where}: duplicate uniq_id {uid!r} (first on line {seen[uid]})")
        seen[uid] = line
        name = " ".join(get("product_name").split())
        if not name:
            raise InputError(f"{where}: product {uid!r} has an empty product_name")
        parts = [p.strip() for p in get("amazon_category_and_sub_category").split(">") if p.strip()]
        stock_raw = " ".join(get("number_available_in_stock").split())  # the data writes "5\xa0new"
        stock = condition = None
        if stock_raw:
            m = _STOCK.match(stock_raw)
            if m is None:
                raise InputError(f"{where}: column number_available_in_stock: {stock_raw!r} is not like '5 new'")
            stock, condition = int(m.group(1)), m.group(2)
        products.append(Product(
            uid=uid, name=name, manufacturer=" ".join(get("manufacturer").split()),
            categories=tuple(" > ".join(parts[: i + 1]) for i in range(len(parts))),
            price=_number(get("price"), "price", where, float, 0.0, 1e7),
            rating=_number(get("average_rating"), "average_rating", where, float, 0.0, 5.0),
            reviews=_number(get("number_of_reviews"), "number_of_reviews", where, int, 0, 10**9),
            stock=stock, stock_condition=condition,
        ))
    if not products:
        raise InputError(f"{source}: no products after the header")
    return products


def load_catalogue(path: str | os.PathLike | None = None) -> list[Product]:
    """Products of the bundled catalogue, or of a ``;``-separated CSV with the same columns (gzip or plain)."""
    return parse_catalogue(*_catalogue_text(path))


def _catalogue_bytes(path: str | os.PathLike | None) -> tuple[bytes, str]:
    if path is None:
        return resources.files("xmr.data").joinpath("amazon_toys.csv.gz").read_bytes(), "amazon_toys.csv.gz"
    path = Path(path)
    if not path.is_file():
        raise InputError(f"catalogue {path}: " + ("is a directory" if path.is_dir() else "no such file"))
    return path.read_bytes(), str(path)


def _catalogue_text(path: str | os.PathLike | None) -> tuple[str, str]:
    raw, source = _catalogue_bytes(path)
    return decode_text(raw, source), source


# ---------------------------------------------------------------------------------------- product texts
def product_text(p: Product) -> str:
    """The product's own text: title, manufacturer and category path (the label-side features)."""
    return " ".join(x for x in (p.name, p.manufacturer, p.category.replace(" > ", " ")) if x)


def product_metadata(p: Product) -> dict[str, Any]:
    """JSON-safe metadata shown with a hit (missing values are None)."""
    return {"title": p.name, "manufacturer": p.manufacturer or None, "category": p.category or None,
            "price": p.price, "rating": p.rating, "reviews": p.reviews, "stock": p.stock,
            "stock_condition": p.stock_condition}


def _words(text: str) -> list[str]:
    return re.findall(r"\w+", text)


def _leaf(p: Product) -> str:
    return p.category.rsplit(" > ", 1)[-1] if p.categories else ""


def pseudo_queries(p: Product, n_fragments: int = 16, seed: int = 0, scattered: bool = True) -> list[str]:
    """Self-supervised training queries of one product (deterministic for a given seed and product id).

    The full text and the title (a shopper who knows the product); the manufacturer with the category leaf
    ("Hornby Trains", shared by many products, so it teaches the brand/type level); ``n_fragments`` random
    fragments of 2-4 title words, contiguous ("wooden train set") or, every second one when ``scattered``,
    words picked anywhere in the title in title order ("bigjigs train set" from "Bigjigs Rail Wooden Train
    Set"); and the manufacturer followed by 1-2 title words ("hornby coach"): real queries are short
    fragments, not titles.
    """
    rng = random.Random(f"xmr.catalogue:{seed}:{p.uid}")  # str seeds hash with sha512: stable across runs
    words = _words(p.name)
    out = [product_text(p), p.name]
    leaf = _leaf(p)
    if p.manufacturer and leaf:
        out.append(f"{p.manufacturer} {leaf}")
    n = len(words)
    if n > 2:
        for j in range(n_fragments):
            size = rng.randint(2, min(4, n - 1))
            if scattered and j % 2 == 1:
                out.append(" ".join(words[i] for i in sorted(rng.sample(range(n), size))))
            else:
                start = rng.randrange(0, n - size + 1)
                out.append(" ".join(words[start:start + size]))
    if p.manufacturer and n > 1:
        size = rng.randint(1, min(2, n))
        start = rng.randrange(0, n - size + 1)
        out.append(f"{p.manufacturer} {' '.join(words[start:start + size])}")
    return out


def _key(text: str) -> str:
    from xmr.text.normalize import normalize, tokenize

    return " ".join(tokenize(normalize(text)))


def product_instances(
    products: Sequence[Product], n_fragments: int = 16, seed: int = 0, scattered: bool = True
) -> tuple[list[str], list[list[str]], dict[str, str], dict[str, dict[str, Any]]]:
    """Training data of the product retriever: ``(texts, label_lists, label_texts, metadata)``.

    Pseudo-queries (:func:`pseudo_queries`) that normalise to the same text are merged into one instance
    labelled with all their products, so an ambiguous query ("lego bricks") is one multi-label example rather
    than many contradicting ones. Labels are product ids; ``label_texts`` maps each to :func:`product_text`.
    """
    index: dict[str, int] = {}
    texts: list[str] = []
    label_lists: list[list[str]] = []
    seen: set[str] = set()
    for p in products:
        if p.uid in seen:
            raise InputError(f"product_instances: duplicate product id {p.uid!r}")
        seen.add(p.uid)
        for q in pseudo_queries(p, n_fragments=n_fragments, seed=seed, scattered=scattered):
            key = _key(q)
            if not key:
                continue
            row = index.get(key)
            if row is None:
                index[key] = len(texts)
                texts.append(key)
                label_lists.append([p.uid])
            elif label_lists[row][-1] != p.uid:
                label_lists[row].append(p.uid)
    covered = {u for labels in label_lists for u in labels}
    if len(covered) < len(seen):
        LOGGER.warning("%d products have no word characters in their text and cannot be retrieved",
                       len(seen) - len(covered))
    label_texts = {p.uid: product_text(p) for p in products if p.uid in covered}
    metadata = {p.uid: product_metadata(p) for p in products if p.uid in covered}
    return texts, label_lists, label_texts, metadata


# ------------------------------------------------------------------------------------------- retriever
RECIPE = "catalogue-v1"  # the cache folder's name; the cache is also keyed by DEFAULTS and the catalogue's hash
# Chosen on the validation stream of experiments/catalogue_eval.py (never on its test stream), see
# experiments/results/catalogue_eval.md: recall@10 of held-out title fragments grows with the number of
# pseudo-queries per product (4: 89.6, 8: 92.4, 12: 94.5, 16: 95.6 on val) while training time grows ~1.7x
# (14.5 s -> 24.3 s in that run, 2 shared cores); a weight threshold of 0.01 instead of the engine's 0.1 keeps
# the many small weights of products that have only a handful of training queries each: +0.9 points
# (94.7 -> 95.6, typos 86.1 -> 87.6) for 4.4x the weights (2.5M -> 10.9M nonzero); the word
# block at half the weight of the char block makes typos cost less: typos 87.6 -> 88.9 (R@1 63.0 -> 67.5),
# fragments 95.6 -> 95.7 (a quarter: fragments drop to 95.1).
# The ranking stage (xmr.rerank): beam search fetches 100 candidates, each re-scored as 0.7 * model score + 0.3 *
# exact cosine to the product's own text. On val (same model; rule: best mean of fragment and typo R@10 over
# candidates {50, 100} x weight {0.3, 0.5, 0.7, 1.0}): fragments R@10 95.7 -> 97.3 (R@1 77.9 -> 80.9), typos
# 88.9 -> 93.7 (R@1 67.5 -> 75.3); 50 candidates: 97.1 / 92.6; weight 0.5: 97.3 / 93.6 (R@1 81.6 / 76.0).
# Cost: single-query median 139 -> 229 us on the test stream when measured (beam search for 100 labels instead of
# 10, ~45 us of merge-joins, since replaced by a ~30 us hash-table scan: see xmr.rerank); catalogue_eval.md has
# the current test-stream numbers (fragments 95.5 -> 97.1, typos 89.2 -> 93.5; served 205 us median there against
# BM25's 194 and the exhaustive cosine's 330 in the same run, after beam search's whole-row prefetch and the stage's
# leaf-by-leaf scoring).
DEFAULTS: dict[str, Any] = {"features": "word:0.5+char", "n_fragments": 16, "scattered": True, "seed": 0,
                            "threshold": 0.01, "beam_size": 20, "rerank": {"candidates": 100, "weight": 0.3}}


def train_product_retriever(
    products: Sequence[Product] | None = None,
    *,
    features: Any = DEFAULTS["features"],
    n_fragments: int = DEFAULTS["n_fragments"],
    scattered: bool = DEFAULTS["scattered"],
    seed: int = DEFAULTS["seed"],
    threshold: float = DEFAULTS["threshold"],
    beam_size: int = DEFAULTS["beam_size"],
    rerank: Any = DEFAULTS["rerank"],
    threads: int = -1,
    progress: bool = False,
    **kwargs: Any,
) -> Retriever:
    """A :class:`~xmr.retriever.Retriever` from products (default: the bundled catalogue), no query log needed.

    ``rerank`` ({"candidates", "weight"}, a :class:`~xmr.rerank.RerankConfig`, or None for none) keeps the
    products' text features to re-score beam-search candidates by cosine (:mod:`xmr.rerank`). Other keyword
    arguments go to ``Retriever.train`` (e.g. ``alpha``, ``hashing``, ``max_leaf_size``; ``train_params``
    overrides ``threshold``).
    """
    from xmr.retriever import Retriever
    from xmr.train import TrainParams

    if products is None:
        products = load_catalogue()
    texts, label_lists, label_texts, metadata = product_instances(products, n_fragments=n_fragments, seed=seed,
                                                                  scattered=scattered)
    LOGGER.info("product retriever: %d products -> %d pseudo-query instances", len(label_texts), len(texts))
    kwargs.setdefault("train_params", TrainParams(threshold=threshold))
    retriever = Retriever.train(texts, label_lists, features=features, label_texts=label_texts,
                                label_metadata=metadata, seed=seed, beam_size=beam_size, rerank=rerank,
                                threads=threads, progress=progress, **kwargs)
    retriever.meta["recipe"] = {"name": RECIPE, "n_fragments": n_fragments, "scattered": scattered, "seed": seed,
                                "threshold": kwargs["train_params"].threshold, "beam_size": beam_size,
                                "rerank": retriever.meta["rerank"]}
    return retriever


def _xmr_home() -> Path:
    home = os.environ.get("XMR_HOME")
    return Path(home) if home else Path.home() / ".cache" / "xmr"


def default_cache_path(cache_dir: str | os.PathLike | None = None) -> Path:
    """Where :func:`default_retriever` keeps its model: ``{cache_dir or $XMR_HOME or ~/.cache/xmr}/models/...``."""
    return (Path(cache_dir) if cache_dir is not None else _xmr_home()) / "models" / RECIPE


def _fingerprint(raw: bytes) -> str:
    """Catalogue bytes + recipe: a cache trained from anything else is stale."""
    recipe = json.dumps(DEFAULTS, sort_keys=True).encode()
    return f"{RECIPE}:{hashlib.sha256(raw).hexdigest()[:16]}:{hashlib.sha256(recipe).hexdigest()[:8]}"


def _cached(path: Path, fingerprint: str, quiet: bool = False) -> Retriever | None:
    """The cached retriever at ``path`` if it is readable and was trained from this catalogue and recipe."""
    from xmr.model_io import ModelFormatError
    from xmr.retriever import Retriever

    if not path.exists():
        return None
    try:
        retriever = Retriever.load(path)
    except (ModelFormatError, InputError, OSError, ValueError) as e:
        if not quiet:
            LOGGER.warning("cached product retriever at %s is unreadable (%s); retraining", path, e)
        return None
    stamp = retriever.meta.get("catalogue")
    found = stamp.get("fingerprint") if isinstance(stamp, dict) else None  # a hand-edited meta means retrain
    if found != fingerprint:
        if not quiet:
            LOGGER.warning("cached product retriever at %s is for %s, not %s; retraining", path, found,
                           fingerprint)
        return None
    return retriever


def default_retriever(
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    *,
    catalogue: str | os.PathLike | None = None,
    threads: int = -1,
) -> Retriever:
    """The product retriever of the bundled catalogue (or ``catalogue``), trained on first use and cached.

    The cache lives at :func:`default_cache_path` and is written atomically, so an interrupted training never
    leaves a half-written model. A cache trained from another catalogue or recipe, or an
    unreadable one, is retrained (with a warning). Concurrent first uses on one machine wait for a single
    trainer (a lock file beside the cache). ``progress`` shows a line and progress bars while training.
    """
    path = default_cache_path(cache_dir)
    raw, source = _catalogue_bytes(catalogue)
    fingerprint = _fingerprint(raw)
    retriever = _cached(path, fingerprint)
    if retriever is not None:
        return retriever
    with _training_lock(path):
        retriever = _cached(path, fingerprint, quiet=True)  # trained meanwhile by the process we waited for?
        if retriever is not None:
            return retriever
        return _train_and_cache(path, raw, source, fingerprint, progress, threads)


@contextlib.contextmanager
def _training_lock(path: Path) -> Iterator[None]:
    """Concurrent first uses (server workers starting together) wait for one trainer instead of all training."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        import fcntl
    except ImportError:  # not POSIX: concurrent first uses each train; the atomic save keeps the cache whole
        yield
        return
    fd = os.open(path.parent / f".{path.name}.train-lock", os.O_RDWR | os.O_CREAT, 0o644)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            LOGGER.info("another process is training the product retriever for %s; waiting for it", path)
            fcntl.flock(fd, fcntl.LOCK_EX)
        except OSError:  # file systems without flock
            pass
        yield
    finally:
        os.close(fd)  # releases the lock


def _train_and_cache(path: Path, raw: bytes, source: str, fingerprint: str, progress: bool, threads: int
                     ) -> Retriever:
    from xmr.retriever import Retriever

    t0 = time.perf_counter()
    LOGGER.info("training the product retriever from %s (first use; cached at %s)", source, path)
    if progress:
        print(f"xmr: training the product retriever from {source} (first use, cached at {path}) ...", flush=True)
    products = parse_catalogue(decode_text(raw, source), source)
    retriever = train_product_retriever(products, threads=threads, progress=progress)
    retriever.meta["catalogue"] = {"fingerprint": fingerprint, "source": Path(source).name,
                                   "nr_products": len(products)}
    retriever.save(path)
    LOGGER.info("product retriever trained and cached in %.1fs", time.perf_counter() - t0)
    if progress:
        print(f"xmr: product retriever ready in {time.perf_counter() - t0:.1f}s", flush=True)
    return Retriever.load(path)
