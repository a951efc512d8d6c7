"""One step of every trace form of a layer: the methods behind :meth:`Layer.after_step`.

Which form a parameter gets is decided in :mod:`snn_ostl.hooks.layer` (at the layer's first
step); the maths of each form lives in :mod:`snn_ostl.traces.forms`,
:mod:`snn_ostl.traces.per_synapse`, :mod:`snn_ostl.traces.window` and
:mod:`snn_ostl.traces.dense`. This file applies them to a layer's groups after each forward
step. :class:`snn_ostl.hooks.layer.Layer` inherits these methods.
"""

from __future__ import annotations

import torch
from torch import Tensor

from snn_ostl.adapter import DenseAdapter, ElementwiseAdapter, StepRecord
from snn_ostl.chains.windowed import window_for
from snn_ostl.derivatives import ElementwiseDerivatives, Factored
from snn_ostl.traces import dense, snap
from snn_ostl.traces import forms as T
from snn_ostl.traces import per_synapse as PS
from snn_ostl.traces.derived import fold_jacobian
from snn_ostl.traces.grads import add_to_grad
from snn_ostl.traces.groups import as_number, stack_partials
from snn_ostl.traces.window import PLACEHOLDER

__all__ = ["TraceUpdates"]


class TraceUpdates:
    """The trace-update methods of :class:`snn_ostl.hooks.layer.Layer` (no state of their own)."""

    #: Averages a window's flushed terms across ranks (see snn_ostl.hooks.distributed).
    grad_reduce = None
    #: The learner's check of all its windows, run when one window refuses its flush.
    on_refused = None
    #: The learner's learning rule (SnAp-n masks full traces after each step).
    rule = None

    def _derivatives(self, step: StepRecord) -> ElementwiseDerivatives:
        adapter = self.adapter
        assert isinstance(adapter, ElementwiseAdapter)
        d = adapter.derivatives(self.module, step, self.variant, lambda: self.total_current(step))
        d.state = [[as_number(p) for p in row] for row in d.state]
        d.current = [as_number(p) for p in d.current]
        if self.variant == "eprop":
            spikes = set(adapter.spike_states)
            d.state = [[None if j in spikes else p for j, p in enumerate(row)] for row in d.state]
        return d

    def _advance_elementwise(self, step: StepRecord) -> None:
        d = self._derivatives(step)
        like = step.prev[0]
        previous, self.derived = self.derived, d.derived
        # synapse traces leave out derived states (exact, see snn_ostl.traces.derived)
        folded = fold_jacobian(d.state, d.current, d.derived, previous) if d.derived else None
        if self.fused_group is not None:
            (scale,) = d.current
            # x̃ is normalised by c = ∂s/∂a: the synapse's backward multiplies by ∂L/∂a = c δ.
            self.decay = float(d.state[0][0] or 0.0)
            assert isinstance(scale, (int, float)) and scale != 0, "fused traces need c != 0"
        jacobians: dict[tuple[int, ...], Tensor] = {}  # dense J_t per kept-state set
        if getattr(self.rule, "masks_traces", False) and self.recurrent:
            self._computed_in_step(step, (), set())  # before any SnAp hook is on the states
        for g in self.groups:
            if g.chain is not None:
                continue  # advanced by advance_chain below
            if g.trace is None:
                g.folded = folded is not None and g.role in ("weight", "bias")
            jac, current = folded if g.folded else (d.state, d.current)
            if g.fused:
                if not getattr(self, "fused_ran", False):
                    # the binding step ran before the substitution existed: x̃_1 = x_1, f_1 = 1
                    x = self._synapse_input(g.source, step).detach()
                    g.trace = [x if g.role == "weight" else 1.0]
                continue
            if g.form == "full-jacobian":
                self._advance_full(g, d, jac, current, step, previous, jacobians)
            elif g.role == "weight":
                x = self._synapse_input(g.source, step).detach()
                if g.op is not None and g.op.kind == "embedding":
                    x = g.op.one_hot(x, step.current.dtype)
                old = g.trace or [None] * d.num_states
                if g.form == "presynaptic":
                    g.trace = T.update_presynaptic(jac, current, old, x)
                else:
                    if g.trace is None:
                        g.presynaptic = PS.presynaptic_states(jac, current)
                    windowed = self.flush_every > 1
                    new, plan = PS.plan(
                        jac, current, old, x, like[0].numel(), g.presynaptic, windowed
                    )
                    if windowed:
                        if g.window is None:  # the window starts from the zero trace
                            states = sorted(set(range(d.num_states)) - g.presynaptic)
                            g.window = window_for(self, g, states)
                        g.window.push(plan)
                        g.trace = [PLACEHOLDER if k in plan.rows else t for k, t in enumerate(new)]
                    elif any(old[k] is None for k in plan.rows):  # first step: nothing to fuse
                        shape = (plan.neurons, plan.batch, plan.width)
                        out = [g.take_shaped(shape, x) for _ in new]
                        g.trace = PS.advance(plan, new, out)
                    else:
                        g.trace, g.pending = new, plan
            elif g.role == "bias":
                old = g.trace or [None] * d.num_states
                if g.form == "presynaptic":
                    # J and c are numbers here, so the bias trace is a number per state
                    g.trace = T.update_presynaptic(jac, current, old, 1.0)
                else:
                    g.trace = T.update_elementwise(jac, current, old, like)
            else:
                old = g.trace or [None] * d.num_states
                g.trace = T.update_elementwise(d.state, d.params[g.key], old, like)
        if self.block is not None:
            self.advance_chain(step, d)
        self.fused_ran = False

    def _advance_full(self, g, d, jac, current, step, previous, jacobians) -> None:
        """One step of a full-Jacobian trace over the states the group keeps."""
        like = step.prev[0]
        states = tuple(k for k in range(d.num_states) if not (g.folded and k in d.derived))
        g.states = states
        compact = (
            getattr(self.rule, "n", None) == 1
            and g.role in ("weight", "bias")
            and g.param.dim() > 0
        )
        masked = getattr(self.rule, "masks_traces", False)
        g.snap = masked
        if compact:  # SnAp-1: the entries of each element's own unit, [B, R, P]
            g.units = snap.units(g.param, like[0].numel())
            if g.trace is not None:
                jacobian = self._full_jacobian(jac, current, like, states, previous, g, jacobians)
                g.trace = snap.advance(jacobian, g.trace, g.units, len(states))
                self._snap_history(g, step, states, set(d.derived))
            x = self._synapse_input(g.source, step).detach() if g.role == "weight" else None
            fresh = snap.immediate(stack_partials([current[k] for k in states], like), x)
            g.trace = fresh if g.trace is None else g.trace + fresh
            return
        if g.trace is None:
            g.trace = dense.zeros(like, len(states), g.param.numel())
        else:
            jacobian = self._full_jacobian(jac, current, like, states, previous, g, jacobians)
            g.trace = T.update_dense(jacobian, g.trace)
            if masked:  # SnAp-n: drop the entries the weight does not reach in n steps
                g.trace.mul_(self.rule.trace_mask(self, g))
                self._snap_history(g, step, states, set(d.derived))
                g.trace = g.trace.clone()  # the history above keeps its own copy
        if g.role == "neuron":
            partials, x = d.params[g.key], None
        else:
            partials = current
            x = self._synapse_input(g.source, step).detach() if g.role == "weight" else None
        dense.add_immediate(g.trace, g.role, [partials[k] for k in states], like, x, g.param)

    def _snap_history(self, g, step: StepRecord, states: tuple[int, ...], derived: set) -> None:
        """Read SnAp's history term ``δ_t · M⊙(J_t ẽ_{t-1})`` at the new state.

        SnAp-n's gradient at step t is ``δ_t · ẽ_t`` with the masked trace ``ẽ_t``; read
        through the previous state (``δ_t J_t · ẽ_{t-1}``), the history would take in the
        entries the mask drops. So these groups add nothing through the previous state (see
        :func:`snn_ostl.hooks.history.contract`); a hook on each kept state of step t adds
        its part of the masked history when that state's gradient arrives. A state computed
        from another kept state of the same step (the SNU's ``y = h(s)``, snnTorch's spikes
        from the new membrane) gets no hook: its rows are that state's times the step's own
        derivative, and the gradient at the other state already takes in the path through it.
        """
        history = g.trace  # M⊙(J_t ẽ_{t-1}): [B, R, P] (SnAp-1) or [B, R*N, P]
        neurons = step.prev[0][0].numel()
        compact = g.units is not None
        computed = self._computed_in_step(step, states, derived)
        for row, k in enumerate(states):
            new = step.new[k]
            if k in computed or not new.requires_grad:
                continue
            part = history[:, row] if compact else history[:, row * neurons : (row + 1) * neurons]
            new.register_hook(_snap_hook(g, part, compact))

    def _computed_in_step(self, step: StepRecord, states, derived: set) -> set:
        """Kept states computed from another kept state of the same step.

        Found once per layer, over all its states, by asking autograd whether a path joins
        them, before any hook is on the step's states (a hook fires in that query too).
        """
        every = getattr(self, "_snap_computed", None)
        if every is None:
            new = step.new
            every = self._snap_computed = {
                (k, j)
                for k in range(len(new))
                for j in range(len(new))
                if j != k and _reaches(new[k], new[j])
            }
        return {k for k in states if k in derived} | {
            k for k, j in every if k in states and j in states
        }

    def _full_jacobian(self, jac, current, like, states, previous, g, jacobians) -> Tensor:
        """``J_t`` over ``states`` as ``[B, R*N, R*N]``, built once per step per state set."""
        if states not in jacobians:
            recurrent = [
                (s.source, self.module.get_parameter(s.weight).detach())
                for s in self._internal()
                if isinstance(s.source, int)
            ]
            jacobians[states] = dense.jacobian(
                jac, current, like, states, recurrent, previous if g.folded else {}
            )
        return jacobians[states]

    def _advance_dense_cell(self, step: StepRecord) -> None:
        adapter = self.adapter
        assert isinstance(adapter, DenseAdapter)
        params = {g.key: g.param for g in self.groups}
        d = adapter.derivatives(self.module, step.current, step.prev, params)
        cut = getattr(adapter, "cut_jacobian", None)
        if cut is not None:
            d.state = cut(d.state, self.module, self.variant)
        for g in self.groups:
            immediate = d.params[g.key]
            if g.trace is None:
                dense_part = immediate.dense() if isinstance(immediate, Factored) else immediate
                g.trace = dense_part.contiguous()
                continue
            g.trace = T.update_dense(d.state, g.trace)
            if not isinstance(immediate, Factored):
                g.trace.add_(immediate)
            elif immediate.input is None:
                g.trace.add_(immediate.rows)
            else:  # rows ⊗ input, added without forming it: one batched outer product
                rows, x = immediate.rows, immediate.input
                batch, size, width = rows.shape
                g.trace.view(batch, size * width, -1).baddbmm_(
                    rows.reshape(batch, size * width, 1), x.reshape(batch, 1, -1)
                )


def _reaches(output: Tensor, target: Tensor) -> bool:
    """Whether ``output`` was computed from ``target`` (a gradient path joins them)."""
    if output.grad_fn is None or not target.requires_grad:
        return False
    with torch.enable_grad():
        (grad,) = torch.autograd.grad(
            output, target, torch.ones_like(output), retain_graph=True, allow_unused=True
        )
    return grad is not None


def _snap_hook(g, part: Tensor, compact: bool):
    """Add ``Σ_b δ_t[b, unit] · part[b, ...]`` to the parameter's ``.grad`` (through its
    hooks, as autograd would)."""

    # (a checkpoint of the user's state saves the tensor without it: nothing to warn about)
    @torch.utils.hooks.unserializable_hook
    def hook(grad: Tensor) -> None:
        flat = grad.detach().reshape(grad.shape[0], -1).to(part.dtype)
        if compact:
            term = torch.einsum("bp,bp->p", flat[:, g.units], part)
        else:
            term = torch.einsum("bn,bnp->p", flat, part)
        add_to_grad(g.param, term)

    return hook
