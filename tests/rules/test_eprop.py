"""e-prop (Bellec et al., Nat. Commun. 2020) against a direct implementation of its equations.

A recurrent layer of Spiking Neural Units feeds a linear readout; the loss of every step is
backpropagated as it comes. The learner's gradients of the layer's weights, recurrent weights,
bias and thresholds must equal :func:`equations_rtrl.eprop_snu` (eligibility vectors with the
previous spikes held fixed, learning signal through the readout) to 1e-10 in float64, for the
three learning signals: symmetric (the readout's own weights), random (a fixed random matrix)
and adaptive (a random matrix that receives every update of the readout's weights, as in
Kolen-Pollack learning). The negative controls show the comparison can fail: exact OSTL keeps the
recurrent paths e-prop drops, and each learning signal differs from the others.
"""

from __future__ import annotations

import pytest
import torch
from conftest import assert_spiking, seeded
from equations_rtrl import LIFWeights, Readout, SNUWeights, eprop_lif, eprop_snu, snu_forward
from rule_nets import DECAY, DT, N_IN, N_OUT, B, N, RecurrentSNUNet, T
from torch import nn

import snn_ostl
from snn_ostl.testing import max_relative_error

TOL = 1e-10
SLOPE = 5.0


Net = RecurrentSNUNet


def _data(seed: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    gen = seeded(seed)
    x = torch.rand(T, B, N_IN, generator=gen, dtype=DT) * 1.5
    target = torch.randn(T, B, N_OUT, generator=gen, dtype=DT)
    return x, target


def _weights(net: Net) -> tuple[SNUWeights, Readout]:
    c = net.cell
    p = SNUWeights(
        c.weight.detach().clone(),
        c.recurrent_weight.detach().clone(),
        c.bias.detach().clone(),
        DECAY,
        c.threshold.detach().clone(),
        SLOPE,
    )
    return p, Readout(net.out.weight.detach().clone(), net.out.bias.detach().clone())


def _sequence(net, learner, x, target) -> tuple[torch.Tensor, list[torch.Tensor]]:
    """One sequence under ``learner``, a backward per step; (spikes [T, B, N], feedback matrix
    of the readout seen after each step, if any)."""
    learner.reset()
    state, spikes, seen = None, [], []
    for t in range(x.shape[0]):
        out, state = net(x[t], state)
        (0.5 * ((out - target[t]) ** 2).sum()).backward()
        spikes.append((state.y if isinstance(state, snn_ostl.SNUState) else state.z).detach())
        if "out" in learner.signals.matrices:
            seen.append(learner.signals.matrices["out"].clone())
    return torch.stack(spikes), seen


def _grads(net: nn.Module) -> dict[str, torch.Tensor]:
    out = {n: p.grad.detach().clone() for n, p in net.named_parameters() if p.grad is not None}
    for p in net.parameters():
        p.grad = None
    return out


def _grads_keep(net: nn.Module) -> dict[str, torch.Tensor]:
    """The gradients, left in place for the optimizer."""
    return {n: p.grad.detach().clone() for n, p in net.named_parameters() if p.grad is not None}


def _learn(net, rule, x, target):
    with snn_ostl.OSTL(net, rule=rule) as learner:
        spikes, seen = _sequence(net, learner, x, target)
        first_line = learner.summary().splitlines()[0]
    return _grads(net), spikes, seen, first_line


def _errors(grads, reference) -> dict[str, float]:
    assert set(grads) == set(reference)
    return {k: max_relative_error(grads[k], reference[k]) for k in reference}


def _check_spiking(spikes: torch.Tensor, reference_spikes: torch.Tensor) -> None:
    assert torch.equal(spikes, reference_spikes), "the reference plays another forward pass"
    count = int(spikes.sum())
    assert 0 < count < spikes.numel()
    assert_spiking([float(spikes.mean())], "SNU")


HIDDEN = ("cell.weight", "cell.recurrent_weight", "cell.bias", "cell.threshold")


def test_symmetric_eprop_equals_the_equations():
    torch.manual_seed(0)
    net = Net()
    x, target = _data()
    p, readout = _weights(net)
    grads, spikes, seen, line = _learn(net, "eprop-symmetric", x, target)
    _check_spiking(spikes, snu_forward(x, p)[1])
    assert seen == [], "symmetric e-prop draws no random matrix"
    assert "rule=eprop-symmetric" in line
    reference, _ = eprop_snu(x, target, p, readout, feedback=readout.weight)
    errors = _errors(grads, reference)
    assert max(errors.values()) <= TOL, errors
    # negative control: exact OSTL keeps the paths through the previous spikes (reset gate and
    # recurrent weights) that e-prop drops
    exact, _, _, _ = _learn(net, "ostl", x, target)
    for name in ("cell.weight", "cell.recurrent_weight"):
        assert max_relative_error(exact[name], reference[name]) > 1e-3, name


def test_random_eprop_equals_the_equations_with_its_fixed_matrix():
    torch.manual_seed(0)
    net = Net()
    x, target = _data()
    p, readout = _weights(net)
    grads, spikes, seen, line = _learn(net, "eprop-random", x, target)
    _check_spiking(spikes, snu_forward(x, p)[1])
    assert "rule=eprop-random" in line
    assert len(seen) == T
    feedback = seen[0]
    assert feedback.shape == readout.weight.shape
    assert all(torch.equal(b, feedback) for b in seen), "B changed during the sequence"
    assert max_relative_error(feedback, readout.weight) > 0.1, "B is the readout's weight"
    reference, _ = eprop_snu(x, target, p, readout, feedback=feedback)
    errors = _errors(grads, reference)
    assert max(errors.values()) <= TOL, errors
    # negative control: the readout's own weights as feedback give another hidden gradient,
    # and the readout's gradient (instantaneous, exact) is the same
    symmetric, _ = eprop_snu(x, target, p, readout, feedback=readout.weight)
    for name in HIDDEN:
        assert max_relative_error(grads[name], symmetric[name]) > 1e-2, name
    assert max_relative_error(grads["out.weight"], symmetric["out.weight"]) <= TOL


def test_random_feedback_stays_fixed_across_updates():
    """Random e-prop keeps its matrix through optimizer steps (only adaptive e-prop moves it)."""
    torch.manual_seed(0)
    net = Net()
    x, target = _data()
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    with snn_ostl.OSTL(net, rule="eprop-random") as learner:
        _, first = _sequence(net, learner, x, target)
        opt.step()
        opt.zero_grad()
        _, second = _sequence(net, learner, x, target)
    assert all(torch.equal(b, first[0]) for b in first + second)


@pytest.mark.parametrize("decay", [0.0, 0.3], ids=["no-decay", "decay-0.3"])
def test_adaptive_eprop_feedback_follows_the_readout_updates(decay):
    """Adaptive e-prop: after an SGD step of the readout, ``B ← (1 - decay) B + ΔW_out``, and
    the next sequence's hidden gradients are e-prop's with that matrix."""
    torch.manual_seed(0)
    net = Net()
    x, target = _data()
    x2, target2 = _data(seed=2)
    opt = torch.optim.SGD(net.parameters(), lr=0.05)
    rule = snn_ostl.rules.EProp(feedback="adaptive", feedback_decay=decay)
    with snn_ostl.OSTL(net, rule=rule) as learner:
        line = learner.summary().splitlines()[0]
        p, readout = _weights(net)
        spikes, first = _sequence(net, learner, x, target)
        _check_spiking(spikes, snu_forward(x, p)[1])
        b0 = first[0]
        assert all(torch.equal(b, b0) for b in first), "B changed without an update"
        assert max_relative_error(b0, readout.weight) > 0.1, "B starts at the readout's weight"
        reference, _ = eprop_snu(x, target, p, readout, feedback=b0)
        errors = _errors(_grads_keep(net), reference)
        assert max(errors.values()) <= TOL, errors
        w_before = net.out.weight.detach().clone()
        opt.step()
        opt.zero_grad()
        delta = net.out.weight.detach() - w_before
        assert delta.abs().max() > 1e-4
        p2, readout2 = _weights(net)
        spikes2, second = _sequence(net, learner, x2, target2)
        _check_spiking(spikes2, snu_forward(x2, p2)[1])
    assert "rule=eprop-adaptive" in line
    if decay:
        assert f"feedback_decay={decay}" in line
    expected_b = (1.0 - decay) * b0 + delta
    assert all(max_relative_error(b, expected_b) <= TOL for b in second)
    grads = _grads(net)
    reference2, _ = eprop_snu(x2, target2, p2, readout2, feedback=expected_b)
    errors2 = _errors(grads, reference2)
    assert max(errors2.values()) <= TOL, errors2
    # negative control: the matrix of the first sequence (as random e-prop keeps it) gives
    # another gradient
    stale, _ = eprop_snu(x2, target2, p2, readout2, feedback=b0)
    for name in HIDDEN:
        assert max_relative_error(grads[name], stale[name]) > 1e-4, name


# --------------------------------------------------------------------------------- Norse
class NorseNet(nn.Module):
    """Norse's recurrent LIF cell and a linear readout."""

    def __init__(self, nt, params) -> None:
        super().__init__()
        gen = seeded(3)
        self.cell = nt.LIFRecurrentCell(
            N_IN,
            N,
            p=params,
            input_weights=nn.Parameter(torch.randn(N, N_IN, generator=gen, dtype=DT) * 2.5),
            recurrent_weights=nn.Parameter(torch.randn(N, N, generator=gen, dtype=DT)),
        )
        self.out = nn.Linear(N, N_OUT, dtype=DT)

    def forward(self, x, state):
        z, state = self.cell(x, state)
        return self.out(z), state


def test_eprop_on_norse_recurrent_lif_equals_the_equations():
    nt = pytest.importorskip("norse.torch")
    torch.manual_seed(0)
    f64 = {"dtype": DT}
    params = nt.LIFParameters(
        tau_syn_inv=torch.tensor(200.0, **f64),
        tau_mem_inv=torch.tensor(100.0, **f64),
        v_leak=torch.tensor(0.0, **f64),
        v_th=torch.tensor(0.5, **f64),
        v_reset=torch.tensor(0.0, **f64),
    )
    net = NorseNet(nt, params)
    x, target = _data(seed=4)
    x = x * 2.0
    cell = net.cell
    p = LIFWeights(
        cell.input_weights.detach().clone(),
        cell.recurrent_weights.detach().clone(),
        200.0,
        100.0,
        0.0,
        0.5,
        0.0,
        float(cell.dt),
    )
    readout = Readout(net.out.weight.detach().clone(), net.out.bias.detach().clone())
    grads, spikes, _, line = _learn(net, "eprop-symmetric", x, target)
    assert "rule=eprop-symmetric" in line
    assert 0 < int(spikes.sum()) < spikes.numel()
    assert_spiking([float(spikes.mean())], "LIFRecurrentCell")
    reference, _ = eprop_lif(x, target, p, readout, feedback=readout.weight)
    errors = _errors(grads, reference)
    assert max(errors.values()) <= TOL, errors
    # negative control: exact OSTL keeps the recurrent weights' path
    exact, _, _, _ = _learn(net, "ostl", x, target)
    assert (
        max_relative_error(exact["cell.recurrent_weights"], reference["cell.recurrent_weights"])
        > 1e-3
    )
