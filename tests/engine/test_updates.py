"""Immediate updates: an optimizer stepping every k steps, checked against a hand computation."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import snn_ostl

DT = torch.float64


def _manual_leaky_grad(w, decay, xs, targets, threshold):
    """OSTL for y = sigmoid(s - thr), s_t = decay*s_{t-1}*(1-y_{t-1}) + w*x_t, loss (y-target)^2.

    One neuron, one input, computed with scalars: e_t = ds_t/dw carried forward by hand.
    """
    s = y = e_s = e_y = 0.0
    grad = 0.0
    for x, target in zip(xs, targets):
        s_new = decay * s * (1 - y) + w * x
        # e_t = J_ss e^s + J_sy e^y + ∂s/∂w
        e_s_new = decay * (1 - y) * e_s + (-decay * s) * e_y + x
        sig = torch.sigmoid(torch.tensor(s_new - threshold, dtype=DT)).item()
        y_new = sig
        e_y_new = sig * (1 - sig) * e_s_new
        grad += 2 * (y_new - target) * e_y_new
        s, y, e_s, e_y = s_new, y_new, e_s_new, e_y_new
    return grad


@pytest.mark.parametrize("k", [1, 3])
def test_k_step_updates_match_hand_computation(k):
    xs = [0.5, 1.0, -0.3, 0.8, 0.2, 1.1]
    targets = [0.2, 0.9, 0.1, 0.7, 0.4, 0.8]
    lr, w0, decay, thr = 0.5, 0.7, 0.6, 0.3
    cell = snn_ostl.SoftSNU(
        1, 1, decay=decay, threshold=thr, learn_threshold=False, activation="identity", dtype=DT
    )
    with torch.no_grad():
        cell.weight.fill_(w0)
    opt = torch.optim.SGD(cell.parameters(), lr=lr)
    with snn_ostl.OSTL(cell) as learner:
        learner.reset()
        state = None
        weights = []
        for t, (x, target) in enumerate(zip(xs, targets)):
            y, state = cell(torch.tensor([[x]], dtype=DT), state)
            ((y - target) ** 2).sum().backward()
            if (t + 1) % k == 0:
                opt.step()
                opt.zero_grad()
                weights.append(cell.weight.item())
    # by hand: the weight changes mid-sequence, the traces keep running (online learning)
    w, expected, acc = w0, [], 0.0
    s = y = e_s = e_y = 0.0
    for t, (x, target) in enumerate(zip(xs, targets)):
        s_new = decay * s * (1 - y) + w * x
        e_s_new = decay * (1 - y) * e_s - decay * s * e_y + x
        sig = torch.sigmoid(torch.tensor(s_new - thr, dtype=DT)).item()
        e_y_new = sig * (1 - sig) * e_s_new
        acc += 2 * (sig - target) * e_y_new
        s, y, e_s, e_y = s_new, sig, e_s_new, e_y_new
        if (t + 1) % k == 0:
            w -= lr * acc
            acc = 0.0
            expected.append(w)
    assert weights == pytest.approx(expected, rel=1e-12, abs=1e-12)


def test_hand_computation_agrees_with_frozen_weight_gradient():
    """Sanity check of the hand formula itself (deferred update = one gradient)."""
    xs, targets = [0.5, 1.0, -0.3], [0.2, 0.9, 0.1]
    cell = snn_ostl.SoftSNU(
        1, 1, decay=0.6, threshold=0.3, learn_threshold=False, activation="identity", dtype=DT
    )
    with torch.no_grad():
        cell.weight.fill_(0.7)
    with snn_ostl.OSTL(cell):
        state = None
        for x, target in zip(xs, targets):
            y, state = cell(torch.tensor([[x]], dtype=DT), state)
            ((y - target) ** 2).sum().backward()
    assert cell.weight.grad.item() == pytest.approx(
        _manual_leaky_grad(0.7, 0.6, xs, targets, 0.3), rel=1e-12
    )


def test_any_optimizer_works():
    net = nn.Sequential(
        snn_ostl.SNU(4, 3, threshold=0.2, dtype=DT),
    )
    cell = net[0]
    opt = torch.optim.Adam(cell.parameters(), lr=1e-2)
    before = cell.weight.detach().clone()
    with snn_ostl.OSTL(cell):
        state = None
        for _ in range(5):
            y, state = cell(torch.rand(2, 4, dtype=DT) * 2, state)
            (y.sum() + state.s.sum()).backward()
            opt.step()
            opt.zero_grad()
    assert not torch.equal(before, cell.weight)
