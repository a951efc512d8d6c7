"""End to end: `snn-ostl compare --tiny` measures OSTL's gradient against BPTT and trains both."""

from __future__ import annotations

import json

import pytest
from test_cli_train import _has_snntorch_adapter, _needs, check_run

from snn_ostl.cli import main


def _compare(task: str, tmp_path, *extra: str) -> dict:
    out = tmp_path / "run"
    argv = ["compare", "--task", task, "--tiny", "--out", str(out), "--quiet", *extra]
    assert main(argv) == 0
    assert (out / "gradients.png").stat().st_size > 1000
    return json.loads((out / "metrics.json").read_text())


def test_one_layer_gradient_equals_bptt(tmp_path, capsys):
    metrics = _compare("digits", tmp_path, "--framework", "native")
    check_run(tmp_path / "run", "accuracy")
    agreement = metrics["gradient_agreement"]
    assert agreement["max_vs_bptt"] < 1e-4
    assert agreement["max_vs_oracle"] < 1e-4
    assert set(metrics["histories"]) == {"ostl", "bptt"}
    assert metrics["gap"]["metric"] == "accuracy"
    line = capsys.readouterr().out.strip().splitlines()
    assert len(line) == 1 and "ostl" in line[0] and "bptt" in line[0]


def test_flush_every_keeps_the_gradient_equal_to_bptt(tmp_path):
    """The native SNU has per-synapse traces: flushed every 3 steps, the same gradient."""
    metrics = _compare("digits", tmp_path, "--framework", "native", "--flush-every", "3")
    assert metrics["gradient_agreement"]["max_vs_bptt"] < 1e-4
    assert metrics["gradient_agreement"]["max_vs_oracle"] < 1e-4


@pytest.mark.skipif(not _has_snntorch_adapter(), reason="the snnTorch adapter is not installed")
def test_one_layer_snntorch_gradient_equals_bptt(tmp_path):
    metrics = _compare("digits", tmp_path)
    assert metrics["gradient_agreement"]["max_vs_bptt"] < 1e-4


def test_recurrent_layer_gradient_equals_bptt(tmp_path):
    _needs("jsb")
    metrics = _compare("jsb", tmp_path)
    assert metrics["gradient_agreement"]["max_vs_bptt"] < 1e-4


def test_two_layers_match_the_oracle_not_bptt(tmp_path):
    """The lower layer of a deep net drops the residual term: only the oracle matches."""
    metrics = _compare("delay", tmp_path, "--hidden", "8,8", "--baselines", "bptt")
    agreement = metrics["gradient_agreement"]
    assert agreement["max_vs_oracle"] < 1e-4
    lower = [n for n in agreement["vs_bptt"] if n.startswith("neurons.0.")]
    assert lower and max(agreement["vs_bptt"][n] for n in lower) > 1e-3


def test_compare_trains_every_baseline(tmp_path):
    metrics = _compare("delay", tmp_path, "--baselines", "bptt", "tbptt", "--horizon", "3")
    assert list(metrics["histories"]) == ["ostl", "bptt", "tbptt-h3"]
    check_run(tmp_path / "run", "accuracy")
