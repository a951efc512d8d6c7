"""The backward-time half of OSTL: the history term ``ĝ_{t-1} · e_{t-1}`` per parameter.

:class:`History` is what an :func:`snn_ostl.hooks.inject.inject` node calls in the backward pass: it
holds the eligibility snapshot of the previous step and contracts it with the state gradients,
in whichever form each parameter's trace is stored (see :mod:`snn_ostl.traces.forms`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import Tensor

from snn_ostl.chains import traces as CT
from snn_ostl.errors import StateError
from snn_ostl.traces import forms as T
from snn_ostl.traces import per_synapse as PS
from snn_ostl.traces.derived import Derived, fold_grads
from snn_ostl.traces.groups import TraceGroup
from snn_ostl.traces.window import WindowRef

__all__ = ["History", "contract"]


class History:
    """The backward-time contraction of one step; holds the eligibility snapshot ``e_{t-1}``.

    An object rather than a closure so that a finalizer can tell when autograd lets go of it
    (the step's graph is gone) and recycle the snapshot's buffers.
    """

    __slots__ = (
        "__weakref__",
        "consumed",
        "derived",
        "groups",
        "layer",
        "muted",
        "snapshot",
        "spikes",
    )

    def __init__(
        self,
        layer: Any,
        groups: list[TraceGroup],
        snapshot: list[Any],
        spikes: set[int],
        derived: Derived,
    ) -> None:
        self.layer, self.groups, self.snapshot, self.spikes = layer, groups, snapshot, spikes
        self.derived = derived  # factors D_{t-1} of the snapshot's derived states
        #: True once this step's backward advanced the snapshot in place (it is spent).
        self.consumed = False
        #: True while the step's own graph is differentiated for its tangents (no history).
        self.muted = False

    def nbytes(self) -> int:
        total = 0
        for tr in self.snapshot:
            for t in tr if isinstance(tr, list) else [tr]:
                if isinstance(t, Tensor):
                    total += t.numel() * t.element_size()
        return total

    def __call__(self, grads: Sequence[Tensor | None]) -> list[Tensor | None]:
        if self.muted:
            return [None] * len(self.groups)
        if self.consumed:
            raise StateError(
                f"{self.layer.path or '<root>'}: a second backward pass reached a step whose "
                "per-synapse eligibility traces the first backward already advanced in place. "
                "Backpropagate through each step once (sum the losses first), or create the "
                "learner with OSTL(model, advance_in_backward=False)."
            )
        grads = [None if k in self.spikes else g for k, g in enumerate(grads)]
        folded = fold_grads(grads, self.derived) if self.derived else grads
        out: list[Tensor | None] = []
        for index, (g, tr) in enumerate(zip(self.groups, self.snapshot)):
            if g.chain is not None and not isinstance(tr, WindowRef):
                step = None if tr is None else self.layer.claim(index, tr, self)
                if step is None:
                    term = (
                        None if tr is None else CT.contract(grads, tr, g.chain.cmap, g.param.shape)
                    )
                else:  # this backward also advances the trace in place (chains.inplace)
                    self.consumed = True
                    term = step.contract_and_advance(grads, tr, g.chain.cmap, g.param.shape)
                out.append(None if term is None else term.to(g.param.dtype))
                continue
            if g.fused:
                out.append(None)
                continue
            group_grads = folded if g.folded else grads
            if isinstance(tr, WindowRef):  # recorded now, added to .grad at the next flush
                found = {k: gk for k, gk in enumerate(group_grads) if gk is not None}
                if found:
                    tr.window.add(tr, found)
                out.append(tr.window.zero())  # zeros, not None: hooks on the weight expect one
                continue
            step = None
            if g.form == "per-synapse" and tr is not None:
                step = self.layer.claim(index, tr, self)
            if step is None:
                out.append(contract(g, tr, group_grads))
                continue
            self.consumed = True
            grad = PS.contract_and_advance(group_grads, tr, step, g.presynaptic)
            out.append(None if grad is None else grad.to(g.param.dtype))
        return out


def contract(g: TraceGroup, trace: Any, grads: Sequence[Tensor | None]) -> Tensor | None:
    """The history term ``ĝ_{t-1} · e_{t-1}`` for one parameter."""
    if trace is None:
        return None
    shape = g.param.shape
    if g.snap:  # SnAp-n reads its history at the new state (Layer._snap_history)
        return None
    if g.form == "full-jacobian":
        states = g.states if g.states is not None else range(len(grads))
        out = T.contract_dense([grads[k] for k in states], trace, shape)
    elif g.role == "weight" and g.form == "presynaptic":
        out = T.contract_presynaptic(g.op, grads, trace, g.param)
    elif g.role == "weight":
        out = PS.contract(grads, trace, g.presynaptic)
    elif g.role == "bias" and g.form == "presynaptic":
        out = None
        for gk, bk in zip(grads, trace):
            if gk is not None and bk is not None:
                term = g.op.bias_grad(gk) * bk
                out = term if out is None else out + term
    elif g.role == "bias":
        # a conv bias is per channel while the neuron state is ``[C, H, W]``
        target = shape if grads[0] is None or grads[0].dim() == 2 else (shape[0], 1, 1)
        out = T.contract_elementwise(grads, trace, torch.Size(target))
        out = None if out is None else out.reshape(shape)
    else:
        out = T.contract_elementwise(grads, trace, shape)
    return None if out is None else out.to(g.param.dtype)
