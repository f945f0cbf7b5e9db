"""Raw-text data sets for the text pipeline: aol-q2site queries, Reuters-21578 (ModApte) and the Amazon toys catalogue.

Every loader returns text, not features, and fails with a ``DatasetError`` naming ``file:line`` on a malformed
row. CLI (prints the split sizes, label counts and the notes on how they were obtained)::

    python -m experiments.text_data info reuters aol amazon-toys

Reuters-21578 notes (the numbers are checked by tests/test_text_data.py on the shared copy):

- The ``reut2-*.sgm`` files are read as **latin-1**: the collection is ASCII except one stray byte 0xFC in
  reut2-017.sgm (NEWID 17980, line 35578, decoded as "ü"); latin-1 maps every byte to one character,
  so decoding never fails and never shifts line numbers. Entities (``&lt;``, ``&amp;``, ``&#5;`` ...) are
  unescaped with ``html.unescape``; the control characters that the numeric ones encode (``&#2;``, ``&#3;``,
  ``&#31;`` ...) become spaces.
- ModApte: LEWISSPLIT="TRAIN" / "TEST" with TOPICS="YES" gives exactly the README's 9,603 / 3,299 documents.
  Documents whose <TOPICS> list is empty cannot be scored by P@k and are dropped (the README warns that this
  makes test results not strictly comparable with studies that keep all 3,299), then test labels unseen in
  training (3 topics, none of which leaves a test document empty), then test documents left without labels:
  **7,775 train / 3,019 test documents, 115 topics in training, 90 of them in the test set**, 1.24 topics per
  training document. The literature's "ModApte, 90 categories" figures are 7,769 / 3,019: it keeps only the
  topics with >= 1 training and >= 1 test document; here 7,770 training documents carry one of those 90.
- Text = TITLE + "\\n" + BODY. TYPE="BRIEF" documents have a title only; TYPE="UNPROC" documents have neither
  tag, so their whole <TEXT> content is used.
"""

from __future__ import annotations

import argparse
import bisect
import html
import json
import re
import sys
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import scipy.sparse as sp

from experiments.datasets import DatasetError, aol_instances, label_matrix, shared_data_dir


@dataclass
class TextSplit:
    """A train/test split of raw texts with label-name lists (``info`` holds counts and provenance)."""

    train_texts: list[str]
    train_labels: list[list[str]]
    test_texts: list[str]
    test_labels: list[list[str]]
    info: dict = field(default_factory=dict)
    label_order: list[str] | None = None  # label id order when the loader fixes one (aol: aol_instances' ids)

    def __post_init__(self) -> None:
        if len(self.train_texts) != len(self.train_labels) or len(self.test_texts) != len(self.test_labels):
            raise ValueError("TextSplit: texts and label lists differ in length")

    def label_names(self) -> list[str]:
        """``label_order`` if set, else the training labels in order of first appearance (rows, then within)."""
        if self.label_order is not None:
            return list(self.label_order)
        return list(dict.fromkeys(lab for labels in self.train_labels for lab in labels))

    def label_matrices(self) -> tuple[list[str], sp.csr_matrix, sp.csr_matrix]:
        """(label names, Y_train, Y_test) as 0/1 CSR float32; test labels unknown to training are left out."""
        names = self.label_names()
        ids = {n: i for i, n in enumerate(names)}

        def rows(label_lists: list[list[str]]) -> list[list[int]]:
            return [sorted({ids[lab] for lab in labels if lab in ids}) for labels in label_lists]

        return names, label_matrix(rows(self.train_labels), len(names)), label_matrix(rows(self.test_labels),
                                                                                       len(names))


# --------------------------------------------------------------------------------------------- aol-q2site
def aol_path(root: Path | None = None) -> Path:
    """The AOL log of the shared data (``root`` defaults to ``datasets.shared_data_dir()``)."""
    return (root or shared_data_dir()) / "aol-querylog" / "aol_800_users.tsv"


def aol_q2site_text(path: str | Path | None = None) -> TextSplit:
    """aol-q2site (anchors.md) as raw queries -> clicked hosts: the same rows and split as datasets.aol_instances."""
    path = Path(path) if path is not None else aol_path()
    if not path.is_file():
        raise DatasetError(f"AOL log {path} is missing")
    q_tr, y_tr, q_te, y_te, names = aol_instances(path)
    split = TextSplit(q_tr, [[names[i] for i in row] for row in y_tr], q_te, [[names[i] for i in row] for row in y_te],
                      label_order=names)
    split.info = {"source": str(path), "nr_train": len(q_tr), "nr_test": len(q_te), "nr_labels": len(names)}
    return split


# --------------------------------------------------------------------------------------------- Reuters-21578
LEWISSPLITS = ("TRAIN", "TEST", "NOT-USED")
TOPICS_VALUES = ("YES", "NO", "BYPASS")
MODAPTE_COUNTS = {"train": 9603, "test": 3299}  # README.txt section VIII.B


@dataclass(frozen=True)
class ReutersDoc:
    """One <REUTERS> document: its split attributes, topic labels and text, with the file:line it starts at."""

    newid: int
    lewissplit: str
    topics_attr: str
    topics: tuple[str, ...]
    title: str
    body: str
    source: str

    @property
    def text(self) -> str:
        """TITLE + newline + BODY (either may be empty)."""
        return f"{self.title}\n{self.body}".strip()


_TAG = re.compile(r"<(/?)REUTERS\b([^>]*)>")
_ATTRS = re.compile(r'\s*([A-Za-z]+)="([^"]*)"')
_CONTROL = re.compile(r"[\x00-\x08\x0b-\x1f\x7f]")
_CONTROL_REF = re.compile(r"&#(\d+);")


def _clean(raw: str) -> str:
    """Entities unescaped; control characters (SGML ``&#N;`` markers) turned into spaces."""
    # html.unescape would delete &#1;..&#31; outright, gluing the words they separate ("growth.&#5;&#30;side").
    raw = _CONTROL_REF.sub(lambda m: " " if int(m.group(1)) < 32 or int(m.group(1)) == 127 else m.group(0), raw)
    return _CONTROL.sub(" ", html.unescape(raw)).strip()


def _attributes(raw: str, where: str) -> dict[str, str]:
    attrs: dict[str, str] = {}
    pos = 0
    while pos < len(raw.rstrip()):
        m = _ATTRS.match(raw, pos)
        if not m:
            raise DatasetError(f"{where}: malformed <REUTERS> attributes near {raw[pos:pos + 40]!r}")
        attrs[m.group(1).upper()] = m.group(2)
        pos = m.end()
    return attrs


def _element(body: str, tag: str, where: str, required: bool = False) -> str | None:
    """Content of the single ``<tag ...>...</tag>`` in ``body`` (None when absent and not required)."""
    found = re.findall(rf"<{tag}\b[^>]*>(.*?)</{tag}>", body, flags=re.S)
    opened = len(re.findall(rf"<{tag}\b", body))
    if opened != len(found):
        raise DatasetError(f"{where}: <{tag}> is not closed")
    if len(found) > 1:
        raise DatasetError(f"{where}: {len(found)} <{tag}> elements, expected at most one")
    if not found:
        if required:
            raise DatasetError(f"{where}: no <{tag}> element")
        return None
    return found[0]


def _topics(raw: str, where: str) -> tuple[str, ...]:
    labels = re.findall(r"<D>(.*?)</D>", raw, flags=re.S)
    rest = re.sub(r"<D>.*?</D>", "", raw, flags=re.S)
    if rest.strip():
        raise DatasetError(f"{where}: unexpected content in <TOPICS> outside <D> entries: {rest.strip()[:40]!r}")
    out = tuple(_clean(lab) for lab in labels)
    if any(not lab for lab in out):
        raise DatasetError(f"{where}: empty <D></D> topic")
    return out


def _document(attrs_raw: str, content: str, where: str) -> ReutersDoc:
    attrs = _attributes(attrs_raw, where)
    for key, allowed in (("LEWISSPLIT", LEWISSPLITS), ("TOPICS", TOPICS_VALUES)):
        if attrs.get(key) not in allowed:
            raise DatasetError(f"{where}: {key}={attrs.get(key)!r}, expected one of {', '.join(allowed)}")
    newid = attrs.get("NEWID", "")
    if not newid.isdigit():
        raise DatasetError(f"{where}: NEWID={newid or None!r} is not a number")
    topics = _topics(_element(content, "TOPICS", where, required=True) or "", where)
    text = _element(content, "TEXT", where, required=True) or ""
    title = _element(text, "TITLE", where)
    body = _element(text, "BODY", where)
    if title is None and body is None:  # TYPE="UNPROC": unstructured text, no TITLE/BODY tags
        body = re.sub(r"<[^>]+>", " ", text)
    return ReutersDoc(int(newid), attrs["LEWISSPLIT"], attrs["TOPICS"], topics, _clean(title or ""),
                      _clean(body or ""), where)


def parse_reuters_sgml(text: str, source: str = "<sgml>") -> list[ReutersDoc]:
    """Documents of one reut2-*.sgm file's text; DatasetError naming ``source:line`` on malformed markup."""
    docs: list[ReutersDoc] = []
    open_at: tuple[int, int, str] | None = None  # (offset after the tag, line, attributes)
    last_end = 0
    newlines = [m.start() for m in re.finditer("\n", text)]

    def line_of(pos: int) -> int:
        return bisect.bisect_left(newlines, pos) + 1

    def check_outside(lo: int, hi: int) -> None:
        for part in re.finditer(r"<!DOCTYPE[^>]*>|\S+", text[lo:hi]):
            if not part.group().startswith("<!DOCTYPE"):
                raise DatasetError(f"{source}:{line_of(lo + part.start())}: text outside any <REUTERS> document: "
                                   f"{part.group()[:40]!r}")

    for m in _TAG.finditer(text):
        lineno = line_of(m.start())
        if m.group(1):  # </REUTERS>
            if open_at is None:
                raise DatasetError(f"{source}:{lineno}: </REUTERS> without an open <REUTERS>")
            start, start_line, attrs = open_at
            docs.append(_document(attrs, text[start:m.start()], f"{source}:{start_line}"))
            open_at, last_end = None, m.end()
            continue
        if open_at is not None:
            raise DatasetError(f"{source}:{open_at[1]}: <REUTERS> is not closed before the next one at line {lineno}")
        check_outside(last_end, m.start())
        open_at = (m.end(), lineno, m.group(2))
    if open_at is not None:
        raise DatasetError(f"{source}:{open_at[1]}: <REUTERS> is not closed before the end of the file")
    check_outside(last_end, len(text))
    return docs


def reuters_root(root: Path | None = None) -> Path:
    """The Reuters-21578 folder of the shared data (``root`` defaults to ``datasets.shared_data_dir()``)."""
    return (root or shared_data_dir()) / "reuters21578"


def read_reuters(folder: str | Path | None = None) -> list[ReutersDoc]:
    """Every document of ``folder/reut2-*.sgm`` (read as latin-1, see the module notes), NEWIDs checked unique."""
    folder = Path(folder) if folder is not None else reuters_root()
    files = sorted(folder.glob("reut2-*.sgm"))
    if not files:
        raise DatasetError(f"no reut2-*.sgm files in {folder}")
    docs: list[ReutersDoc] = []
    seen: dict[int, str] = {}
    for path in files:
        for doc in parse_reuters_sgml(path.read_bytes().decode("latin-1"), str(path)):
            if doc.newid in seen:
                raise DatasetError(f"{doc.source}: NEWID {doc.newid} already used at {seen[doc.newid]}")
            seen[doc.newid] = doc.source
            docs.append(doc)
    return docs


def reuters_modapte(root: str | Path | None = None) -> TextSplit:
    """Reuters-21578 ModApte split (TITLE + BODY -> TOPICS); ``root`` is the folder holding the reut2-*.sgm files.

    Documents without topics are dropped, then test topics unseen in training, then test documents left without
    topics; ``info`` records the counts at each step (see the module notes).
    """
    docs = read_reuters(root if root is not None else reuters_root())
    modapte = {s: [d for d in docs if d.topics_attr == "YES" and d.lewissplit == s.upper()] for s in ("train", "test")}
    train = [d for d in modapte["train"] if d.topics]
    known = set(t for d in train for t in d.topics)
    test_with_topics = [d for d in modapte["test"] if d.topics]
    test = [(d, [t for t in d.topics if t in known]) for d in test_with_topics]
    test = [(d, labels) for d, labels in test if labels]
    train_labels = [list(d.topics) for d in train]
    split = TextSplit([d.text for d in train], train_labels, [d.text for d, _ in test], [labels for _, labels in test])
    test_topics = set(t for _, labels in test for t in labels)
    split.info = {
        "source": str(root if root is not None else reuters_root()), "encoding": "latin-1",
        "nr_documents": len(docs),
        "modapte_train": len(modapte["train"]), "modapte_test": len(modapte["test"]),
        "modapte_expected": dict(MODAPTE_COUNTS),
        "train_with_topics": len(train), "test_with_topics": len(test_with_topics),
        "test_topics_unseen_in_train": len({t for d in test_with_topics for t in d.topics} - known),
        "nr_train": len(train), "nr_test": len(test),
        "nr_labels": len(known), "nr_labels_in_test": len(test_topics),
        "nr_labels_in_train_and_test": len(known & test_topics),
        "labels_per_train_doc": sum(map(len, train_labels)) / max(len(train), 1),
    }
    return split


# --------------------------------------------------------------------------------------------- Amazon toys
def amazon_toys_path(root: Path | None = None) -> Path:
    """The Amazon toys catalogue of the shared data."""
    return (root or shared_data_dir()) / "amazon-toys" / "amazon_co-ecommerce_sample_trimmed.csv"


def amazon_toys(path: str | Path | None = None) -> list:
    """Products (``xmr.catalogue.Product``) of the Amazon toys catalogue, validated row by row.

    ``path`` defaults to the shared copy, else the byte-identical sample bundled in ``xmr/data``. The checks
    (field count, unique non-empty ids, non-empty names, numeric price / rating / reviews, stock like "5 new")
    are xmr.catalogue.parse_catalogue's; its InputError is re-raised as a DatasetError with the same file:line.
    """
    from xmr.catalogue import load_catalogue
    from xmr.validation import InputError

    if path is None and amazon_toys_path().is_file():
        path = amazon_toys_path()
    try:
        return load_catalogue(path)
    except InputError as exc:
        raise DatasetError(str(exc)) from None


# --------------------------------------------------------------------------------------------- CLI
LOADERS = {"reuters": lambda: reuters_modapte(), "aol": lambda: aol_q2site_text()}


def summary(name: str) -> dict:
    """Counts and provenance of one raw-text data set."""
    if name == "amazon-toys":
        products = amazon_toys()
        source = amazon_toys_path() if amazon_toys_path().is_file() else "bundled xmr/data/amazon_toys.csv.gz"
        return {"source": str(source), "nr_products": len(products),
                "nr_with_category": sum(1 for p in products if p.categories)}
    return LOADERS[name]().info


def main(argv: Sequence[str] | None = None) -> int:
    """``info NAME...``: print each data set's counts as JSON."""
    ap = argparse.ArgumentParser(prog="python -m experiments.text_data", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("command", choices=["info"])
    ap.add_argument("names", nargs="+", choices=[*LOADERS, "amazon-toys"])
    args = ap.parse_args(argv)
    try:
        for name in args.names:
            print(json.dumps({name: summary(name)}, indent=1))
    except DatasetError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
