"""Memory does not grow with the sequence length under a per-step backward."""

from __future__ import annotations

import pytest
import torch
from nets import StackNet, data

import snn_ostl


def _saved_and_trace_bytes(net, steps: int) -> tuple[int, int]:
    """Bytes saved for backward during the last step, and bytes held in traces after it."""
    x, target = data(steps=1, batch=4)
    saved = [0]

    def pack(t):
        saved[0] += t.numel() * t.element_size()
        return t

    with snn_ostl.OSTL(net) as learner:
        learner.reset()
        states = [None] * len(net.cells)
        for t in range(steps):
            saved[0] = 0
            with torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t):
                out, states = net(x[0], states)
                loss = ((out - target[0]) ** 2).sum()
            loss.backward()
        traces = sum(g.trace_bytes() for layer in learner.layers.values() for g in layer.groups)
        pending = learner.pending_bytes
    return saved[0], traces, pending


@pytest.mark.parametrize("recurrent", [False, True])
def test_memory_flat_in_sequence_length(recurrent):
    net = StackNet([8, 6, 5], recurrent=recurrent)
    short = _saved_and_trace_bytes(net, 10)
    long = _saved_and_trace_bytes(net, 1000)
    assert short[0] > 0 and short[1] > 0
    assert long[:2] == short[:2], (short, long)
    # eligibility snapshots are released as the per-step graphs go away
    assert long[2] <= 2 * short[1]


def test_whole_sequence_backward_past_budget_is_refused():
    net = StackNet([8, 6], recurrent=True)
    x, target = data(steps=30)
    with snn_ostl.OSTL(net, trace_budget=20_000) as learner:
        learner.reset()
        states, losses = [None], []
        with pytest.raises(snn_ostl.TraceBudgetError, match=r"cells\.0.*backward.*trace_budget"):
            for t in range(30):
                out, states = net(x[t], states)
                losses.append(((out - target[t]) ** 2).sum())
