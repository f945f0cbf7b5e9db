"""xmr.records: the gather kernel against a numpy reference, and LabelRecords.entries."""

from __future__ import annotations

import numpy as np

from xmr.records import LabelRecords, gather_records


def _gather_reference(pool: np.ndarray, off: np.ndarray, ids: np.ndarray, score_bytes: np.ndarray) -> np.ndarray:
    parts = []
    for j, i in enumerate(ids):
        parts += [pool[off[i] : off[i + 1]], score_bytes[4 * j : 4 * j + 4]]
    return np.concatenate(parts) if parts else np.zeros(0, np.uint8)


def test_gather_kernel_matches_numpy_reference() -> None:
    rng = np.random.default_rng(0)
    lengths = rng.integers(0, 40, size=50)
    off = np.zeros(51, np.int64)
    np.cumsum(lengths, out=off[1:])
    pool = rng.integers(0, 256, size=int(off[-1]), dtype=np.uint8)
    for n in (0, 1, 10, 60):
        ids = rng.integers(0, 50, size=n).astype(np.int64)
        sc = rng.standard_normal(n).astype("<f4").view(np.uint8)
        assert np.array_equal(gather_records(pool, off, ids, sc), _gather_reference(pool, off, ids, sc))


def test_label_records_entries() -> None:
    records = LabelRecords([b"a", b"", b"\x00\xffxyz"])
    assert len(records) == 3
    scores = np.array([0.5, -1.0, 3.0], np.float64)  # converted to float32, as the wire wants
    got = records.entries(np.array([2, 0, 1], np.int64), scores)
    f4 = scores.astype("<f4").tobytes()
    assert got == b"\x00\xffxyz" + f4[:4] + b"a" + f4[4:8] + f4[8:]
    assert records.entries(np.zeros(0, np.int32), np.zeros(0, np.float32)) == b""
