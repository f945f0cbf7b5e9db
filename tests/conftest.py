"""Shared fixtures: where the third-party data lives, and how its absence is handled."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent


def shared_data_dir() -> Path | None:
    """The shared data folder (``$XMR_SHARED_DATA`` or ``../shared/data`` beside the repo), if present."""
    env = os.environ.get("XMR_SHARED_DATA")
    path = Path(env) if env else REPO.parent / "shared" / "data"
    return path if path.is_dir() else None


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """Path to ``shared/data``; skips when absent, but fails under ``CI=true`` where it must be there."""
    path = shared_data_dir()
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("shared data folder is missing under CI=true (expected ../shared/data or $XMR_SHARED_DATA)")
        pytest.skip("shared data folder ../shared/data is absent on this machine")
    return path


@pytest.fixture(autouse=True)
def _thawed_heap():
    """Servers started by a test freeze the heap (serving.heap); later tests get a thawed one."""
    yield
    import gc

    gc.unfreeze()
