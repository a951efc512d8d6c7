"""The public learner: attach OSTL to an existing model with hooks, detach it cleanly.

>>> learner = snn_ostl.OSTL(model)          # validates, then attaches
>>> for x_t, y_t in sequence:
...     loss = loss_fn(model(x_t), y_t)
...     loss.backward()                     # .grad now holds the OSTL gradient
>>> learner.detach()

How it works (details on the theory page): before each step of a stateful module the learner
detaches the module's previous state and passes it through an :func:`snn_ostl.inject.inject`
node that holds the eligibility snapshot ``e_{t-1}``; after the step it advances the traces.
The user's backward then yields the instantaneous gradient plus the history term, which is the
OSTL gradient.
"""

from __future__ import annotations

import contextlib
import itertools
import warnings
import weakref
from collections.abc import Callable, Iterator
from typing import Any

import torch
from torch import Tensor, nn
from torch.optim.optimizer import register_optimizer_step_pre_hook

from snn_ostl.errors import (
    AlreadyAttachedError,
    DetachedLearnerError,
    Problem,
    StateError,
    TraceBudgetError,
    UnsupportedModuleError,
)
from snn_ostl.layer import Layer
from snn_ostl.signals import FeedbackSignals
from snn_ostl.validate import plan_model, supported_names

__all__ = ["LEARNING_SIGNALS", "OSTL", "VARIANTS", "is_attached"]

VARIANTS = ("ostl", "ostl-no-h", "eprop")
LEARNING_SIGNALS = ("backprop", "random", "direct")

# module -> learner, for every module of every attached model (weak: never keeps a model alive).
_ATTACHED: weakref.WeakKeyDictionary[nn.Module, OSTL] = weakref.WeakKeyDictionary()


def _detached(output: Any) -> Any:
    """The output with every tensor detached (tuples, lists and named tuples kept)."""
    if isinstance(output, Tensor):
        return output.detach()
    if isinstance(output, tuple) and hasattr(output, "_fields"):
        return type(output)(*(_detached(o) for o in output))
    if isinstance(output, (tuple, list)):
        return type(output)(_detached(o) for o in output)
    return output


def _flush_hook(learner: OSTL) -> Callable[..., None]:
    """An optimizer step pre-hook that flushes ``learner`` (held weakly: never keeps it alive)."""
    ref = weakref.ref(learner)

    def hook(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        alive = ref()
        if alive is not None and alive.attached:
            alive.flush()

    return hook


def is_attached(model: nn.Module) -> bool:
    """Whether an OSTL learner is attached to ``model`` or to any of its modules."""
    return any(m in _ATTACHED for m in model.modules())


def _check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(
            f"OSTL option {name}={value!r} is not valid; allowed values: "
            + ", ".join(repr(a) for a in allowed)
        )


class OSTL:
    """Online Spatio-Temporal Learning attached to an existing model.

    Args:
        model: The user's model; it is not wrapped or copied.
        variant: ``"ostl"`` (exact eligibility), ``"ostl-no-h"`` (recurrent weights left out of
            the Jacobian) or ``"eprop"`` (no path through the layer's own spikes).
        learning_signal: ``"backprop"`` (exact instantaneous backprop), ``"random"`` (fixed random
            feedback matrices in place of the transposed weights) or ``"direct"`` (the output
            error sent to every layer through fixed random matrices).
        seed: Seed of the random feedback matrices.
        strict: Refuse modules the learner cannot train exactly. With ``strict=False`` they get
            their instantaneous gradient, and :meth:`summary` says so.
        trace_budget: Bytes of eligibility snapshots that may wait for a backward pass (a
            whole-sequence backward keeps one per step). Past it, :class:`TraceBudgetError`.
        advance_in_backward: Advance per-synapse traces inside each step's backward, in place
            and in the same pass as the gradient (one pass over the largest tensors instead of
            three). A step can then be backpropagated only once; set False to allow
            ``retain_graph=True`` and repeated backward passes through a step.
        flush_every: Per-synapse weights (e.g. under Norse's ``LIFCell``) record each step's
            state gradient and add their history terms to ``.grad`` every this many steps, in
            one pass over the trace instead of one per step (exact; see
            :mod:`snn_ostl.window`). Flushes also run before every ``optimizer.step()``, and on
            :meth:`flush`, :meth:`reset` and :meth:`detach`; call :meth:`flush` yourself before
            reading those ``.grad`` between optimizer steps (e.g. before
            ``clip_grad_norm_``). Flushed terms reach ``.grad`` only, never the result of
            ``torch.autograd.grad``: use 1 with it. 1 (default) adds them in each step's
            backward.

    Raises:
        UnsupportedModuleError: The model holds modules it cannot train (all listed).
        AlreadyAttachedError: Another learner is attached to this model.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        variant: str = "ostl",
        learning_signal: str = "backprop",
        seed: int = 0,
        strict: bool = True,
        trace_budget: int = 2**31,
        advance_in_backward: bool = True,
        flush_every: int = 1,
    ) -> None:
        from snn_ostl.adapters import load_available

        _check_choice("variant", variant, VARIANTS)
        if isinstance(flush_every, bool) or not isinstance(flush_every, int) or flush_every < 1:
            raise ValueError(
                f"OSTL option flush_every={flush_every!r} is not valid: pass a whole number of "
                "steps >= 1 (1 adds every history term to .grad in that step's backward)."
            )
        _check_choice("learning_signal", learning_signal, LEARNING_SIGNALS)
        if is_attached(model):
            raise AlreadyAttachedError(
                f"an OSTL learner is already attached to this {type(model).__name__} (or to one "
                "of its modules). Call learner.detach() on it first, or use one learner."
            )
        load_available()
        plan = plan_model(model, variant)
        if learning_signal == "random":
            for path, (module, adapter) in plan.layers.items():
                if adapter.kind == "dense":
                    plan.problems.append(
                        Problem(
                            path,
                            type(module).__name__,
                            "learning_signal='random' replaces a synapse's weights by a fixed "
                            "matrix in the backward pass, but this cell's input weights live "
                            "inside its step.",
                            "use learning_signal='backprop' or 'direct' for this model, or feed "
                            "the cell from an external Linear.",
                        )
                    )
        if plan.problems and strict:
            raise UnsupportedModuleError(plan.problems, supported_names())
        self.model = model
        self.variant, self.learning_signal, self.strict = variant, learning_signal, strict
        self.trace_budget = trace_budget
        self.flush_every = flush_every
        self._plan = plan
        self._problem_paths = {p.path for p in plan.problems}
        self.layers: dict[str, Layer] = {
            path: Layer(path, module, adapter, variant, advance_in_backward, flush_every)
            for path, (module, adapter) in plan.layers.items()
            if path not in self._problem_paths
        }
        self._synapse_paths = {m: p for p, m in plan.synapses.items()}
        self._recent: dict[nn.Module, tuple[weakref.ref, Tensor]] = {}
        self._fused: dict[nn.Module, Layer] = {}  # synapse -> layer whose weight it fuses
        self._saving: dict[nn.Module, Any] = {}
        self._order: dict[str, int] = {}
        self._handles: list[Any] = []
        self._attached = True
        self.signals = FeedbackSignals(learning_signal, seed)
        for layer in self.layers.values():
            self._handles.append(
                layer.module.register_forward_pre_hook(self._make_pre(layer), with_kwargs=True)
            )
            self._handles.append(
                # always_call: the post-hook also undoes the pre-hook when forward raises
                layer.module.register_forward_hook(
                    self._make_post(layer), with_kwargs=True, always_call=True
                )
            )
        for module in self._synapse_paths:
            self._handles.append(module.register_forward_pre_hook(self._synapse_pre))
            self._handles.append(module.register_forward_hook(self._synapse_post, always_call=True))
        if learning_signal == "direct":
            self._handles.append(model.register_forward_hook(self._model_post))
        if flush_every > 1:
            # every optimizer, so that no step ever reads a .grad that still lacks terms
            self._handles.append(register_optimizer_step_pre_hook(_flush_hook(self)))
        for module in model.modules():
            _ATTACHED[module] = self

    # ------------------------------------------------------------------ public API
    def reset(self) -> None:
        """Start a new sequence: zero every trace and the state modules keep on themselves."""
        self._check_attached()
        for layer in self.layers.values():
            layer.reset()
            layer.adapter.reset(layer.module)
        self._recent.clear()
        self.signals.reset()

    def flush(self) -> None:
        """Add every recorded per-synapse history term to ``.grad`` now (``flush_every > 1``).

        Runs by itself before each ``optimizer.step()``; call it before reading or changing
        ``.grad`` in between (clipping, logging). A no-op with ``flush_every=1``.
        """
        for layer in self.layers.values():
            layer.flush()

    def detach(self) -> None:
        """Remove every hook; the model behaves exactly as before attaching.

        A graph built while attached keeps its history terms: a backward after ``detach()``
        through steps taken before it still yields their OSTL gradient.
        """
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        for module in list(_ATTACHED):
            if _ATTACHED.get(module) is self:
                del _ATTACHED[module]
        for layer in self.layers.values():
            layer.reset()
        self._recent.clear()
        self._fused.clear()
        self._attached = False

    @contextlib.contextmanager
    def backward_at(
        self, module: nn.Module, loss_fn: Callable[[Any, int], Tensor | None]
    ) -> Iterator[None]:
        """Train a model whose ``forward`` loops over time itself, online, without editing it.

        Inside the context, every call of ``module`` (once per time step inside the model's own
        loop) computes ``loss_fn(output, t)`` and backpropagates it at once; the model's loop then
        receives the output detached, so its stacked records hold no graph and memory does not
        grow with the sequence length. ``.grad`` holds the OSTL gradient of the summed loss when
        the model's ``forward`` returns.

        Args:
            module: The module whose output the loss reads, normally the last one of a step.
            loss_fn: ``(output, t) -> loss`` for step ``t`` (0, 1, ... from entering the context),
                or None for a step without a loss.

        Example:
            >>> with learner.backward_at(net.lif2, lambda out, t: F.cross_entropy(out[1], y)):
            ...     spk_rec, mem_rec = net(x)  # net's own time loop; a backward at every step
        """
        self._check_attached()
        steps = itertools.count()

        def hook(mod: nn.Module, args: tuple, output: Any) -> Any:
            if not torch.is_grad_enabled():
                return None
            loss = loss_fn(output, next(steps))
            if loss is not None:
                loss.backward()
            return _detached(output)

        handle = module.register_forward_hook(hook)
        try:
            yield
        finally:
            handle.remove()

    def __enter__(self) -> OSTL:
        return self

    def __exit__(self, *exc: object) -> None:
        self.detach()

    @property
    def attached(self) -> bool:
        """Whether the hooks are in place."""
        return self._attached

    def trained_parameters(self) -> dict[str, str]:
        """Qualified parameter name -> stateful layer that owns it (after the first step)."""
        return {g.name: layer.path for layer in self.layers.values() for g in layer.groups}

    def execution_order(self) -> dict[str, int]:
        """Qualified module name -> order of first call (stateful layers and synapses)."""
        return dict(self._order)

    def summary(self) -> str:
        """A table of every trained parameter: module, cell, trace form, trace memory."""
        from snn_ostl.summary import render_summary

        return render_summary(self)

    def __repr__(self) -> str:
        return (
            f"OSTL(variant={self.variant!r}, learning_signal={self.learning_signal!r}, "
            f"flush_every={self.flush_every}, layers={list(self.layers)}, "
            f"attached={self._attached})"
        )

    # ------------------------------------------------------------------ hooks
    def _check_attached(self) -> None:
        if not self._attached:
            raise DetachedLearnerError(
                "this OSTL learner was detached; attach a new one with snn_ostl.OSTL(model)."
            )

    def _note(self, path: str) -> None:
        if path not in self._order:
            self._order[path] = len(self._order)

    def _synapse_pre(self, module: nn.Module, args: tuple) -> tuple | None:
        if not torch.is_grad_enabled():
            return None
        new_args = self.signals.before_synapse(module, args)
        layer = self._fused.get(module)
        if layer is not None:
            x = (new_args or args)[0]
            filtered = layer.filtered_input(x)

            # The synapse saves its input only for its weight gradient: give it x̃_t instead,
            # so its own backward computes ∂L/∂a_t · x̃_t (SPEC §3, factorised form).
            def pack(t: Tensor) -> Tensor:
                same = t.data_ptr() == x.data_ptr() and t.shape == x.shape
                return filtered if same and t.stride() == x.stride() else t

            ctx = torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)
            ctx.__enter__()
            self._saving[module] = ctx
        return new_args

    def _synapse_post(self, module: nn.Module, args: tuple, output: Tensor) -> Tensor | None:
        ctx = self._saving.pop(module, None)
        if ctx is not None:
            ctx.__exit__(None, None, None)
        if output is None or not torch.is_grad_enabled():  # None: forward raised
            return None
        self._note(self._synapse_paths[module])
        output = self.signals.after_synapse(module, args, output, self._synapse_paths[module])
        self._recent[module] = (weakref.ref(output), self.signals.synapse_input(module, args))
        return output

    def _model_post(self, module: nn.Module, args: tuple, output: Any) -> Any:
        if not torch.is_grad_enabled():
            return None
        return self.signals.after_model(output)

    def _find_synapse(self, current: Tensor) -> tuple[nn.Module, Tensor] | None:
        for module, (ref, x) in list(self._recent.items()):
            if ref() is current:
                del self._recent[module]
                return module, x
        return None

    def _make_pre(self, layer: Layer):
        def hook(module: nn.Module, args: tuple, kwargs: dict):
            adapter = layer.adapter
            # Entered in every grad mode: besides cutting gradient paths, an adapter may use it
            # to keep the framework's forward consistent (e.g. spikes in the input's dtype).
            ctx = adapter.variant_forward(module, self.variant)
            ctx.__enter__()
            layer.variant_ctx = ctx  # exited by the post-hook, which runs even if this raises
            return self._pre_step(layer, module, args, kwargs)

        return hook

    def _pre_step(self, layer: Layer, module: nn.Module, args: tuple, kwargs: dict):
        """The pre-hook's work once the variant context is entered."""
        adapter = layer.adapter
        if not torch.is_grad_enabled():
            layer.step = None
            return None
        try:
            current = adapter.current(module, args, kwargs)
            prev = adapter.read_state(module, args, kwargs)
        except StateError as err:
            raise StateError(f"{layer.path or '<root>'} ({type(module).__name__}): {err}") from err
        if prev is None:
            # The module starts from its zero state: a new sequence, so the traces restart
            # too (otherwise a forgotten learner.reset() would mix two sequences silently).
            layer.reset()
            prev = adapter.initial_state(module, current)
        inputs: dict[str | int, Tensor] = {}
        owns_input = layer.owns_input_weights
        found = None if owns_input else self._find_synapse(current)
        if not layer.bound:
            self._bind(layer, found)
        elif layer.synapse is not None and (found is None or found[0] is not layer.synapse):
            raise StateError(
                f"{layer.path} ({type(module).__name__}): its input current came from "
                f"{layer.synapse_path} at the first step but not at this one. Feed the "
                "neuron from the same Linear/Conv module at every step (no operation in "
                "between)."
            )
        if found is not None:
            inputs["input"] = found[1]
        self._note(layer.path)
        state = layer.before_step(tuple(prev), current, inputs)
        self._track_pending(layer)
        if owns_input and current.requires_grad and self.learning_signal != "backprop":
            stack = contextlib.ExitStack()
            stack.push(layer.variant_ctx)
            args, kwargs = self._internal_feedback(layer, args, kwargs, current, stack)
            layer.variant_ctx = stack
        return adapter.write_state(module, args, kwargs, state)

    def _make_post(self, layer: Layer):
        def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any):
            ctx = getattr(layer, "variant_ctx", None)
            if ctx is not None:
                layer.variant_ctx = None
                ctx.__exit__(None, None, None)
            if output is None:  # forward raised: the step never happened
                layer.step = None
            if layer.step is None:
                return None
            layer.after_step(layer.adapter.new_state(module, args, kwargs, output))
            self.signals.after_layer(layer, output)
            return None

        return hook

    def _internal_feedback(self, layer, args, kwargs, current, stack):
        """Random/direct feedback for a layer whose input weights live inside the module."""
        module, adapter = layer.module, layer.adapter
        if self.learning_signal == "direct":
            return adapter.write_input(module, args, kwargs, current.detach())
        inputs = [s for s in adapter.internal_synapses(module) if s.source == "input"]
        if inputs:
            weight = getattr(module, inputs[0].weight)
            matrix = self.signals.matrix_for(layer.path, weight)
            stack.enter_context(adapter.input_feedback(module, matrix))
        return args, kwargs

    def _bind(self, layer: Layer, found: tuple[nn.Module, Tensor] | None) -> None:
        synapse, path = None, None
        if found is not None:
            synapse = found[0]
            path = self._synapse_paths[synapse]
            for other in self.layers.values():
                if other.synapse is synapse:
                    raise StateError(
                        f"{path} feeds both {other.path} and {layer.path}; a synapse may feed "
                        "one stateful layer only. Give each layer its own Linear/Conv module."
                    )
        layer.bind(path, synapse)
        # Name every trained parameter as the model does (an adapter may reach a parameter
        # that another module registers, e.g. a Norse LIFParameters field).
        names = {id(p): n for n, p in self.model.named_parameters()}
        for g in layer.groups:
            g.name = names.get(id(g.param), g.name)
        if layer.fused_group is not None:
            self._fused[synapse] = layer
        bound = {lay.synapse for lay in self.layers.values()}
        for p, m in self._plan.synapses.items():
            if p in self._order and m not in bound and p not in self._plan.instantaneous:
                self._plan.instantaneous[p] = (
                    f"instantaneous gradient (approximation: below {layer.path})"
                )
                warnings.warn(
                    f"{p} runs before the stateful layer {layer.path} without feeding its "
                    "current directly; it is trained with its instantaneous gradient (an "
                    "approximation, see learner.summary()).",
                    stacklevel=4,
                )

    @property
    def pending_bytes(self) -> int:
        """Bytes of eligibility snapshots that wait for a backward pass."""
        return sum(layer.pending_bytes for layer in self.layers.values())

    def _track_pending(self, layer: Layer) -> None:
        """Refuse to pile up eligibility snapshots past the budget (whole-sequence backward)."""
        pending = self.pending_bytes
        if pending > self.trace_budget:
            raise TraceBudgetError(
                f"{layer.path}: {pending / 2**20:.1f} MiB of eligibility snapshots wait for a "
                "backward pass (a backward over the whole sequence keeps one per step), more "
                f"than trace_budget={self.trace_budget / 2**20:.1f} MiB. Call loss.backward() "
                "every step or every few steps, or raise trace_budget."
            )
