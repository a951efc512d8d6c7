"""SnAp-n (Menick et al., ICLR 2021) against a direct implementation of masked RTRL.

Two recurrent layers, each followed by a linear readout and trained with a backward per step:
a layer of Spiking Neural Units (state s, spikes y = h(s - thr) derived from it, reset gate and
recurrent weights both driven by y_{t-1}) and Murray's leaky rate units. The reference,
:func:`equations_rtrl.rtrl_snu` / :func:`equations_rtrl.rtrl_leaky`, keeps the whole influence
matrix ``J_t = M ⊙ (D_t J_{t-1} + ∂s_t/∂θ)`` per batch element with the full state Jacobian D_t
and the SnAp mask M (SnAp-1: the unit a parameter row feeds; SnAp-2: also the units that unit
reaches through one nonzero recurrent weight; no mask: RTRL, Williams & Zipser 1989).

- RTRL (no mask) equals the learner's exact rule ``"ostl"``: the reference's Jacobian is right.
- SnAp-1 and SnAp-2 on a sparse recurrent matrix equal the reference to 1e-10.
- SnAp-2 on a dense recurrent matrix is RTRL (every unit reaches every unit in one step).
- Negative controls: SnAp-1 is not RTRL; on a sparse matrix SnAp-2 is neither SnAp-1 nor RTRL.
- Gated torch cells (LSTM) mix units inside their step: SnAp-n refuses them.
"""

from __future__ import annotations

import functools

import pytest
import torch
from conftest import assert_spiking, seeded
from equations_rtrl import (
    LeakyWeights,
    Readout,
    SNUWeights,
    rtrl_leaky,
    rtrl_snu,
    snap_mask,
    snu_forward,
)
from rule_nets import DECAY, DT, N_IN, N_OUT, B, LeakyRateNet, N, RecurrentSNUNet, T
from torch import nn

import snn_ostl
from snn_ostl.testing import max_relative_error

TOL = 1e-10
SLOPE = 5.0
CELLS = ["snu", "leaky"]


class SNUNet(RecurrentSNUNet):
    @property
    def recurrent(self) -> nn.Parameter:
        return self.cell.recurrent_weight

    def weights(self) -> SNUWeights:
        c = self.cell
        return SNUWeights(
            c.weight.detach(),
            c.recurrent_weight.detach(),
            c.bias.detach(),
            DECAY,
            c.threshold.detach(),
            SLOPE,
        )

    def reference(self, x, target, snap):
        readout = Readout(self.out.weight.detach(), self.out.bias.detach())
        return rtrl_snu(x, target, self.weights(), readout, snap)[0]

    def reference_spikes(self, x):
        return snu_forward(x, self.weights())[1]


class LeakyNet(LeakyRateNet):
    def __init__(self) -> None:
        super().__init__(tau=3.0)

    @property
    def recurrent(self) -> nn.Parameter:
        return self.cell.weight_hh

    def reference(self, x, target, snap):
        c = self.cell
        p = LeakyWeights(c.weight_ih.detach(), c.weight_hh.detach(), c.bias.detach(), c.tau)
        readout = Readout(self.out.weight.detach(), self.out.bias.detach())
        return rtrl_leaky(x, target, p, readout, snap)[0]


@functools.cache
def _make(cell: str, sparse: bool) -> tuple[nn.Module, torch.Tensor, torch.Tensor]:
    torch.manual_seed(0)
    net = SNUNet() if cell == "snu" else LeakyNet()
    gen = seeded(1)
    if cell == "snu":
        x = torch.rand(T, B, N_IN, generator=gen, dtype=DT) * 1.5
    else:
        x = torch.randn(T, B, N_IN, generator=gen, dtype=DT)
    target = torch.randn(T, B, N_OUT, generator=gen, dtype=DT)
    if sparse:
        keep = torch.rand(N, N, generator=seeded(2), dtype=DT) < 0.3
        with torch.no_grad():
            net.recurrent.mul_(keep)
        reach = torch.eye(N, dtype=torch.bool) | (net.recurrent != 0)
        assert not reach.all(), "SnAp-2 would keep every entry"
        assert (reach.sum(0) > 1).any(), "SnAp-2 would keep no more than SnAp-1"
    return net, x, target


def _learn(net: nn.Module, rule, x, target) -> tuple[dict[str, torch.Tensor], str]:
    """Gradients of one sequence (a backward per step) and the summary; checks the spikes."""
    spikes = []
    with snn_ostl.OSTL(net, rule=rule) as learner:
        learner.reset()
        state = None
        for t in range(x.shape[0]):
            out, state = net(x[t], state)
            (0.5 * ((out - target[t]) ** 2).sum()).backward()
            if isinstance(state, snn_ostl.SNUState):
                spikes.append(state.y.detach())
        summary = learner.summary()
    if spikes:
        spikes = torch.stack(spikes)
        assert torch.equal(spikes, net.reference_spikes(x))
        assert 0 < int(spikes.sum()) < spikes.numel()
        assert_spiking([float(spikes.mean())], "SNU")
    grads = {n: p.grad.detach().clone() for n, p in net.named_parameters()}
    for p in net.parameters():
        p.grad = None
    return grads, summary


@functools.cache
def _run(cell: str, sparse: bool, rule: str) -> tuple[dict[str, torch.Tensor], str]:
    """:func:`_learn` on the case's network, once per module (the gradients are read only)."""
    net, x, target = _make(cell, sparse)
    return _learn(net, rule, x, target)


@functools.cache
def _reference(cell: str, sparse: bool, n: int | None) -> dict[str, torch.Tensor]:
    net, x, target = _make(cell, sparse)
    return net.reference(x, target, n)


def _errors(grads, reference) -> dict[str, float]:
    assert set(grads) == set(reference)
    return {k: max_relative_error(grads[k], reference[k]) for k in reference}


def _hidden(grads) -> dict[str, torch.Tensor]:
    return {k: v for k, v in grads.items() if k.startswith("cell.")}


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "sparse"])
@pytest.mark.parametrize("cell", CELLS)
def test_rtrl_reference_equals_exact_ostl(cell, sparse):
    """The reference's full Jacobian (reset gate, recurrent weights through the derived
    spikes, threshold) is the exact one: without a mask it is the learner's exact rule."""
    grads, summary = _run(cell, sparse, "ostl")
    assert "rule=ostl" in summary.splitlines()[0]
    errors = _errors(grads, _reference(cell, sparse, None))
    assert max(errors.values()) <= TOL, errors


@pytest.mark.parametrize("n", [1, 2])
@pytest.mark.parametrize("cell", CELLS)
def test_snap_equals_the_equations_on_a_sparse_recurrent_matrix(cell, n):
    grads, _ = _run(cell, True, f"snap-{n}")
    errors = _errors(grads, _reference(cell, True, n))
    assert max(errors.values()) <= TOL, errors


@pytest.mark.parametrize("cell", CELLS)
def test_snap2_on_a_dense_recurrent_matrix_is_exact_and_snap1_is_not(cell):
    net, x, target = _make(cell, sparse=False)
    exact, _ = _run(cell, False, "ostl")
    snap2, summary = _learn(net, snn_ostl.rules.SnAp(n=2), x, target)
    assert "rule=snap-2" in summary.splitlines()[0]
    errors = _errors(snap2, exact)
    assert max(errors.values()) <= 1e-12, errors
    snap1, summary = _run(cell, False, "snap-1")
    assert "rule=snap-1" in summary.splitlines()[0]
    for name, g in _hidden(snap1).items():
        assert max_relative_error(g, exact[name]) > 1e-3, name
    # the readout above the layer keeps its exact instantaneous gradient under every rule
    assert max_relative_error(snap1["out.weight"], exact["out.weight"]) <= TOL
    # the same holds for the reference's masks
    reference = _reference(cell, False, None)
    assert max(_errors(_reference(cell, False, 2), reference).values()) <= 1e-12
    reference1 = _hidden(_reference(cell, False, 1))
    assert min(_errors(reference1, _hidden(reference)).values()) > 1e-3


@pytest.mark.parametrize("cell", CELLS)
def test_snap2_on_a_sparse_recurrent_matrix_is_neither_snap1_nor_exact(cell):
    exact, _ = _run(cell, True, "ostl")
    snap1, summary1 = _run(cell, True, "snap-1")
    snap2, summary2 = _run(cell, True, "snap-2")
    assert "rule=snap-1" in summary1.splitlines()[0]
    assert "rule=snap-2" in summary2.splitlines()[0]
    for name, g in _hidden(snap2).items():
        assert max_relative_error(g, snap1[name]) > 1e-3, name
        assert max_relative_error(g, exact[name]) > 1e-3, name
    reference = {n: _reference(cell, True, n) for n in (1, 2, None)}
    for name in _hidden(reference[2]):
        assert max_relative_error(reference[2][name], reference[1][name]) > 1e-3, name
        assert max_relative_error(reference[2][name], reference[None][name]) > 1e-3, name


def test_snap_masks_follow_the_recurrent_connectivity():
    """SnAp-1 keeps the unit each parameter row feeds; SnAp-2 adds its nonzero fan-out."""
    h = torch.tensor([[0.0, 1.0, 0.0], [0.0, 0.0, 0.0], [2.0, 0.0, 0.0]], dtype=DT)
    m1 = snap_mask(torch.Size([3, 2]), h, 1)
    m2 = snap_mask(torch.Size([3, 2]), h, 2)
    # columns: the elements of a [3, 2] weight, row by row; rows: the units k
    expect1 = torch.tensor([[1, 1, 0, 0, 0, 0], [0, 0, 1, 1, 0, 0], [0, 0, 0, 0, 1, 1]], dtype=DT)
    expect2 = torch.tensor([[1, 1, 1, 1, 0, 0], [0, 0, 1, 1, 0, 0], [1, 1, 0, 0, 1, 1]], dtype=DT)
    assert torch.equal(m1, expect1)
    assert torch.equal(m2, expect2)
    assert torch.equal(snap_mask(torch.Size([3]), h, None), torch.ones(3, 3, dtype=DT))


class LSTMNet(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.cell = nn.LSTMCell(N_IN, N, dtype=DT)
        self.out = nn.Linear(N, N_OUT, dtype=DT)

    def forward(self, x, state):
        h, c = self.cell(x, state)
        return self.out(h), (h, c)


@pytest.mark.parametrize("rule", ["snap-1", "snap-2"])
def test_snap_refuses_gated_torch_cells(rule):
    net = LSTMNet()
    with pytest.raises(snn_ostl.UnsupportedModuleError, match="SnAp"):
        snn_ostl.OSTL(net, rule=rule)
    assert not snn_ostl.is_attached(net)
    # the exact rule trains the same model
    snn_ostl.OSTL(net, rule="ostl").detach()
