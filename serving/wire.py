"""Wire bytes of the hot responses, assembled from prepared pieces instead of through protobuf's Python API.

Under load the server's caches are cold at every call (gRPC and the kernel evict the 2 MB L2 between calls), and
building a 10-hit RetrieveResponse by copying prepared ``Hit`` messages, then serializing it, cost ~50 us a call
there (~25 us in a warm loop). Each label's serialized ``Hit`` (name and metadata) is prepared once; an answer is
then one ``bytes.join`` of those pieces and the scores. Protobuf parsers accept fields in any order and keep the
last value of a singular field, which is what lets a hit's score follow its metadata and a request id be appended
to a cached answer. ``tests/test_serving_wire.py`` parses every form back with the generated classes.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from serving.gen import retrieval_pb2 as pb
from xmr.records import LabelRecords

LOGGER = logging.getLogger("xmr.serving")

_LEN, _FIXED32 = 2, 5  # wire types
_F4 = np.dtype("<f4")


def varint(n: int) -> bytes:
    """The base-128 varint encoding of ``n`` >= 0."""
    out = bytearray()
    while n > 0x7F:
        out.append((n & 0x7F) | 0x80)
        n >>= 7
    out.append(n)
    return bytes(out)


def length_field(number: int, body: bytes) -> bytes:
    """Field ``number`` holding the length-delimited ``body`` (a message's bytes or a string's UTF-8)."""
    return varint(number << 3 | _LEN) + varint(len(body)) + body


def string_field(number: int, text: str) -> bytes:
    """Field ``number`` holding ``text`` (empty text: nothing, as protobuf writes it)."""
    return length_field(number, text.encode("utf-8")) if text else b""


def bool_field(number: int, value: bool) -> bytes:
    """Field ``number`` holding ``value`` (False: nothing)."""
    return varint(number << 3) + b"\x01" if value else b""


_SCORE_TAG = varint(2 << 3 | _FIXED32)  # Hit.score and Completion.score are both field 2, float


def scored_prefix(number: int, body: bytes) -> bytes:
    """The bytes of a repeated message field ``number`` whose message is ``body`` plus a float score (field 2),
    up to the score's four bytes: append those to get the entry."""
    return varint(number << 3 | _LEN) + varint(len(body) + 5) + body + _SCORE_TAG


def hit_prefix(label: str, metadata: Mapping[str, str]) -> bytes:
    """A RetrieveResponse/HitList ``hits`` entry for ``label`` and its wire metadata, before the score."""
    return scored_prefix(1, pb.Hit(label=label, metadata=metadata).SerializeToString())


def wire_metadata(meta: Mapping[str, Any]) -> dict[str, str]:
    """A label's metadata as the map<string, string> of a Hit: strings as they are, other values JSON-encoded."""
    return {str(k): v if isinstance(v, str) else json.dumps(v, ensure_ascii=False) for k, v in meta.items()}


def scored_entries(prefixes: Sequence[bytes], scores: Any) -> bytes:
    """The entries ``prefixes[i] + float32 scores[i]`` (little-endian, as protobuf's fixed32), joined."""
    sc = np.asarray(scores, dtype=_F4).tobytes()
    parts: list[bytes] = []
    for i, p in enumerate(prefixes):
        parts.append(p)
        parts.append(sc[4 * i : 4 * i + 4])
    return b"".join(parts)


def serializer(cls: Any) -> Any:
    """A gRPC response serializer for ``cls`` that also passes prepared wire bytes through as they are."""
    serialize = cls.SerializeToString

    def out(msg: Any) -> bytes:
        return msg if msg.__class__ is bytes else serialize(msg)

    return out


class HitTable(LabelRecords):
    """Every label's hit entry before its score (:func:`hit_prefix`) as :class:`xmr.records.LabelRecords` (why
    a byte pool: that module); ``entries(ids, scores)`` gives the ``hits`` entries of labels ``ids``, as
    :func:`scored_entries` would join them (~50 us a call through protobuf messages under load)."""

    @classmethod
    def of_labels(cls, labels: Any, chunk: int = 10_000) -> HitTable:
        """The table of an ``xmr.labels.LabelSet``: names and wire metadata (~2-5 us a label, once per load)."""
        t0 = time.perf_counter()
        prefixes: list[bytes] = []
        for lo in range(0, len(labels), chunk):
            names, metas = labels.hydrate(list(range(lo, min(lo + chunk, len(labels)))))
            prefixes.extend(hit_prefix(name, wire_metadata(meta)) for name, meta in zip(names, metas))
        table = cls(prefixes)
        LOGGER.info("prepared the hits of %d labels (%.1f MB) in %.1f s", len(labels), table.pool.nbytes / 2**20,
                    time.perf_counter() - t0)
        return table

    @classmethod
    def of_completions(cls, texts: Sequence[str]) -> HitTable:
        """The table of a completion model's label strings: CompleteResponse ``completions`` entries."""
        return cls([scored_prefix(1, string_field(1, t)) for t in texts])
