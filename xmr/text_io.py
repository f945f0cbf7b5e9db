"""Labelled text files: one instance per line, ``label1,label2<TAB>text``, and label-text files ``label<TAB>text``.

Labels are any strings without a TAB, a line break or the label separator (``,`` unless told otherwise); they are
stripped and empty ones dropped. The text is everything after the first TAB (it may hold further TABs). Blank
lines are skipped. Errors name the file and line.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path

from xmr.model_io import write_file_atomically
from xmr.validation import InputError

__all__ = ["read_labelled_text", "write_labelled_text", "read_label_texts", "label_texts_from_metadata"]


def _check_sep(label_sep: object) -> str:
    if not isinstance(label_sep, str) or not label_sep or any(c in label_sep for c in "\t\r\n"):
        raise InputError(f"label_sep must be a non-empty string without TAB or line breaks, got {label_sep!r}")
    return label_sep


def _numbered_lines(source: str | os.PathLike | Iterable[str]) -> tuple[str, Iterator[tuple[int, str]]]:
    """(name for errors, iterator of (line number, line without its line break)); files are read as UTF-8."""
    if isinstance(source, (str, os.PathLike)):
        path = Path(source)
        if not path.exists():
            raise InputError(f"file {path} does not exist")
        if path.is_dir():
            raise InputError(f"{path} is a directory, expected a text file")

        def from_file() -> Iterator[tuple[int, str]]:
            with open(path, "rb") as f:
                for lineno, raw in enumerate(f, 1):
                    try:
                        line = raw.decode("utf-8-sig" if lineno == 1 else "utf-8")
                    except UnicodeDecodeError as e:
                        raise InputError(f"{path}:{lineno}: not UTF-8 text ({e.reason})") from None
                    yield lineno, line.rstrip("\r\n")

        return str(path), from_file()
    if isinstance(source, bytes):
        raise InputError("expected a path or an iterable of lines (str), got bytes")

    def from_lines() -> Iterator[tuple[int, str]]:
        for lineno, line in enumerate(source, 1):
            if not isinstance(line, str):
                raise InputError(f"<lines>:{lineno}: expected a str line, got {type(line).__name__}")
            yield lineno, line.rstrip("\r\n")

    return "<lines>", from_lines()


def read_labelled_text(
    path_or_lines: str | os.PathLike | Iterable[str], label_sep: str = ","
) -> tuple[list[str], list[list[str]]]:
    """Read ``label1,label2<TAB>text`` lines into (texts, label lists); InputError with file:line on bad rows."""
    label_sep = _check_sep(label_sep)
    name, lines = _numbered_lines(path_or_lines)
    texts: list[str] = []
    label_lists: list[list[str]] = []
    for lineno, line in lines:
        if not line.strip():
            continue
        head, tab, text = line.partition("\t")
        if not tab:
            raise InputError(f"{name}:{lineno}: no TAB; expected 'label1{label_sep}label2<TAB>text'")
        labels = list(dict.fromkeys(lab.strip() for lab in head.split(label_sep)))
        labels = [lab for lab in labels if lab]
        if not labels:
            raise InputError(f"{name}:{lineno}: no label before the TAB")
        texts.append(text)
        label_lists.append(labels)
    return texts, label_lists


def read_label_texts(path_or_lines: str | os.PathLike | Iterable[str]) -> dict[str, str]:
    """Read ``label<TAB>text`` lines (label-side text, one label per line) into a dict; duplicates are errors."""
    name, lines = _numbered_lines(path_or_lines)
    out: dict[str, str] = {}
    first: dict[str, int] = {}
    for lineno, line in lines:
        if not line.strip():
            continue
        head, tab, text = line.partition("\t")
        label = head.strip()
        if not tab:
            raise InputError(f"{name}:{lineno}: no TAB; expected 'label<TAB>text'")
        if not label:
            raise InputError(f"{name}:{lineno}: no label before the TAB")
        if label in out:
            raise InputError(f"{name}:{lineno}: label {label!r} already has a text (line {first[label]})")
        out[label] = text
        first[label] = lineno
    return out


def _one_line(text: str) -> str:
    return " ".join(text.splitlines()) if ("\n" in text or "\r" in text) else text


def write_labelled_text(
    path: str | os.PathLike, texts: Sequence[str], label_lists: Sequence[Sequence[str]], label_sep: str = ","
) -> None:
    """Write instances as ``label1,label2<TAB>text`` lines, atomically; line breaks in texts become spaces."""
    label_sep = _check_sep(label_sep)
    if len(texts) != len(label_lists):
        raise InputError(f"got {len(texts)} texts but {len(label_lists)} label lists")
    rows = []
    for i, (text, labels) in enumerate(zip(texts, label_lists)):
        if not isinstance(text, str):
            raise InputError(f"text {i} is a {type(text).__name__}, expected str")
        if isinstance(labels, str) or not labels:
            raise InputError(f"instance {i} needs a non-empty list of labels, got {labels!r}")
        for lab in labels:
            if not isinstance(lab, str) or not lab.strip() or lab != lab.strip() or label_sep in lab \
                    or any(c in lab for c in "\t\r\n"):
                raise InputError(f"instance {i}: label {lab!r} cannot be written (labels are non-empty strings "
                                 f"without surrounding spaces, TAB, line breaks or {label_sep!r})")
        rows.append(f"{label_sep.join(labels)}\t{_one_line(text)}\n")
    write_file_atomically(path, lambda f: f.write("".join(rows).encode("utf-8")))


def label_texts_from_metadata(metadata: Mapping[str, Mapping[str, object]], fields: Sequence[str]) -> dict[str, str]:
    """Label-side text made of the given metadata fields (space-joined, missing or empty fields skipped)."""
    out = {}
    for label, attrs in metadata.items():
        parts = [str(attrs[f]) for f in fields if attrs.get(f) not in (None, "")]
        if parts:
            out[label] = " ".join(parts)
    return out
