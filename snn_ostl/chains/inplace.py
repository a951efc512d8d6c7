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
from dataclasses import dataclass, field

import torch
from torch import Tensor

from snn_ostl.chains.tangents import Tangent
from snn_ostl.chains.traces import ChannelMap, as_parameter, contract, is_zero
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
    #: Per state in :attr:`rows`, ``(J^{kj}, e^j_{t-1})`` of the small states it reads.
    cross: dict[int, list[tuple[Partial, Tensor]]] = field(default_factory=dict)
    #: Small states (the same for every channel, ``[1, *p, B, F]``), advanced at planning.
    eager: dict[int, Tensor] = field(default_factory=dict)
    #: Room for one block of a gathered tangent (reused from block to block and step to step).
    scratch: list[Tensor] = field(default_factory=list)

    def _block(self, e: Tensor) -> Tensor:
        return e.view(self.channels, -1, *e.shape[-2:])

    def _advance(self, e: Tensor, k: int, lo: int, hi: int) -> None:
        """Advance channels ``[lo, hi)`` of state k's trace (viewed ``[O, R, B, F]``) in place."""
        block = self._block(e)[lo:hi]
        decay, scale = _part(self.decay[k], lo, hi), _part(self.scale[k], lo, hi)
        plain = isinstance(decay, (int, float)) and isinstance(scale, (int, float)) and scale == 1
        if plain and not self.cross.get(k) and self.tangent.source is not None:
            # snnTorch Leaky behind a max-pooling: e = X + J e in one pass over the block
            x = self.tangent.rows(lo, hi, block.shape, self.scratch)
            torch.add(x, block, alpha=decay, out=block)
            return
        if decay is None or (isinstance(decay, (int, float)) and decay == 0):
            block.zero_()
        elif not (isinstance(decay, (int, float)) and decay == 1):
            block.mul_(decay)
        for p, src in self.cross.get(k, ()):
            shared = src.view(1, -1, *src.shape[-2:])  # [1, R, B, F], every channel
            part = _part(p, lo, hi)
            if isinstance(part, Tensor):
                block.addcmul_(part, shared)
            else:
                block.add_(shared, alpha=part)
        if scale is None or (isinstance(scale, (int, float)) and scale == 0):
            return
        x = self.tangent.rows(lo, hi, block.shape, self.scratch)
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
        first = traces[self.rows[0]]
        batch, width = first.shape[-2:]
        small = [None if k in self.rows else g for k, g in enumerate(grads)]
        rest = contract(small, traces, cmap, shape) if any(g is not None for g in small) else None
        rows = {}
        for k, g in enumerate(grads):
            if g is not None and k in self.rows:
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
            return rest
        term = as_parameter(out.squeeze(1), cmap, shape)
        return term if rest is None else term + rest


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

    It can when the channel map is channel-major blocks, the tangent can be read block by block,
    and each state's trace is either *full* (``[*N, B, F]``, advanced in place later, reading
    only its own previous value and small states) or *small* (the same for every channel,
    ``[1, *p, B, F]``, with numbers for partials: advanced now, out of place). Norse's
    ``LIFCell`` behind a convolution is such a case: its synaptic current is small, its
    membrane full.
    """
    if cmap.blocks is None or cmap.dense or not tangent.deferrable:
        return None
    base = tangent.base
    if isinstance(base, Tensor) and base.shape[0] == 1 and not base.is_contiguous():
        tangent.base = base.contiguous()  # small: the same for every channel
    channels = cmap.channels
    full = (*like.shape[1:], like.shape[0])
    kinds: dict[int, str] = {}
    for k, t in enumerate(old):
        if t is None:
            if not is_zero(current[k]) or any(not is_zero(p) for p in jac[k]):
                return None  # the first step: nothing to defer
            continue
        if tuple(t.shape[:-1]) == full:
            kinds[k] = "full"
        elif t.shape[0] == 1 and tuple(t.shape[1:-1]) == full[1:]:
            kinds[k] = "small"
        else:
            return None
    rows = [k for k, kind in kinds.items() if kind == "full"]
    if not rows:
        return None
    step = ChainStep(rows, {}, {}, tangent, channels)
    for k, kind in sorted(kinds.items(), key=lambda item: item[1] == "full"):  # small first
        row, c = jac[k], current[k]
        reads = [j for j, p in enumerate(row) if not is_zero(p) and old[j] is not None]
        if kind == "small":
            numbers = all(isinstance(row[j], (int, float)) for j in reads)
            shared = tangent.coef is None and (
                not isinstance(tangent.base, Tensor) or tangent.base.shape[0] == 1
            )
            if not numbers or any(kinds[j] != "small" for j in reads):
                return None
            if not is_zero(c) and not (isinstance(c, (int, float)) and shared):
                return None
            acc = None
            for j in reads:
                acc = old[j] * row[j] if acc is None else acc.add(old[j], alpha=row[j])
            if not is_zero(c):
                term = tangent.base * c
                acc = term if acc is None else acc + term
            step.eager[k] = acc.expand_as(old[k]).contiguous()
            continue
        if any(j != k and kinds.get(j) != "small" for j in reads):
            return None  # a full state reading another full state: not in place
        step.decay[k] = _blocked(row[k], like, channels) if k in reads else 0
        alias = _alias(k, row, c, reads, jac, current, step.eager, tangent)
        if alias is not None:  # one pass less: q times a small state's new trace
            m, q = alias
            step.cross[k] = [(_blocked(q, like, channels), step.eager[m])]
            step.scale[k] = None
            continue
        step.cross[k] = [(_blocked(row[j], like, channels), old[j]) for j in reads if j != k]
        coef = None if tangent.coef is None else _blocked_major(tangent.coef, channels)
        c_blocked = _blocked(c, like, channels)
        if is_zero(c):
            step.scale[k] = None
        elif coef is None:
            step.scale[k] = c_blocked
        elif isinstance(c_blocked, (int, float)) and c_blocked == 1:
            step.scale[k] = coef
        else:
            step.scale[k] = coef * c_blocked
    return step


def _alias(k, row, c, reads, jac, current, eager, tangent) -> tuple[int, Partial] | None:
    """``(m, q)`` when state k's input terms are ``q`` times small state m's new trace.

    That holds when state k reads every small state j and the input with one coefficient
    (``J^{kj} = c^k``, as the chain rule makes it when a membrane reads the new current) and m
    reads the same with one number ``r`` (``J^{mj} = c^m = r``): then
    ``Σ_j J^{kj} e^j + c^k X = (c^k / r) e^m_t``. Norse's ``LIFCell`` is such a cell.
    """
    if tangent.coef is not None or is_zero(c):
        return None
    small = [j for j in reads if j != k]
    if not small or any(row[j] is not c for j in small):
        return None
    for m in eager:
        r = current[m]
        if not isinstance(r, (int, float)) or r == 0:
            continue
        mine = [j for j, p in enumerate(jac[m]) if not is_zero(p)]
        if sorted(mine) != sorted(small) or any(jac[m][j] != r for j in mine):
            continue
        return m, c if r == 1 else c / r
    return None


def _blocked_major(coef: Tensor, channels: int) -> Tensor:
    """A ``[*N, B, 1]`` coefficient as ``[O, R, B, 1]``."""
    return coef.reshape(channels, -1, *coef.shape[-2:])
