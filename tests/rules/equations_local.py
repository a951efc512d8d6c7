"""DECOLLE and SuperSpike written out from their papers' equations, in float64.

These references know nothing of the library: no hooks, and no autograd through time (the one
exception, :func:`van_rossum_autograd`, is the autograd side of a check that the filtered
SuperSpike update is the gradient of the van Rossum loss). Every neuron is integrated by hand,
every surrogate derivative is written out, and every eligibility is a recursion over explicit
tensors. A bias is the weight of a constant input 1: weights and bias share one trace, whose
last input column belongs to the bias.

Neurons:

- Norse's ``LIFCell`` (norse 1.1.0, ``lif_feed_forward_step``): the current jumps first,
  ``i' = i + a``; then ``v_dec = v + dt/τ_mem ((v_leak - v) + i')``, ``i = i' - dt/τ_syn i'``,
  ``z = Θ(v_dec - v_th)``, ``v = (1 - z) v_dec + z v_reset``. Its default surrogate
  (``method="super"``) backpropagates ``1 / (|u| + 1)²`` and ignores ``p.alpha``.
- snnTorch's ``Synaptic`` (subtractive reset, delayed by one step): ``syn = α syn + W x + b``,
  ``mem = β mem + syn - ϑ Θ(mem_prev - ϑ)``, ``S = Θ(mem - ϑ)``; its default surrogate is the
  arctangent, ``∂S/∂U = (a/2) / (1 + (π a U / 2)²)`` with ``a = 2``.

Rules:

- DECOLLE (Kaiser, Mostafa & Neftci 2020): each hidden layer ``l`` reads its spikes out through a
  fixed random ``G_l``, ``r_l = G_l S_l``, and descends its own local loss only; the top layer
  descends the user's loss. ``∂L/∂W^l_ij = Σ_t δ^l_i,t ∂S^l_i,t/∂W^l_ij`` with
  ``δ^l_t = G_lᵀ ∂loss/∂r_l``, the input from below held fixed and no path through the layer's
  own spikes (the reset gate's spike is a constant).
- SuperSpike (Zenke & Ganguli 2018): ``λ_ij = α * [σ'(U_i) (ε * x_j)]``, the output error
  ``e_i = α * (S_i - S*_i)``, ``ΔW_ij ∝ Σ_t e_i λ_ij``; a hidden layer's error is the output
  error fed back through a matrix ``F`` (the upper weights, a random matrix or ones).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

DT = torch.float64

#: ``top_delta(t, spikes_of_the_top_layer) -> ∂(user's loss at step t)/∂spikes``, by hand.
TopDelta = Callable[[int, Tensor], Tensor]


# ---------------------------------------------------------------------------- neurons
@dataclass(frozen=True)
class NorseLIF:
    """The constants of Norse's ``LIFCell`` (its defaults: leak factors 0.9 and 0.8)."""

    dt: float = 1e-3
    tau_mem_inv: float = 100.0
    tau_syn_inv: float = 200.0
    v_leak: float = 0.0
    v_th: float = 1.0
    v_reset: float = 0.0

    @property
    def dm(self) -> float:
        """``dt / τ_mem``: the membrane's integration factor."""
        return self.dt * self.tau_mem_inv

    @property
    def ds(self) -> float:
        """``dt / τ_syn``: the fraction of the current that decays per step."""
        return self.dt * self.tau_syn_inv


#: Norse's default LIF neuron.
NORSE_LIF = NorseLIF()


def norse_lif_step(c: NorseLIF, a: Tensor, v: Tensor, i: Tensor):
    """One Euler step of Norse's LIF neuron: ``(z, u, v_new, i_new)`` with ``u = v_dec - v_th``."""
    i_jump = i + a
    v_dec = v + c.dm * ((c.v_leak - v) + i_jump)
    i_new = i_jump - c.ds * i_jump
    u = v_dec - c.v_th
    z = (u > 0).to(DT)
    v_new = (1 - z) * v_dec + z * c.v_reset
    return z, u, v_new, i_new


def norse_super_surrogate(u: Tensor) -> Tensor:
    """Norse 1.1.0's ``"super"`` surrogate derivative: ``1 / (|u| + 1)²`` (alpha unused)."""
    return 1.0 / (u.abs() + 1.0) ** 2


def snntorch_atan_surrogate(u: Tensor, a: float = 2.0) -> Tensor:
    """snnTorch's default arctangent surrogate derivative ``(a/2) / (1 + (π a u / 2)²)``."""
    return (a / 2) / (1 + (math.pi / 2 * a * u) ** 2)


def _with_one(x: Tensor) -> Tensor:
    """The input with a constant 1 appended: the bias is that input's weight."""
    return torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype, device=x.device)], dim=1)


def _split(grad: Tensor) -> tuple[Tensor, Tensor]:
    return grad[:, :-1].clone(), grad[:, -1].clone()


def mse_one_hot_delta(spikes: Tensor, readout: Tensor, target: Tensor) -> Tensor:
    """``δ = G_lᵀ ∂/∂r mean((r - onehot(y))²)`` at ``r = G_l S``: the local error of DECOLLE.

    Args:
        spikes: ``[B, N]``; readout: ``G_l``, ``[C, N]``; target: class indices ``[B]``.
    """
    r = spikes @ readout.T
    y = torch.zeros_like(r)
    y[torch.arange(r.shape[0]), target] = 1.0
    return (2.0 * (r - y) / r.numel()) @ readout


# ---------------------------------------------------------------------------- DECOLLE
def decolle_norse(
    weights: Sequence[Tensor],
    biases: Sequence[Tensor],
    x: Tensor,
    targets: Tensor,
    readouts: Sequence[Tensor],
    top_delta: TopDelta | None,
    c: NorseLIF = NORSE_LIF,
) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
    """DECOLLE on a stack of Linear -> Norse LIF layers, from zero state.

    The eligibility of each layer is e-prop's (Bellec et al. 2020) for this neuron: with
    ``θ_ij`` a weight (or bias, input 1) and the reset gate's spike held fixed,

        ∂i'_t/∂θ_ij    = E^i_{t-1,j} + x_t,j
        ∂v_dec,t/∂θ_ij = (1 - dm) E^v_{t-1,ij} + dm ∂i'_t/∂θ_ij
        ∂z_t/∂θ_ij     = σ'(u_t,i) ∂v_dec,t/∂θ_ij
        E^v_t,ij       = (1 - z_t,i) ∂v_dec,t/∂θ_ij        E^i_t,j = (1 - ds) ∂i'_t/∂θ_ij

    and ``∂L/∂θ_ij = Σ_t Σ_b δ_t,bi ∂z_t,bi/∂θ_ij``.

    Args:
        weights, biases: Per layer, ``[N_l, N_{l-1}]`` and ``[N_l]``.
        x: Input ``[T, B, N_0]``.
        targets: Class indices ``[T, B]`` for every hidden layer's local mse-to-one-hot loss.
        readouts: ``G_l`` ``[C, N_l]`` of every layer but the top one; with one for the top
            layer too, every layer learns from its local loss alone.
        top_delta: The user's loss gradient on the top layer's spikes (without a top readout).
        c: The LIF constants.

    Returns:
        (weight gradients, bias gradients, spikes ``[T, B, N_l]``) per layer.
    """
    steps, batch = x.shape[:2]
    depth = len(weights)
    assert len(readouts) in (depth - 1, depth)
    grads = [torch.zeros(w.shape[0], w.shape[1] + 1, dtype=DT) for w in weights]
    v = [torch.zeros(batch, w.shape[0], dtype=DT) for w in weights]
    i = [torch.zeros(batch, w.shape[0], dtype=DT) for w in weights]
    trace_v = [torch.zeros(batch, w.shape[0], w.shape[1] + 1, dtype=DT) for w in weights]
    trace_i = [torch.zeros(batch, w.shape[1] + 1, dtype=DT) for w in weights]
    spikes: list[list[Tensor]] = [[] for _ in weights]
    for t in range(steps):
        inp = x[t]
        for layer in range(depth):
            w, b = weights[layer], biases[layer]
            xin = _with_one(inp)
            z, u, v[layer], i[layer] = norse_lif_step(c, inp @ w.T + b, v[layer], i[layer])
            d_i = trace_i[layer] + xin
            d_v = (1 - c.dm) * trace_v[layer] + c.dm * d_i[:, None, :]
            d_z = norse_super_surrogate(u)[:, :, None] * d_v
            trace_v[layer] = (1 - z)[:, :, None] * d_v
            trace_i[layer] = (1 - c.ds) * d_i
            if layer < len(readouts):
                delta = mse_one_hot_delta(z, readouts[layer], targets[t])
            else:
                delta = top_delta(t, z)
            grads[layer] += torch.einsum("bi,bij->ij", delta, d_z)
            spikes[layer].append(z)
            inp = z
    gw, gb = zip(*(_split(g) for g in grads))
    return list(gw), list(gb), [torch.stack(s) for s in spikes]


def decolle_synaptic(
    weights: Sequence[Tensor],
    biases: Sequence[Tensor],
    x: Tensor,
    targets: Tensor,
    readouts: Sequence[Tensor],
    top_delta: TopDelta,
    alpha: float,
    beta: float,
    threshold: float = 1.0,
    surrogate: Callable[[Tensor], Tensor] = snntorch_atan_surrogate,
) -> tuple[list[Tensor], list[Tensor], list[Tensor]]:
    """DECOLLE as the paper writes it (Kaiser, Mostafa & Neftci 2020, eqs. 3-6 and 9).

    With the input traces ``Q_t = α Q_{t-1} + x_t`` and ``P_t = β P_{t-1} + Q_t`` (the constant
    input 1 of the bias has its own), the membrane is ``U_t = W P_t + b P¹_t - ϑ R_t`` where
    the reset trace ``R_t = β R_{t-1} + S_{t-1}`` (a spike resets from the next step on, and the
    reset decays with the membrane), and ``S_t = Θ(U_t - ϑ)``. The reset is not differentiated,
    so ``∂U_i,t/∂W_ij = P_j,t`` and

        ∂L/∂W_ij = Σ_t δ_i,t σ'(U_i,t - ϑ) P_j,t.

    This is snnTorch's ``Synaptic`` with subtractive reset (``syn = α syn + W x + b``,
    ``mem = β mem + syn - ϑ reset``): ``syn = W Q + b Q¹`` and ``mem = U`` by linearity.

    Args: as :func:`decolle_norse`, plus the neuron's ``alpha``, ``beta`` and ``threshold``,
    and its surrogate derivative ``σ'``.
    """
    steps, batch = x.shape[:2]
    depth = len(weights)
    assert len(readouts) == depth - 1
    grads = [torch.zeros(w.shape[0], w.shape[1] + 1, dtype=DT) for w in weights]
    q = [torch.zeros(batch, w.shape[1] + 1, dtype=DT) for w in weights]
    p = [torch.zeros(batch, w.shape[1] + 1, dtype=DT) for w in weights]
    r = [torch.zeros(batch, w.shape[0], dtype=DT) for w in weights]
    last = [torch.zeros(batch, w.shape[0], dtype=DT) for w in weights]
    spikes: list[list[Tensor]] = [[] for _ in weights]
    for t in range(steps):
        inp = x[t]
        for layer in range(depth):
            w, b = weights[layer], biases[layer]
            q[layer] = alpha * q[layer] + _with_one(inp)
            p[layer] = beta * p[layer] + q[layer]
            r[layer] = beta * r[layer] + last[layer]
            theta = torch.cat([w, b[:, None]], dim=1)
            mem = p[layer] @ theta.T - threshold * r[layer]
            s = (mem - threshold > 0).to(DT)
            if layer < depth - 1:
                delta = mse_one_hot_delta(s, readouts[layer], targets[t])
            else:
                delta = top_delta(t, s)
            sg = surrogate(mem - threshold)
            grads[layer] += torch.einsum("bi,bj->ij", delta * sg, p[layer])
            spikes[layer].append(s)
            last[layer] = s
            inp = s
    gw, gb = zip(*(_split(g) for g in grads))
    return list(gw), list(gb), [torch.stack(s) for s in spikes]


# ---------------------------------------------------------------------------- SuperSpike
def alpha_filter(u: Tensor, tau_rise: float, tau_decay: float) -> Tensor:
    """The unit-area double-exponential kernel over the first axis (time), from zero:
    ``h_t = a_r h_{t-1} + (1 - a_r) u_t``, ``f_t = a_d f_{t-1} + (1 - a_d) h_t``,
    ``a = exp(-1/τ)``."""
    a_r, a_d = math.exp(-1.0 / tau_rise), math.exp(-1.0 / tau_decay)
    h = torch.zeros_like(u[0])
    f = torch.zeros_like(u[0])
    out = []
    for t in range(u.shape[0]):
        h = a_r * h + (1 - a_r) * u[t]
        f = a_d * f + (1 - a_d) * h
        out.append(f)
    return torch.stack(out)


def norse_psp(c: NorseLIF, x: Tensor) -> Tensor:
    """``ε * x``: the sub-threshold membrane ``v_dec`` the input ``x [T, B, J]`` alone drives
    in Norse's LIF neuron (no leak potential, no threshold, no reset): the PSP kernel."""
    v = torch.zeros_like(x[0])
    i = torch.zeros_like(x[0])
    out = []
    for t in range(x.shape[0]):
        i_jump = i + x[t]
        v = v + c.dm * (-v + i_jump)
        i = (1 - c.ds) * i_jump
        out.append(v)
    return torch.stack(out)


def norse_forward(weights: Sequence[Tensor], biases: Sequence[Tensor], x: Tensor, c: NorseLIF):
    """A stack of Linear -> Norse LIF from zero state; per layer (input [T, B, J + 1] with the
    constant 1 appended, threshold argument u [T, B, N], spikes [T, B, N])."""
    steps, batch = x.shape[:2]
    v = [torch.zeros(batch, w.shape[0], dtype=DT) for w in weights]
    i = [torch.zeros(batch, w.shape[0], dtype=DT) for w in weights]
    record: list[tuple[list, list, list]] = [([], [], []) for _ in weights]
    for t in range(steps):
        inp = x[t]
        for layer, (w, b) in enumerate(zip(weights, biases)):
            z, u, v[layer], i[layer] = norse_lif_step(c, inp @ w.T + b, v[layer], i[layer])
            for seq, value in zip(record[layer], (_with_one(inp), u, z)):
                seq.append(value)
            inp = z
    return [tuple(torch.stack(s) for s in rec) for rec in record]


def superspike_norse(
    weights: Sequence[Tensor],
    biases: Sequence[Tensor],
    x: Tensor,
    target: Tensor,
    feedback: Sequence[Tensor],
    tau_rise: float,
    tau_decay: float,
    c: NorseLIF = NORSE_LIF,
) -> tuple[list[Tensor], list[Tensor], Tensor, list[Tensor]]:
    """SuperSpike (Zenke & Ganguli 2018, eqs. 10-13) on a stack of Linear -> Norse LIF layers.

        λ^l_t,bij = α * [σ'(u^l_bi) (ε * x^l_bj)]_t          (eligibility, eq. 10)
        e^L_t     = α * (S^L - S*)_t                          (output error)
        e^l_t     = e^{l+1}_t F_{l+1}                         (feedback, eq. 13)
        ∂W^l_ij   = Σ_t Σ_b e^l_t,bi λ^l_t,bij / B
        loss_t    = ½ Σ_bi (e^L_t,bi)² / B                    (van Rossum distance)

    Args:
        weights, biases: Per layer, ``[N_l, N_{l-1}]`` and ``[N_l]``.
        x: Input ``[T, B, N_0]``; target: target spikes of the top layer ``[T, B, N_L]``.
        feedback: ``F_{l+1}`` (shaped like ``W^{l+1}``) for every layer but the top one.
        tau_rise, tau_decay: The α kernel's time constants, in steps.

    Returns:
        (weight gradients, bias gradients, per-step losses [T], spikes [T, B, N_l] per layer).
    """
    assert len(feedback) == len(weights) - 1
    record = norse_forward(weights, biases, x, c)
    batch = x.shape[1]
    lambdas = []
    for xin, u, _ in record:
        elig = norse_super_surrogate(u)[..., :, None] * norse_psp(c, xin)[..., None, :]
        lambdas.append(alpha_filter(elig, tau_rise, tau_decay))
    err = alpha_filter(record[-1][2] - target, tau_rise, tau_decay)
    losses = 0.5 * (err**2).sum(dim=(1, 2)) / batch
    signal = err / batch
    grads: list[Tensor] = [torch.zeros(0)] * len(weights)
    for layer in reversed(range(len(weights))):
        grads[layer] = torch.einsum("tbi,tbij->ij", signal, lambdas[layer])
        if layer > 0:
            signal = signal @ feedback[layer - 1]
    gw, gb = zip(*(_split(g) for g in grads))
    return list(gw), list(gb), losses, [rec[2] for rec in record]


class _SuperSpikeThreshold(torch.autograd.Function):
    """Θ(u) forward, Norse's ``"super"`` surrogate derivative backward (written out)."""

    @staticmethod
    def forward(ctx, u):  # type: ignore[override]
        ctx.save_for_backward(u)
        return (u > 0).to(u.dtype)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        (u,) = ctx.saved_tensors
        return grad * norse_super_surrogate(u)


def van_rossum_autograd(
    weight: Tensor,
    bias: Tensor,
    x: Tensor,
    target: Tensor,
    tau_rise: float,
    tau_decay: float,
    *,
    cut_reset: bool = True,
    c: NorseLIF = NORSE_LIF,
) -> Tensor:
    """The summed van Rossum loss of one Linear -> Norse LIF layer, differentiable by autograd.

    With ``cut_reset`` the reset ``(1 - z) v_dec + z v_reset - v_dec`` enters the membrane as a
    constant (no gradient through it), so autograd differentiates the sub-threshold dynamics
    only, as SuperSpike's eligibility does; without it this is plain BPTT through Norse's
    neuron with the surrogate.
    """
    steps, batch = x.shape[:2]
    v = torch.zeros(batch, weight.shape[0], dtype=DT)
    i = torch.zeros_like(v)
    a_r, a_d = math.exp(-1.0 / tau_rise), math.exp(-1.0 / tau_decay)
    h = torch.zeros_like(v)
    f = torch.zeros_like(v)
    total = torch.zeros((), dtype=DT)
    for t in range(steps):
        i_jump = i + (x[t] @ weight.T + bias)
        v_dec = v + c.dm * ((c.v_leak - v) + i_jump)
        i = i_jump - c.ds * i_jump
        z = _SuperSpikeThreshold.apply(v_dec - c.v_th)
        reset = (1 - z) * v_dec + z * c.v_reset - v_dec
        v = v_dec + (reset.detach() if cut_reset else reset)
        h = a_r * h + (1 - a_r) * (z - target[t])
        f = a_d * f + (1 - a_d) * h
        total = total + 0.5 * (f**2).sum() / batch
    return total
