"""RFLO (Murray, eLife 2019) against a direct implementation of its equations.

Leaky rate units ``h_t = (1 - 1/τ) h_{t-1} + tanh(W_in x_t + b + W_rec h_{t-1}) / τ`` feed a
linear readout; the loss ``½ ||ŷ_t - y*_t||²`` of every step is backpropagated as it comes. The
learner's gradients must equal :func:`equations_rtrl.rflo_leaky` (the eligibility keeps each
unit's leak only, the readout error reaches the units through a fixed random matrix B) to 1e-10
in float64, for τ > 1 and for τ = 1 (a plain RNN, where the eligibility has no memory). The
negative controls show what RFLO leaves out: exact OSTL keeps the recurrent weights' influence,
and the same eligibility with backprop feedback (``ostl-no-h``) uses the readout's weights.
"""

from __future__ import annotations

import pytest
import torch
from conftest import seeded
from equations_rtrl import LeakyWeights, Readout, rflo_leaky
from rule_nets import DT, N_IN, N_OUT, B, LeakyRateNet, T

import snn_ostl
from snn_ostl.testing import max_relative_error

TOL = 1e-10
HIDDEN = ("cell.weight_ih", "cell.weight_hh", "cell.bias")


Net = LeakyRateNet


def _data(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    gen = seeded(seed)
    x = torch.randn(T, B, N_IN, generator=gen, dtype=DT)
    target = torch.randn(T, B, N_OUT, generator=gen, dtype=DT)
    return x, target


def _weights(net: Net) -> tuple[LeakyWeights, Readout]:
    c = net.cell
    p = LeakyWeights(
        c.weight_ih.detach().clone(), c.weight_hh.detach().clone(), c.bias.detach().clone(), c.tau
    )
    return p, Readout(net.out.weight.detach().clone(), net.out.bias.detach().clone())


def _learn(net: Net, rule, x, target):
    """One sequence, a backward per step: (gradients, rates [T, B, N], the readout's feedback
    matrix after each step, the summary's first line)."""
    with snn_ostl.OSTL(net, rule=rule) as learner:
        learner.reset()
        h, rates, seen = None, [], []
        for t in range(x.shape[0]):
            out, h = net(x[t], h)
            (0.5 * ((out - target[t]) ** 2).sum()).backward()
            rates.append(h.detach())
            if "out" in learner.signals.matrices:
                seen.append(learner.signals.matrices["out"].clone())
        line = learner.summary().splitlines()[0]
    grads = {n: p.grad.detach().clone() for n, p in net.named_parameters()}
    for p in net.parameters():
        p.grad = None
    return grads, torch.stack(rates), seen, line


def _errors(grads, reference) -> dict[str, float]:
    assert set(grads) == set(reference)
    return {k: max_relative_error(grads[k], reference[k]) for k in reference}


def _check_active(rates: torch.Tensor) -> None:
    """Units neither silent nor saturated: the nonlinearity's slope matters at every step."""
    rate = rates.abs().mean()
    assert 0.05 < rate < 0.9, float(rate)
    assert rates[1:].sub(rates[:-1]).abs().max() > 1e-3


@pytest.mark.parametrize("tau", [4.0, 1.0], ids=["tau-4", "tau-1"])
def test_rflo_equals_the_equations(tau):
    torch.manual_seed(0)
    net = Net(tau)
    x, target = _data()
    p, readout = _weights(net)
    grads, rates, seen, line = _learn(net, "rflo", x, target)
    _check_active(rates)
    assert "rule=rflo" in line
    assert len(seen) == T
    feedback = seen[0]
    assert feedback.shape == readout.weight.shape
    assert all(torch.equal(b, feedback) for b in seen), "B changed during the sequence"
    assert max_relative_error(feedback, readout.weight) > 0.1, "B is the readout's weight"
    reference, _ = rflo_leaky(x, target, p, readout, feedback=feedback)
    errors = _errors(grads, reference)
    assert max(errors.values()) <= TOL, errors
    # negative control 1: exact OSTL keeps W_rec's influence on the units, which RFLO drops
    exact, _, _, _ = _learn(net, "ostl", x, target)
    assert max_relative_error(exact["cell.weight_hh"], reference["cell.weight_hh"]) > 1e-3
    # negative control 2: the same eligibility with backprop feedback (ostl-no-h) differs in
    # every hidden parameter, and is RFLO's equations with B = W_out
    no_h, _, no_h_seen, _ = _learn(net, "ostl-no-h", x, target)
    assert no_h_seen == []
    for name in HIDDEN:
        assert max_relative_error(no_h[name], grads[name]) > 1e-2, name
    assert max_relative_error(no_h["out.weight"], grads["out.weight"]) <= TOL
    symmetric, _ = rflo_leaky(x, target, p, readout, feedback=readout.weight)
    errors = _errors(no_h, symmetric)
    assert max(errors.values()) <= TOL, errors


def test_rflo_feedback_is_fixed_across_updates_and_learns():
    """B stays the same through optimizer steps, and RFLO lowers the loss of a fixed task."""
    torch.manual_seed(0)
    net = Net(4.0)
    x, target = _data()
    target = target * 0.3
    opt = torch.optim.SGD(net.parameters(), lr=0.02)
    losses, matrices = [], []
    with snn_ostl.OSTL(net, rule="rflo") as learner:
        for _ in range(30):
            learner.reset()
            h, total = None, 0.0
            for t in range(T):
                out, h = net(x[t], h)
                loss = 0.5 * ((out - target[t]) ** 2).sum()
                loss.backward()
                total += float(loss.detach())
            opt.step()
            opt.zero_grad()
            losses.append(total)
            matrices.append(learner.signals.matrices["out"].clone())
    assert all(torch.equal(m, matrices[0]) for m in matrices)
    assert losses[-1] < 0.7 * losses[0], losses[::5]
