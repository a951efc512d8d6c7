"""Eligibility traces of a block's parameters: channel maps, update and contraction (pure).

A block parameter θ (a synapse's weight or bias, a batch norm's scale) keeps, for each state
tensor k of the neuron, ``e^k[*N, B, F] = ∂s^k_t[b, n] / ∂θ[ch(n), f]``, advanced with

    e^k_t = Σ_j J_t[k][j] ⊙ e^j_{t-1} + c^k_t ⊙ X_t

(:mod:`snn_ostl.chains.tangents` gives ``X_t``). Every neuron's row is its own, so any neuron
and any chain is exact; the history term of a step is ``Σ_{b, n ∈ ch⁻¹(o)} ĝ[b, n] e[n, b, f]``,
one batched matrix product over neurons. When the chain mixes channels (a layer norm over
features), ``F`` runs over every entry of θ and all neurons share one channel.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from snn_ostl.chains.tangents import Tangent
from snn_ostl.derivatives import Partial

__all__ = [
    "ChainRole",
    "ChannelMap",
    "advance",
    "channel_map",
    "contract",
    "layout_guess",
    "parameter_directions",
]


@dataclass
class ChannelMap:
    """Which channel of a parameter feeds each neuron.

    Attributes:
        channels: O, the parameter's channels along :attr:`axis`.
        axis: The parameter's channel axis.
        dense: The chain mixes channels: every entry of the parameter is its own direction.
        blocks: ``ch(n) = n // blocks`` (channel-major neurons), or None.
        index: ``[N]`` channel of each neuron when neither of the above holds, or None.
    """

    channels: int
    axis: int
    dense: bool = False
    blocks: int | None = None
    index: Tensor | None = None


@dataclass
class ChainRole:
    """Where a trained parameter sits in its layer's block (fixed at the layer's first step).

    Attributes:
        part: ``"weight"`` or ``"bias"`` of a synapse, or ``"param"`` of the chain itself.
        synapse: Index of the synapse in :attr:`Block.synapses`, or None for a chain parameter.
        cmap: Which of the parameter's channels feeds each neuron.
        width: F, the trace's last dimension.
        through: The chain's operations, for the summary.
    """

    part: str
    synapse: int | None
    cmap: ChannelMap
    width: int
    through: str = ""


def layout_guess(n_shape: torch.Size, channels: int, device: torch.device) -> Tensor | None:
    """The channel of each neuron if the current keeps channels first or last, else None."""
    total = n_shape.numel()
    if len(n_shape) and n_shape[0] == channels:
        return torch.arange(total, device=device) // (total // channels)
    if len(n_shape) and n_shape[-1] == channels:
        return torch.arange(total, device=device) % channels
    return None


def channel_map(probe: Tensor, axis: int, guess: Tensor | None) -> ChannelMap:
    """Read the channel map off a probe.

    Args:
        probe: ``[O, B, *N]``: the current's response to a random tangent on channel o alone.
        axis: The parameter's channel axis.
        guess: :func:`layout_guess`, for neurons the probe left at zero (a dropped unit).
    """
    channels, batch = probe.shape[:2]
    support = probe.abs().reshape(channels, batch, -1).sum(1) > 0  # [O, N]
    counts = support.sum(0)
    if bool((counts > 1).any()):
        return ChannelMap(channels, axis, dense=True)
    index = support.to(torch.int8).argmax(0)
    silent = counts == 0
    if bool(silent.any()):
        if guess is None or bool((index[~silent] != guess[~silent]).any()):
            return ChannelMap(channels, axis, dense=True)
        index = torch.where(silent, guess, index)
    total = index.numel()
    if total % channels == 0:
        blocks = total // channels
        if bool((index == torch.arange(total, device=index.device) // blocks).all()):
            return ChannelMap(channels, axis, blocks=blocks)
    return ChannelMap(channels, axis, index=index)


def parameter_directions(param: Tensor, dense: bool, dtype: torch.dtype) -> Tensor:
    """One-hot tangents at a chain parameter: ``[F, *θ]`` per channel entry, or ``[P, *θ]``."""
    if dense:
        size = param.numel()
        return torch.eye(size, dtype=dtype, device=param.device).reshape(size, *param.shape)
    fan = param[0].numel() if param.dim() else 1
    eye = torch.eye(fan, dtype=dtype, device=param.device)
    return eye.reshape(fan, 1, *param.shape[1:]).expand(fan, *param.shape)


def _neuron_major(p: Partial, like: Tensor) -> Partial:
    """A ``[B, *N]``-broadcastable partial as ``[*N, B, 1]`` (numbers pass through)."""
    if not isinstance(p, Tensor):
        return p
    return p.expand_as(like).movedim(0, -1).unsqueeze(-1)


def _times(a: Partial, b: Tensor | float | None) -> Tensor | float:
    if b is None:
        return a
    if isinstance(a, (int, float)) and a == 1:
        return b
    return a * b


def advance(
    jac: Sequence[Sequence[Partial]],
    current: Sequence[Partial],
    old: Sequence[Tensor | None],
    tangent: Tangent,
    like: Tensor,
    width: int,
) -> list[Tensor | None]:
    """One step of every state's trace: ``e^k_t = Σ_j J[k][j] e^j_{t-1} + c^k X_t``.

    Args:
        jac: S x S partials ``∂s^k_t/∂s^j_{t-1}`` broadcastable to ``[B, *N]``.
        current: S partials ``∂s^k_t/∂a_t``.
        old: S traces ``[*N, B, F]`` of the previous step, or None.
        tangent: ``X_t`` of this step.
        like: The current ``[B, *N]`` (shape, dtype, device).
        width: F.

    Returns:
        S new traces (never written in place: a pending backward may hold the old ones).
    """
    shape = (*like.shape[1:], like.shape[0], width)
    out: list[Tensor | None] = []
    for k, row in enumerate(jac):
        acc: Tensor | float | None = None
        c = current[k]
        if c is not None and not (isinstance(c, (int, float)) and c == 0):
            coef = _times(_neuron_major(c, like), tangent.coef)
            acc = _times(coef, tangent.base)
        for j, p in enumerate(row):
            if p is None or old[j] is None or (isinstance(p, (int, float)) and p == 0):
                continue
            if acc is None:
                acc = old[j] * _neuron_major(p, like)
            elif isinstance(p, (int, float)) and isinstance(acc, Tensor):
                acc = torch.add(acc, old[j], alpha=p)
            else:
                acc = acc + old[j] * _neuron_major(p, like)
        if acc is not None:
            if not isinstance(acc, Tensor):
                acc = torch.full(shape, float(acc), dtype=like.dtype, device=like.device)
            elif tuple(acc.shape) != shape or not acc.is_contiguous():
                acc = acc.expand(shape).contiguous()
        out.append(acc)
    return out


def contract(
    grads: Sequence[Tensor | None], traces: Sequence[Tensor | None], cmap: ChannelMap, shape
) -> Tensor | None:
    """The history term ``Σ_k Σ_{b, n} ĝ^k[b, n] e^k[n, b, :]`` summed per channel.

    Args:
        grads: S state gradients ``[B, *N]`` (or None).
        traces: S traces ``[*N, B, F]`` (or None).
        cmap: The parameter's channel map.
        shape: The parameter's shape.
    """
    out = None
    for g, e in zip(grads, traces):
        if g is None or e is None:
            continue
        batch, width = e.shape[-2:]
        neurons = e[..., 0, 0].numel()
        rows = g.reshape(batch, neurons).t().unsqueeze(1).to(e.dtype)  # [N, 1, B]
        term = torch.bmm(rows, e.reshape(neurons, batch, width))
        out = term if out is None else out + term
    if out is None:
        return None
    out = out.squeeze(1)  # [N, F]
    if cmap.dense:
        per_channel = out.sum(0)
        return per_channel.reshape(_moved(shape, cmap.axis)).movedim(0, cmap.axis)
    if cmap.blocks is not None:
        per_channel = out.reshape(cmap.channels, cmap.blocks, -1).sum(1)
    else:
        per_channel = out.new_zeros(cmap.channels, out.shape[1]).index_add_(0, cmap.index, out)
    return per_channel.reshape(_moved(shape, cmap.axis)).movedim(0, cmap.axis)


def _moved(shape, axis: int) -> tuple[int, ...]:
    """``shape`` with ``axis`` moved to the front."""
    dims = list(shape)
    if not dims:
        return (1,)
    lead = dims.pop(axis)
    return (lead, *dims)
