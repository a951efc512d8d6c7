"""One stateful layer under OSTL: its parameters, their traces, and its step hooks.

The learner (:mod:`snn_ostl.learner`) owns one :class:`Layer` per stateful module and calls
:meth:`Layer.before_step` / :meth:`Layer.after_step` from forward hooks. The maths lives in
:mod:`snn_ostl.traces.forms`; this file decides which form each parameter gets and wires the
eligibility snapshot into the autograd graph through :func:`snn_ostl.hooks.inject.inject`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from snn_ostl.adapter import CellAdapter, DenseAdapter, ElementwiseAdapter, StepRecord
from snn_ostl.chains.binding import ChainLayer
from snn_ostl.chains.fedback import FedBackLayer
from snn_ostl.errors import ConfigurationError, Problem, StateError
from snn_ostl.hooks.guards import LayerGuards
from snn_ostl.hooks.history import History
from snn_ostl.hooks.inject import inject
from snn_ostl.hooks.updates import TraceUpdates
from snn_ostl.traces import forms as T
from snn_ostl.traces import per_synapse as PS
from snn_ostl.traces.derived import Derived
from snn_ostl.traces.groups import TraceGroup
from snn_ostl.traces.snapshots import Snapshots

__all__ = ["Layer", "TraceGroup"]  # TraceGroup re-exported for existing imports


class Layer(TraceUpdates, ChainLayer, FedBackLayer, LayerGuards):
    """A stateful module, its trained parameters and their eligibility traces.

    Args:
        path: Qualified module name.
        module: The stateful module.
        adapter: Its adapter.
        variant: ``"ostl"``, ``"ostl-no-h"`` or ``"eprop"``.
        advance_in_backward: Advance per-synapse traces in place inside the step's backward,
            fused with the contraction (see :mod:`snn_ostl.traces.per_synapse`).
        flush_every: Per-synapse weights add their history terms to ``.grad`` every this many
            steps (see :mod:`snn_ostl.traces.window`); 1 adds them in every step's backward.
    """

    def __init__(
        self,
        path: str,
        module: nn.Module,
        adapter: CellAdapter,
        variant: str,
        advance_in_backward: bool = True,
        flush_every: int = 1,
    ) -> None:
        self.path, self.module, self.adapter, self.variant = path, module, adapter, variant
        self.advance_in_backward = advance_in_backward
        self.flush_every = flush_every
        self.synapse: nn.Module | None = None
        self.synapse_path: str | None = None
        self.groups: list[TraceGroup] = []
        self.bound = False
        self.batch: int | None = None
        self.neuron_shape: torch.Size | None = None
        self.dtype: torch.dtype | None = None
        self.device: torch.device | None = None
        self.has_traces = False
        self.snapshots = Snapshots(lambda: self.groups)
        self._params: list[nn.Parameter] = []
        self._owns_input: bool | None = None
        self.step: StepRecord | None = None
        self.inputs: dict[str | int, Tensor] = {}
        self.derived: Derived = {}  # derived-state factors of the latest step
        self.all_fused = False
        self._fused_roles: dict[str, TraceGroup] = {}
        self._bias_scale: Tensor | None = None
        self._fused_undo: tuple | None = None
        self._swapped: nn.Module | None = None  # the synapse running with a scaled bias

    # ------------------------------------------------------------------ planning
    @property
    def recurrent(self) -> bool:
        """Whether the layer's own state drives its current through weights (full Jacobian)."""
        if isinstance(self.adapter, DenseAdapter):
            return True
        if self.variant != "ostl":
            return False
        return any(isinstance(s.source, int) for s in self._internal())

    def _internal(self):
        if isinstance(self.adapter, ElementwiseAdapter):
            return self.adapter.internal_synapses(self.module)
        return []

    def direct_ok(self, synapse: nn.Module) -> bool:
        """Whether a synapse that feeds the current directly gets one of the classic forms.

        Linear synapses always do; a Conv1d/Conv2d does when the neuron's traces factorise.
        Everything else is bound through :meth:`bind_chain` (exact for any neuron).
        """
        if type(synapse) is nn.Linear:
            return True
        if type(synapse) is nn.Embedding:
            # the presynaptic form keeps the filtered rows [B, V] instead of [N, B, V] per
            # neuron: when the neuron's traces factorise, and the table's gradient is the
            # plain one (no per-batch frequency scaling, no renormalisation, dense)
            plain = not (synapse.scale_grad_by_freq or synapse.max_norm or synapse.sparse)
            return (
                plain
                and isinstance(self.adapter, ElementwiseAdapter)
                and self.adapter.factorised(self.module, self.variant)
                and not self.recurrent
            )
        if type(synapse) not in (nn.Conv1d, nn.Conv2d) or not isinstance(
            self.adapter, ElementwiseAdapter
        ):
            return False
        if synapse.padding_mode != "zeros":
            # the module pads before its convolution: the fused and presynaptic forms, which
            # redo or intercept the convolution of x, would miss the padding
            return False
        return self.adapter.factorised(self.module, self.variant) and not self.recurrent

    def bind(self, synapse_path: str | None, synapse: nn.Module | None) -> None:
        """Fix the layer's parameters and trace forms (at its first step)."""
        self.synapse_path, self.synapse = synapse_path, synapse
        prefix = f"{self.path}." if self.path else ""
        groups: list[TraceGroup] = []
        adapter = self.adapter
        if isinstance(adapter, DenseAdapter):
            for name, p in adapter.trained_parameters(self.module).items():
                groups.append(TraceGroup(prefix + name, p, "cell", "full-jacobian", key=name))
            self.groups = [g for g in groups if g.param.requires_grad]
            self._params = [g.param for g in self.groups]
            self.bound = True
            return
        assert isinstance(adapter, ElementwiseAdapter)
        dense = self.recurrent
        factorised = adapter.factorised(self.module, self.variant) and not dense
        # (name prefix, weight, bias, op, source) of every synapse feeding the current
        synapses: list[tuple[str, str, str | None, nn.Module, T.SynapseOp, str | int]] = []
        if synapse is not None:
            spre = f"{synapse_path}." if synapse_path else ""
            has_bias = getattr(synapse, "bias", None) is not None
            synapses.append(
                (
                    spre,
                    "weight",
                    "bias" if has_bias else None,
                    synapse,
                    T.SynapseOp.of(synapse),
                    "input",
                )
            )
        for s in self._internal():
            synapses.append(
                (prefix, s.weight, s.bias, self.module, T.SynapseOp("linear"), s.source)
            )
        for spre, wname, bname, owner, op, source in synapses:
            if op.kind != "linear" and not factorised:
                raise ConfigurationError(
                    [
                        Problem(
                            self.path,
                            type(self.module).__name__,
                            f"its synapse {spre.rstrip('.')} is a {op.kind}, and this neuron's "
                            "reset or decay makes its traces per-synapse, which is only "
                            "implemented for Linear synapses.",
                            "use a Linear synapse, or a neuron setting whose traces factorise "
                            "(see the supported-modules table).",
                        )
                    ]
                )
            weight = owner.get_parameter(wname)
            if weight.requires_grad:
                form = "full-jacobian" if dense else "presynaptic" if factorised else "per-synapse"
                groups.append(TraceGroup(spre + wname, weight, "weight", form, op, source))
            bias = owner.get_parameter(bname) if bname else None
            if bias is not None and bias.requires_grad:
                form = "full-jacobian" if dense else "presynaptic" if factorised else "elementwise"
                groups.append(TraceGroup(spre + bname, bias, "bias", form, op, source))
        for key, p in adapter.neuron_parameters(self.module).items():
            if p.requires_grad:
                form = "full-jacobian" if dense else "elementwise"
                groups.append(TraceGroup(prefix + key, p, "neuron", form, key=key))
        if (
            factorised
            and synapse is not None
            and len(adapter.state_names) == 1
            and adapter.fusable(self.module, self.variant)
            # the bias rides on the weight's substitution: with the weight frozen the synapse's
            # pre-hook never runs, so a lone bias keeps its presynaptic trace
            and any(g.role == "weight" and g.source == "input" for g in groups)
            # an embedding's backward reads its indices, not a tensor x̃ could stand in for
            and type(synapse) is not nn.Embedding
        ):
            for g in groups:
                g.fused = g.role in ("weight", "bias") and g.source == "input"
        self.groups = groups
        # Every gradient comes from the synapse's own backward: no history node is needed.
        self.all_fused = bool(groups) and all(g.fused for g in groups)
        self._fused_roles = {g.role: g for g in groups if g.fused}  # read at every step
        self._params = [g.param for g in groups]
        self.bound = True
        self.decay: float | None = None  # J of a fused layer, known after its first step

    @property
    def fused_group(self) -> TraceGroup | None:
        """The synapse weight whose gradient comes from the synapse's own backward, if any."""
        return self._fused_roles.get("weight")

    @property
    def fused_bias(self) -> TraceGroup | None:
        """The synapse bias of a fused layer, if it is trained."""
        return self._fused_roles.get("bias")

    def filtered_input(self, x: Tensor) -> Tensor:
        """Advance and return ``x̃_t = J x̃_{t-1} + x_t`` of the fused weight (normalised by c).

        Called by the synapse's pre-hook, before the step's forward, because the synapse must
        save ``x̃_t`` in place of ``x_t``.
        """
        g = self.fused_group
        if getattr(self, "fused_ran", False):
            # the synapse ran again before the layer's step: the earlier call never reached it
            self.undo_filtered_input()
        bias = self.fused_bias
        self._fused_undo = (g.trace, bias.trace if bias is not None else None, self._bias_scale)
        previous = g.trace[0] if g.trace else None
        x = x.detach()
        restart = previous is None or self.decay is None or previous.shape != x.shape
        filtered = x if restart or not self.decay else torch.add(x, previous, alpha=self.decay)
        g.trace = [filtered]
        if bias is not None:  # the bias sees a constant input 1: its filtered input is a number
            bias.trace = [1.0 if restart or not bias.trace else self.decay * bias.trace[0] + 1.0]
        self.fused_ran = True
        self._fused_x = x
        self._bias_scale = None
        return filtered

    def undo_filtered_input(self) -> None:
        """Take back the last :meth:`filtered_input` (its step never completed)."""
        if not getattr(self, "fused_ran", False) or self._fused_undo is None:
            return
        trace, bias_trace, scale = self._fused_undo
        self.fused_group.trace = trace
        if self.fused_bias is not None:
            self.fused_bias.trace = bias_trace
        self._bias_scale = scale
        self.fused_ran = False
        self._fused_undo = None

    def swap_bias(self, synapse: nn.Module) -> None:
        """Run the synapse with a bias whose gradient is scaled by its filtered input.

        The synapse's own backward gives the bias ``Σ ∂L/∂a_t`` (its input is 1); the trace asks
        for ``f_t Σ ∂L/∂a_t`` with ``f_t = J f_{t-1} + 1``. The synapse runs with
        ``lerp(b.detach(), b, f_t)`` in place of ``b``: exactly the values of ``b`` (both of
        lerp's formulas add ``f_t`` or ``1 - f_t`` times ``b - b.detach()``, which is 0), and its
        one backward node sends ``f_t`` times the gradient to ``b``, so hooks on the bias still
        see one gradient. The swap goes through the module's parameter dict, as
        ``torch.func.functional_call`` does; it costs an [N] operation where scaling the [B, N]
        output would cost a batch-sized one in every forward and backward. Called while the
        synapse's saved-tensor hooks are active, so that :meth:`reset` may still set the scale
        of this very step back to 1 in place; :meth:`restore_bias` puts the parameter back when
        the synapse's forward returns (or raises).
        """
        g = self.fused_bias
        if g is None or not g.trace or g.trace[0] == 1.0:
            return
        bias = g.param
        if synapse._parameters.get("bias") is not bias:
            raise StateError(
                f"{self.synapse_path} ({type(synapse).__name__}): its bias is no longer the "
                f"parameter {g.name} that the learner trains (it was replaced after the first "
                "step). Replace parameters before attaching the learner, or attach a new one."
            )
        # A 0-dim tensor, not a Python number: reset() may still set it to 1 in place.
        scale = torch.full((), g.trace[0], dtype=bias.dtype, device=bias.device)
        self._bias_scale = scale
        synapse._parameters["bias"] = torch.lerp(bias.detach(), bias, scale)
        self._swapped = synapse

    def restore_bias(self) -> None:
        """Give the synapse its bias parameter back (after :meth:`swap_bias`)."""
        synapse, self._swapped = self._swapped, None
        if synapse is not None:
            synapse._parameters["bias"] = self.fused_bias.param

    @property
    def parameters(self) -> list[nn.Parameter]:
        return [g.param for g in self.groups]

    # ------------------------------------------------------------------ per step
    def reset(self) -> None:
        """Forget traces and the batch size (a new sequence starts)."""
        self.flush(close=True)
        self.void_fed_back()
        self._after_reset = "restart" if self._last_state is not None else False
        for g in self.groups:
            if g.fused and getattr(self, "fused_ran", False) and g.trace:
                # The synapse already ran this step and saved x̃_t (and the bias's scale) for
                # its backward, built on the old sequence: restart them in place, in the very
                # tensors it saved.
                if g.role == "weight":
                    if g.trace[0].data_ptr() != self._fused_x.data_ptr():  # (x̃ is x already)
                        g.trace[0].copy_(self._fused_x)
                else:
                    g.trace = [1.0]
                    if self._bias_scale is not None:
                        self._bias_scale.fill_(1.0)
                continue
            if g.form == "per-synapse" and g.chain is None and self.flush_every == 1:
                # the next sequence reuses the trace's buffers unless a step still needs them
                # (a window hands its own base back when it closes, see snn_ostl.traces.window)
                old = g.trace if isinstance(g.trace, list) else []
                tensors = [t for t in old if isinstance(t, Tensor) and t.dim() == 3]
                if tensors:  # (a second reset before the first step keeps the pool)
                    g.pool[:] = [t for t in tensors if not self.snapshots.in_use([t])]
            g.trace = g.pending = None
        self.has_traces = False
        self.batch = None
        self.step = None
        self.derived = {}
        self.decay = None  # a fused layer reads J again at the first step of a sequence

    def flush(self, close: bool = False) -> None:
        """Add every recorded per-synapse history term to ``.grad`` (``flush_every > 1``).

        Args:
            close: The sequence ends: the windows are let go (a backward through one of their
                steps still flushes itself).
        """
        for g in self.groups:
            if g.window is None:
                continue
            if close:
                g.window.close()
                g.window = None
            else:
                g.window.settle()

    def check(self, prev: Sequence[Tensor], current: Tensor) -> None:
        """Refuse a state that does not fit the traces (new batch, shape, dtype, device)."""
        name = type(self.module).__name__
        where = self.path or "<root>"
        batch = prev[0].shape[0]
        if self.batch is not None and batch != self.batch:
            raise StateError(
                f"{where} ({name}): got a batch of {batch} samples but its eligibility traces "
                f"hold {self.batch}. A new batch starts a new sequence: call learner.reset() "
                "before its first step."
            )
        if self.neuron_shape is not None and prev[0].shape[1:] != self.neuron_shape:
            raise StateError(
                f"{where} ({name}): its state has shape {tuple(prev[0].shape)} but its traces "
                f"were built for [B, {', '.join(map(str, self.neuron_shape))}]. Pass the state "
                "this module returned at the previous step, or call learner.reset()."
            )
        for s in prev:
            if s.shape[0] != batch:
                raise StateError(
                    f"{where} ({name}): its state tensors disagree on the batch size "
                    f"({[tuple(t.shape) for t in prev]}). Pass the state the module returned."
                )
        if self.dtype is not None and (current.dtype, current.device) != (self.dtype, self.device):
            raise StateError(
                f"{where} ({name}): input is {current.dtype} on {current.device} but the "
                f"traces are {self.dtype} on {self.device}. Keep one dtype and device for a "
                "whole sequence, or call learner.reset() after moving the model."
            )

    def before_step(
        self, prev: tuple[Tensor, ...], current: Tensor, inputs: dict
    ) -> tuple[Tensor, ...]:
        """Detach the previous state and attach the history term; returns the state to use."""
        prev = tuple(s.detach() for s in prev)
        self.check(prev, current)
        self.inputs = inputs
        self.step = StepRecord(current=current, prev=prev)
        self._injected = ()
        if not self.has_traces or not self.groups or self.all_fused:
            return prev
        for g in self.groups:
            if g.pending is not None:  # no backward reached the last step: advance now
                self.snapshots.flush(g)
            if g.window is not None and g.window.due():
                g.window.flush(g.window.needed())
        spikes = set(self.adapter.spike_states) if self.variant == "eprop" else set()
        snapshot = [g.trace if g.window is None else g.window.ref(g.trace) for g in self.groups]
        history = History(self, list(self.groups), snapshot, spikes, self.derived)
        self.snapshots.track(history)
        self._injected = inject(history, prev, self._params)
        return self._injected

    @property
    def pending_bytes(self) -> int:
        """Bytes of eligibility snapshots that wait for a backward pass or a flush."""
        windows = sum(g.window.nbytes for g in self.groups if g.window is not None)
        return self.snapshots.pending_bytes + windows

    def claim(self, index: int, snapshot: list[Any], history: Any) -> PS.PerSynapseStep | None:
        """The pending advance of group ``index`` if ``history`` may apply it in place."""
        if not self.advance_in_backward:
            return None
        return self.snapshots.claim(self.groups[index], snapshot, history)

    def after_step(self, new: tuple[Tensor, ...]) -> None:
        """Advance every trace by one step: ``e_t = J_t e_{t-1} + ∂s_t/∂θ``."""
        step = self.step
        if step is None:
            return
        step.new = tuple(new)
        self.step = None
        self.record_state(step.new)
        like = step.prev[0]
        if self.batch is None:
            self.batch, self.neuron_shape = like.shape[0], like.shape[1:]
            self.dtype, self.device = step.current.dtype, step.current.device
        if not self.groups:
            return
        if self.all_fused and self.decay is not None and getattr(self, "fused_ran", False):
            # Nothing to advance but x̃ (done by the synapse's pre-hook), and J is a number
            # fixed for the whole sequence (what the adapter's ``factorised`` promises):
            # skip the derivatives, read once per sequence.
            self.fused_ran = False
            return
        with torch.no_grad():
            if isinstance(self.adapter, DenseAdapter):
                self._advance_dense_cell(step)
            else:
                self._advance_elementwise(step)
        self.has_traces = True

    # ------------------------------------------------------------------ trace updates
    def total_current(self, step: StepRecord) -> Tensor:
        """a_t: the external synapse's output plus every internal synapse's (generic path only)."""
        internal = self._internal()
        if not internal:
            return step.current
        total = step.current if self.synapse is not None else None
        for s in internal:
            x = self._synapse_input(s.source, step)
            a = F.linear(x, self.module.get_parameter(s.weight).detach())
            if s.bias:
                a = a + self.module.get_parameter(s.bias).detach()
            total = a if total is None else total + a
        return total

    @property
    def owns_input_weights(self) -> bool:
        """Whether the module's input x_t meets weights inside the module (no external synapse)."""
        if self._owns_input is None:  # a property of the module's structure: ask once
            self._owns_input = isinstance(self.adapter, DenseAdapter) or any(
                s.source == "input" for s in self._internal()
            )
        return self._owns_input

    def _synapse_input(self, source: str | int, step: StepRecord) -> Tensor:
        if source == "input":
            return self.inputs.get("input", step.current)
        return step.prev[int(source)]
