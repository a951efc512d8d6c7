"""Recurrence written in the user's loop, ``lif(syn_in(x) + syn_rec(spk), mem)``, under OSTL.

One stateful layer and a stateless readout: OSTL must equal full BPTT, the gradient that follows
the fed-back spikes back through every step. Each setting runs two sequences through one
learner (the second must not remember the first) and checks that the neurons spike. Norse runs
in float64 (tolerance 1e-10); snnTorch's spikes are float32 (tolerance 1e-4).
"""

from __future__ import annotations

import pytest
import torch
from conftest import assert_spiking, seeded
from torch import nn

pytest.importorskip("snntorch")
pytest.importorskip("norse")

import norse.torch as nt
import snntorch as snn

import snn_ostl
from snn_ostl.testing import compare

F64, F32 = torch.float64, torch.float32
TOL = {F64: 1e-10, F32: 1e-4}
T, B, N_IN, N = 7, 3, 4, 6


class LoopRSNN(nn.Module):
    """A recurrent spiking layer whose recurrence lives in the user's loop.

    Args:
        cell: ``"snntorch"`` (``snn.Leaky``) or ``"norse"`` (``LIFCell``).
        synapse: ``"linear"`` or ``"conv"`` (a 1-d convolution over 5 positions, both ways).
        between: A module applied to the summed current before the neuron, or None.
    """

    def __init__(self, cell: str, synapse: str, between: nn.Module | None) -> None:
        super().__init__()
        self.dtype = F64 if cell == "norse" else F32
        self.norse = cell == "norse"
        kw = {"dtype": self.dtype}
        if synapse == "conv":
            self.syn_in = nn.Conv1d(2, 3, 3, padding=1, **kw)
            self.syn_rec = nn.Conv1d(3, 3, 3, padding=1, bias=False, **kw)
            self.shape, features = (3, 5), 15
        else:
            self.syn_in = nn.Linear(N_IN, N, **kw)
            self.syn_rec = nn.Linear(N, N, bias=False, **kw)
            self.shape, features = (N,), N
        self.between = between
        self.lif = nt.LIFCell() if self.norse else snn.Leaky(beta=0.9)
        self.readout = nn.Linear(features, 2, **kw)
        with torch.no_grad():
            self.syn_in.weight.mul_(20.0 if self.norse else 3.0)
            self.syn_rec.weight.mul_(8.0 if self.norse else 2.0)

    def forward(self, x: torch.Tensor):
        """Yield ``(readout, spikes)`` at every step."""
        spk = torch.zeros(x.shape[1], *self.shape, dtype=self.dtype)
        mem = None if self.norse else torch.zeros_like(spk)
        for frame in x:
            current = self.syn_in(frame) + self.syn_rec(spk)
            if self.between is not None:
                current = self.between(current)
            spk, mem = self.lif(current, mem)
            yield self.readout(spk.flatten(1)), spk


def _data(net: LoopRSNN, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    shape = (T, B, 2, 5) if net.shape != (N,) else (T, B, N_IN)
    x = torch.rand(shape, generator=seeded(seed), dtype=net.dtype) * 2.0
    y = torch.randn(T, B, 2, generator=seeded(seed + 1), dtype=net.dtype)
    return x, y


def _losses(net, x, y, rates=None):
    for (out, spk), target in zip(net(x), y):
        if rates is not None:
            rates.append(float((spk.detach() != 0).double().mean()))
        yield (out - target).pow(2).sum()


BETWEEN = {
    "none": lambda dtype: None,
    "layer-norm": lambda dtype: nn.LayerNorm(N, dtype=dtype),
    "dropout": lambda dtype: nn.Dropout(0.2),
    "scale": lambda dtype: _Scale(),
}


class _Scale(nn.Module):
    def forward(self, x):
        return 0.5 * x


SETTINGS = [
    ("linear", "none"),
    ("linear", "layer-norm"),
    ("linear", "dropout"),
    ("linear", "scale"),
    ("conv", "none"),
]


@pytest.mark.parametrize("cell", ["snntorch", "norse"])
@pytest.mark.parametrize(("synapse", "between"), SETTINGS, ids=[f"{a}-{b}" for a, b in SETTINGS])
def test_loop_recurrence_equals_full_bptt(cell, synapse, between):
    torch.manual_seed(3)
    dtype = F64 if cell == "norse" else F32
    net = LoopRSNN(cell, synapse, BETWEEN[between](dtype))
    first, second = _data(net, 11), _data(net, 21)
    rates: list[float] = []
    with snn_ostl.OSTL(net) as learner:
        for x, y in (first, second):
            net.zero_grad(set_to_none=True)
            learner.reset()
            torch.manual_seed(5)  # the same dropout masks as the reference's
            for loss in _losses(net, x, y, rates):
                loss.backward()
        summary = str(learner.summary())
    grads = {n: p.grad.clone() for n, p in net.named_parameters()}
    assert_spiking([sum(rates) / len(rates)], f"{cell} {synapse} {between}")
    assert "fed back by syn_rec" in summary, summary
    net.zero_grad(set_to_none=True)
    torch.manual_seed(5)
    torch.stack(list(_losses(net, *second))).sum().backward()
    reference = {n: p.grad for n, p in net.named_parameters()}
    errors = compare(grads, reference)
    assert max(errors.values()) <= TOL[dtype], errors


def test_feedback_from_a_layer_above_is_refused_under_ostl():
    """Spikes of the layer above fed back into the one below: no trace form, refused."""

    class TopDown(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(N_IN, N, dtype=F64), nn.Linear(N, N, dtype=F64)
            self.fb = nn.Linear(N, N, bias=False, dtype=F64)
            self.lif1, self.lif2 = nt.LIFCell(), nt.LIFCell()

        def forward(self, x):
            top = torch.zeros(x.shape[1], N, dtype=F64)
            s1 = s2 = None
            for frame in x:
                z1, s1 = self.lif1(self.fc1(frame) + self.fb(top), s1)
                top, s2 = self.lif2(self.fc2(z1), s2)
                yield top.sum()

    net = TopDown()
    x = torch.rand(T, B, N_IN, generator=seeded(4), dtype=F64)
    with snn_ostl.OSTL(net), pytest.raises(snn_ostl.ConfigurationError) as info:
        for loss in net(x):
            loss.backward()
    message = str(info.value)
    assert "fb" in message and "ostl-no-h" in message, message


# ----------------------------------------------------------------------------- RLeaky behind chains
class ChainRLeaky(nn.Module):
    """snnTorch's RLeaky fed through a chain: Conv2d -> max-pooling -> flatten, or Linear ->
    Dropout. Its recurrent Linear mixes neurons, so the chain's traces are full."""

    def __init__(self, conv: bool) -> None:
        super().__init__()
        self.conv = conv
        if conv:
            self.syn, features = nn.Conv2d(1, 2, 3, padding=1), 2 * 3 * 3
        else:
            self.syn, features = nn.Linear(5, 6), 6
            self.drop = nn.Dropout(0.2)
        self.lif = snn.RLeaky(beta=0.9, linear_features=features)
        self.readout = nn.Linear(features, 2)
        with torch.no_grad():
            self.syn.weight.mul_(3.0)

    def forward(self, x):
        spk, mem = self.lif.init_rleaky()
        for frame in x:
            if self.conv:
                current = nn.functional.max_pool2d(self.syn(frame), 2).flatten(1)
            else:
                current = self.drop(self.syn(frame))
            spk, mem = self.lif(current, spk, mem)
            yield self.readout(mem), spk


@pytest.mark.parametrize("conv", [False, True], ids=["linear-dropout", "conv-maxpool"])
def test_rleaky_behind_a_chain_equals_full_bptt(conv):
    torch.manual_seed(4)
    net = ChainRLeaky(conv)
    shape = (T, B, 1, 6, 6) if conv else (T, B, 5)
    x = torch.rand(shape, generator=seeded(31)) * 2.0
    y = torch.randn(T, B, 2, generator=seeded(32))
    rates: list[float] = []
    torch.manual_seed(5)
    with snn_ostl.OSTL(net) as learner:
        for (out, spk), target in zip(net(x), y):
            rates.append(float(spk.detach().mean()))
            (out - target).pow(2).sum().backward()
        summary = str(learner.summary())
    grads = {n: p.grad.clone() for n, p in net.named_parameters()}
    assert_spiking([sum(rates) / len(rates)], "RLeaky behind a chain")
    assert "syn.weight" in summary and "full-jacobian" in summary
    net.zero_grad(set_to_none=True)
    torch.manual_seed(5)
    losses = [(out - target).pow(2).sum() for (out, _), target in zip(net(x), y)]
    torch.stack(losses).sum().backward()
    errors = compare(grads, {n: p.grad for n, p in net.named_parameters()})
    assert max(errors.values()) <= TOL[F32], errors
