"""Shared fixtures of the Python tests: seeded generators and the conformance folder."""

import os
import pathlib

import numpy as np
import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]


def conformance_dir() -> pathlib.Path:
    """The peers' vectors: $SPATIALSOFTMAX_CONFORMANCE_DIR, else ../shared/conformance seen
    from the repository's root (as the C++ tests read them)."""
    return pathlib.Path(
        os.environ.get("SPATIALSOFTMAX_CONFORMANCE_DIR", ROOT.parent / "shared" / "conformance")
    )


@pytest.fixture
def rng():
    return np.random.default_rng(12345)
