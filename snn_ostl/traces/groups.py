"""One trained parameter of a stateful layer and the storage of its eligibility trace.

Shape letters are defined in :mod:`snn_ostl.derivatives`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor, nn

from snn_ostl.derivatives import Partial
from snn_ostl.traces import forms as T

__all__ = ["FORMS", "TraceGroup", "as_number", "stack_partials"]

FORMS = ("presynaptic", "per-synapse", "elementwise", "full-jacobian")


@dataclass
class TraceGroup:
    """One trained parameter of a layer and how its eligibility is stored.

    Attributes:
        name: Qualified parameter name in the model (``"fc1.weight"``).
        param: The parameter.
        role: ``"weight"`` / ``"bias"`` of a synapse, ``"neuron"`` for the cell's own
            elementwise parameters, ``"cell"`` for every parameter of a dense cell, ``"chain"``
            for a parameter of an operation between synapse and neuron (a batch norm's scale).
        form: One of ``presynaptic``, ``per-synapse``, ``elementwise``, ``full-jacobian``.
        op: The synapse operation (weights and biases only).
        source: Where a synapse's input comes from: ``"input"`` or a state index.
        key: Name of the parameter inside the adapter's partials (``"neuron"`` role).
        fused: The synapse weight's gradient comes from the synapse's own backward.
        presynaptic: Per-synapse form: states kept as filtered inputs ``[B, I]``.
        folded: The trace leaves out the cell's derived states (:mod:`snn_ostl.traces.derived`).
        states: Full-Jacobian form: the state indices the trace keeps, in order.
        units: Full-Jacobian form under SnAp-1: the unit each element feeds; the trace then
            keeps only those entries, ``[B, R, P]`` (:mod:`snn_ostl.traces.snap`).
    """

    name: str
    param: nn.Parameter
    role: str
    form: str
    op: T.SynapseOp | None = None
    source: str | int = "input"
    key: str = ""
    fused: bool = False
    presynaptic: frozenset = frozenset()
    folded: bool = False
    states: tuple[int, ...] | None = None
    units: Tensor | None = field(default=None, repr=False)
    #: Under SnAp-n: the history term is added at the new state, not the previous one.
    snap: bool = False
    trace: Any = field(default=None, repr=False)
    #: Per-synapse form: the advance of ``trace`` to the latest step, when not yet applied.
    pending: Any = field(default=None, repr=False)
    #: Per-synapse form: spare trace tensors of finished steps, reused as output buffers.
    pool: list[Tensor] = field(default_factory=list, repr=False)
    #: Per-synapse form with ``flush_every > 1``: the trace as a
    #: :class:`snn_ostl.traces.window.Window`.
    window: Any = field(default=None, repr=False)
    #: Chain form: room for one block of a gathered tangent, kept from step to step.
    scratch: list[Tensor] = field(default_factory=list, repr=False)
    #: A parameter of a block reached through a chain (:class:`snn_ostl.chains.traces.ChainRole`).
    chain: Any = None
    #: A convolution weight whose window folds positions into the batch
    #: (:class:`snn_ostl.chains.windowed.ConvFold`), or None.
    fold: Any = None

    def take_buffer(self, like: Tensor) -> Tensor | None:
        """A recycled trace tensor with the shape, dtype and device of ``like``, if one is free."""
        for i, spare in enumerate(self.pool):
            if (spare.shape, spare.dtype, spare.device) == (like.shape, like.dtype, like.device):
                return self.pool.pop(i)
        return None

    def take_shaped(self, shape: tuple[int, ...], like: Tensor) -> Tensor | None:
        """A spare tensor of ``shape`` with the dtype and device of ``like``, if one is free."""
        for i, spare in enumerate(self.pool):
            fits = (spare.shape, spare.dtype, spare.device) == (shape, like.dtype, like.device)
            if fits:
                return self.pool.pop(i)
        return None

    def trace_bytes(self) -> int:
        """Memory held by the current trace."""
        items = self.trace if isinstance(self.trace, list) else [self.trace]
        own = sum(t.numel() * t.element_size() for t in items if isinstance(t, Tensor))
        return own + (self.window.base_bytes if self.window is not None else 0)


def as_number(p: Partial) -> Partial:
    """A one-element tensor partial is a number: the same for every neuron."""
    if isinstance(p, Tensor) and p.dim() == 0:
        return float(p)
    return p


def stack_partials(parts: Sequence[Partial], like: Tensor) -> Tensor:
    """S partials -> one ``[B, S, N]`` tensor (None -> 0)."""
    flat = like.reshape(like.shape[0], -1)
    out = []
    for p in parts:
        if p is None:
            out.append(torch.zeros_like(flat))
        elif isinstance(p, Tensor):
            out.append(p.expand_as(like).reshape_as(flat))
        else:
            out.append(torch.full_like(flat, p))
    return torch.stack(out, dim=1)
