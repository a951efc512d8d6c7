"""How a layer's input current depends on its block's parameters at one step.

For a parameter θ of a layer's block, the eligibility needs ``X_t[n, b, f] = ∂a_t[b, n] /
∂θ[ch(n), f]``: the derivative of neuron n's current with respect to the entries of θ that can
reach it (the row of a Linear's weight, the filter of a convolution's output channel, the column
of an embedding table). Here ``f`` runs over those entries (the fan-in ``F``) and ``ch(n)`` is
the channel of θ that feeds neuron n. ``X`` comes back as a :class:`Tangent`, ``coef ⊙ base``,
whose ``base`` may broadcast over neurons, so that the common cases never build it in full:

- no operation between synapse and neuron: ``X[(o, p), b, f] = U[b, p, f]``, the synapse's
  input patch at position p (the input row itself for a Linear);
- operations that act element by element (dropout, scaling, views): ``coef = ∂a/∂z``;
- a max-pooling with non-overlapping windows: the patch at the selected position, gathered;
- anything else: forward-mode derivatives through the recorded graph of the step (the chain's
  backward differentiated once more with respect to its cotangent, batched over directions).

Shape letters: ``B`` batch, ``N`` neurons of one sample (``[*N]`` the current's shape without
the batch), ``O`` channels of the parameter, ``F`` entries per channel, ``D`` directions.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from snn_ostl.chains.ops import VIEWS, channel_axis, kind
from snn_ostl.chains.walk import SynapseUse

__all__ = [
    "CHUNK_ELEMENTS",
    "Linearised",
    "Tangent",
    "channel_axis",
    "synapse_rows",
    "synapse_tangents",
]

#: Elements of one batch of directions pushed through a chain at once (bounds peak memory).
CHUNK_ELEMENTS = 2**24

_CONV = {nn.Conv1d: F.conv1d, nn.Conv2d: F.conv2d, nn.Conv3d: F.conv3d}
_CONV_T = {
    nn.ConvTranspose1d: F.conv_transpose1d,
    nn.ConvTranspose2d: F.conv_transpose2d,
    nn.ConvTranspose3d: F.conv_transpose3d,
}


@dataclass
class Tangent:
    """``X = coef ⊙ base``, broadcastable to ``[*N, B, F]``.

    Attributes:
        coef: ``[*N, B, 1]``, or None for 1.
        base: A tensor broadcastable to ``[*N, B, F]``, or a number (a bias: ``F = 1``); None
            while a gathered tangent is not built (:meth:`materialise`).
        owned: ``base`` is a fresh ``[*N, B, F]`` tensor that a trace may take over.
        source: Gathered tangent: rows ``[B * P, F]`` (the input patch at every position).
        order: Gathered tangent: the row of each (neuron, sample), neuron-major, ``[N * B]``.
        shape: Gathered tangent: ``[*N, B, F]``.
    """

    coef: Tensor | None
    base: Tensor | float | None
    owned: bool = False
    source: Tensor | None = None
    order: Tensor | None = None
    shape: tuple[int, ...] | None = None

    def materialise(self, take: Any = lambda shape: None) -> None:
        """Build a gathered tangent's ``base`` in full (in a spare buffer when one is free)."""
        if self.base is not None or self.source is None:
            return
        buf = take(self.shape)
        width = self.source.shape[-1]
        if buf is not None:
            torch.index_select(self.source, 0, self.order, out=buf.view(-1, width))
            self.base = buf
        else:
            self.base = self.source.index_select(0, self.order).view(self.shape)
        self.owned = True

    def full(self, shape: tuple[int, ...], like: Tensor, take: Any = lambda shape: None) -> Tensor:
        """``X`` as a ``shape`` (``[*N, B, F]``) view: ``coef ⊙ base`` broadcast (a number
        filled in), for the forms that add to it before the advance."""
        self.materialise(take)
        x = self.base if self.coef is None else self.coef * self.base
        if not isinstance(x, Tensor):
            x = torch.full(shape, float(x), dtype=like.dtype, device=like.device)
        return x.expand(shape)

    @property
    def deferrable(self) -> bool:
        """Whether :meth:`rows` can hand out channel blocks without building the whole."""
        if self.source is not None or not isinstance(self.base, Tensor):
            return True
        return self.base.shape[0] == 1 or self.base.is_contiguous()

    def rows(
        self, lo: int, hi: int, block: torch.Size, scratch: list[Tensor] | None = None
    ) -> Tensor | float:
        """``X`` for channels ``[lo, hi)`` of a trace viewed as ``[O, R, B, F]``.

        ``scratch`` (a list holding at most one tensor) lends the memory of a gathered block, so
        that no block allocates (fresh memory costs page faults at every step).
        """
        if self.source is not None:
            per = block[1] * block[2]  # rows per channel: R neurons x B samples
            index = self.order[lo * per : hi * per]
            width = self.source.shape[-1]
            if scratch is None:
                return self.source.index_select(0, index).view(hi - lo, *block[1:])
            if not scratch or scratch[0].numel() < index.numel() * width:
                scratch[:] = [self.source.new_empty(index.numel() * width)]
            out = scratch[0][: index.numel() * width].view(-1, width)
            torch.index_select(self.source, 0, index, out=out)
            return out.view(hi - lo, *block[1:])
        base = self.base
        if not isinstance(base, Tensor):
            return base
        if base.shape[0] == 1:  # the same for every channel
            return base.reshape(1, -1, *base.shape[-2:])
        return base.reshape(-1, block[1], *base.shape[-2:])[lo:hi]


def weight_channel_axis(module: nn.Module) -> int:
    """The axis of the synapse's weight that indexes its output channels."""
    return 1 if type(module) in _CONV_T or isinstance(module, nn.Embedding) else 0


def synapse_rows(module: nn.Module, x: Tensor, dtype: torch.dtype) -> Tensor:
    """``R[b, *p, f] = ∂z[b, ch, *p] / ∂W[ch, f]`` for every output position p and entry f.

    The same for every channel ``ch``: a Linear's input row, an embedding's one-hot index, a
    convolution's input patch (computed as a convolution with one-hot filters, so that every
    stride, padding and dilation is handled by the convolution itself).
    """
    kind = type(module)
    if isinstance(module, nn.Linear):
        return x.to(dtype)
    if isinstance(module, nn.Embedding):
        return F.one_hot(x, module.num_embeddings).to(dtype)
    weight = module.weight
    padding = module.padding
    if getattr(module, "padding_mode", "zeros") != "zeros":  # reflect, replicate, circular
        x = F.pad(x, module._reversed_padding_repeated_twice, mode=module.padding_mode)
        padding = 0 if kind in _CONV else padding
    if kind is nn.Conv2d and module.groups == 1 and not isinstance(padding, str):
        padding = (padding, padding) if isinstance(padding, int) else padding
        # im2col: a copy, cheaper than a convolution with one-hot filters
        patches = F.unfold(x.to(dtype), weight.shape[2:], module.dilation, padding, module.stride)
        out = [
            (size + 2 * p - d * (k - 1) - 1) // s + 1
            for size, p, d, k, s in zip(
                x.shape[-2:], padding, module.dilation, weight.shape[2:], module.stride
            )
        ]
        return patches.view(*patches.shape[:2], *out).movedim(1, -1)
    if kind in _CONV:
        fan = weight[0].numel()
        eye = torch.eye(fan, dtype=dtype, device=x.device).reshape(fan, *weight.shape[1:])
        conv = _CONV[kind]
        patches = conv(x.to(dtype), eye, None, module.stride, padding, module.dilation)
    else:
        fan = weight.shape[0] * weight[0, 0].numel()
        eye = torch.eye(fan, dtype=dtype, device=x.device)
        eye = eye.reshape(fan, weight.shape[0], *weight.shape[2:]).movedim(0, 1)
        conv = _CONV_T[kind]
        patches = conv(
            x.to(dtype),
            eye,
            None,
            module.stride,
            module.padding,
            module.output_padding,
            1,
            module.dilation,
        )
    return patches.movedim(1, -1)


def _as_neuron_major(t: Tensor) -> Tensor:
    """``[B, *N]`` -> ``[*N, B, 1]`` (a view)."""
    return t.movedim(0, -1).unsqueeze(-1)


def _identity_base(module: nn.Module, rows: Tensor) -> Tensor:
    """``rows`` ``[B, *p, F]`` as a tensor broadcastable to the synapse's ``[*Z, B, F]``."""
    base = rows.movedim(0, -2)  # [*p, B, F]
    return base.unsqueeze(0) if channel_axis(module) == 1 else base.unsqueeze(-3)


def _fit(t: Tensor | float, z_shape: torch.Size, n_shape: torch.Size) -> Tensor | float:
    """A ``[*Z, B, F]``-broadcastable tangent reshaped to the neurons' ``[*N, B, F]``."""
    if not isinstance(t, Tensor) or tuple(z_shape) == tuple(n_shape):
        return t
    full = t.expand(*z_shape, *t.shape[-2:])
    return full.reshape(*n_shape, *t.shape[-2:])


class Linearised:
    """The chain of one step, linearised: tangents at its leaves -> tangents at the current.

    It differentiates the chain's backward (``v -> ∂<v, a>/∂leaf``, linear in ``v``) once more
    with respect to ``v``, batched over directions: forward-mode derivatives through whatever
    operations the step recorded, with no knowledge of them.
    """

    def __init__(self, current: Tensor, leaves: list[Tensor]) -> None:
        self.leaves = leaves
        with torch.enable_grad():
            self.v = torch.zeros_like(current, requires_grad=True)
            self.cotangents = torch.autograd.grad(
                current, leaves, self.v, create_graph=True, retain_graph=True, allow_unused=True
            )
        self.shape = current.shape

    def index_of(self, leaf: Tensor) -> int:
        """Position of ``leaf`` among the leaves (by identity)."""
        return next(i for i, t in enumerate(self.leaves) if t is leaf)

    def apply(self, index: int, directions: Tensor) -> Tensor:
        """``[D, *leaf]`` tangents at leaf ``index`` -> ``[D, B, *N]`` at the current."""
        g = self.cotangents[index]
        count = directions.shape[0]
        if g is None or not g.requires_grad:
            return directions.new_zeros(count, *self.shape)
        size = max(int(directions[0].numel()), int(self.v.numel()))
        step = max(1, CHUNK_ELEMENTS // max(1, size))
        out = []
        with torch.enable_grad(), warnings.catch_warnings():
            # some backward formulas have no batching rule and run one direction at a time
            warnings.filterwarnings("ignore", message=".*performance drop.*")
            for lo in range(0, count, step):
                chunk = directions[lo : lo + step]
                (x,) = torch.autograd.grad(
                    g, self.v, chunk, retain_graph=True, is_grads_batched=True
                )
                out.append(x)
        return out[0] if len(out) == 1 else torch.cat(out)


def generic_directions(module: nn.Module, rows: Tensor, z: Tensor) -> Tensor:
    """``[F, B, *Z]`` tangents at the synapse output for every fan-in entry (all channels)."""
    d = rows.movedim(-1, 0)  # [F, B, *p]
    d = d.unsqueeze(2) if channel_axis(module) == 1 else d.unsqueeze(-1)
    return d.expand(d.shape[0], *z.shape)


def channel_masks(z: Tensor, axis: int) -> Tensor:
    """``[O, *z]``: for each channel o, a ``z``-shaped 0/1 tensor selecting channel o."""
    channels = z.shape[axis]
    masks = z.new_zeros(channels, *z.shape)
    for o in range(channels):
        masks[o].select(axis, o).fill_(1.0)
    return masks


def synapse_tangents(
    use: SynapseUse,
    current: Tensor,
    linear: Any,
    dense: bool,
    want_bias: bool,
    take: Any = lambda shape: None,
) -> tuple[Tangent, Tangent | None]:
    """The weight's and the bias's tangents ``X`` for one synapse at this step.

    Args:
        use: The synapse as the walk found it.
        current: The layer's input current ``[B, *N]``.
        linear: A callable returning the step's :class:`Linearised` (built on first use).
        dense: Differentiate with respect to every entry of the weight, not one channel's
            (the chain mixes channels); the weight's tangent is then ``[*N, B, O*F]``.
        want_bias: Also compute the bias's tangent.
        take: Returns a spare ``[*N, B, F]`` buffer for a tangent built in full, or None.
    """
    module, z = use.module, use.output
    n_shape, z_shape = current.shape[1:], z.shape[1:]
    rows = synapse_rows(module, use.input, current.dtype)
    path = "generic" if dense else kind(use)
    if path == "identity":
        base = _fit(_identity_base(module, rows), z_shape, n_shape)
        return Tangent(None, base), Tangent(None, 1.0) if want_bias else None
    if path == "elementwise":
        with torch.enable_grad():
            (d,) = torch.autograd.grad(current, z, torch.ones_like(current), retain_graph=True)
        first = d.reshape(-1)[0]
        if bool((d == first).all()):  # a constant factor (Norse's ``10 * conv(x)``)
            coef = float(first)
            base = _fit(_identity_base(module, rows), z_shape, n_shape)
            if isinstance(base, Tensor) and coef != 1.0:
                base = base * coef
            return Tangent(None, base), Tangent(None, coef) if want_bias else None
        coef = _as_neuron_major(d.reshape(current.shape))
        base = _fit(_identity_base(module, rows), z_shape, n_shape)
        return Tangent(coef, base), Tangent(coef, 1.0) if want_bias else None
    if path == "maxpool":
        return _maxpool_tangents(use, current, rows, want_bias, take)
    index = linear().index_of(z)
    if dense:
        axis = channel_axis(module) % z.dim()
        directions = generic_directions(module, rows, z)
        parts = [linear().apply(index, directions * mask) for mask in channel_masks(z, axis)]
        x = torch.cat(parts)
    else:
        x = linear().apply(index, generic_directions(module, rows, z))
    weight = Tangent(None, x.movedim(0, -1).movedim(0, -2))  # [D, B, *N] -> [*N, B, D]
    bias = None
    if want_bias:
        if dense:
            axis = channel_axis(module) % z.dim()
            ones = channel_masks(z, axis)
        else:
            ones = torch.ones_like(z).unsqueeze(0)
        xb = linear().apply(index, ones)
        bias = Tangent(None, xb.movedim(0, -1).movedim(0, -2))
    return weight, bias


def _maxpool_tangents(
    use: SynapseUse, current: Tensor, rows: Tensor, want_bias: bool, take: Any
) -> tuple[Tangent, Tangent | None]:
    """Max-pooling right after a convolution: the patch of the selected position, gathered."""
    pool = use.nodes[0]
    index = pool._saved_result1  # [B, O, *Q]: flat position of the maximum in each window
    batch, channels = index.shape[:2]
    width = rows.shape[-1]
    flat_rows = rows.reshape(batch, -1, width)  # [B, P, F]
    positions = flat_rows.shape[1]
    offsets = torch.arange(batch, device=index.device) * positions
    order = (index.movedim(0, -1) + offsets).reshape(-1)  # neuron-major, then batch
    shape = (*current.shape[1:], batch, width)
    source = flat_rows.reshape(-1, width)
    coef = None
    if any(type(n).__name__ not in VIEWS for n in use.nodes[1:]):
        with torch.enable_grad():
            (d,) = torch.autograd.grad(
                current, use.output, torch.ones_like(current), retain_graph=True
            )
        # windows do not overlap: each maximum's cotangent is the factor above the pooling
        d = d.reshape(batch, channels, -1).gather(2, index.reshape(batch, channels, -1))
        coef = _as_neuron_major(d.reshape(current.shape))
    weight = Tangent(coef, None, source=source, order=order, shape=shape)
    return weight, Tangent(coef, 1.0) if want_bias else None
