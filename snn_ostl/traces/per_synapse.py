"""Per-synapse eligibility traces of a Linear synapse: plan, advance and contract.

A per-synapse trace ``e^k[n, b, i] = ∂s^k_t[b, n] / ∂W[n, i]`` is the largest object OSTL keeps
(``[N, B, I]``, 100 MB for a 784 -> 256 layer at batch 128), and every step reads and writes it.
Each step splits into two halves so that the heavy work touches the trace once:

1. after the forward (:func:`plan`): the small per-neuron coefficients of
   ``e_t = J_t e_{t-1} + c_t ⊗ x_t`` are computed and kept as a :class:`PerSynapseStep`;
2. in the backward of that step, the contraction ``Σ_b ĝ_{t-1}[b, n] e_{t-1}[n, b, i]`` and the
   advance to ``e_t`` run chunk by chunk over neurons (:func:`contract_and_advance`), so a chunk
   is still in cache when it is advanced in place: one read and one write of the trace per step
   instead of three reads and two writes.

When no backward reaches a step, :func:`advance` applies the pending step on its own before the
next one. Traces are neuron-major so that the contraction is one batched matrix product. Shape
letters are defined in :mod:`snn_ostl.derivatives`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import Tensor

from snn_ostl.derivatives import Partial

__all__ = [
    "PerSynapseStep",
    "advance",
    "chunk_neurons",
    "contract",
    "contract_and_advance",
    "contract_presynaptic",
    "plan",
    "presynaptic_states",
]

Traces = list[Tensor | None]

#: Bytes of trace per chunk on a CPU: small enough to stay in the last-level cache between the
#: contraction and the advance, large enough that per-chunk overhead stays small.
CHUNK_BYTES = 4 * 2**20


def _number(p: Partial) -> bool:
    return p is None or isinstance(p, (int, float))


def presynaptic_states(jac: Sequence[Sequence[Partial]], current: Sequence[Partial]) -> frozenset:
    """States whose synapse traces need no neuron index (the presynaptic form, state by state).

    A state k qualifies when its current partial and its Jacobian row are numbers and it depends
    only on states that qualify too: then ``e^k[n, b, i] = x̄^k[b, i]`` for every neuron n. Norse's
    synaptic current is such a state even though the membrane next to it is not.
    """
    states = {k for k, row in enumerate(jac) if _number(current[k]) and all(map(_number, row))}
    changed = True
    while changed:
        changed = False
        for k in list(states):
            if any(p is not None and j not in states for j, p in enumerate(jac[k])):
                states.discard(k)
                changed = True
    return frozenset(states)


def _same(a: Partial, b: Partial) -> bool:
    return a is b or (_number(a) and _number(b) and a == b)


def _filtered_alias(terms, x, jac, current, e, new, presynaptic) -> tuple[Partial, Tensor] | None:
    """``(q / r, x̄^m_t)`` when a per-synapse state's input terms are ``q / r`` times a
    presynaptic state's new filtered input, else None.

    It holds when the terms share one coefficient q and the presynaptic state m reads the same
    traces (and input) with one number r: ``x̄^m_t = r (Σ_j x̄^j_{t-1} + x_t)``. Norse's
    ``LIFCell`` is such a case (the current jumps first, then the membrane reads it), and the
    chain rule makes it common. The step then brings no vector of its own: a window's matrix
    products over (coefficient, vector) pairs get half as wide, and no ``[B, I]`` sum is formed.
    """
    if not terms or not all(_same(c, terms[0][0]) for c, _ in terms):
        return None
    read = {id(v) for _, v in terms}
    uses_x = any(v is x for _, v in terms)
    for m in sorted(presynaptic):
        if new[m] is None:
            continue
        # (partial of x̄^m on a vector, whether state k's terms read that vector)
        reads = [(jac[m][j], id(e[j]) in read) for j in presynaptic if e[j] is not None]
        reads.append((current[m], uses_x))
        if any(_nonzero(p) != used for p, used in reads):
            continue
        ratios = [p for p, used in reads if used]
        if _number(ratios[0]) and all(_same(p, ratios[0]) for p in ratios):
            q, r = terms[0][0], ratios[0]
            return (q if r == 1 else q / r), new[m].contiguous()
    return None


def _nonzero(p: Partial) -> bool:
    return p is not None and not (_number(p) and p == 0)


def _neuron_major(partial: Partial, batch: int, neurons: int, batch_major: bool) -> Partial:
    """A [B, N]-broadcastable partial as a contiguous [N, B, 1] tensor (numbers pass through).

    With ``batch_major`` it stays a ``[B, N]`` view instead (for :mod:`snn_ostl.traces.window`).
    """
    if not isinstance(partial, Tensor):
        return partial
    if batch_major:
        return partial.expand(batch, neurons)
    return partial.expand(batch, neurons).t().contiguous()[..., None]


@dataclass
class PerSynapseStep:
    """One advance ``e^k_t = Σ_j scale[k][j] e^j_{t-1} + Σ coef ⊗ vec`` not yet applied.

    Attributes:
        rows: For each per-synapse state k, the pairs (j, scale) with scale ``[N, B, 1]`` or a
            number: how ``e^k_t`` mixes the per-synapse traces of the previous step.
        broadcast: For each per-synapse state k, pairs (coef, vec) with coef ``[N, B, 1]`` or a
            number and vec ``[B, I]``: the input and the presynaptic states' filtered inputs,
            summed per distinct coefficient so that each costs one pass.
        like: The synapse input; fixes dtype and device.
        shape: ``(N, B, I)`` of a per-synapse trace.
    """

    rows: dict[int, list[tuple[int, Partial]]]
    broadcast: dict[int, list[tuple[Partial, Tensor]]]
    like: Tensor
    shape: tuple[int, int, int]

    @property
    def neurons(self) -> int:
        return self.shape[0]

    @property
    def batch(self) -> int:
        return self.shape[1]

    @property
    def width(self) -> int:
        return self.shape[2]

    @property
    def mixes_states(self) -> bool:
        """Whether a state's new trace reads another per-synapse state's old one."""
        return any(j != k for k, row in self.rows.items() for j, _ in row)

    def apply(self, src: Traces, out: Traces | None = None) -> Traces:
        """:func:`advance` (the interface a pending step offers to its snapshots' book)."""
        return advance(self, src, out)


def plan(
    jac: Sequence[Sequence[Partial]],
    current: Sequence[Partial],
    e: Traces,
    x: Tensor,
    neurons: int,
    presynaptic: frozenset = frozenset(),
    batch_major: bool = False,
) -> tuple[Traces, PerSynapseStep]:
    """Advance the presynaptic states now and plan the per-synapse advance.

    Args:
        jac: S x S partials ``∂s^k_t/∂s^j_{t-1}`` broadcastable to ``[B, N]``.
        current: S partials ``∂s^k_t/∂a_t`` broadcastable to ``[B, N]``.
        e: S traces of step t-1 (``[N, B, I]``, or ``[B, I]`` for presynaptic states) or None.
        x: Synapse input ``[B, I]``.
        neurons: N.
        presynaptic: States stored as filtered inputs (:func:`presynaptic_states`).
        batch_major: Keep the step's factors as ``[B, N]`` views, for a
            :class:`snn_ostl.traces.window.Window` (which never runs :func:`advance`).

    Returns:
        The traces with presynaptic states at step t and per-synapse states still at t-1, and
        the step that advances the latter.
    """
    batch, width = x.shape
    new: Traces = list(e)
    for k in presynaptic:
        acc = None
        for j, p in enumerate(jac[k]):
            if p is not None and e[j] is not None:
                term = e[j] if p == 1 else p * e[j]
                acc = term if acc is None else acc + term
        c = current[k]
        if c is not None and c != 0:
            term = x if c == 1 else c * x
            acc = term if acc is None else acc + term
        new[k] = acc
    rows: dict[int, list[tuple[int, Partial]]] = {}
    broadcast: dict[int, list[tuple[Partial, Tensor]]] = {}
    for k, row in enumerate(jac):
        if k in presynaptic:
            continue
        rows[k] = [
            (j, _neuron_major(p, batch, neurons, batch_major))
            for j, p in enumerate(row)
            if p is not None and e[j] is not None and j not in presynaptic
        ]
        terms = [(row[j], e[j]) for j in presynaptic if row[j] is not None and e[j] is not None]
        terms += [(current[k], x)] if current[k] is not None else []
        alias = _filtered_alias(terms, x, jac, current, e, new, presynaptic)
        if alias is not None:
            broadcast[k] = [(_neuron_major(alias[0], batch, neurons, batch_major), alias[1])]
            continue
        merged: list[tuple[Partial, Tensor]] = []
        for coef, vec in terms:
            for m, (other, acc) in enumerate(merged):
                if other is coef or (_number(coef) and _number(other) and coef == other):
                    merged[m] = (other, acc + vec)
                    break
            else:
                merged.append((coef, vec))
        broadcast[k] = [
            (_neuron_major(c, batch, neurons, batch_major), v.contiguous()) for c, v in merged
        ]
    return new, PerSynapseStep(rows, broadcast, x, (neurons, batch, width))


def _part(p: Partial, lo: int, hi: int) -> Partial:
    return p[lo:hi] if isinstance(p, Tensor) else p


def _advance_chunk(step: PerSynapseStep, src: Traces, dst: dict[int, Tensor], lo: int, hi: int):
    """Write ``e_t[lo:hi]`` of every per-synapse state k into ``dst[k]`` (that chunk's buffer)."""
    for k, row in step.rows.items():
        out = dst[k]
        started = False
        for j, scale in row:
            part, s = src[j][lo:hi], _part(scale, lo, hi)
            if not started:
                torch.mul(part, s, out=out)
                started = True
            elif isinstance(s, Tensor):
                out.addcmul_(part, s)
            else:
                out.add_(part, alpha=s)
        for coef, vec in step.broadcast[k]:
            c, row_vec = _part(coef, lo, hi), vec.unsqueeze(0)
            if not started:
                torch.mul(row_vec.expand(hi - lo, -1, -1), c, out=out)
                started = True
            elif isinstance(c, Tensor):
                out.addcmul_(c, row_vec)
            else:
                out.add_(row_vec, alpha=c)
        if not started:
            out.zero_()


def chunk_neurons(step: PerSynapseStep, device: torch.device, element_size: int) -> int:
    """Neurons per chunk: about :data:`CHUNK_BYTES` of trace on a CPU, everything on a GPU."""
    if device.type != "cpu":
        return step.neurons
    per_neuron = step.batch * step.width * element_size * max(1, len(step.rows))
    return max(1, min(step.neurons, CHUNK_BYTES // per_neuron))


def _chunks(step: PerSynapseStep, like: Tensor):
    size = chunk_neurons(step, like.device, like.element_size())
    return [(lo, min(lo + size, step.neurons)) for lo in range(0, step.neurons, size)]


def advance(step: PerSynapseStep, src: Traces, out: Traces | None = None) -> Traces:
    """Apply ``step`` to the per-synapse states of ``src`` (step t-1 -> t).

    Args:
        step: The planned advance.
        src: Traces of step t-1; per-synapse entries ``[N, B, I]`` or None.
        out: Where to write each per-synapse state: ``src`` itself to advance in place (only
            when nothing else needs ``e_{t-1}``), spare buffers, or None to allocate.

    Returns:
        ``src`` with its per-synapse entries replaced by those of step t.
    """
    like = step.like
    shape = (step.neurons, step.batch, step.width)
    dst: dict[int, Tensor] = {}
    for k in step.rows:
        buf = None if out is None else out[k]
        dst[k] = buf if buf is not None else like.new_empty(shape)
    for lo, hi in _chunks(step, like):
        _advance_into(step, src, dst, lo, hi, in_place=out is src)
    result = list(src)
    for k, t in dst.items():
        result[k] = t
    return result


def _advance_into(
    step: PerSynapseStep, src: Traces, dst: dict[int, Tensor], lo: int, hi: int, in_place: bool
) -> None:
    if in_place and step.mixes_states:
        # a state reads another's old chunk: finish the whole chunk before writing it back
        tmp = {k: torch.empty_like(dst[k][lo:hi]) for k in step.rows}
        _advance_chunk(step, src, tmp, lo, hi)
        for k, t in tmp.items():
            dst[k][lo:hi].copy_(t)
    else:
        _advance_chunk(step, src, {k: t[lo:hi] for k, t in dst.items()}, lo, hi)


def _grad_rows(grads: Sequence[Tensor | None], keep) -> dict[int, Tensor]:
    """ĝ^k ``[B, N]`` as contiguous ``[N, 1, B]`` rows for a bmm with ``[N, B, I]`` traces."""
    return {
        k: g.reshape(g.shape[0], -1).t().contiguous().unsqueeze(1)
        for k, g in enumerate(grads)
        if g is not None and keep(k)
    }


def contract_presynaptic(grads, e: Traces, presynaptic: frozenset) -> Tensor | None:
    """``Σ_{k,b} ĝ^k[b,n] x̄^k[b,i]`` over the presynaptic states alone (one matmul each)."""
    out = None
    for k in presynaptic:
        g, tr = grads[k], e[k]
        if g is not None and tr is not None:
            term = g.reshape(g.shape[0], -1).t() @ tr
            out = term if out is None else out + term
    return out


def contract(
    grads: Sequence[Tensor | None], e: Traces, presynaptic: frozenset = frozenset()
) -> Tensor | None:
    """``Σ_{k,b} ĝ^k[b,n] e^k[n,b,i]`` -> weight gradient ``[N, I]`` (one bmm per state)."""
    out = contract_presynaptic(grads, e, presynaptic)
    for k, row in _grad_rows(grads, lambda k: k not in presynaptic and e[k] is not None).items():
        term = torch.bmm(row, e[k]).squeeze(1)
        out = term if out is None else out + term
    return out


def contract_and_advance(
    grads: Sequence[Tensor | None],
    e: Traces,
    step: PerSynapseStep,
    presynaptic: frozenset = frozenset(),
) -> Tensor | None:
    """:func:`contract` with ``e_{t-1}``, then advance ``e`` to step t in place, chunk by chunk.

    The caller guarantees that nothing else needs ``e_{t-1}`` any more.
    """
    rows = _grad_rows(grads, lambda k: k not in presynaptic and e[k] is not None)
    out = step.like.new_zeros(step.neurons, 1, step.width) if rows else None
    dst = {k: e[k] for k in step.rows}
    for lo, hi in _chunks(step, step.like):
        for k, row in rows.items():
            out[lo:hi].baddbmm_(row[lo:hi], e[k][lo:hi])
        _advance_into(step, e, dst, lo, hi, in_place=True)
    pre = contract_presynaptic(grads, e, presynaptic)
    if out is None:
        return pre
    out = out.squeeze(1)
    return out if pre is None else out + pre
