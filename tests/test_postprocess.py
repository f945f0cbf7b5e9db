"""Post-processors: numpy transform/combine against their definitions, and the numba scalar versions."""

from __future__ import annotations

import numpy as np
import pytest

from xmr.inference.common import combine_score, transform_score
from xmr.postprocess import NAMES, PostProcessorError, combine, postprocessor_code, root_score, transform

S = np.array([-800.0, -30.0, -2.0, -0.5, 0.0, 0.3, 0.999, 1.0, 1.5, 40.0], dtype=np.float32)


def _expected(name: str, s: np.ndarray) -> np.ndarray:
    s = s.astype(np.float64)
    sig = 1.0 / (1.0 + np.exp(np.minimum(-s, 700.0)))
    if name == "noop":
        return s
    if name == "sigmoid":
        return sig
    if name.startswith("log-sigmoid"):
        return -np.logaddexp(0.0, -s)
    p = int(name.split("-")[-2][-1])
    h = np.maximum(0.0, 1.0 - s) ** p
    return -h if name.startswith("log-") else np.exp(-h)


@pytest.mark.parametrize("name", NAMES)
def test_transform_matches_definition(name):
    s = S
    np.testing.assert_allclose(transform(name, s), _expected(name, s), rtol=1e-6, atol=1e-30)


@pytest.mark.parametrize("name", NAMES)
def test_numba_transform_matches_numpy(name):
    code = postprocessor_code(name)
    got = np.array([transform_score(code, np.float32(v)) for v in S], dtype=np.float32)
    np.testing.assert_allclose(got, transform(name, S), rtol=1e-6)
    assert np.isfinite(got).all() or name == "noop"


@pytest.mark.parametrize("name", NAMES)
def test_combine(name):
    p = np.float32([0.5, 0.25])
    c = np.float32([0.5, 0.75])
    kind = {"noop": c, "sigmoid": p * c}.get(name, p * c if not name.startswith("log-") else p + c)
    np.testing.assert_array_equal(combine(name, p, c), kind)
    code = postprocessor_code(name)
    np.testing.assert_array_equal([combine_score(code, a, b) for a, b in zip(p, c)], kind)


def test_root_scores_and_codes():
    assert postprocessor_code("noop") == 0 and postprocessor_code("l3-hinge") == 4
    assert root_score("l3-hinge") == 1.0 and root_score("log-l3-hinge") == 0.0 and root_score("noop") == 0.0
    with pytest.raises(PostProcessorError, match="unknown post_processor"):
        postprocessor_code("average")
    assert isinstance(PostProcessorError("x"), ValueError)
