"""Direct float64 implementations of the eligibility-trace learning rules, written from the papers.

Plain tensor loops over time, no hooks and no autograd: each function plays one sequence through
a one-layer recurrent network with a linear readout and returns the gradient the rule assigns to
every parameter, summed over the steps of the per-step loss ``L_t = ½ ||ŷ_t - y*_t||²`` (summed
over the batch).

- :func:`eprop_snu`: e-prop (Bellec et al., Nat. Commun. 2020) for a recurrent layer of Spiking
  Neural Units (Woźniak et al., Nat. Mach. Intell. 2020).
- :func:`rflo_leaky`: random-feedback local online learning (Murray, eLife 2019) for leaky rate
  units.
- :func:`rtrl_snu`, :func:`rtrl_leaky`: real-time recurrent learning (Williams & Zipser 1989)
  with the full influence matrix, optionally masked as in SnAp-n (Menick et al., ICLR 2021).

Shapes: inputs ``x`` ``[T, B, I]``, targets ``[T, B, O]``, N units, readout ``[O, N]``.
Gradients are returned under the parameter names of a model ``cell`` + ``out`` (``nn.Linear``).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor


@dataclass
class SNUWeights:
    """A recurrent SNU layer: ``s_t = relu(W x_t + b + H y_{t-1} + l s_{t-1} (1 - y_{t-1}))``,
    ``y_t = step(s_t - thr)`` with the fast-sigmoid surrogate ``1 / (1 + slope |v|)²``."""

    weight: Tensor  # W [N, I]
    recurrent: Tensor  # H [N, N]
    bias: Tensor | None  # b [N]
    decay: float  # l
    threshold: Tensor  # thr [N]
    slope: float


@dataclass
class LeakyWeights:
    """Murray's leaky rate units: ``u_t = W_in x_t + b + W_rec h_{t-1}``,
    ``h_t = (1 - 1/τ) h_{t-1} + tanh(u_t) / τ``."""

    weight_ih: Tensor  # [N, I]
    weight_hh: Tensor  # [N, N]
    bias: Tensor | None  # [N]
    tau: float


@dataclass
class Readout:
    weight: Tensor  # [O, N]
    bias: Tensor  # [O]


def surrogate(v: Tensor, slope: float) -> Tensor:
    """Derivative of the fast sigmoid ``v / (1 + slope |v|)``, the step's pseudo-derivative."""
    return 1.0 / (1.0 + slope * v.abs()) ** 2


def _readout_step(y: Tensor, target: Tensor, out: Readout, grads: dict[str, Tensor]) -> Tensor:
    """ŷ_t, its error ŷ_t - y*_t, and the readout's own (instantaneous) gradient."""
    err = y @ out.weight.T + out.bias - target
    grads["out.weight"] += err.T @ y
    grads["out.bias"] += err.sum(0)
    return err


def _zeros_like_readout(out: Readout) -> dict[str, Tensor]:
    return {"out.weight": torch.zeros_like(out.weight), "out.bias": torch.zeros_like(out.bias)}


def _loss(err: Tensor) -> float:
    return float(0.5 * (err**2).sum())


# --------------------------------------------------------------------------------- SNU forward
def snu_forward(x: Tensor, p: SNUWeights) -> tuple[Tensor, Tensor]:
    """Membrane ``s`` and spikes ``y`` of every step, ``[T, B, N]`` each."""
    batch, n = x.shape[1], p.weight.shape[0]
    s = x.new_zeros(batch, n)
    y = x.new_zeros(batch, n)
    ss, ys = [], []
    for x_t in x:
        u = x_t @ p.weight.T + y @ p.recurrent.T + p.decay * s * (1.0 - y)
        if p.bias is not None:
            u = u + p.bias
        s = torch.relu(u)
        y = (s - p.threshold > 0).to(x.dtype)
        ss.append(s)
        ys.append(y)
    return torch.stack(ss), torch.stack(ys)


# --------------------------------------------------------------------------------- e-prop
def eprop_snu(
    x: Tensor, target: Tensor, p: SNUWeights, out: Readout, feedback: Tensor
) -> tuple[dict[str, Tensor], list[float]]:
    """e-prop (Bellec et al. 2020, Eqs. 13-14 and the learning signal of Eq. 4).

    The eligibility vector of a synapse j -> i follows the neuron's own hidden state with the
    previous spikes held fixed (they reach ``s_t`` through the reset and through H; e-prop keeps
    neither), ``ε_t = D_t ε_{t-1} + ∂s_t/∂W_ij`` with ``D_t = ∂s_t/∂s_{t-1} = g'(u_t) l
    (1 - y_{t-1})``; the eligibility trace is ``e_t = h'(s_t - thr) ε_t``, and the learning
    signal of neuron i is ``L_t,i = Σ_k B_ki (ŷ_t,k - y*_t,k)`` with ``B`` the readout's weights
    (symmetric e-prop) or a random matrix of the same shape.

    Args:
        feedback: ``B`` ``[O, N]``.

    Returns:
        (gradients by parameter name, the loss of each step).
    """
    batch, n, inputs = x.shape[1], *p.weight.shape
    s = x.new_zeros(batch, n)
    y = x.new_zeros(batch, n)
    eps_w = x.new_zeros(batch, n, inputs)
    eps_h = x.new_zeros(batch, n, n)
    eps_b = x.new_zeros(batch, n)
    grads = {
        "cell.weight": torch.zeros_like(p.weight),
        "cell.recurrent_weight": torch.zeros_like(p.recurrent),
        "cell.threshold": torch.zeros_like(p.threshold),
        **_zeros_like_readout(out),
    }
    if p.bias is not None:
        grads["cell.bias"] = torch.zeros_like(p.bias)
    losses = []
    for x_t, target_t in zip(x, target):
        u = x_t @ p.weight.T + y @ p.recurrent.T + p.decay * s * (1.0 - y)
        if p.bias is not None:
            u = u + p.bias
        g_prime = (u > 0).to(x.dtype)
        d = g_prime * p.decay * (1.0 - y)  # D_t, spikes y_{t-1} held fixed
        eps_w = d[..., None] * eps_w + g_prime[..., None] * x_t[:, None, :]
        eps_h = d[..., None] * eps_h + g_prime[..., None] * y[:, None, :]
        eps_b = d * eps_b + g_prime
        s = torch.relu(u)
        h_prime = surrogate(s - p.threshold, p.slope)
        y = (s - p.threshold > 0).to(x.dtype)
        err = _readout_step(y, target_t, out, grads)
        losses.append(_loss(err))
        signal = err @ feedback  # L_t [B, N]
        psi = signal * h_prime  # L_t,i h'_t,i: the eligibility trace's factor
        grads["cell.weight"] += torch.einsum("bn,bni->ni", psi, eps_w)
        grads["cell.recurrent_weight"] += torch.einsum("bn,bnj->nj", psi, eps_h)
        if p.bias is not None:
            grads["cell.bias"] += (psi * eps_b).sum(0)
        # y_t = h(s_t - thr): thr reaches the output at once; its path through y_{t-1} is cut
        grads["cell.threshold"] -= psi.sum(0)
    return grads, losses


# --------------------------------------------------------------------------------- RFLO
def rflo_leaky(
    x: Tensor, target: Tensor, p: LeakyWeights, out: Readout, feedback: Tensor
) -> tuple[dict[str, Tensor], list[float]]:
    """RFLO (Murray 2019, Eqs. 11-13).

    ``q_ij,t = (1 - 1/τ) q_ij,t-1 + (1/τ) φ'(u_i,t) r_j,t`` with the presynaptic rate
    ``r = x_t`` (W_in), ``h_{t-1}`` (W_rec) or 1 (bias), and ``ΔW_ij ∝ Σ_t (B (ŷ_t - y*_t))_i
    q_ij,t`` with a fixed random ``B`` (here ``[O, N]``, the readout's shape).
    """
    batch, n, inputs = x.shape[1], *p.weight_ih.shape
    leak = 1.0 - 1.0 / p.tau
    h = x.new_zeros(batch, n)
    q_in = x.new_zeros(batch, n, inputs)
    q_rec = x.new_zeros(batch, n, n)
    q_b = x.new_zeros(batch, n)
    grads = {
        "cell.weight_ih": torch.zeros_like(p.weight_ih),
        "cell.weight_hh": torch.zeros_like(p.weight_hh),
        **_zeros_like_readout(out),
    }
    if p.bias is not None:
        grads["cell.bias"] = torch.zeros_like(p.bias)
    losses = []
    for x_t, target_t in zip(x, target):
        u = x_t @ p.weight_ih.T + h @ p.weight_hh.T
        if p.bias is not None:
            u = u + p.bias
        phi = torch.tanh(u)
        phi_prime = 1.0 - phi**2
        q_in = leak * q_in + (phi_prime / p.tau)[..., None] * x_t[:, None, :]
        q_rec = leak * q_rec + (phi_prime / p.tau)[..., None] * h[:, None, :]
        q_b = leak * q_b + phi_prime / p.tau
        h = leak * h + phi / p.tau
        err = _readout_step(h, target_t, out, grads)
        losses.append(_loss(err))
        signal = err @ feedback  # B (ŷ_t - y*_t), [B, N]
        grads["cell.weight_ih"] += torch.einsum("bn,bni->ni", signal, q_in)
        grads["cell.weight_hh"] += torch.einsum("bn,bnj->nj", signal, q_rec)
        if p.bias is not None:
            grads["cell.bias"] += (signal * q_b).sum(0)
    return grads, losses


# --------------------------------------------------------------------------------- RTRL / SnAp
def snap_mask(shape: torch.Size, recurrent: Tensor, n: int | None) -> Tensor:
    """SnAp-n's ``[N, P]`` pattern of the influence matrix ``J[k, p]`` of a parameter.

    Element p of a parameter whose rows are the units it feeds (``W[i, :]``, ``b[i]``,
    ``thr[i]``) first reaches unit ``i = unit(p)``; SnAp-1 keeps ``k = i``, SnAp-2 also every k
    with ``W_rec[k, i] != 0``. ``n=None`` keeps everything (RTRL).
    """
    units = recurrent.shape[0]
    numel = math.prod(shape)
    if n is None:
        return torch.ones(units, numel, dtype=recurrent.dtype)
    reach = torch.eye(units, dtype=torch.bool)
    if n == 2:
        reach = reach | (recurrent != 0)  # [k, i]: i reaches k in one step
    unit = torch.arange(numel) // (numel // shape[0])
    return reach[:, unit].to(recurrent.dtype)


def _masked(j: Tensor, mask: Tensor) -> Tensor:
    return j * mask


def rtrl_snu(
    x: Tensor, target: Tensor, p: SNUWeights, out: Readout, snap: int | None = None
) -> tuple[dict[str, Tensor], list[float]]:
    """RTRL for the recurrent SNU, tracking the influence of every parameter on the membranes.

    The spikes are a function of the membrane of the same step, ``y_t = h(s_t - thr)``, so the
    influence matrix ``J_t = ds_t/dθ`` ``[B, N, P]`` covers ``s`` alone and ``dy_t/dθ`` follows
    from it. ``J_t = M ⊙ (D_t J_{t-1} + ∂s_t/∂θ)`` with the full state Jacobian

        D_t[k, j] = g'(u_t,k) (H_kj h'_{t-1,j} + δ_kj l (1 - y_{t-1,j} - s_{t-1,j} h'_{t-1,j}))

    (the direct leak, the reset gate and H, both through ``y_{t-1} = h(s_{t-1} - thr)``) and
    ``M`` the SnAp-n mask (:func:`snap_mask`). The gradient is ``Σ_t δ_t J_t`` with
    ``δ_t = ∂L_t/∂s_t = h'(s_t - thr) ⊙ W_outᵀ (ŷ_t - y*_t)``, plus the threshold's immediate
    path ``∂L_t/∂y_t ⊙ (-h'_t)``.
    """
    batch, n = x.shape[1], p.weight.shape[0]
    eye = torch.eye(n, dtype=x.dtype)
    h_mat = p.recurrent
    names = ["cell.weight", "cell.recurrent_weight", "cell.threshold"]
    shapes = {"cell.weight": p.weight.shape, "cell.recurrent_weight": h_mat.shape}
    shapes["cell.threshold"] = p.threshold.shape
    if p.bias is not None:
        names.append("cell.bias")
        shapes["cell.bias"] = p.bias.shape
    masks = {k: snap_mask(shapes[k], h_mat, snap) for k in names}
    jac = {k: x.new_zeros(batch, n, masks[k].shape[1]) for k in names}
    grads = {k: x.new_zeros(masks[k].shape[1]) for k in names}
    grads.update(_zeros_like_readout(out))
    s = x.new_zeros(batch, n)
    y = x.new_zeros(batch, n)
    h_prev = None  # h'_{t-1}; the initial spikes are not a function of the threshold
    losses = []
    for x_t, target_t in zip(x, target):
        u = x_t @ p.weight.T + y @ h_mat.T + p.decay * s * (1.0 - y)
        if p.bias is not None:
            u = u + p.bias
        g_prime = (u > 0).to(x.dtype)  # [B, N]
        if h_prev is None:
            d = torch.zeros(batch, n, n, dtype=x.dtype)
        else:
            direct = p.decay * (1.0 - y - s * h_prev)  # [B, N]: leak and reset gate
            d = g_prime[:, :, None] * (h_mat[None] * h_prev[:, None, :] + eye * direct[:, None])
        # immediate ∂s_t/∂θ, [B, N, P]
        imm = {}
        w = torch.einsum("bk,ki,bj->bkij", g_prime, eye, x_t)
        imm["cell.weight"] = w.reshape(batch, n, -1)
        r = torch.einsum("bk,ki,bj->bkij", g_prime, eye, y)
        imm["cell.recurrent_weight"] = r.reshape(batch, n, -1)
        if p.bias is not None:
            imm["cell.bias"] = g_prime[:, :, None] * eye
        if h_prev is None:
            imm["cell.threshold"] = x.new_zeros(batch, n, n)
        else:
            # thr reaches s_t through y_{t-1} (H and the reset) with s_{t-1} held fixed
            through_y = h_mat[None] - eye * (p.decay * s)[:, None, :]  # [B, k, j]
            imm["cell.threshold"] = g_prime[:, :, None] * through_y * (-h_prev)[:, None, :]
        for k in names:
            jac[k] = _masked(torch.bmm(d, jac[k]) + imm[k], masks[k])
        s = torch.relu(u)
        h_prime = surrogate(s - p.threshold, p.slope)
        y = (s - p.threshold > 0).to(x.dtype)
        err = _readout_step(y, target_t, out, grads)
        losses.append(_loss(err))
        dy = err @ out.weight  # ∂L_t/∂y_t
        delta = dy * h_prime  # ∂L_t/∂s_t
        for k in names:
            grads[k] += torch.einsum("bk,bkp->p", delta, jac[k])
        grads["cell.threshold"] -= delta.sum(0)
        h_prev = h_prime
    for k in names:
        grads[k] = grads[k].reshape(shapes[k])
    return grads, losses


def rtrl_leaky(
    x: Tensor, target: Tensor, p: LeakyWeights, out: Readout, snap: int | None = None
) -> tuple[dict[str, Tensor], list[float]]:
    """RTRL (optionally SnAp-n) for Murray's leaky rate units.

    ``J_t = M ⊙ (D_t J_{t-1} + ∂h_t/∂θ)`` with ``D_t[k, j] = (1 - 1/τ) δ_kj + φ'(u_t,k)
    W_rec[k, j] / τ``; gradient ``Σ_t δ_t J_t`` with ``δ_t = W_outᵀ (ŷ_t - y*_t)``.
    """
    batch, n = x.shape[1], p.weight_ih.shape[0]
    eye = torch.eye(n, dtype=x.dtype)
    leak = 1.0 - 1.0 / p.tau
    names = ["cell.weight_ih", "cell.weight_hh"]
    shapes = {"cell.weight_ih": p.weight_ih.shape, "cell.weight_hh": p.weight_hh.shape}
    if p.bias is not None:
        names.append("cell.bias")
        shapes["cell.bias"] = p.bias.shape
    masks = {k: snap_mask(shapes[k], p.weight_hh, snap) for k in names}
    jac = {k: x.new_zeros(batch, n, masks[k].shape[1]) for k in names}
    grads = {k: x.new_zeros(masks[k].shape[1]) for k in names}
    grads.update(_zeros_like_readout(out))
    h = x.new_zeros(batch, n)
    losses = []
    for x_t, target_t in zip(x, target):
        u = x_t @ p.weight_ih.T + h @ p.weight_hh.T
        if p.bias is not None:
            u = u + p.bias
        phi = torch.tanh(u)
        c = (1.0 - phi**2) / p.tau  # ∂h_t/∂u_t
        d = leak * eye + c[:, :, None] * p.weight_hh[None]
        imm = {
            "cell.weight_ih": torch.einsum("bk,ki,bj->bkij", c, eye, x_t).reshape(batch, n, -1),
            "cell.weight_hh": torch.einsum("bk,ki,bj->bkij", c, eye, h).reshape(batch, n, -1),
        }
        if p.bias is not None:
            imm["cell.bias"] = c[:, :, None] * eye
        for k in names:
            jac[k] = _masked(torch.bmm(d, jac[k]) + imm[k], masks[k])
        h = leak * h + phi / p.tau
        err = _readout_step(h, target_t, out, grads)
        losses.append(_loss(err))
        delta = err @ out.weight
        for k in names:
            grads[k] += torch.einsum("bk,bkp->p", delta, jac[k])
    for k in names:
        grads[k] = grads[k].reshape(shapes[k])
    return grads, losses


# --------------------------------------------------------------------------------- Norse LIF
@dataclass
class LIFWeights:
    """Norse's recurrent current-based LIF step (forward Euler, step ``dt``):

    ``j_t = i_{t-1} + W x_t + H z_{t-1}``, ``v̂_t = v_{t-1} + dt/τ_m (v_leak - v_{t-1} + j_t)``,
    ``i_t = (1 - dt/τ_s) j_t``, ``z_t = step(v̂_t - v_th)``, ``v_t = (1 - z_t) v̂_t + z_t v_reset``
    with the SuperSpike pseudo-derivative ``1 / (1 + |v̂_t - v_th|)²`` (Zenke & Ganguli 2018).
    """

    weight: Tensor  # W [N, I]
    recurrent: Tensor  # H [N, N], no autapses
    tau_syn_inv: float
    tau_mem_inv: float
    v_leak: float
    v_th: float
    v_reset: float
    dt: float


def eprop_lif(
    x: Tensor, target: Tensor, p: LIFWeights, out: Readout, feedback: Tensor
) -> tuple[dict[str, Tensor], list[float]]:
    """e-prop (Bellec et al. 2020) for the current-based LIF neuron: the hidden state is
    ``(v, i)``, and the eligibility vector of a synapse j -> k with presynaptic value r (``x_t``
    for W, ``z_{t-1}`` for H) follows it with the spikes held fixed:

        ε^v̂_t = (1 - dt/τ_m) ε^v_{t-1} + dt/τ_m (ε^i_{t-1} + r_t)
        ε^i_t = (1 - dt/τ_s) (ε^i_{t-1} + r_t),    ε^v_t = (1 - z_t) ε^v̂_t

    the eligibility trace is ``e_t = h'(v̂_t - v_th) ε^v̂_t`` and the learning signal
    ``L_t = Bᵀ (ŷ_t - y*_t)``. H has no self-connections, so its diagonal gets no gradient.
    """
    batch, n, inputs = x.shape[1], *p.weight.shape
    a_mem, a_syn = p.dt * p.tau_mem_inv, p.dt * p.tau_syn_inv
    z = x.new_zeros(batch, n)
    v = x.new_full((batch, n), p.v_leak)
    i = x.new_zeros(batch, n)
    eps = {
        "cell.input_weights": (x.new_zeros(batch, n, inputs), x.new_zeros(batch, n, inputs)),
        "cell.recurrent_weights": (x.new_zeros(batch, n, n), x.new_zeros(batch, n, n)),
    }
    grads = {
        "cell.input_weights": torch.zeros_like(p.weight),
        "cell.recurrent_weights": torch.zeros_like(p.recurrent),
        **_zeros_like_readout(out),
    }
    losses = []
    for x_t, target_t in zip(x, target):
        jump = i + x_t @ p.weight.T + z @ p.recurrent.T
        v_hat = v + a_mem * (p.v_leak - v + jump)
        z_new = (v_hat - p.v_th > 0).to(x.dtype)
        h_prime = 1.0 / (1.0 + (v_hat - p.v_th).abs()) ** 2
        e_hat = {}
        for name, pre in (("cell.input_weights", x_t), ("cell.recurrent_weights", z)):
            eps_v, eps_i = eps[name]
            drive = eps_i + pre[:, None, :]
            eps_v_hat = (1.0 - a_mem) * eps_v + a_mem * drive
            eps[name] = ((1.0 - z_new)[..., None] * eps_v_hat, (1.0 - a_syn) * drive)
            e_hat[name] = eps_v_hat
        v = (1.0 - z_new) * v_hat + z_new * p.v_reset
        i = (1.0 - a_syn) * jump
        z = z_new
        err = _readout_step(z, target_t, out, grads)
        losses.append(_loss(err))
        psi = (err @ feedback) * h_prime
        for name, e in e_hat.items():
            grads[name] += torch.einsum("bk,bkj->kj", psi, e)
    grads["cell.recurrent_weights"].fill_diagonal_(0.0)
    return grads, losses
