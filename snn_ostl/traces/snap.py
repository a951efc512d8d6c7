"""SnAp-1 traces stored compactly: each parameter element keeps the states of its own unit.

SnAp-1 (Menick et al., ICLR 2021) keeps, of a recurrent layer's ``[B, R*N, P]`` full trace,
only the entries of the unit ``u(p)`` that element ``p`` feeds directly (its weight row). The
kept entries form a ``[B, R, P]`` tensor, and with them the step is

    e_t[b, r, p] = Σ_r' J_t[b, (r, u(p)), (r', u(p))] e_{t-1}[b, r', p] + ∂s^r_t[b, u(p)]/∂θ_p

(the diagonal blocks of the Jacobian: the other entries of ``J e`` fall outside the kept set),
in ``O(B R² P)`` per step against ``O(B R² N² P)`` for the full trace.
"""

from __future__ import annotations

import torch
from torch import Tensor

__all__ = ["advance", "immediate", "units"]


def units(param: Tensor, neurons: int) -> Tensor:
    """``u(p)``: the unit each element of a weight ``[N, ...]`` or bias ``[N]`` feeds."""
    per_row = param.numel() // param.shape[0]
    return (torch.arange(param.numel(), device=param.device) // per_row) % neurons


def advance(jacobian: Tensor, trace: Tensor, unit: Tensor, states: int) -> Tensor:
    """``[B, R, P]`` trace times the diagonal blocks of a ``[B, R*N, R*N]`` Jacobian."""
    batch = jacobian.shape[0]
    neurons = jacobian.shape[1] // states
    blocks = jacobian.view(batch, states, neurons, states, neurons).diagonal(dim1=2, dim2=4)
    return torch.einsum("brsp,bsp->brp", blocks[..., unit], trace)  # blocks: [B, R, R, N]


def immediate(stacked: Tensor, x: Tensor | None) -> Tensor:
    """``∂s_t/∂θ`` on the kept entries: ``[B, R, N*I]`` for a weight, ``[B, R, N]`` a bias.

    Args:
        stacked: ``∂s^r/∂a`` as ``[B, R, N]``.
        x: The synapse input ``[B, I]`` (None for a bias).
    """
    if x is None:
        return stacked.clone()
    flat = x.reshape(x.shape[0], -1)
    return (stacked[:, :, :, None] * flat[:, None, None, :]).reshape(
        stacked.shape[0], stacked.shape[1], -1
    )
