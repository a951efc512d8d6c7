"""The checks that run at every step, so that a broken assumption never yields a wrong gradient.

The traces of a layer are only valid for the computation they were built from. Each check here
compares, at the start of a step, what the layer receives with what its traces assume, and
either handles the difference exactly or raises a typed error naming the module and the fix:

- the module is the one the learner hooked (a ``copy.deepcopy`` of an attached model carries
  the hooks along);
- no autocast region is active (the traces would be built from rounded currents);
- the previous state is the one the layer returned at its last step. A state the user replaced
  by a constant (snnTorch's ``utils.reset``, fresh zeros, a step under ``torch.no_grad()``)
  starts the traces afresh, which is exactly what BPTT does there (no gradient flows into a
  constant); a state changed by an operation that has a gradient is refused;
- the parameters the layer trains are the same objects with the same ``requires_grad`` as when
  its traces were planned. Between sequences the layer is planned again; within one, refused.
- dtype, device, batch and neuron shape change only between sequences (see ``Layer.check``).

Each costs a few attribute reads per step.
"""

from __future__ import annotations

import weakref
from typing import Any

import torch
from torch import Tensor, nn

from snn_ostl.errors import ConfigurationError, Problem, StateError
from snn_ostl.hooks.distributed import (
    average_across_ranks,
    find_ddp,
    refuse_without_ddp,
    running_distributed,
)

__all__ = ["LayerGuards", "StepGuards"]

_AUTOCAST_DEVICES = ("cpu", "cuda")


class _Sanctioned:
    """A weak set of tensors by identity (a WeakSet would compare tensors with ``==``)."""

    def __init__(self) -> None:
        self._by_id: weakref.WeakValueDictionary[int, Tensor] = weakref.WeakValueDictionary()

    def add(self, t: Tensor) -> None:
        self._by_id[id(t)] = t

    def __contains__(self, t: object) -> bool:
        return self._by_id.get(id(t)) is t


def _where(layer: Any) -> str:
    return f"{layer.path or '<root>'} ({type(layer.module).__name__})"


class LayerGuards:
    """The per-layer half: what the layer's traces were built for."""

    _last_state: tuple[tuple[Tensor, int, bool], ...] | None = None
    #: learner.reset() ran since the last step: a state with a graph must not continue.
    _after_reset = False
    #: A checkpoint's traces for a chain-fed layer, put in place once its first step plans it.
    pending_load: dict | None = None
    _watch: tuple[tuple[int, bool], ...] | None = None
    _watched: tuple[tuple[str, nn.Module], ...] = ()

    def record_state(self, new: tuple[Tensor, ...]) -> None:
        """Remember the state the layer produced (an alias without graph, its version, and
        whether it carried a graph)."""
        self._last_state = tuple((t.detach(), t._version, t.grad_fn is not None) for t in new)
        self._after_reset = False

    def continuity(self, prev: tuple[Tensor, ...], sanctioned: Any = ()) -> str:
        """``"same"``, ``"fresh"`` (a constant state: start again) or ``"foreign"``.

        A constant state restarts the traces even when its values are the ones returned (a
        ``.detach()`` of them, or a step under ``no_grad`` that happens to land there): BPTT's
        gradient stops at a constant. Tensors the learner itself detached (``backward_at``)
        continue.
        """
        last = self._last_state
        if last is None:
            return "fresh"
        if len(last) != len(prev):
            return "foreign" if any(t.grad_fn is not None for t in prev) else "fresh"
        verdict = "same"
        for t, (a, version, graph) in zip(prev, last):
            stored = (
                t.data_ptr() == a.data_ptr()
                and t._version == version
                and t.shape == a.shape
                and t.stride() == a.stride()
            )
            if stored and (t.grad_fn is not None or not graph or t in sanctioned):
                continue
            if t.grad_fn is not None:
                return "foreign"
            if graph or not (t.shape == a.shape and torch.equal(t, a)):
                verdict = "fresh"  # (a saved checkpoint's state has no graph: equal values)
        return verdict

    def watch(self, modules: list[tuple[str, nn.Module]]) -> None:
        """Fix which modules' parameters the traces were planned for (at binding)."""
        self._watched = tuple(modules)
        self._watch = self._watch_key()

    def _watch_key(self) -> tuple[tuple[int, bool], ...]:
        return tuple(
            (id(p), p.requires_grad)
            for _path, m in self._watched
            for p in m._parameters.values()
            if p is not None
        )

    def changed_parameters(self) -> list[str]:
        """Qualified names of watched parameters replaced or (un)frozen since binding."""
        if self._watch is None or self._watch_key() == self._watch:
            return []
        then = dict(self._watch)
        names = []
        for path, m in self._watched:
            for name, p in m._parameters.items():
                if p is None:
                    continue
                if id(p) not in then or then[id(p)] != p.requires_grad:
                    names.append(f"{path}.{name}" if path else name)
        return names or ["a parameter"]

    def unbind(self) -> None:
        """Forget the plan of the layer's traces (the next step plans them again)."""
        self.reset()
        self.synapse = self.synapse_path = None
        self.groups, self._params = [], []
        self.bound = False
        self.all_fused = False
        self._fused_roles = {}
        self.block = None
        self.fed_back = False
        self._fb_settled = False
        self._fb_first = None
        self.neuron_shape = self.dtype = self.device = None
        self._watch, self._watched = None, ()
        self._last_state = None
        self.fused_ran = False  # the new plan's first step starts its own filtered input


class StepGuards:
    """The learner's half: the checks of one step, run by the stateful module's pre-hook."""

    def _guard_call(self, layer: Any, module: nn.Module) -> None:
        if module is not layer.module:
            raise StateError(
                f"{_where(layer)}: the learner's hooks ran for a different module object, a "
                "copy of the attached one (copy.deepcopy of an attached model copies its "
                "hooks). Detach the learner before copying (learner.detach()), or attach a new "
                "learner to the copy after removing the old one's hooks from it."
            )
        for device in _AUTOCAST_DEVICES:
            if torch.is_autocast_enabled(device):
                raise ConfigurationError(
                    [
                        Problem(
                            layer.path,
                            type(module).__name__,
                            f"a torch.autocast region ({device}) is active: the eligibility "
                            "traces would be built from currents rounded to the lower "
                            "precision and no longer match the gradient.",
                            "run the forward of an attached model outside torch.autocast "
                            "(train in the model's own dtype, e.g. float32 or bfloat16 "
                            "throughout via model.to(torch.bfloat16)).",
                        )
                    ]
                )

    _distributed_checked = False

    def _check_distributed(self, layer: Any, module: nn.Module) -> None:
        """At the first step: find DDP when several ranks run and windows flush later."""
        self._distributed_checked = True
        if self.flush_every == 1 or not running_distributed():
            return
        ddp = find_ddp(self.model)
        if ddp is None:
            self._distributed_checked = False  # refused at every step until it is fixed
            raise refuse_without_ddp(layer.path, module)
        reduce = average_across_ranks(ddp)
        for each in self.layers.values():
            each.grad_reduce = reduce
            for g in each.groups:  # windows a checkpoint restored before this first step
                if g.window is not None:
                    g.window.reduce = reduce

    def _guard_state(self, layer: Any, prev: tuple[Tensor, ...] | None, current: Tensor) -> bool:
        """Whether the layer continues its sequence (False: it starts again from ``prev``)."""
        if prev is None or not layer.bound:
            return False
        verdict = layer.continuity(tuple(prev), self._sanctioned)
        if verdict == "same" and layer._after_reset and any(t.grad_fn is not None for t in prev):
            started = (
                "learner.reset() started a new sequence"
                if layer._after_reset == "learner"
                else "an earlier call of this module started a new sequence (it received a "
                "constant state, and its traces restarted)"
            )
            raise StateError(
                f"{_where(layer)}: {started}, but the layer received the state it returned "
                "before, with its graph: the sequence goes on. Pass a fresh state (or "
                "state.detach(), to start the new sequence from its values), or do not reset "
                "to continue the sequence."
            )
        if verdict == "foreign":
            layer.check(tuple(prev), current)  # a new shape, dtype or device says more
            raise StateError(
                f"{_where(layer)}: the state it received is not the one it returned at its "
                "previous call, and it carries a gradient from elsewhere: an operation of the "
                "model's own on the returned state, or a second sequence through the same "
                "module (one neuron module stepped for two streams). The eligibility traces "
                "follow one sequence per module. Pass the returned state back unchanged, give "
                "each stream its own module, or detach the state to start a new sequence "
                "from it."
            )
        return verdict == "same"

    def _guard_plan(self, layer: Any, current: Tensor, prev: tuple[Tensor, ...]) -> None:
        """Plan again at a new sequence if parameters, dtype, device or shape changed; refuse
        a change of parameters within one (the others are refused by ``Layer.check``)."""
        if not layer.bound:
            return
        changed = layer.changed_parameters()
        if not changed:
            moved = layer.dtype is not None and (
                (current.dtype, current.device, prev[0].shape[1:])
                != (layer.dtype, layer.device, layer.neuron_shape)
            )
            if moved and not layer.has_traces:
                self._unbind(layer)
            return
        if layer.has_traces:
            raise StateError(
                f"{_where(layer)}: {', '.join(changed)} was replaced or had its "
                "requires_grad changed in the middle of a sequence; the eligibility traces "
                "were built for the parameters of the sequence's first step. Replace or "
                "(un)freeze parameters between sequences, after learner.reset()."
            )
        self._unbind(layer)

    @property
    def _sanctioned(self) -> Any:
        """States the learner itself detached (``backward_at``): they continue the sequence."""
        return self.__dict__.setdefault("_detached_by_learner", _Sanctioned())

    def _install_checkpoint(self, layer: Any, prev: tuple[Tensor, ...]) -> None:
        """A chain-fed layer planned at its first step after ``load_state_dict``."""
        from snn_ostl.checkpoint import install

        install(layer, layer.pending_load)
        if layer.continuity(tuple(prev), self._sanctioned) != "same":
            layer.reset()
            raise StateError(
                f"{_where(layer)}: the first step after learner.load_state_dict() received a "
                "state that is not the one saved with the checkpoint. Pass the saved state "
                "(or, to start a new sequence, call learner.reset() before the step)."
            )

    def _unbind(self, layer: Any) -> None:
        for table in (self._fused, self._feeds):
            for module in [m for m, owner in table.items() if owner is layer]:
                del table[module]
        self._names = None
        layer.unbind()
