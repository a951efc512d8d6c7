"""Recurrence written in the user's forward: a layer's own spikes fed back through a synapse.

``spk, mem = lif(fc_in(x) + fc_rec(spk), mem)``, with the loop carrying ``spk``, is the
recurrent network of the e-prop papers written by hand. Under ``variant="ostl"`` the exact
eligibility of every parameter of the layer's block follows the spikes as well as the states:
with ``o_t`` the layer's output, ``E^o_t = ∂o_t/∂θ`` is kept as one more trace, and

    u_t   = A_t E^o_{t-1}                      A_t = ∂a_t/∂o_{t-1} (through fc_rec and the chain)
    e^k_t = Σ_j J_t[k][j] e^j_{t-1} + c^k_t (X_t + u_t)
    E^o_t = Σ_j O^j_t e^j_{t-1} + O^a_t (X_t + u_t)

where ``O^j = ∂o_t/∂s^j_{t-1}`` and ``O^a = ∂o_t/∂a_t`` are read off the step's own graph (the
neuron acts element by element, so one backward of ones gives them). ``u_t`` mixes neurons, so
every trace of the block is kept in full (``F`` runs over every entry of the parameter), the
real-time recurrent learning cost of one layer. In the backward pass the fed-back spikes carry
their own history node, whose gradient ``∂L/∂o_{t-1}`` is contracted with ``E^o_{t-1}``.

The recurrence shows only at a layer's second step (the first feeds back the initial zeros), so
the layer keeps ``O^a`` and ``c`` of its first step until it knows; ``E^o_1 = O^a_1 X_1`` is then
``(O^a_1 / c^k_1) e^k_1`` for a state k whose partial ``c^k`` is nonzero.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator, Sequence
from typing import Any

import torch
from torch import Tensor

from snn_ostl.chains import traces as CT
from snn_ostl.chains.tangents import Linearised, Tangent
from snn_ostl.errors import ConfigurationError, Problem
from snn_ostl.hooks.inject import inject

__all__ = ["FedBackLayer", "densify"]


def densify(trace: Tensor | None, cmap: CT.ChannelMap, shape, n_shape, batch: int) -> Tensor | None:
    """A per-channel trace ``[*N, B, F]`` as a full one ``[*N, B, P]`` (zeros off its channel).

    Args:
        trace: The trace (possibly broadcast over neurons), or None.
        cmap: Its channel map (not dense).
        shape: The parameter's shape.
        n_shape: The neurons' shape ``[*N]``.
        batch: B.
    """
    if trace is None:
        return None
    neurons = n_shape.numel()
    width = trace.shape[-1]
    e = trace.expand(*n_shape, batch, width).reshape(neurons, batch, width)
    if cmap.blocks is not None:
        channel = torch.arange(neurons, device=e.device) // cmap.blocks
    else:
        channel = cmap.index
    out = e.new_zeros(neurons, batch, cmap.channels, width)
    out[torch.arange(neurons, device=e.device), :, channel] = e
    moved = CT._moved(shape, cmap.axis)
    out = out.reshape(neurons, batch, *moved).movedim(2, 2 + cmap.axis)
    return out.reshape(*n_shape, batch, -1)


class FedBackLayer:
    """The fed-back part of :class:`snn_ostl.hooks.layer.Layer` (see the module's text)."""

    #: The layer's own output reaches its current through a synapse (detected at step 2).
    fed_back: bool = False
    #: Whether the layer may still turn out to feed its output back (chain-bound, unsettled).
    _fb_settled: bool = False
    _fb_first: tuple[Any, list[Any]] | None = None  # (O^a_1, c_1) while unsettled
    _fb_partials: tuple[list[Any], Any] | None = None  # (O^j, O^a) of this step
    _fb_input: Tensor | None = None  # the fed-back spikes fc_rec read at this step
    _fb_history: Any = None  # the output's history node of this step
    _injected: Sequence[Tensor] = ()

    # ------------------------------------------------------------------ detection
    def _fb_watching(self) -> bool:
        return (
            bool(self.groups) and self.block is not None and not (self.fed_back or self._fb_settled)
        )

    def start_fed_back(self, synapse_path: str, learning_signal: str) -> None:
        """Turn the layer's block traces into full ones with an output trace (at step 2)."""
        where = self.path or "<root>"
        name = type(self.module).__name__
        problem = None
        own = [g.name for g in self.groups if g.chain is None]
        if own:
            problem = (
                f"its own parameters {', '.join(own)} are trained, and their traces with the "
                "recurrence written in the forward are not implemented.",
                "freeze them (requires_grad=False), or use variant='ostl-no-h'.",
            )
        elif learning_signal != "backprop":
            problem = (
                f"learning_signal={learning_signal!r} with recurrence written in the forward "
                "is not implemented under variant='ostl'.",
                "use learning_signal='backprop', or variant='ostl-no-h' or 'eprop'.",
            )
        elif self._fb_first is None:
            problem = (
                f"{synapse_path} feeds the layer's own previous output back into its current, "
                "but not from the layer's second step on (the current was computed differently "
                "before).",
                "feed the output back from the start of each sequence (zeros at the first step).",
            )
        if problem is not None:
            raise ConfigurationError([Problem(where, name, *problem)])
        scale, current = self._fb_first
        for g in self.groups:
            if g.pending is not None:
                self.snapshots.flush(g)
        for g in self.groups:
            chain = g.chain
            cmap = chain.cmap
            trace = list(g.trace) if g.trace else [None] * len(current)
            if not cmap.dense:
                trace = [
                    densify(e, cmap, g.param.shape, self.neuron_shape, self.batch) for e in trace
                ]
                chain.cmap = CT.ChannelMap(cmap.channels, cmap.axis, dense=True)
                chain.width = g.param.numel()
            g.form = "full-jacobian"
            fed = f"its spikes fed back by {synapse_path}"
            chain.through = fed if chain.through == "none" else f"{chain.through}; {fed}"
            g.trace = [*trace, self._first_output_trace(trace, scale, current, where, name)]
        self.fed_back = True
        self._fb_settled = True
        self._fb_first = None

    def _first_output_trace(self, trace, scale, current, where, name) -> Tensor | None:
        """``E^o_1 = (O^a_1 / c^k_1) e^k_1`` for a state k with a nonzero partial."""
        if CT.is_zero(scale):
            return None
        for k, c in enumerate(current):
            e = trace[k]
            if e is None or CT.is_zero(c):
                continue
            if isinstance(c, Tensor) and bool((c == 0).any()):
                continue
            like = e.new_empty(self.batch, *self.neuron_shape)
            return e * (CT._neuron_major(scale, like) / CT._neuron_major(c, like))
        raise ConfigurationError(
            [
                Problem(
                    where,
                    name,
                    "its output at the first step depends on its input current through no state "
                    "whose derivative is nonzero everywhere, so the output's first trace cannot "
                    "be recovered when the recurrence shows at the second step.",
                    "use variant='ostl-no-h', or a recurrent neuron such as snnTorch's RLeaky.",
                )
            ]
        )

    # ------------------------------------------------------------------ per step
    def fed_back_input(self, spikes: Tensor) -> Tensor:
        """The fed-back spikes, detached and passed through the output's history node."""
        x = spikes.detach()
        self._fb_input = None
        if not self.groups or not self.has_traces:
            return x
        snapshot = [
            [g.trace[-1]] if g.trace and g.trace[-1] is not None else None for g in self.groups
        ]
        if all(s is None for s in snapshot):
            return x
        from snn_ostl.hooks.history import History  # (imports chains)

        history = History(self, list(self.groups), snapshot, set(), {})
        self.snapshots.track(history)
        (x,) = inject(history, (x,), self._params)
        self._fb_input, self._fb_history = x, history
        return x

    @contextlib.contextmanager
    def fed_back_muted(self) -> Iterator[None]:
        """Silence this step's output history node while the step's tangents are computed."""
        history = self._fb_history if self._fb_input is not None else None
        if history is None:
            yield
            return
        history.muted = True
        try:
            yield
        finally:
            history.muted = False

    def void_fed_back(self) -> None:
        """A new sequence: the output's pending history node adds nothing."""
        history, self._fb_history = self._fb_history, None
        if history is not None:
            history.snapshot = [None] * len(history.snapshot)
        self._fb_input = None

    def note_output(self, spikes: Any) -> None:
        """Read ``O^j`` and ``O^a`` off this step's graph (post-hook, before the advance)."""
        self._fb_partials = None
        step = self.step
        first = not self.has_traces
        if step is None or not (self.fed_back or (self._fb_watching() and first)):
            if step is not None and self._fb_watching() and not first:
                self._fb_settled = True  # a second step without feedback: never recurrent
                self._fb_first = None
            return
        if not isinstance(spikes, Tensor) or not spikes.requires_grad:
            return
        current = step.current
        states = [s if s.requires_grad else None for s in self._injected]
        inputs = [current, *[s for s in states if s is not None]]
        with torch.enable_grad():
            grads = torch.autograd.grad(
                spikes, inputs, torch.ones_like(spikes), retain_graph=True, allow_unused=True
            )
        found = iter(grads[1:])
        partials = [None if s is None else next(found) for s in states]
        while len(partials) < len(step.prev):
            partials.append(None)
        self._fb_partials = (partials, grads[0])

    def advance_fed_back(
        self, g, d, tangent: Tangent, current: Tensor, take
    ) -> list[Tensor | None]:
        """One step of a block parameter's full traces and output trace (see the module)."""
        like = current
        x = tangent.full((*like.shape[1:], like.shape[0], g.chain.width), like, take)
        old = list(g.trace) if g.trace else [None] * (d.num_states + 1)
        output = old[-1]
        if output is not None and self._fb_input is not None:
            linear = Linearised(current, [self._fb_input])
            directions = output.movedim(-1, 0).movedim(-1, 1)  # [P, B, *N]
            mixed = linear.apply(0, directions).movedim(0, -1).movedim(0, -2)
            x = x + mixed
        o_state, o_current = self._fb_partials or ([None] * d.num_states, None)
        jac = [[*row, None] for row in d.state] + [[*o_state, None]]
        partial_c = [*d.current, o_current]
        return CT.advance(jac, partial_c, old, Tangent(None, x), like, g.chain.width, take)

    def keep_first(self, d) -> None:
        """Keep ``O^a_1`` and ``c_1`` while the layer may still turn out to feed back."""
        if self._fb_watching() and self._fb_partials is not None:
            self._fb_first = (self._fb_partials[1], list(d.current))
