"""A chain trace advanced in place, inside the backward that reads it.

Each step both reads a layer's traces ``e_{t-1}`` (the history term of its backward) and
replaces them by ``e_t``. Computed after the forward, ``e_t`` needs a second buffer and two more
passes over the largest tensor OSTL keeps. When every state's trace reads only its own previous
value (snnTorch ``Leaky``: one state), the learner instead plans the advance after the forward
(:class:`ChainStep`, holding only the step's small factors and the tangent's rows and indices)
and runs it in that step's backward, channel block by channel block: each block is contracted and
then advanced in place while it is still in cache. A step that gets no backward is advanced before
the next one (:meth:`ChainStep.apply`), the same bookkeeping as the per-synapse traces of
:mod:`snn_ostl.traces.per_synapse` (:class:`snn_ostl.traces.snapshots.Snapshots`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from torch import Tensor

from snn_ostl.chains.tangents import Tangent
from snn_ostl.chains.traces import ChannelMap
from snn_ostl.derivatives import Partial

__all__ = ["CHUNK_BYTES", "ChainStep", "plan"]

#: Bytes of trace per block on a CPU: a block stays in the last-level cache between its
#: contraction and its advance.
CHUNK_BYTES = 8 * 2**20


@dataclass
class ChainStep:
    """``e^k_t = J^{kk}_t e^k_{t-1} + c^k_t X_t`` for every state k in :attr:`rows`, pending.

    Attributes:
        rows: The states whose trace this step rewrites (each reads only its own).
        decay: Per state, ``J^{kk}``: a number or ``[O, R, B, 1]``.
        scale: Per state, ``c^k`` times the tangent's coefficient: a number or ``[O, R, B, 1]``.
        tangent: ``X_t``; a gathered tangent is read block by block.
        channels: O, blocks of R neurons each (the trace viewed as ``[O, R, B, F]``).
    """

    rows: list[int]
    decay: dict[int, Partial]
    scale: dict[int, Partial]
    tangent: Tangent
    channels: int

    def _block(self, e: Tensor) -> Tensor:
        return e.view(self.channels, -1, *e.shape[-2:])

    def _advance(self, e: Tensor, k: int, lo: int, hi: int) -> None:
        """Advance channels ``[lo, hi)`` of state k's trace (viewed ``[O, R, B, F]``) in place."""
        block = self._block(e)[lo:hi]
        decay, scale = _part(self.decay[k], lo, hi), _part(self.scale[k], lo, hi)
        if decay is None or (isinstance(decay, (int, float)) and decay == 0):
            block.zero_()
        elif not (isinstance(decay, (int, float)) and decay == 1):
            block.mul_(decay)
        if scale is None or (isinstance(scale, (int, float)) and scale == 0):
            return
        x = self.tangent.rows(lo, hi, block.shape)
        if not isinstance(x, Tensor):  # a bias: its tangent is a number
            block.add_(scale * x)
        elif isinstance(scale, Tensor):
            block.addcmul_(scale, x)
        else:
            block.add_(x, alpha=scale)

    def apply(self, src: list, out: list | None = None) -> list:
        """The whole advance outside a backward.

        Args:
            src: The traces of step t-1.
            out: ``src`` itself to advance in place (nothing else needs ``e_{t-1}``), or spare
                buffers per state (None entries: allocate).
        """
        result = list(src)
        for k in self.rows:
            if out is src:
                target = src[k]
            elif out is not None and out[k] is not None:
                target = out[k].copy_(src[k])
            else:
                target = src[k].clone()
            for lo, hi in self.chunks(target):
                self._advance(target, k, lo, hi)
            result[k] = target
        return result

    def chunks(self, e: Tensor) -> list[tuple[int, int]]:
        per_channel = e.numel() // self.channels * e.element_size()
        size = self.channels if e.device.type != "cpu" else max(1, CHUNK_BYTES // per_channel)
        return [(lo, min(lo + size, self.channels)) for lo in range(0, self.channels, size)]

    def contract_and_advance(
        self, grads: Sequence[Tensor | None], traces: list, cmap: ChannelMap, shape
    ) -> Tensor | None:
        """The history term with ``e_{t-1}``, then ``e_{t-1} -> e_t`` in place, per block."""
        first = next(t for t in traces if t is not None)
        batch, width = first.shape[-2:]
        rows = {}
        for k, g in enumerate(grads):
            if g is not None and traces[k] is not None:
                per = g.to(first.dtype).reshape(batch, self.channels, -1).permute(1, 2, 0)
                rows[k] = per.reshape(self.channels, 1, -1)  # [O, 1, R*B]
        out = first.new_zeros(self.channels, 1, width) if rows else None
        for lo, hi in self.chunks(first):
            for k, row in rows.items():
                block = traces[k].view(self.channels, -1, width)[lo:hi]
                out[lo:hi].baddbmm_(row[lo:hi], block)
            for k in self.rows:
                self._advance(traces[k], k, lo, hi)
        if out is None:
            return None
        return out.squeeze(1).reshape(_moved(shape, cmap.axis)).movedim(0, cmap.axis)


def _moved(shape, axis: int) -> tuple[int, ...]:
    dims = list(shape)
    lead = dims.pop(axis)
    return (lead, *dims)


def _part(p: Partial, lo: int, hi: int) -> Partial:
    return p[lo:hi] if isinstance(p, Tensor) else p


def _blocked(p: Partial, like: Tensor, channels: int) -> Partial:
    """A ``[B, *N]``-broadcastable partial as ``[O, R, B, 1]`` (numbers pass through)."""
    if not isinstance(p, Tensor):
        return p
    batch = like.shape[0]
    full = p.expand_as(like).reshape(batch, channels, -1)
    return full.permute(1, 2, 0).unsqueeze(-1)


def plan(
    jac: Sequence[Sequence[Partial]],
    current: Sequence[Partial],
    old: Sequence[Tensor | None],
    tangent: Tangent,
    like: Tensor,
    cmap: ChannelMap,
) -> ChainStep | None:
    """The step as a :class:`ChainStep` when it can run in place later, else None.

    It can when the channel map is channel-major blocks, every state's trace reads only its own
    previous value and already has its full shape, and the tangent is a full tensor or a
    gathered one.
    """
    if cmap.blocks is None or cmap.dense or not tangent.deferrable:
        return None
    base = tangent.base
    if isinstance(base, Tensor) and base.shape[0] == 1 and not base.is_contiguous():
        tangent.base = base.contiguous()  # small: the same for every channel
    channels = cmap.channels
    full = (*like.shape[1:], like.shape[0])
    rows, decay, scale = [], {}, {}
    for k, row in enumerate(jac):
        if any(p is not None and j != k and not _zero(p) for j, p in enumerate(row)):
            return None
        c = current[k]
        if old[k] is None or tuple(old[k].shape[:-1]) != full:
            if _zero(c) and old[k] is None:
                continue
            return None
        rows.append(k)
        decay[k] = _blocked(row[k], like, channels)
        coef = None if tangent.coef is None else _blocked_major(tangent.coef, channels)
        c_blocked = _blocked(c, like, channels)
        if _zero(c):
            scale[k] = None
        elif coef is None:
            scale[k] = c_blocked
        else:
            scale[k] = (
                coef
                if isinstance(c_blocked, (int, float)) and c_blocked == 1
                else (coef * c_blocked)
            )
    if not rows:
        return None
    return ChainStep(rows, decay, scale, tangent, channels)


def _blocked_major(coef: Tensor, channels: int) -> Tensor:
    """A ``[*N, B, 1]`` coefficient as ``[O, R, B, 1]``."""
    return coef.reshape(channels, -1, *coef.shape[-2:])


def _zero(p: Partial) -> bool:
    return p is None or (isinstance(p, (int, float)) and p == 0)
