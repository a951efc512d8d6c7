"""Analytic per-step derivatives of torch's RNN, GRU and LSTM cells (no autograd, no loops).

Each cell computes its new state from two preactivations, ``P_x = W_ih x + b_ih`` and
``P_h = W_hh h + b_hh`` (``R`` rows: N, 3N or 4N). With ``A = ∂s_t/∂P_x`` and
``C = ∂s_t/∂P_h`` (``[B, S*N, R]``, one nonzero per gate and unit) and ``E`` the direct part of
``∂s_t/∂s_{t-1}`` (the LSTM's forget path, the GRU's update gate):

- ``J_t = E + C W_hh`` in the columns of h;
- ``∂s_t/∂W_ih = A ⊗ x``, ``∂s_t/∂b_ih = A``, ``∂s_t/∂W_hh = C ⊗ h_{t-1}``, ``∂s_t/∂b_hh = C``,
  returned factored (:class:`snn_ostl.derivatives.Factored`) so the engine forms them once.

The tests check every entry against :func:`snn_ostl.derivatives.dense_derivatives`.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import Tensor

from snn_ostl.derivatives import DenseDerivatives, Factored

__all__ = ["gate_derivatives"]


def _blocks(rows: list[list[Tensor | None]], batch: int, n: int, like: Tensor) -> Tensor:
    """``[B, len(rows)*N, len(rows[0])*N]`` from per-unit diagonals (None: zero block)."""
    out = like.new_zeros(batch, len(rows), n, len(rows[0]), n)
    for k, row in enumerate(rows):
        for j, diag in enumerate(row):
            if diag is not None:
                out[:, k, :, j, :] = torch.diag_embed(diag)
    return out.reshape(batch, len(rows) * n, len(rows[0]) * n)


def _rnn(pre_x: Tensor, pre_h: Tensor, nonlinearity: str):
    pre = pre_x + pre_h
    tanh = nonlinearity == "tanh"
    slope = 1.0 - torch.tanh(pre) ** 2 if tanh else (pre > 0).to(pre.dtype)
    a = [[slope]]
    return a, a, None


def _gru(pre_x: Tensor, pre_h: Tensor, state):
    (h,) = state
    i_r, i_z, i_n = pre_x.chunk(3, 1)
    h_r, h_z, h_n = pre_h.chunk(3, 1)
    r = torch.sigmoid(i_r + h_r)
    z = torch.sigmoid(i_z + h_z)
    n = torch.tanh(i_n + h_n * r)
    d_n = (1.0 - z) * (1.0 - n**2)  # ∂h_t/∂(n's preactivation)
    d_r = d_n * h_n * r * (1.0 - r)
    d_z = (h - n) * z * (1.0 - z)
    a = [[d_r, d_z, d_n]]
    c = [[d_r, d_z, d_n * r]]
    return a, c, [[z]]


def _lstm(pre_x: Tensor, pre_h: Tensor, state):
    _h, c_prev = state
    i, f, g, o = (pre_x + pre_h).chunk(4, 1)
    si, sf, tg, so = torch.sigmoid(i), torch.sigmoid(f), torch.tanh(g), torch.sigmoid(o)
    c = sf * c_prev + si * tg
    tc = torch.tanh(c)
    dh_dc = so * (1.0 - tc**2)
    dc = [si * (1.0 - si) * tg, sf * (1.0 - sf) * c_prev, si * (1.0 - tg**2), None]
    dh = [dh_dc * d for d in dc[:3]] + [so * (1.0 - so) * tc]
    a = [dh, dc]
    return a, a, [[None, dh_dc * sf], [None, sf]]


def gate_derivatives(
    kind: str,
    x: Tensor,
    state: tuple[Tensor, ...],
    weights: tuple[Tensor, Tensor, Tensor | None, Tensor | None],
    trained: dict[str, Tensor],
    nonlinearity: str = "tanh",
) -> DenseDerivatives:
    """The derivatives of one step of an ``"rnn"``, ``"gru"`` or ``"lstm"`` cell.

    Args:
        kind: Which cell.
        x: Input ``[B, I]``.
        state: ``(h,)`` or ``(h, c)``, each ``[B, N]``.
        weights: ``(W_ih, W_hh, b_ih, b_hh)`` (biases may be None).
        trained: The trained parameters by name (which entries to return).
        nonlinearity: ``"tanh"`` or ``"relu"`` (RNN only).

    Returns:
        ``state`` ``[B, S*N, S*N]`` and ``params[name]`` as :class:`Factored` partials.
    """
    w_ih, w_hh, b_ih, b_hh = (None if w is None else w.detach() for w in weights)
    h = state[0]
    pre_x, pre_h = F.linear(x, w_ih, b_ih), F.linear(h, w_hh, b_hh)
    if kind == "rnn":
        a, c, direct = _rnn(pre_x, pre_h, nonlinearity)
    elif kind == "gru":
        a, c, direct = _gru(pre_x, pre_h, state)
    else:
        a, c, direct = _lstm(pre_x, pre_h, state)
    batch, n = h.shape
    wrt_x = _blocks(a, batch, n, h)  # [B, S*N, R]
    wrt_h = wrt_x if c is a else _blocks(c, batch, n, h)
    size = len(state) * n
    jac = h.new_zeros(batch, size, size) if direct is None else _blocks(direct, batch, n, h)
    jac[:, :, :n] += wrt_h @ w_hh  # h_{t-1} drives P_h
    inputs = {"weight_ih": (wrt_x, x), "bias_ih": (wrt_x, None)}
    inputs |= {"weight_hh": (wrt_h, h), "bias_hh": (wrt_h, None)}
    params = {name: Factored(*inputs[name]) for name in trained}
    return DenseDerivatives(jac, params)
