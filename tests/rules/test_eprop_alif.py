"""e-prop on adaptive neurons (ALIF / LSNN), against Bellec et al. (2020)'s eligibility.

The network is the paper's recurrent LSNN written the way e-prop models are written by hand:
``z, s = lsnn(fc_in(x) + fc_rec(z_prev), s)`` with Norse's ``LSNNCell``, then a Linear readout
and a squared error at every step. e-prop holds the fed-back spikes and the reset fixed but keeps
the spike's path into the adaptive threshold: with ψ the pseudo-derivative at the step's
membrane-minus-threshold,

    ε^i_t = d_i ε^i_{t-1} + r_t
    ε^v_t = (1 - z_t) (d_v ε^v_{t-1} + c ε^i_{t-1})
    ε^b_t = d_b ε^b_{t-1} + β ψ_t (d_v ε^v_{t-1} + c ε^i_{t-1} - d_b ε^b_{t-1})
    e_t   = ψ_t (d_v ε^v_{t-1} + c ε^i_{t-1} - d_b ε^b_{t-1})

(Norse's LSNN lets the current in after the spike decision; ``r`` is the presynaptic input,
``x_t`` for ``fc_in`` and ``z_{t-1}`` for ``fc_rec``). The gradient is Σ_t L_t e_t with the
learning signal ``L_t = W_outᵀ (ŷ_t - y*_t)``.
"""

from __future__ import annotations

import pytest
import torch
from conftest import seeded

import snn_ostl

norse = pytest.importorskip("norse.torch")
from norse.torch.functional.lsnn import LSNNParameters  # noqa: E402

DT = torch.float64
T, B, IN, N, OUT = 25, 3, 4, 6, 2
# every field in float64: Norse's float32 defaults would round dt * tau_mem_inv to float32
P = LSNNParameters(
    tau_syn_inv=torch.as_tensor(200.0, dtype=DT),
    tau_mem_inv=torch.as_tensor(100.0, dtype=DT),
    tau_adapt_inv=torch.as_tensor(50.0, dtype=DT),
    v_leak=torch.as_tensor(0.0, dtype=DT),
    v_th=torch.as_tensor(0.5, dtype=DT),
    v_reset=torch.as_tensor(0.0, dtype=DT),
    beta=torch.as_tensor(0.5, dtype=DT),
)
STEP = 1e-3


class RecurrentLSNN(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc_in = torch.nn.Linear(IN, N, bias=False, dtype=DT)
        self.fc_rec = torch.nn.Linear(N, N, bias=False, dtype=DT)
        self.lsnn = norse.LSNNCell(p=P)
        self.readout = torch.nn.Linear(N, OUT, dtype=DT)
        with torch.no_grad():
            self.fc_in.weight.mul_(40.0)
            self.fc_rec.weight.mul_(10.0)

    def forward(self, x, z, state):
        z, state = self.lsnn(self.fc_in(x) + self.fc_rec(z), state)
        return self.readout(z), z, state


def _data(seed=0):
    gen = seeded(seed)
    x = (torch.rand(T, B, IN, generator=gen, dtype=DT) < 0.4).to(DT)
    y = torch.randn(T, B, OUT, generator=gen, dtype=DT)
    return x, y


def _learner_grads(net, x, y, rule="eprop-symmetric"):
    net.zero_grad(set_to_none=True)
    learner = snn_ostl.OSTL(net, rule=rule)
    z, state, spikes = torch.zeros(B, N, dtype=DT), None, 0.0
    for t in range(T):
        out, z, state = net(x[t], z, state)
        spikes += float(z.detach().sum())
        (0.5 * ((out - y[t]) ** 2).sum()).backward()
    learner.detach()
    return {n: p.grad.clone() for n, p in net.named_parameters()}, spikes


def _reference(net, x, y, adaptation_path=True, feedback=None):
    """Bellec et al.'s e-prop for this network, written out step by step (no autograd)."""
    w_in, w_rec = net.fc_in.weight.detach(), net.fc_rec.weight.detach()
    w_out, b_out = net.readout.weight.detach(), net.readout.bias.detach()
    d_v = 1 - STEP * float(P.tau_mem_inv)
    c = STEP * float(P.tau_mem_inv)
    d_i = 1 - STEP * float(P.tau_syn_inv)
    d_b = 1 - STEP * float(P.tau_adapt_inv)
    beta, v_th = float(P.beta), float(P.v_th)
    v = torch.zeros(B, N, dtype=DT)
    i = torch.zeros(B, N, dtype=DT)
    b = torch.full((B, N), v_th, dtype=DT)
    z = torch.zeros(B, N, dtype=DT)
    grads = {k: torch.zeros_like(w) for k, w in (("fc_in", w_in), ("fc_rec", w_rec))}
    traces = {
        k: [torch.zeros(B, N, w.shape[1], dtype=DT) for _ in range(3)]
        for k, w in (("fc_in", w_in), ("fc_rec", w_rec))
    }
    g_out, g_bias = torch.zeros_like(w_out), torch.zeros_like(b_out)
    for t in range(T):
        inputs = {"fc_in": x[t], "fc_rec": z}
        v_dec = d_v * v + c * i
        b_dec = d_b * b + (1 - d_b) * v_th
        i_dec = d_i * i
        u = v_dec - b_dec
        z_new = (u > 0).to(DT)
        psi = 1.0 / (u.abs() + 1.0) ** 2
        a = x[t] @ w_in.T + z @ w_rec.T
        out = z_new @ w_out.T + b_out
        err = out - y[t]
        signal = err @ (w_out if feedback is None else feedback)  # L_t = Bᵀ (ŷ - y*)
        g_out += err.T @ z_new
        g_bias += err.sum(0)
        for k, (ev, ei, eb) in traces.items():
            drive = d_v * ev + c * ei.unsqueeze(0) if ei.dim() == 2 else d_v * ev + c * ei
            elig = psi.unsqueeze(2) * (drive - d_b * eb)
            grads[k] += torch.einsum("bi,bij->ij", signal, elig)
            new_v = (1 - z_new).unsqueeze(2) * drive
            new_b = d_b * eb
            if adaptation_path:
                new_b = new_b + beta * psi.unsqueeze(2) * (drive - d_b * eb)
            new_i = d_i * ei + inputs[k].unsqueeze(1)
            traces[k] = [new_v, new_i, new_b]
        v = (1 - z_new) * v_dec
        b = b_dec + beta * z_new
        i = i_dec + a
        z = z_new
    return {
        "fc_in.weight": grads["fc_in"],
        "fc_rec.weight": grads["fc_rec"],
        "readout.weight": g_out,
        "readout.bias": g_bias,
    }


def _rel(a, b):
    return float((a - b).abs().max() / b.abs().max().clamp_min(1e-300))


def test_eprop_on_lsnn_equals_bellec_alif_eligibility():
    torch.manual_seed(0)
    net = RecurrentLSNN()
    x, y = _data()
    got, spikes = _learner_grads(net, x, y)
    assert 0 < spikes < T * B * N, "the layer must spike, and not at every step"
    ref = _reference(net, x, y)
    for name, expected in ref.items():
        assert _rel(got[name], expected) < 1e-10, name


def test_adaptation_path_matters_negative_control():
    """Cutting the spike's path into the threshold (e-prop on a plain LIF) gives another
    gradient, and exact BPTT another still: the test can tell them apart."""
    torch.manual_seed(0)
    net = RecurrentLSNN()
    x, y = _data()
    got, _ = _learner_grads(net, x, y)
    cut = _reference(net, x, y, adaptation_path=False)
    assert _rel(got["fc_in.weight"], cut["fc_in.weight"]) > 1e-3
    # full BPTT through the same model
    net.zero_grad(set_to_none=True)
    z, state = torch.zeros(B, N, dtype=DT), None
    total = 0.0
    for t in range(T):
        out, z, state = net(x[t], z, state)
        total = total + 0.5 * ((out - y[t]) ** 2).sum()
    total.backward()
    assert _rel(got["fc_rec.weight"], net.fc_rec.weight.grad) > 1e-3


def test_random_eprop_uses_the_fixed_matrix_in_place_of_the_readout():
    torch.manual_seed(0)
    net = RecurrentLSNN()
    x, y = _data()
    learner = snn_ostl.OSTL(net, rule="eprop-random", seed=3)
    z, state = torch.zeros(B, N, dtype=DT), None
    for t in range(T):
        out, z, state = net(x[t], z, state)
        (0.5 * ((out - y[t]) ** 2).sum()).backward()
    matrix = learner.signals.matrices["readout"].clone()
    learner.detach()
    got = {n: p.grad.clone() for n, p in net.named_parameters()}
    assert not torch.allclose(matrix, net.readout.weight.detach())
    ref = _reference(net, x, y, feedback=matrix)
    for name in ("fc_in.weight", "fc_rec.weight"):
        assert _rel(got[name], ref[name]) < 1e-10, name
