"""scripts/leaky_overhead.py times a hand-written OSTL learner against the library's (docs:
benchmarks). Its figures mean something only while that learner computes the library's
gradients: check that it does, that the check would notice if it did not, and that the
network spikes. The script measures the CPU, so it runs on the CPU under ``--device cuda`` too."""

import importlib.util
from pathlib import Path

import pytest
import torch

SCRIPT = Path(__file__).resolve().parents[1] / "scripts" / "leaky_overhead.py"


@pytest.fixture(scope="module")
def script():
    spec = importlib.util.spec_from_file_location("leaky_overhead", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_hand_written_learner_matches_the_library(script):
    with torch.device("cpu"):
        error, spiked = script.check_gradients(steps=12)
    assert error < 1e-6
    assert 0.05 < spiked < 1.0  # the hidden layers spike, and not all of them all the time


def test_gradient_check_fails_without_the_bias_scale(script):
    with torch.device("cpu"):
        error, _ = script.check_gradients(steps=12, scale_bias=False)
    assert error > 1e-2
