"""Which eligibility snapshots a pending backward still needs, and which buffers are free.

Each step hands its backward a snapshot ``e_{t-1}`` of the traces (through a
:class:`snn_ostl.hooks.history.History`). Per-synapse traces are too large to copy, so a snapshot
shares tensors with the live traces; this book decides, per step, whether a pending advance may
overwrite those tensors in place (nobody else needs them), must write into a spare buffer (a
step whose backward has not run yet still does), and when a finished step's tensors become
spares.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence
from typing import Any

from torch import Tensor

from snn_ostl.traces import per_synapse as PS
from snn_ostl.traces.groups import TraceGroup

__all__ = ["Snapshots"]


class Snapshots:
    """The live snapshots of one layer and the bytes they hold.

    Args:
        groups: A callable returning the layer's trace groups (they are fixed at its first step).
    """

    def __init__(self, groups) -> None:
        self._groups = groups
        self.pending_bytes = 0
        self._live: dict[weakref.ref, tuple[list[Any], int]] = {}

    def track(self, history: Any) -> None:
        """Count ``history``'s snapshot until autograd lets go of it."""
        size = history.nbytes()
        self.pending_bytes += size
        # A plain weak reference with a callback (cheaper than weakref.finalize on a hot path);
        # the dict keeps the reference itself alive until autograd drops the step's graph.
        self._live[weakref.ref(history, self._release)] = (history.snapshot, size)

    def _release(self, ref: weakref.ref) -> None:
        snapshot, size = self._live.pop(ref)
        self.pending_bytes -= size
        self._recycle(snapshot)

    def in_use(self, tensors: Sequence[Tensor], exclude: Any = None) -> bool:
        """Whether a step that may still run its backward holds one of ``tensors``."""
        ids = {id(t) for t in tensors}
        # a copy: a collection during the loop may release a step (and shrink the dict)
        for ref, (snapshot, _size) in list(self._live.items()):
            history = ref()
            if history is None or history is exclude or history.consumed:
                continue
            for trace in snapshot:
                if isinstance(trace, list) and any(id(t) in ids for t in trace):
                    return True
        return False

    def _recycle(self, snapshot: list[Any]) -> None:
        """A step's graph is gone: its per-synapse and chain trace tensors can be reused as output
        buffers (a chain trace's only when it has the full shape of the live one)."""
        for g, old in zip(self._groups(), snapshot):
            if g.form != "per-synapse" and g.chain is None:
                continue
            if not isinstance(old, list) or not g.trace:
                continue
            current = {id(t) for t in g.trace}
            for k in set(range(len(old))) - g.presynaptic:
                t = old[k]
                spare = isinstance(t, Tensor) and id(t) not in current
                if spare and g.chain is not None:
                    live = g.trace[k]
                    spare = isinstance(live, Tensor) and live.shape == t.shape
                if spare and len(g.pool) < 2 * len(old) and not self.in_use([t]):
                    g.pool.append(t)

    def flush(self, g: TraceGroup) -> None:
        """Apply a group's pending advance (per-synapse or chain) outside a backward pass."""
        step, g.pending = g.pending, None
        base = [g.trace[k] for k in step.rows]
        if self.in_use(base):
            # a step whose backward has not run yet still needs e_{t-1}: write elsewhere
            out = list(g.trace)
            for k in step.rows:
                out[k] = g.take_buffer(g.trace[k])
            g.trace = step.apply(g.trace, out)
        else:
            g.trace = step.apply(g.trace, g.trace)

    def claim(self, g: TraceGroup, snapshot: list[Any], history: Any) -> PS.PerSynapseStep | None:
        """The pending advance of ``g``, if ``history``'s backward may apply it in place.

        Called from a step's backward with that step's snapshot ``e_{t-1}``: when the group's
        pending advance starts from exactly these tensors and no other step still needs them,
        the backward contracts and advances in one pass (and the snapshot is spent).
        """
        step = g.pending
        if step is None:
            return None
        base = [snapshot[k] for k in step.rows]
        if any(a is not g.trace[k] for a, k in zip(base, step.rows)):
            return None
        if self.in_use(base, exclude=history):
            return None
        g.pending = None
        return step
