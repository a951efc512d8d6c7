"""DECOLLE (Kaiser, Mostafa & Neftci 2020) against its equations written out by hand.

Each hidden layer learns from its own fixed random readout only, through its own e-prop
eligibility, with the input from below held fixed; the top layer learns from the user's loss.
The references in ``equations_local`` integrate the neurons and the eligibilities by hand.
Negative controls show the comparison can fail: the same total loss under e-prop with
backpropagated errors, or under exact BPTT, trains the hidden layers differently.
"""

from __future__ import annotations

import itertools
import warnings

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_spiking, full_bptt, seeded
from equations_local import (
    DT,
    NORSE_LIF,
    NorseLIF,
    decolle_norse,
    decolle_synaptic,
    norse_super_surrogate,
)
from rule_nets import grads_of as _grads
from rule_nets import norse_lif_parameters
from rule_nets import zero_grads as _zero
from torch import nn

pytest.importorskip("norse")
pytest.importorskip("snntorch")

import norse.torch as nt
import snntorch as snn
from norse.torch.functional.lif import LIFFeedForwardState
from snn_ostl.adapters import load_available

import snn_ostl
from snn_ostl.testing import compare

load_available(import_frameworks=True)

TOL = 1e-10
T, B, C = 15, 3, 3
SIZES = [5, 8, 7, 6]
HIDDEN = ("lifs.0", "lifs.1")


# Tiny tensors: a second intra-op thread only contends with the other test worker.
pytestmark = pytest.mark.usefixtures("one_thread")


# ---------------------------------------------------------------------------- Norse model
class NorseStack(nn.Module):
    """(Linear -> LIFCell) x 3 with explicit states; returns the top spikes and every layer's."""

    def __init__(
        self, sizes: list[int] = SIZES, gain: float = 10.0, seed: int = 0, c: NorseLIF = NORSE_LIF
    ) -> None:
        super().__init__()
        gen = seeded(seed)
        self.fcs = nn.ModuleList()
        for a, b in itertools.pairwise(sizes):
            fc = nn.Linear(a, b, dtype=DT)
            with torch.no_grad():
                fc.weight.copy_((torch.rand(b, a, generator=gen, dtype=DT) - 0.3) * gain / a)
                fc.bias.copy_((torch.rand(b, generator=gen, dtype=DT) - 0.5) * 0.2)
            self.fcs.append(fc)
        self.lifs = nn.ModuleList(nt.LIFCell(p=norse_lif_parameters(c)) for _ in self.fcs)

    def forward(self, x, states):
        new, spikes = [], []
        for fc, lif, state in zip(self.fcs, self.lifs, states):
            x, state = lif(fc(x), state)
            new.append(state)
            spikes.append(x)
        return x, new, spikes

    def zero_states(self, batch: int = B) -> list:
        return [
            LIFFeedForwardState(torch.zeros(batch, n, dtype=DT), torch.zeros(batch, n, dtype=DT))
            for n in (fc.out_features for fc in self.fcs)
        ]


def _data(seed: int = 1):
    gen = seeded(seed)
    x = torch.rand(T, B, SIZES[0], generator=gen, dtype=DT) * 2.0
    classes = torch.randint(0, C, (T, B), generator=gen)
    top_target = torch.rand(T, B, SIZES[-1], generator=gen, dtype=DT)
    return x, classes, top_target


def _squared_error(top_target):
    """The user's loss on the top spikes, and its gradient written out by hand."""

    def loss(t, out):
        return ((out - top_target[t]) ** 2).sum()

    def delta(t, z):
        return 2.0 * (z - top_target[t])

    return loss, delta


def _linear_score(seed: int = 7):
    """Another user's loss: a fixed linear score of the top spikes."""
    w = torch.randn(T, B, SIZES[-1], generator=seeded(seed), dtype=DT)

    def loss(t, out):
        return (out * w[t]).sum()

    def delta(t, z):
        return w[t]

    return loss, delta


def _run_decolle(net, x, classes, user_loss, rule=None, per_step=True, learner=None):
    """One sequence under DECOLLE from zero state; (gradients, spikes per layer, learner)."""
    _zero(net)
    own = learner is None
    if own:
        rule = rule or snn_ostl.rules.DECOLLE(outputs=C, loss="mse", seed=0)
        learner = snn_ostl.OSTL(net, rule=rule)
    learner.reset()
    states = net.zero_states()
    spikes, total = [], []
    for t in range(T):
        out, states, zs = net(x[t], states)
        spikes.append([z.detach() for z in zs])
        loss = user_loss(t, out) + learner.rule.local_loss(classes[t])
        if per_step:
            loss.backward()
        else:
            total.append(loss)
    if not per_step:
        torch.stack(total).sum().backward()
    grads = _grads(net)
    _zero(net)
    if own:
        learner.detach()
    per_layer = [torch.stack([s[k] for s in spikes]) for k in range(len(spikes[0]))]
    return grads, per_layer, learner


def _reference_norse(net, x, classes, readouts, delta, c=NORSE_LIF):
    gw, gb, spikes = decolle_norse(
        [fc.weight.detach() for fc in net.fcs],
        [fc.bias.detach() for fc in net.fcs],
        x,
        classes,
        readouts,
        delta,
        c,
    )
    ref = {}
    for k in range(len(gw)):
        ref[f"fcs.{k}.weight"], ref[f"fcs.{k}.bias"] = gw[k], gb[k]
    return ref, spikes


def _rates(spikes: list[torch.Tensor]) -> list[float]:
    return [float(s.mean()) for s in spikes]


def _hidden(grads: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {n: g for n, g in grads.items() if not n.startswith(f"fcs.{len(SIZES) - 2}.")}


def _top(grads: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {n: g for n, g in grads.items() if n.startswith(f"fcs.{len(SIZES) - 2}.")}


# ---------------------------------------------------------------------------- exactness
@pytest.mark.parametrize(
    ("per_step", "c"),
    [(True, NORSE_LIF), (False, NORSE_LIF), (True, NorseLIF(v_reset=-0.5))],
    ids=["per-step", "whole-sequence", "reset-below-leak"],
)
def test_norse_lif_stack_matches_the_equations(per_step, c):
    """Three Norse LIF layers: every weight and bias equals DECOLLE written out by hand."""
    net = NorseStack(c=c)
    x, classes, top_target = _data()
    loss, delta = _squared_error(top_target)
    grads, spikes, learner = _run_decolle(net, x, classes, loss, per_step=per_step)
    readouts = [learner.rule.readouts[p].to(DT) for p in HIDDEN]
    assert set(learner.rule.readouts) == set(HIDDEN)  # the top layer has no readout
    reference, ref_spikes = _reference_norse(net, x, classes, readouts, delta, c)
    for got, want in zip(spikes, ref_spikes):
        assert torch.equal(got, want), "the hand-integrated neurons spike differently"
    assert_spiking(_rates(spikes), "DECOLLE Norse stack")
    errors = compare(grads, reference)
    assert set(grads) == {n for n, _ in net.named_parameters()}
    assert max(errors.values()) <= TOL, errors
    assert all(float(g.abs().max()) > 0 for g in grads.values()), "a vacuous zero gradient"


class SynapticStack(nn.Module):
    """(Linear -> snnTorch Synaptic) x 3, explicit state, float64 weights and membranes.

    snnTorch alone emits float32 spikes whatever its membrane's dtype (the learner makes them
    float64 while attached); the cast keeps the model usable without a learner.
    """

    ALPHA, BETA = 0.75, 0.875  # exact in float32, as snnTorch keeps them

    def __init__(self, sizes: list[int] = SIZES, seed: int = 3) -> None:
        super().__init__()
        gen = seeded(seed)
        self.fcs = nn.ModuleList()
        for a, b in itertools.pairwise(sizes):
            fc = nn.Linear(a, b, dtype=DT)
            with torch.no_grad():
                fc.weight.copy_((torch.rand(b, a, generator=gen, dtype=DT) - 0.25) * 1.2 / a)
                fc.bias.copy_((torch.rand(b, generator=gen, dtype=DT) - 0.5) * 0.05)
            self.fcs.append(fc)
        self.neurons = nn.ModuleList(
            snn.Synaptic(alpha=self.ALPHA, beta=self.BETA, threshold=1.0) for _ in self.fcs
        )

    def forward(self, x, states):
        new, spikes = [], []
        for fc, neuron, (syn, mem) in zip(self.fcs, self.neurons, states):
            spk, syn, mem = neuron(fc(x), syn, mem)
            new.append((syn, mem))
            spikes.append(spk)
            x = spk.to(DT)
        return x, new, spikes

    def zero_states(self, batch: int = B) -> list:
        return [
            (torch.zeros(batch, n, dtype=DT), torch.zeros(batch, n, dtype=DT))
            for n in (fc.out_features for fc in self.fcs)
        ]


def test_snntorch_synaptic_matches_the_paper():
    """snnTorch ``Synaptic`` is DECOLLE's neuron; the rule equals the paper's update.

    The paper's gradient ``Σ_t δ σ'(U) P`` (input traces P, reset not differentiated) is written
    from the paper's own variables. snnTorch alone emits float32 spikes, which would make the
    readouts, local losses and errors float32 (a 1e-5 tolerance); under the learner its neurons
    emit spikes in the membrane's dtype, so the whole update is float64 and held to 1e-10.
    """
    net = SynapticStack()
    x, classes, top_target = _data(seed=4)
    x = x * 2.0
    loss, delta = _squared_error(top_target)
    grads, spikes, learner = _run_decolle(net, x, classes, loss)
    readouts = [learner.rule.readouts[p].to(DT) for p in ("neurons.0", "neurons.1")]
    gw, gb, ref_spikes = decolle_synaptic(
        [fc.weight.detach() for fc in net.fcs],
        [fc.bias.detach() for fc in net.fcs],
        x,
        classes,
        readouts,
        delta,
        alpha=SynapticStack.ALPHA,
        beta=SynapticStack.BETA,
    )
    for got, want in zip(spikes, ref_spikes):
        assert got.dtype == DT  # under the learner, spikes come in the membrane's dtype
        assert torch.equal(got, want), "the paper's neurons spike differently"
    assert_spiking(_rates(spikes), "DECOLLE Synaptic stack")
    reference = {}
    for k in range(len(gw)):
        reference[f"fcs.{k}.weight"], reference[f"fcs.{k}.bias"] = gw[k], gb[k]
    errors = compare(grads, reference)
    assert max(errors.values()) <= TOL, errors
    assert all(float(g.abs().max()) > 0 for g in grads.values())
    # the comparison tells surrogates apart: Norse's in place of snnTorch's is far off
    wrong = decolle_synaptic(
        [fc.weight.detach() for fc in net.fcs],
        [fc.bias.detach() for fc in net.fcs],
        x,
        classes,
        readouts,
        delta,
        alpha=SynapticStack.ALPHA,
        beta=SynapticStack.BETA,
        surrogate=norse_super_surrogate,
    )
    wrong_ref = {f"fcs.{k}.weight": wrong[0][k] for k in range(len(gw))}
    diff = compare({n: grads[n] for n in wrong_ref}, wrong_ref)
    assert min(diff.values()) > 1e-2, diff


def test_top_readout_makes_every_layer_local():
    """``top=True``: the top layer gets a readout too and learns from it alone; no user loss."""
    net = NorseStack()
    x, classes, _ = _data()
    rule = snn_ostl.rules.DECOLLE(outputs=C, seed=0, top=True)
    grads, spikes, learner = _run_decolle(net, x, classes, lambda t, out: 0.0, rule)
    paths = (*HIDDEN, "lifs.2")
    assert set(learner.rule.readouts) == set(paths)
    readouts = [learner.rule.readouts[p].to(DT) for p in paths]
    reference, _ = _reference_norse(net, x, classes, readouts, None)
    errors = compare(grads, reference)
    assert max(errors.values()) <= TOL, errors
    assert_spiking(_rates(spikes), "DECOLLE top readout")


# ---------------------------------------------------------------------------- negative controls
def _manual_total_loss(net, x, classes, user_loss, readouts):
    """The same total loss as DECOLLE's, written as one plain loss (readouts applied by hand)."""

    def run():
        states = net.zero_states()
        for t in range(T):
            out, states, zs = net(x[t], states)
            target = F.one_hot(classes[t], C).to(DT)
            local = sum(F.mse_loss(z @ g.T, target) for z, g in zip(zs, readouts))
            yield user_loss(t, out) + local

    return run


def test_hidden_layers_differ_from_eprop_and_bptt_of_the_same_loss():
    """The same total loss under e-prop with symmetric feedback, and under exact BPTT, trains the
    hidden layers differently (errors flow between layers there); the top layer's own e-prop
    gradient is the same under both e-prop rules (nothing from below reaches it)."""
    net = NorseStack()
    x, classes, top_target = _data()
    loss, _ = _squared_error(top_target)
    grads, _, learner = _run_decolle(net, x, classes, loss)
    readouts = [learner.rule.readouts[p].to(DT) for p in HIDDEN]
    run = _manual_total_loss(net, x, classes, loss, readouts)

    _zero(net)
    with snn_ostl.OSTL(net, rule="eprop-symmetric") as eprop:
        eprop.reset()
        for step_loss in run():
            step_loss.backward()
    eprop_grads = _grads(net)
    _zero(net)
    bptt = full_bptt(net, run)

    for other, what in ((eprop_grads, "eprop-symmetric"), (bptt, "BPTT")):
        diff = compare(_hidden(grads), _hidden(other))
        assert min(diff.values()) > 1e-3, (what, diff)
    same_top = compare(_top(grads), _top(eprop_grads))
    assert max(same_top.values()) <= TOL, same_top


def test_user_loss_trains_the_top_layer_only():
    """Another user's loss changes the top layer's gradient and nothing else."""
    net = NorseStack()
    x, classes, top_target = _data()
    first, _ = _squared_error(top_target)
    second, second_delta = _linear_score()
    a, _, learner = _run_decolle(net, x, classes, first)
    b, _, _ = _run_decolle(net, x, classes, second)
    for name in _hidden(a):
        assert torch.equal(a[name], b[name]), name
    diff = compare(_top(a), _top(b))
    assert min(diff.values()) > 1e-3, diff
    # and the second loss's top gradient is still DECOLLE's
    readouts = [learner.rule.readouts[p].to(DT) for p in HIDDEN]
    reference, _ = _reference_norse(net, x, classes, readouts, second_delta)
    errors = compare(b, reference)
    assert max(errors.values()) <= TOL, errors


def test_readouts_fixed_seeded_and_checkpointed():
    """The readouts stay fixed across steps, follow the seed, and survive a checkpoint."""
    net = NorseStack()
    x, classes, top_target = _data()
    loss, _ = _squared_error(top_target)
    learner = snn_ostl.OSTL(net, rule=snn_ostl.rules.DECOLLE(outputs=C, seed=0))
    learner.reset()
    states = net.zero_states()
    first = None
    for t in range(T):
        out, states, _ = net(x[t], states)
        (loss(t, out) + learner.rule.local_loss(classes[t])).backward()
        if first is None:
            first = {k: v.clone() for k, v in learner.rule.readouts.items()}
    readouts = learner.rule.readouts
    assert set(readouts) == set(HIDDEN)
    for path, n in zip(HIDDEN, SIZES[1:]):
        assert readouts[path].shape == (C, n)
        assert readouts[path].dtype == torch.float64
        assert torch.equal(readouts[path], first[path]), "a readout changed between steps"
    assert not torch.equal(readouts[HIDDEN[0]][:, :7], readouts[HIDDEN[1]])
    _zero(net)
    learner.reset()
    saved = learner.state_dict()
    learner.detach()
    original = {k: v.clone() for k, v in readouts.items()}

    def readouts_of(seed: int) -> dict[str, torch.Tensor]:
        _, _, other = _run_decolle(net, x, classes, loss, snn_ostl.rules.DECOLLE(C, seed=seed))
        return other.rule.readouts

    again = readouts_of(0)
    assert all(torch.equal(again[p], original[p]) for p in HIDDEN)
    other = readouts_of(1)
    assert all(not torch.equal(other[p], original[p]) for p in HIDDEN)

    # a learner with another seed that loads the checkpoint uses the saved readouts
    reference, _, _ = _run_decolle(net, x, classes, loss)
    restored = snn_ostl.OSTL(net, rule=snn_ostl.rules.DECOLLE(outputs=C, seed=99))
    restored.load_state_dict(saved)
    grads, _, _ = _run_decolle(net, x, classes, loss, learner=restored)
    assert all(torch.equal(restored.rule.readouts[p], original[p]) for p in HIDDEN)
    restored.detach()
    errors = compare(grads, reference)
    assert max(errors.values()) <= TOL, errors


# ---------------------------------------------------------------------------- errors
def test_local_loss_before_a_step_raises():
    net = NorseStack()
    x, classes, _ = _data()
    with snn_ostl.OSTL(net, rule=snn_ostl.rules.DECOLLE(outputs=C)) as learner:
        with pytest.raises(ValueError, match="no layer stepped"):
            learner.rule.local_loss(classes[0])
        learner.reset()
        net(x[0], net.zero_states())
        learner.rule.local_loss(classes[0])  # after a forward: fine
        learner.reset()
        with pytest.raises(ValueError, match="no layer stepped"):
            learner.rule.local_loss(classes[0])


def test_class_indices_need_outputs():
    net = NorseStack()
    x, classes, _ = _data()
    with snn_ostl.OSTL(net, rule=snn_ostl.rules.DECOLLE()) as learner:
        learner.reset()
        net(x[0], net.zero_states())
        with pytest.raises(ValueError, match="outputs"):
            learner.rule.local_loss(classes[0])
        # a float target names the readout size itself
        target = F.one_hot(classes[0], C).to(DT)
        assert learner.rule.local_loss(target).ndim == 0
        assert learner.rule.outputs == C
        assert {p: r.shape for p, r in learner.rule.readouts.items()} == {
            "lifs.0": (C, SIZES[1]),
            "lifs.1": (C, SIZES[2]),
        }


def test_bad_options_raise():
    with pytest.raises(ValueError, match="loss"):
        snn_ostl.rules.DECOLLE(outputs=C, loss="hinge")
    with pytest.raises(ValueError, match="outputs"):
        snn_ostl.rules.DECOLLE(outputs=0)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        snn_ostl.rules.DECOLLE(outputs=C, loss=F.mse_loss)
