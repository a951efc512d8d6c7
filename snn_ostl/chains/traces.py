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

from collections.abc import Callable, Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from snn_ostl.chains.tangents import Tangent
from snn_ostl.derivatives import Partial

__all__ = [
    "ChainRole",
    "ChannelMap",
    "advance",
    "as_parameter",
    "channel_map",
    "contract",
    "is_zero",
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
    take: Callable[[tuple[int, ...]], Tensor | None] = lambda shape: None,
) -> list[Tensor | None]:
    """One step of every state's trace: ``e^k_t = Σ_j J[k][j] e^j_{t-1} + c^k X_t``.

    Args:
        jac: S x S partials ``∂s^k_t/∂s^j_{t-1}`` broadcastable to ``[B, *N]``.
        current: S partials ``∂s^k_t/∂a_t``.
        old: S traces ``[*N, B, F]`` of the previous step, or None.
        tangent: ``X_t`` of this step. With ``tangent.owned`` its base is a fresh full tensor
            that the first state may take over and write in place.
        like: The current ``[B, *N]`` (shape, dtype, device).
        width: F.
        take: Returns a spare ``[*N, B, F]`` buffer that no pending backward holds, or None
            (fresh memory each step costs page faults on large traces).

    Returns:
        S new traces. The old ones are never written: a pending backward may hold them.
        A trace keeps the tangent's broadcast shape while nothing per neuron enters it
        (``[1, *p, B, F]`` for a state whose partials are numbers behind a convolution: the
        same for every channel, as Norse's synaptic current is).
    """
    shape = (*like.shape[1:], like.shape[0], width)
    users = [k for k, c in enumerate(current) if not is_zero(c)]
    # the last state that reads the base may take it over (the others read it first)
    taker = users[-1] if tangent.owned and users else None
    out: list[Tensor | None] = [None] * len(jac)
    for k in sorted(range(len(jac)), key=lambda k: k == taker):
        row = jac[k]
        base_free = k == taker
        acc: Tensor | float | None = None
        owned = False  # acc is a tensor of this step that may be written in place
        c = current[k]
        if not is_zero(c):
            coef = _times(_neuron_major(c, like), tangent.coef)
            base = tangent.base
            if isinstance(base, Tensor) and base_free:
                acc, owned = base, True
                if not (isinstance(coef, (int, float)) and coef == 1):
                    acc.mul_(coef)
            elif isinstance(base, Tensor) and isinstance(coef, Tensor):
                full = torch.broadcast_shapes(base.shape, coef.shape)
                buf = take(full) if tuple(full) == shape else None
                product = torch.mul(base, coef, out=buf) if buf is not None else base * coef
                acc, owned = product, True
            else:
                acc = _times(coef, base)
                owned = isinstance(acc, Tensor) and acc is not base
        for j, p in enumerate(row):
            if is_zero(p) or old[j] is None:
                continue
            e = old[j]
            number = isinstance(p, (int, float))
            if acc is None or not isinstance(acc, Tensor):
                scale = e if number and p == 1 else None
                buf = take(tuple(e.shape)) if scale is None and tuple(e.shape) == shape else None
                term = (
                    scale
                    if scale is not None
                    else (
                        torch.mul(e, _neuron_major(p, like), out=buf)
                        if buf is not None
                        else e * _neuron_major(p, like)
                    )
                )
                if acc is None:
                    acc, owned = term, term is not e
                else:
                    acc, owned = term + acc, True
                continue
            factor = p if number else _neuron_major(p, like)
            shapes = (acc.shape, e.shape) if number else (acc.shape, e.shape, factor.shape)
            fits = owned and acc.shape == torch.broadcast_shapes(*shapes)
            if fits and number:
                acc.add_(e, alpha=p)
            elif fits:
                acc.addcmul_(e, factor)
            elif number:
                acc, owned = torch.add(acc, e, alpha=p), True
            else:
                acc, owned = acc + e * _neuron_major(p, like), True
        if acc is not None:
            if not isinstance(acc, Tensor):
                acc = torch.full(shape, float(acc), dtype=like.dtype, device=like.device)
            elif acc.dim() != len(shape) or not _broadcasts(acc.shape, shape):
                acc = acc.expand(shape).contiguous()
            elif not owned or not acc.is_contiguous():
                acc = acc.contiguous() if not acc.is_contiguous() else acc.clone()
            if acc.shape[-2:] != shape[-2:]:  # keep B and F whole: the contraction reads them
                acc = acc.expand(*acc.shape[:-2], *shape[-2:]).contiguous()
        out[k] = acc
    return out


def is_zero(p: Partial) -> bool:
    """Whether a partial is exactly zero (None or the number 0)."""
    return p is None or (isinstance(p, (int, float)) and p == 0)


def _broadcasts(have: torch.Size, want: tuple[int, ...]) -> bool:
    """Whether ``have`` broadcasts to ``want`` in the leading neuron dimension only."""
    if tuple(have) == tuple(want):
        return True
    return have[0] == 1 and tuple(have[1:]) == tuple(want[1:])


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
    out = None  # [N, F], or [O, F] when the channels are summed already
    summed = False
    for g, e in zip(grads, traces):
        if g is None or e is None:
            continue
        batch, width = e.shape[-2:]
        neurons = g[0].numel()
        g = g.to(e.dtype)
        if e.shape[0] != g.shape[1] and cmap.blocks is not None:
            # the trace is the same for every channel: one matrix product over (p, b)
            per = g.reshape(batch, cmap.channels, -1).permute(1, 2, 0).reshape(cmap.channels, -1)
            term, done = per @ e.reshape(-1, width), True
        elif cmap.blocks is not None and not cmap.dense:
            # neurons are channel-major: one product per channel over its (p, b) pairs
            per = g.reshape(batch, cmap.channels, -1).permute(1, 2, 0)
            rows = per.reshape(cmap.channels, 1, -1)
            term = torch.bmm(rows, e.reshape(cmap.channels, -1, width)).squeeze(1)
            done = True
        else:
            if e.shape[0] != g.shape[1]:
                e = e.expand(*g.shape[1:], batch, width)
            rows = g.reshape(batch, neurons).t().unsqueeze(1)  # [N, 1, B]
            term = torch.bmm(rows, e.reshape(neurons, batch, width)).squeeze(1)
            done = False
        if out is not None and done != summed:  # mixed: sum the per-neuron part first
            out, term = _per_channel(out, cmap, summed), _per_channel(term, cmap, done)
            done = True
        out = term if out is None else out + term
        summed = done
    if out is None:
        return None
    return as_parameter(_per_channel(out, cmap, summed), cmap, shape)


def as_parameter(per_channel: Tensor, cmap: ChannelMap, shape) -> Tensor:
    """A gradient per channel, ``[O, F]`` (``[P]`` for a dense map), in the parameter's layout."""
    return per_channel.reshape(_moved(shape, cmap.axis)).movedim(0, cmap.axis)


def _per_channel(out: Tensor, cmap: ChannelMap, summed: bool) -> Tensor:
    """``[N, F]`` summed to ``[O, F]``, or to ``[P]`` for a dense map, whose neurons share one
    channel (already summed: returned as is)."""
    if summed:
        return out
    if cmap.dense:
        return out.sum(0)
    if cmap.blocks is not None:
        return out.reshape(cmap.channels, cmap.blocks, -1).sum(1)
    return out.new_zeros(cmap.channels, out.shape[1]).index_add_(0, cmap.index, out)


def _moved(shape, axis: int) -> tuple[int, ...]:
    """``shape`` with ``axis`` moved to the front."""
    dims = list(shape)
    if not dims:
        return (1,)
    lead = dims.pop(axis)
    return (lead, *dims)
