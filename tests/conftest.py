"""Shared helpers of the test suite."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent / "engine"))

SPIKE_RATE_RANGE = (0.02, 0.90)


def assert_spiking(rates: list[float], what: str = "") -> None:
    """Neurons must actually spike, or every gradient comparison is vacuous."""
    lo, hi = SPIKE_RATE_RANGE
    for i, r in enumerate(rates):
        assert lo <= r <= hi, f"{what} layer {i}: mean spike rate {r:.3f} outside [{lo}, {hi}]"


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)
