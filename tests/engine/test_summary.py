"""The learner's summary shows every parameter's trace form and gradient rule."""

from __future__ import annotations

import torch
from nets import StackNet, data
from torch import nn

import snn_ostl


def test_summary_lists_forms_and_memory():
    net = StackNet(
        [8, 6, 5], recurrent=True, front=nn.Sequential(nn.Linear(8, 8, dtype=torch.float64))
    )
    x, _ = data()
    with snn_ostl.OSTL(net, instantaneous_below=True) as learner:
        assert "chosen at the first step" in learner.summary()
        net(x[0], [None, None])
        text = learner.summary()
    assert "cells.0.weight" in text and "full-jacobian" in text
    assert "cells.1.recurrent_weight" in text
    assert "readout.weight" in text and "exact: above every stateful layer" in text
    assert "front.0.weight" in text and "approximation" in text
    assert "total trace memory" in text
    rows = {line.split()[2]: line for line in text.splitlines() if line.startswith("cells.")}
    assert "derived state left out (y = f(s))" in rows["cells.0.weight"]
    assert "derived" not in rows["cells.0.threshold"]  # the threshold moves y directly


def test_summary_suggests_flush_every_for_per_synapse_traces():
    x, _ = data()
    recurrent = StackNet([8, 6, 5], recurrent=True)  # full-Jacobian traces: nothing to suggest
    with snn_ostl.OSTL(recurrent) as learner:
        recurrent(x[0], [None, None])
        assert "flush_every" not in learner.summary()
    net = StackNet([8, 6, 5])  # feed-forward SNU: per-synapse traces
    with snn_ostl.OSTL(net) as learner:
        net(x[0], [None, None])
        assert "tip:" in learner.summary() and "flush_every=16" in learner.summary()
    with snn_ostl.OSTL(net, flush_every=8) as learner:
        net(x[0], [None, None])
        text = learner.summary()
    assert "tip:" not in text
    rows = {line.split()[2]: line for line in text.splitlines() if line.startswith("cells.")}
    assert "added to .grad every 8 steps" in rows["cells.0.weight"]


def test_import_does_not_import_frameworks():
    import subprocess
    import sys

    code = (
        "import sys, snn_ostl; snn_ostl.OSTL(snn_ostl.SNU(2, 2)).detach(); "
        "print('snntorch' in sys.modules, 'norse' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False False"
