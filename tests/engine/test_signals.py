"""Random and direct feedback: fixed across steps, reproducible from the seed, and they learn."""

from __future__ import annotations

import pytest
import torch
from conftest import seeded
from torch import nn

import snn_ostl

DT = torch.float64


class TwoLayer(nn.Module):
    def __init__(self):
        super().__init__()
        self.l1 = snn_ostl.SoftSNU(4, 16, decay=0.5, threshold=0.0, dtype=DT)
        self.l2 = snn_ostl.SoftSNU(16, 8, decay=0.5, threshold=0.0, dtype=DT)
        self.readout = nn.Linear(8, 2, dtype=DT)

    def forward(self, x, states):
        h1, s1 = self.l1(x, states[0])
        h2, s2 = self.l2(h1, states[1])
        return self.readout(h2), [s1, s2]


def _task(seed=0):
    gen = seeded(seed)
    x = torch.rand(8, 16, 4, generator=gen, dtype=DT)
    target = torch.stack([x[..., :2].sum(-1), x[..., 2:].sum(-1) - x[..., :1].sum(-1)], -1)
    return x, target


def _train(signal, seed=0, epochs=40):
    torch.manual_seed(0)
    net = TwoLayer()
    x, target = _task()
    opt = torch.optim.Adam(net.parameters(), lr=1e-2)
    losses = []
    with snn_ostl.OSTL(net, learning_signal=signal, seed=seed) as learner:
        for _ in range(epochs):
            learner.reset()
            states, total = [None, None], 0.0
            for t in range(x.shape[0]):
                out, states = net(x[t], states)
                loss = ((out - target[t]) ** 2).mean()
                loss.backward()
                total += loss.item()
            opt.step()
            opt.zero_grad()
            losses.append(total)
        matrices = {k: v.clone() for k, v in learner.signals.matrices.items()}
    return losses, matrices, net


@pytest.mark.parametrize("signal", ["random", "direct"])
def test_feedback_reduces_loss_and_is_reproducible(signal):
    losses, matrices, _net = _train(signal)
    assert matrices, "random matrices were drawn"
    assert losses[-1] < 0.5 * losses[0], losses[::10]
    again, matrices2, _net2 = _train(signal)
    assert again == losses
    assert all(torch.equal(matrices[k], matrices2[k]) for k in matrices)
    _other, matrices3, _ = _train(signal, seed=1)
    assert any(not torch.equal(matrices[k], matrices3[k]) for k in matrices)


@pytest.mark.parametrize("signal", ["random", "direct"])
def test_feedback_matrices_fixed_across_steps(signal):
    net = TwoLayer()
    x, target = _task()
    with snn_ostl.OSTL(net, learning_signal=signal) as learner:
        states, seen = [None, None], []
        for t in range(4):
            out, states = net(x[t], states)
            ((out - target[t]) ** 2).mean().backward()
            seen.append({k: v.clone() for k, v in learner.signals.matrices.items()})
    for later in seen[1:]:
        assert later.keys() == seen[0].keys()
        assert all(torch.equal(later[k], seen[0][k]) for k in later)


def test_random_feedback_changes_only_what_lies_below_the_readout():
    """The readout keeps its exact gradient; every error sent further down is random."""
    x, target = _task()
    grads = {}
    for signal in ("backprop", "random"):
        torch.manual_seed(0)
        net = TwoLayer()
        with snn_ostl.OSTL(net, learning_signal=signal):
            states = [None, None]
            for t in range(x.shape[0]):
                out, states = net(x[t], states)
                ((out - target[t]) ** 2).mean().backward()
        grads[signal] = {n: p.grad.clone() for n, p in net.named_parameters()}
    torch.testing.assert_close(
        grads["random"]["readout.weight"], grads["backprop"]["readout.weight"]
    )
    assert not torch.allclose(grads["random"]["l2.weight"], grads["backprop"]["l2.weight"])
    assert not torch.allclose(grads["random"]["l1.weight"], grads["backprop"]["l1.weight"])


def test_random_feedback_reaches_below_internal_weights():
    """With l2's input weights replaced by B in the backward pass, l1's gradient follows B."""
    torch.manual_seed(0)
    net = TwoLayer()
    x, target = _task()
    with snn_ostl.OSTL(net, learning_signal="random") as learner:
        out, _ = net(x[0], [None, None])
        ((out - target[0]) ** 2).mean().backward()
        assert "l2" in learner.signals.matrices and "readout" in learner.signals.matrices
    # direct feedback: no error crosses a layer boundary except through the random matrices
    torch.manual_seed(0)
    net = TwoLayer()
    with snn_ostl.OSTL(net, learning_signal="direct") as learner:
        out, _ = net(x[0], [None, None])
        ((out - target[0]) ** 2).mean().backward()
        assert set(learner.signals.matrices) == {"l1", "l2"}
    assert net.l1.weight.grad is not None and net.l1.weight.grad.abs().sum() > 0
