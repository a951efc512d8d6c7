"""SuperSpike (Zenke & Ganguli 2018) against its equations written out by hand.

A two-layer Norse LIF network learns target spike trains; every weight and bias is compared
with ``equations_local.superspike_norse`` for each of the paper's three feedback settings. On
one layer the filtered update is also the autograd gradient of the van Rossum loss through
time with the reset held fixed, and (negative control) not the one with the reset
differentiated.
"""

from __future__ import annotations

import math

import pytest
import torch
from conftest import assert_spiking, seeded
from equations_local import DT, NORSE_LIF, NorseLIF, superspike_norse, van_rossum_autograd
from rule_nets import grads_of as _grads
from rule_nets import norse_lif_parameters
from rule_nets import zero_grads as _zero
from torch import nn

pytest.importorskip("norse")

import norse.torch as nt
from norse.torch.functional.lif import LIFFeedForwardState
from snn_ostl.adapters import load_available

import snn_ostl
from snn_ostl.errors import ConfigurationError, UnsupportedModuleError
from snn_ostl.testing import compare

load_available(import_frameworks=True)

TOL = 1e-10
T, B = 20, 3
N_IN, N_HID, N_OUT = 6, 8, 5


# Tiny tensors: a second intra-op thread only contends with the other test worker.
pytestmark = pytest.mark.usefixtures("one_thread")


def _linear(a: int, b: int, gen: torch.Generator, gain: float, shift: float) -> nn.Linear:
    fc = nn.Linear(a, b, dtype=DT)
    with torch.no_grad():
        fc.weight.copy_((torch.rand(b, a, generator=gen, dtype=DT) - shift) * gain)
        fc.bias.copy_((torch.rand(b, generator=gen, dtype=DT) - 0.5) * 0.4)
    return fc


class TwoLayers(nn.Module):
    """Linear -> LIFCell -> Linear -> LIFCell with explicit states; returns the output spikes."""

    def __init__(self, seed: int = 0) -> None:
        super().__init__()
        gen = seeded(seed)
        self.fc1 = _linear(N_IN, N_HID, gen, gain=2.5, shift=0.2)
        self.lif1 = nt.LIFCell(p=norse_lif_parameters(NORSE_LIF))
        self.fc2 = _linear(N_HID, N_OUT, gen, gain=2.0, shift=0.2)
        self.lif2 = nt.LIFCell(p=norse_lif_parameters(NORSE_LIF))

    def forward(self, x, states):
        s1, s2 = states
        z1, s1 = self.lif1(self.fc1(x), s1)
        z2, s2 = self.lif2(self.fc2(z1), s2)
        return z2, (s1, s2), (z1, z2)

    def zero_states(self):
        return tuple(
            LIFFeedForwardState(torch.zeros(B, n, dtype=DT), torch.zeros(B, n, dtype=DT))
            for n in (N_HID, N_OUT)
        )


class OneLayer(nn.Module):
    def __init__(self, seed: int = 2, c: NorseLIF = NORSE_LIF) -> None:
        super().__init__()
        self.fc = _linear(N_IN, N_OUT, seeded(seed), gain=2.5, shift=0.2)
        self.lif = nt.LIFCell(p=norse_lif_parameters(c))

    def forward(self, x, states):
        (s,) = states
        z, s = self.lif(self.fc(x), s)
        return z, (s,), (z,)

    def zero_states(self):
        return (
            LIFFeedForwardState(torch.zeros(B, N_OUT, dtype=DT), torch.zeros(B, N_OUT, dtype=DT)),
        )


def _data(seed: int = 1):
    """Poisson-like input spikes and target spike trains."""
    gen = seeded(seed)
    x = (torch.rand(T, B, N_IN, generator=gen, dtype=DT) < 0.4).to(DT)
    target = (torch.rand(T, B, N_OUT, generator=gen, dtype=DT) < 0.2).to(DT)
    return x, target


def _run(net, x, target, learner, per_step=True):
    """One sequence from zero state under ``learner``; (gradients, losses, spikes per layer)."""
    _zero(net)
    learner.reset()
    states = net.zero_states()
    losses, spikes = [], []
    for t in range(T):
        out, states, zs = net(x[t], states)
        spikes.append([z.detach() for z in zs])
        loss = learner.rule.van_rossum(out, target[t])
        losses.append(loss)
        if per_step:
            loss.backward()
    if not per_step:
        torch.stack(losses).sum().backward()
    grads = _grads(net)
    _zero(net)
    layers = [torch.stack([s[k] for s in spikes]) for k in range(len(spikes[0]))]
    return grads, torch.stack([v.detach() for v in losses]), layers


def _feedback(net: TwoLayers, learner, feedback: str) -> torch.Tensor:
    """``F`` of the hidden layer, as the paper's three settings define it."""
    weight = net.fc2.weight.detach()
    if feedback == "symmetric":
        return weight
    if feedback == "uniform":
        return torch.ones_like(weight)
    return learner.rule.matrices["lif2"].to(DT)


def _reference(net, x, target, feedback_matrix, tau_rise, tau_decay):
    fcs = [m for m in net.modules() if isinstance(m, nn.Linear)]
    gw, gb, losses, spikes = superspike_norse(
        [fc.weight.detach() for fc in fcs],
        [fc.bias.detach() for fc in fcs],
        x,
        target,
        [] if feedback_matrix is None else [feedback_matrix],
        tau_rise,
        tau_decay,
    )
    names = [n for n, m in net.named_modules() if isinstance(m, nn.Linear)]
    ref = {}
    for k, name in enumerate(names):
        ref[f"{name}.weight"], ref[f"{name}.bias"] = gw[k], gb[k]
    return ref, losses, spikes


def _rates(spikes):
    return [float(s.mean()) for s in spikes]


# ---------------------------------------------------------------------------- exactness
@pytest.mark.parametrize(
    ("feedback", "tau_rise", "tau_decay"),
    [
        ("symmetric", 5.0, 10.0),
        ("random", 5.0, 10.0),
        ("uniform", 5.0, 10.0),
        ("symmetric", 2.0, 7.0),
    ],
    ids=["symmetric", "random", "uniform", "symmetric-other-taus"],
)
def test_two_layers_match_the_equations(feedback, tau_rise, tau_decay):
    """Every weight and bias, and every step's van Rossum loss, equal the paper's equations."""
    net = TwoLayers()
    x, target = _data()
    rule = snn_ostl.rules.SuperSpike(
        feedback=feedback, tau_rise=tau_rise, tau_decay=tau_decay, seed=0
    )
    with snn_ostl.OSTL(net, rule=rule) as learner:
        grads, losses, spikes = _run(net, x, target, learner)
        matrix = _feedback(net, learner, feedback)
        if feedback == "random":
            assert set(learner.rule.matrices) == {"lif2"}
            assert learner.rule.matrices["lif2"].shape == net.fc2.weight.shape
        else:
            assert learner.rule.matrices == {}
    reference, ref_losses, ref_spikes = _reference(net, x, target, matrix, tau_rise, tau_decay)
    for got, want in zip(spikes, ref_spikes):
        assert torch.equal(got, want), "the hand-integrated neurons spike differently"
    assert_spiking(_rates(spikes), f"SuperSpike {feedback}")
    assert float((losses - ref_losses).abs().max()) <= TOL * float(ref_losses.abs().max())
    assert set(grads) == {n for n, _ in net.named_parameters()}
    errors = compare(grads, reference)
    assert max(errors.values()) <= TOL, errors
    assert all(float(g.abs().max()) > 0 for g in grads.values()), "a vacuous zero gradient"


def test_feedback_settings_differ():
    """The three feedback settings train the hidden layer differently, the output layer alike."""
    net = TwoLayers()
    x, target = _data()
    out = {}
    for feedback in ("symmetric", "random", "uniform"):
        with snn_ostl.OSTL(net, rule=snn_ostl.rules.SuperSpike(feedback=feedback)) as learner:
            out[feedback] = _run(net, x, target, learner)[0]
    hidden = ("fc1.weight", "fc1.bias")
    for a, b in (("symmetric", "random"), ("symmetric", "uniform"), ("random", "uniform")):
        diff = compare({n: out[a][n] for n in hidden}, {n: out[b][n] for n in hidden})
        assert min(diff.values()) > 1e-3, (a, b, diff)
        for n in ("fc2.weight", "fc2.bias"):
            assert torch.equal(out[a][n], out[b][n]), (a, b, n)


def test_random_matrices_fixed_and_seeded():
    net = TwoLayers()
    x, target = _data()

    def matrices(seed: int) -> torch.Tensor:
        rule = snn_ostl.rules.SuperSpike(feedback="random", seed=seed)
        with snn_ostl.OSTL(net, rule=rule) as learner:
            learner.reset()
            states = net.zero_states()
            seen = []
            for t in range(3):
                out, states, _ = net(x[t], states)
                learner.rule.van_rossum(out, target[t]).backward()
                seen.append(learner.rule.matrices["lif2"].clone())
        assert all(torch.equal(m, seen[0]) for m in seen), "the feedback matrix changed"
        return seen[0]

    assert torch.equal(matrices(0), matrices(0))
    assert not torch.equal(matrices(0), matrices(1))


# ---------------------------------------------------------------------------- one layer
def test_one_layer_is_the_van_rossum_gradient_with_the_reset_held_fixed():
    """On one layer, SuperSpike's update is the exact gradient of the summed van Rossum loss
    through time (with the surrogate) when the reset enters the membrane as a constant; with
    the reset differentiated (plain BPTT through Norse's neuron) it is not."""
    net = OneLayer()
    x, target = _data(seed=5)
    with snn_ostl.OSTL(net, rule=snn_ostl.rules.SuperSpike()) as learner:
        grads, losses, spikes = _run(net, x, target, learner)
    assert_spiking(_rates(spikes), "SuperSpike one layer")

    def autograd(cut_reset: bool) -> dict[str, torch.Tensor]:
        w = net.fc.weight.detach().clone().requires_grad_(True)
        b = net.fc.bias.detach().clone().requires_grad_(True)
        total = van_rossum_autograd(w, b, x, target, 5.0, 10.0, cut_reset=cut_reset)
        total.backward()
        assert abs(float(total.detach()) - float(losses.sum())) <= TOL * float(losses.sum())
        return {"fc.weight": w.grad, "fc.bias": b.grad}

    held = compare(grads, autograd(cut_reset=True))
    assert max(held.values()) <= TOL, held
    # the reference of the reference: with the reset differentiated it is BPTT through Norse
    full = autograd(cut_reset=False)
    _zero(net)
    states, err_rise, err, total = net.zero_states(), 0.0, 0.0, 0.0
    a_r, a_d = math.exp(-1 / 5.0), math.exp(-1 / 10.0)
    for t in range(T):
        out, states, _ = net(x[t], states)
        err_rise = a_r * err_rise + (1 - a_r) * (out - target[t])
        err = a_d * err + (1 - a_d) * err_rise
        total = total + 0.5 * (err**2).sum() / B
    total.backward()
    bptt = _grads(net)
    _zero(net)
    same = compare(full, bptt)
    assert max(same.values()) <= TOL, same
    diff = compare(grads, bptt)
    assert min(diff.values()) > 1e-3, diff


RESET_BELOW_LEAK = NorseLIF(v_reset=-0.5)


def _one_layer_reference(net: OneLayer, x, target, c: NorseLIF) -> dict[str, torch.Tensor]:
    gw, gb, _, _ = superspike_norse(
        [net.fc.weight.detach()], [net.fc.bias.detach()], x, target, [], 5.0, 10.0, c
    )
    return {"fc.weight": gw[0], "fc.bias": gb[0]}


def test_references_agree_when_the_reset_is_below_the_leak():
    """With ``v_reset != v_leak`` the PSP kernel still ignores the reset: the filtered update
    written out and the autograd gradient with the reset held fixed agree."""
    net = OneLayer(c=RESET_BELOW_LEAK)
    x, target = _data(seed=5)
    reference = _one_layer_reference(net, x, target, RESET_BELOW_LEAK)
    w = net.fc.weight.detach().clone().requires_grad_(True)
    b = net.fc.bias.detach().clone().requires_grad_(True)
    van_rossum_autograd(w, b, x, target, 5.0, 10.0, c=RESET_BELOW_LEAK).backward()
    errors = compare({"fc.weight": w.grad, "fc.bias": b.grad}, reference)
    assert max(errors.values()) <= TOL, errors


def test_reset_below_leak_matches_the_equations():
    """The kernel is the sub-threshold response: a reset to another value than the leak must
    not enter it (the reset's surrogate path is non-zero at rest there)."""
    net = OneLayer(c=RESET_BELOW_LEAK)
    x, target = _data(seed=5)
    with snn_ostl.OSTL(net, rule=snn_ostl.rules.SuperSpike()) as learner:
        grads, _, spikes = _run(net, x, target, learner)
    assert_spiking(_rates(spikes), "SuperSpike reset below leak")
    errors = compare(grads, _one_layer_reference(net, x, target, RESET_BELOW_LEAK))
    assert max(errors.values()) <= TOL, errors


# ---------------------------------------------------------------------------- accumulation
def test_whole_sequence_backward_equals_per_step():
    net = TwoLayers()
    x, target = _data()
    with snn_ostl.OSTL(net, rule=snn_ostl.rules.SuperSpike(feedback="random")) as learner:
        per_step, losses_a, _ = _run(net, x, target, learner, per_step=True)
        whole, losses_b, _ = _run(net, x, target, learner, per_step=False)
    assert torch.equal(losses_a, losses_b)
    errors = compare(whole, per_step)
    assert max(errors.values()) <= TOL, errors


def test_reset_starts_a_new_sequence_and_detach_removes_the_hooks():
    """Two sequences with ``reset()`` between them add up to twice one sequence; after
    ``detach()`` the model's spikes are nobody's, and the model runs as before."""
    net = TwoLayers()
    x, target = _data()
    learner = snn_ostl.OSTL(net, rule=snn_ostl.rules.SuperSpike())
    once, _, _ = _run(net, x, target, learner)
    for _ in range(2):
        learner.reset()
        states = net.zero_states()
        for t in range(T):
            out, states, _ = net(x[t], states)
            learner.rule.van_rossum(out, target[t]).backward()
    twice = _grads(net)
    _zero(net)
    errors = compare(twice, {n: 2 * g for n, g in once.items()})
    assert max(errors.values()) <= TOL, errors
    learner.detach()
    out, _, _ = net(x[0], net.zero_states())
    with pytest.raises(ValueError, match="spikes a spiking layer returned"):
        learner.rule.van_rossum(out, target[0])
    assert all(p.grad is None for p in net.parameters())


# ---------------------------------------------------------------------------- refusals
class ScaledCurrent(nn.Module):
    """An operation between the Linear and the neuron: ``lif(2 * fc(x))``."""

    def __init__(self) -> None:
        super().__init__()
        self.fc = _linear(N_IN, N_OUT, seeded(0), gain=2.5, shift=0.2)
        self.lif = nt.LIFCell(p=norse_lif_parameters(NORSE_LIF))

    def forward(self, x, state=None):
        return self.lif(2 * self.fc(x), state)


def test_operation_between_linear_and_neuron_is_refused():
    assert issubclass(ConfigurationError, UnsupportedModuleError)
    net = ScaledCurrent()
    x, _ = _data()
    with snn_ostl.OSTL(net, rule=snn_ostl.rules.SuperSpike()) as learner:
        learner.reset()
        with pytest.raises(ConfigurationError, match="no operation in between"):
            net(x[0])


def test_van_rossum_needs_a_layers_spikes():
    net = TwoLayers()
    x, target = _data()
    with snn_ostl.OSTL(net, rule=snn_ostl.rules.SuperSpike()) as learner:
        learner.reset()
        out, _, _ = net(x[0], net.zero_states())
        for wrong in (out.clone(), out * 1.0, torch.zeros_like(out), target[0]):
            with pytest.raises(ValueError, match="spikes a spiking layer returned"):
                learner.rule.van_rossum(wrong, target[0])
        learner.rule.van_rossum(out, target[0]).backward()  # the layer's own spikes: fine
    assert all(p.grad is not None for p in net.parameters())


def test_bad_options_raise():
    with pytest.raises(ValueError, match="feedback"):
        snn_ostl.rules.SuperSpike(feedback="transposed")
    with pytest.raises(ValueError, match="positive"):
        snn_ostl.rules.SuperSpike(tau_rise=0.0)
