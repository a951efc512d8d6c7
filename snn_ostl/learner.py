"""The public learner: attach OSTL to an existing model with hooks, detach it cleanly.

>>> learner = snn_ostl.OSTL(model)          # validates, then attaches
>>> for x_t, y_t in sequence:
...     loss = loss_fn(model(x_t), y_t)
...     loss.backward()                     # .grad now holds the OSTL gradient
>>> learner.detach()

How it works (details on the theory page): before each step of a stateful module the learner
detaches the module's previous state and passes it through an :func:`snn_ostl.hooks.inject.inject`
node that holds the eligibility snapshot ``e_{t-1}``; after the step it advances the traces.
The user's backward then yields the instantaneous gradient plus the history term, which is the
OSTL gradient.
"""

from __future__ import annotations

import contextlib
import itertools
import threading
import weakref
from collections.abc import Callable, Iterator
from typing import Any, ClassVar

import torch
from torch import Tensor, nn
from torch.optim.optimizer import register_optimizer_step_pre_hook

from snn_ostl.errors import (
    AlreadyAttachedError,
    Problem,
    StateError,
    TraceBudgetError,
    UnsupportedModuleError,
)
from snn_ostl.hooks.forward import ForwardHooks
from snn_ostl.hooks.layer import Layer
from snn_ostl.hooks.signals import FeedbackSignals
from snn_ostl.rules.base import Rule
from snn_ostl.validate import plan_model, supported_names

__all__ = ["LEARNING_SIGNALS", "OSTL", "VARIANTS", "is_attached"]

VARIANTS = ("ostl", "ostl-no-h", "eprop")
LEARNING_SIGNALS = ("backprop", "random", "adaptive", "direct")


# module -> learner, for every module of every attached model (weak: never keeps a model alive).
class _Inert:
    """What a deep copy of an attached model holds in place of the learner.

    A hook that is a bound method is copied as the same function bound to this object: with
    no module of its own, every hook returns at once.
    """

    _synapse_paths: ClassVar[dict] = {}
    _chain_paths: ClassVar[dict] = {}
    _saving: ClassVar[dict] = {}
    _attached = False


_INERT = _Inert()

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


def _tensors(output: Any) -> list[Tensor]:
    if isinstance(output, Tensor):
        return [output]
    if isinstance(output, (tuple, list)):
        return [t for o in output for t in _tensors(o)]
    return []


#: Learners with ``flush_every > 1``; one process-wide optimizer pre-hook serves them all, so
#: that attaching or detaching in one thread never changes torch's hook table while another
#: thread's optimizer walks it.
_FLUSHED: weakref.WeakSet[OSTL] = weakref.WeakSet()
_FLUSHED_LOCK = threading.Lock()
_FLUSH_HOOK: list[Any] = []


def _flush_before_step(optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
    """Flush the learners whose parameters ``optimizer`` updates (and no other)."""
    with _FLUSHED_LOCK:
        learners = list(_FLUSHED)
    if not learners:
        return
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    for learner in learners:
        # another model's step (another learner, possibly in another thread) must not flush
        # this one mid-step
        if learner.attached and any(
            id(g.param) in held for layer in learner.layers.values() for g in layer.groups
        ):
            learner.flush()


def _flush_on_optimizer_steps(learner: OSTL) -> None:
    with _FLUSHED_LOCK:
        if not _FLUSH_HOOK:
            _FLUSH_HOOK.append(register_optimizer_step_pre_hook(_flush_before_step))
        _FLUSHED.add(learner)


def _stop_flushing(learner: OSTL) -> None:
    with _FLUSHED_LOCK:
        _FLUSHED.discard(learner)


def _is_compiled(model: nn.Module) -> bool:
    """Whether ``model`` is the wrapper ``torch.compile`` returns for a module."""
    return type(model).__name__ == "OptimizedModule" and isinstance(
        getattr(model, "_orig_mod", None), nn.Module
    )


def is_attached(model: nn.Module) -> bool:
    """Whether an OSTL learner is attached to ``model`` or to any of its modules."""
    return any(m in _ATTACHED for m in model.modules())


def _resolve_rule(rule: str | Rule, variant: str | None, learning_signal: str | None) -> Rule:
    """The learning rule of ``OSTL(model, rule=..., variant=..., learning_signal=...)``.

    ``variant`` and ``learning_signal`` are the engine's two settings; with the default rule
    they pick an :class:`~snn_ostl.rules.OSTLRule`, with another rule they must agree with it.
    """
    from snn_ostl.rules import OSTLRule, make_rule

    if rule == "ostl" and (variant is not None or learning_signal is not None):
        if variant is not None:
            _check_choice("variant", variant, VARIANTS)
        if learning_signal is not None:
            _check_choice("learning_signal", learning_signal, LEARNING_SIGNALS)
        return OSTLRule(variant or "ostl", learning_signal or "backprop")
    made = make_rule(rule)
    for option, value in (("variant", variant), ("learning_signal", learning_signal)):
        if value is not None and value != getattr(made, option):
            raise ValueError(
                f"OSTL options rule={made.name!r} and {option}={value!r} disagree: the rule "
                f"sets {option}={getattr(made, option)!r}. Pass the rule alone, or "
                f"{option}= alone (with the default rule)."
            )
    return made


def _check_choice(name: str, value: Any, allowed: tuple[str, ...]) -> None:
    if value not in allowed:
        raise ValueError(
            f"OSTL option {name}={value!r} is not valid; allowed values: "
            + ", ".join(repr(a) for a in allowed)
        )


class OSTL(ForwardHooks):
    """Online Spatio-Temporal Learning attached to an existing model.

    Args:
        model: The user's model; it is not wrapped or copied.
        rule: The learning rule: a name from :func:`snn_ostl.rules.rule_names` (``"ostl"``,
            ``"eprop-random"``, ``"rflo"``, ``"snap-1"``, ``"decolle"``, ``"superspike"``, ...)
            or a rule object with options, e.g. ``snn_ostl.rules.SuperSpike(feedback="random")``.
        variant: With the default rule: ``"ostl"`` (exact eligibility), ``"ostl-no-h"``
            (recurrent weights left out of the Jacobian) or ``"eprop"`` (no path through the
            layer's own spikes).
        learning_signal: With the default rule: ``"backprop"`` (exact instantaneous backprop),
            ``"random"`` (fixed random feedback matrices in place of the transposed weights),
            ``"adaptive"`` (random matrices that follow their weights' updates) or ``"direct"``
            (the output error sent to every layer through fixed random matrices).
        seed: Seed of the random feedback matrices.
        strict: Refuse modules the learner cannot train exactly. With ``strict=False`` they get
            their instantaneous gradient, and :meth:`summary` says so.
        instantaneous_below: Train a synapse or normalisation that runs before a stateful
            layer without feeding its current through a chain (a feature extractor below the
            first spiking layer) with its instantaneous gradient, an approximation that
            :meth:`summary` marks. False (default, with ``strict=True``): such a module is
            refused at the first step, before any gradient is written.
        trace_budget: Bytes of eligibility snapshots that may wait for a backward pass (a
            whole-sequence backward keeps one per step). Past it, :class:`TraceBudgetError`.
        advance_in_backward: Advance per-synapse traces inside each step's backward, in place
            and in the same pass as the gradient (one pass over the largest tensors instead of
            three). A step can then be backpropagated only once; set False to allow
            ``retain_graph=True`` and repeated backward passes through a step.
        flush_every: Per-synapse weights (e.g. under Norse's ``LIFCell``) record each step's
            state gradient and add their history terms to ``.grad`` every this many steps, in
            one pass over the trace instead of one per step (exact; see
            :mod:`snn_ostl.traces.window`). Flushes also run before every ``optimizer.step()``, and
            on
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
        rule: str | Rule = "ostl",
        variant: str | None = None,
        learning_signal: str | None = None,
        seed: int = 0,
        strict: bool = True,
        instantaneous_below: bool = False,
        trace_budget: int = 2**31,
        advance_in_backward: bool = True,
        flush_every: int = 1,
    ) -> None:
        from snn_ostl.adapters import load_available

        rule = _resolve_rule(rule, variant, learning_signal)
        variant, learning_signal = rule.variant, rule.learning_signal
        _check_choice("variant", variant, VARIANTS)
        if isinstance(flush_every, bool) or not isinstance(flush_every, int) or flush_every < 1:
            raise ValueError(
                f"OSTL option flush_every={flush_every!r} is not valid: pass a whole number of "
                "steps >= 1 (1 adds every history term to .grad in that step's backward)."
            )
        # torch.compile(model) wraps the model; its compiled forward still calls the modules
        # of the original one, whose hooks (run eagerly, outside the compiled graphs) hold the
        # learner: attach to those
        model = getattr(model, "_orig_mod", model) if _is_compiled(model) else model
        if is_attached(model):
            raise AlreadyAttachedError(
                f"an OSTL learner is already attached to this {type(model).__name__} (or to one "
                "of its modules). Call learner.detach() on it first, or use one learner."
            )
        load_available()
        plan = plan_model(model, variant)
        plan.problems.extend(rule.problems(self, plan))
        if learning_signal in ("random", "adaptive"):
            # (a torch RNN cell, whose input weights live inside its step, is refused at its
            # first step if its input carries a gradient: at the bottom of a model it needs none)
            for path, module in plan.synapses.items():
                if type(module) not in (nn.Linear, nn.Conv1d, nn.Conv2d):
                    plan.problems.append(
                        Problem(
                            path,
                            type(module).__name__,
                            f"learning_signal={learning_signal!r} sends the error through a "
                            "random matrix shaped like a Linear's or a Conv1d/Conv2d's weight; "
                            "there is none for this synapse type.",
                            "use learning_signal='backprop' or 'direct' for this model.",
                        )
                    )
        if plan.problems and strict:
            raise UnsupportedModuleError(plan.problems, supported_names())
        self.model = model
        self.rule = rule
        self.variant, self.learning_signal, self.strict = variant, learning_signal, strict
        self.instantaneous_below = instantaneous_below or not strict
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
        self._recent: dict[nn.Module, tuple[Tensor, Tensor]] = {}  # synapse -> (output, input)
        self._fused: dict[nn.Module, Layer] = {}  # synapse -> layer whose weight it fuses
        # id of each layer's latest output -> (weak reference, layer, its grad_fn): where a
        # synapse's input came from (recurrence written in the user's forward), and where a
        # chain walk stops
        self._outputs: dict[int, tuple[weakref.ref, Layer, Any]] = {}
        self._latest: dict[str, int] = {}  # layer path -> id of its latest output
        self._names: dict[int, str] | None = None  # id(parameter) -> qualified name
        self._feeds: dict[nn.Module, Layer] = {}  # synapse -> the chain-fed layer it feeds
        self._recurrent_now: set[nn.Module] = set()  # synapses fed back a layer's own output
        self._saving: dict[nn.Module, Any] = {}
        self._order: dict[str, int] = {}
        self._handles: list[Any] = []
        self._attached = True
        self.signals = FeedbackSignals(learning_signal, seed, getattr(rule, "feedback_decay", 0.0))
        for layer in self.layers.values():
            layer.rule = rule
        # torch.compiler.disable: a compiled forward runs the hooks eagerly, between its
        # graphs (tracing them would bake one step's bookkeeping into the graph)
        eager = torch.compiler.disable
        engine_layers = self.layers if rule.uses_engine else {}
        for layer in engine_layers.values():
            layer.on_refused = self._refused_windows
            self._handles.append(
                layer.module.register_forward_pre_hook(
                    eager(self._make_pre(layer)), with_kwargs=True
                )
            )
            self._handles.append(
                # always_call: the post-hook also undoes the pre-hook when forward raises
                layer.module.register_forward_hook(
                    eager(self._make_post(layer)), with_kwargs=True, always_call=True
                )
            )
        for module in self._synapse_paths if rule.uses_engine else ():
            self._handles.append(module.register_forward_pre_hook(eager(self._synapse_pre)))
            self._handles.append(
                module.register_forward_hook(eager(self._synapse_post), always_call=True)
            )
        self._chain_paths = {m: p for p, m in plan.chain_modules.items()}
        for module in self._chain_paths if rule.uses_engine else ():  # (which ran first)
            self._handles.append(module.register_forward_pre_hook(eager(self._chain_module_pre)))
        if learning_signal == "direct":
            self._handles.append(model.register_forward_hook(eager(self._model_post)))
        if flush_every > 1:
            # every optimizer, so that no step ever reads a .grad that still lacks terms
            _flush_on_optimizer_steps(self)
        for module in model.modules():
            _ATTACHED[module] = self
        self._handles.extend(rule.attach(self))

    # ------------------------------------------------------------------ public API
    def reset(self) -> None:
        """Start a new sequence: zero every trace and the state modules keep on themselves."""
        self._check_attached()
        refused = self._refused_windows()  # those close below without adding their terms
        for layer in self.layers.values():
            layer.reset()
            layer.adapter.reset(layer.module)
            if layer._after_reset:
                layer._after_reset = "learner"  # (for the message of a state carried on)
        self._recent.clear()
        self._outputs.clear()
        self._latest.clear()
        self._recurrent_now.clear()
        self.signals.reset()
        self.rule.reset()
        if refused is not None:
            raise refused

    def flush(self) -> None:
        """Add every recorded per-synapse history term to ``.grad`` now (``flush_every > 1``).

        Runs by itself before each ``optimizer.step()``; call it before reading or changing
        ``.grad`` in between (clipping, logging). A no-op with ``flush_every=1``.

        Raises:
            StateError: ``.grad`` was changed since the last backward pass while terms were
                waiting (every such weight is checked before any term is added).
        """
        refused = self._refused_windows()
        if refused is not None:
            raise refused
        for layer in self.layers.values():
            layer.flush()

    def _refused_windows(self) -> StateError | None:
        """Check every window's ``.grad`` before any term is added; the first refusal (every
        refused window is marked, and lets its terms go when it closes)."""
        errors = []
        for layer in self.layers.values():
            for g in layer.groups:
                if g.window is not None and g.window.slots and not g.window.spoiled:
                    try:
                        g.window.check_grad()
                    except StateError as err:
                        errors.append(err)
        return errors[0] if errors else None

    def state_dict(self) -> dict[str, Any]:
        """Everything the next step's gradient needs besides the model's own parameters.

        Save it between steps, after the last step's backward pass: every layer's traces,
        the fixed random feedback matrices and the state each layer returned last (which the
        learner puts back on modules that keep their state on themselves, such as snnTorch
        neurons with ``init_hidden=True``). With ``flush_every > 1`` the open windows are
        flushed first (their terms reach ``.grad`` now rather than at the next flush). A layer
        with recurrence written in the forward cannot be saved mid-sequence.

        Example::

            torch.save({"model": model.state_dict(), "learner": learner.state_dict(),
                        "state": mem}, "ckpt.pt")
            # later, in a fresh process, after building model and learner the same way:
            saved = torch.load("ckpt.pt")
            model.load_state_dict(saved["model"])
            learner.load_state_dict(saved["learner"])
            mem = saved["state"]  # explicit-state models: the user's own state tensors

        Returns:
            A dict of tensors and plain values for ``torch.save``.
        """
        from snn_ostl.checkpoint import save

        self._check_attached()
        return save(self)

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Continue the sequence a :meth:`state_dict` was saved in.

        Load the model's parameters first. The next step must receive the state that was
        saved with the checkpoint (or start a new sequence: ``reset()`` or a fresh state).

        Raises:
            ValueError: The checkpoint comes from other options or another model.
            StateError: The model now trains other parameters than when it was saved.
        """
        from snn_ostl.checkpoint import load

        self._check_attached()
        load(self, state)

    def __deepcopy__(self, memo: dict) -> _Inert:
        # ``copy.deepcopy(model)`` copies the model's hooks, and a hook that is a bound method
        # of the learner copies the learner with it. The copy of an attached model is a plain
        # model: its hooks answer to nothing (the layer hooks see a module that is not theirs).
        return _INERT

    def detach(self) -> None:
        """Remove every hook; the model behaves exactly as before attaching.

        A graph built while attached keeps its history terms: a backward after ``detach()``
        through steps taken before it still yields their OSTL gradient.
        """
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
        _stop_flushing(self)
        for module in list(_ATTACHED):
            if _ATTACHED.get(module) is self:
                del _ATTACHED[module]
        refused = self._refused_windows()
        for layer in self.layers.values():
            layer.reset()
        self._recent.clear()
        self._fused.clear()
        self._outputs.clear()
        self._latest.clear()
        self._attached = False
        if refused is not None:
            raise refused

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
            detached = _detached(output)
            for t in _tensors(detached):  # the model's loop passes them back: not a restart
                self._sanctioned.add(t)
            return detached

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

    def trace_bytes(self) -> int:
        """Bytes the eligibility traces hold now (what the summary's last line totals).

        They depend on the batch and the layer sizes, never on the sequence length; after
        :meth:`reset` they are released until the next step.
        """
        engine = sum(g.trace_bytes() for layer in self.layers.values() for g in layer.groups)
        own = getattr(self.rule, "trace_bytes", None)  # a rule's own traces (SuperSpike)
        return engine + (own() if own is not None else 0)

    def summary(self) -> str:
        """A table of every trained parameter: module, cell, trace form, trace memory."""
        from snn_ostl.summary import render_summary

        return render_summary(self)

    def __repr__(self) -> str:
        return (
            f"OSTL(rule={self.rule.describe()!r}, variant={self.variant!r}, "
            f"learning_signal={self.learning_signal!r}, "
            f"flush_every={self.flush_every}, layers={list(self.layers)}, "
            f"attached={self._attached})"
        )

    @property
    def pending_bytes(self) -> int:
        """Bytes of eligibility snapshots that wait for a backward pass."""
        return sum(layer.pending_bytes for layer in self.layers.values())

    def _track_pending(self, layer: Layer) -> None:
        """Refuse to pile up eligibility snapshots past the budget (whole-sequence backward)."""
        if layer.all_fused:  # keeps no snapshot: the synapse's own backward does the work
            return
        pending = self.pending_bytes
        if pending > self.trace_budget:
            raise TraceBudgetError(
                f"{layer.path}: {pending / 2**20:.1f} MiB of eligibility snapshots wait for a "
                "backward pass (a backward over the whole sequence keeps one per step), more "
                f"than trace_budget={self.trace_budget / 2**20:.1f} MiB. Call loss.backward() "
                "every step or every few steps, or raise trace_budget."
            )
