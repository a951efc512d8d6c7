"""Full-Jacobian traces of a recurrent elementwise layer: build J_t and the immediate term.

A layer whose own state feeds its current through weights (a recurrent SNU, snnTorch
``RLeaky``) mixes neurons, so its traces are ``[B, R*N, P]`` over the R states they keep and its
Jacobian is a ``[B, R*N, R*N]`` matrix: the cell's elementwise partials on the diagonal blocks
plus ``c_t ⊗ H`` for every recurrent synapse H. Synapse parameters drop the cell's derived
states (:mod:`snn_ostl.traces.derived`), which shrinks both by the number of states they drop.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import Tensor

from snn_ostl.derivatives import Partial
from snn_ostl.traces import forms as T
from snn_ostl.traces.derived import Derived
from snn_ostl.traces.groups import stack_partials

__all__ = ["add_immediate", "jacobian", "zeros"]


def _per_neuron(p: Partial, like: Tensor) -> Tensor:
    """A partial as a ``[B, N]`` tensor."""
    flat = like.reshape(like.shape[0], -1)
    if isinstance(p, Tensor):
        return p.expand_as(like).reshape_as(flat)
    return torch.full_like(flat, p)


def jacobian(
    jac: Sequence[Sequence[Partial]],
    current: Sequence[Partial],
    like: Tensor,
    states: Sequence[int],
    recurrent: Sequence[tuple[int, Tensor]],
    previous: Derived,
) -> Tensor:
    """``∂s_t/∂s_{t-1}`` over ``states`` as one ``[B, R*N, R*N]`` matrix.

    Args:
        jac: S x S elementwise partials (already folded when derived states are dropped).
        current: S partials ``∂s^k_t/∂a_t``.
        like: A ``[B, *N]`` tensor.
        states: The R state indices the traces keep, in order.
        recurrent: ``(source state, weight [N, N])`` of every recurrent synapse.
        previous: Derived factors of step t-1: a recurrent synapse driven by a dropped state
            enters the column of the state it derives from, scaled by ``D_{t-1}``.
    """
    pos = {k: i for i, k in enumerate(states)}
    dense = T.dense_from_elementwise([[jac[k][j] for j in states] for k in states], like)
    batch, n = like.shape[0], like[0].numel()
    view = dense.view(batch, len(states), n, len(states), n)
    for source, weight in recurrent:
        if source in pos:
            column, factor = pos[source], None
        elif source in previous:
            base, factor = previous[source]
            column = pos[base]
        else:  # a dropped state at the first step: its trace is zero
            continue
        for k in states:
            if current[k] is None:
                continue
            block = _per_neuron(current[k], like).unsqueeze(-1) * weight.unsqueeze(0)
            if factor is not None:
                block = block * _per_neuron(factor, like).unsqueeze(1)
            view[:, pos[k], :, column, :] += block
    return dense


def zeros(like: Tensor, states: int, numel: int) -> Tensor:
    """The zero ``[B, R*N, P]`` trace a sequence starts from."""
    return like.new_zeros(like.shape[0], states * like[0].numel(), numel)


def add_immediate(
    target: Tensor,
    role: str,
    partials: Sequence[Partial],
    like: Tensor,
    x: Tensor | None = None,
    param: Tensor | None = None,
) -> None:
    """Add ``∂s_t/∂θ`` (mostly zeros) into a ``[B, R*N, P]`` trace in place.

    Args:
        target: The trace.
        role: ``"weight"`` (needs the synapse input ``x``), ``"bias"`` or ``"neuron"`` (needs
            the parameter, whose elements each neuron uses).
        partials: R partials: ``∂s^k/∂a`` for weights and biases, ``∂s^k/∂φ`` for neuron
            parameters.
        like: A ``[B, *N]`` tensor.
    """
    batch, n, size = like.shape[0], like[0].numel(), len(partials)
    stacked = stack_partials(partials, like)  # [B, R, N]
    if role == "bias":
        target.view(batch, size, n, n).diagonal(dim1=2, dim2=3).add_(stacked)
        return
    if role == "weight":
        flat = x.reshape(batch, -1)
        width = flat.shape[1]
        diag = target.view(batch, size, n, n, width).diagonal(dim1=2, dim2=3)  # [B,R,I,N]
        diag.add_(flat[:, None, :, None] * stacked[:, :, None, :])
        return
    index = torch.arange(param.numel(), device=like.device).reshape(param.shape)
    index = index.expand(like.shape[1:]).reshape(-1)
    view = target.view(batch, size, n, param.numel())
    # each neuron n touches one element index[n] of the parameter: pairs are unique
    view[:, :, torch.arange(n, device=like.device), index] += stacked
