"""Checkpoint and resume a learner in the middle of a sequence.

:meth:`snn_ostl.OSTL.state_dict` holds everything the next step's gradient depends on besides
the model's parameters: every layer's eligibility traces (any form, open ``flush_every``
windows moved to their latest step), the derived factors of the last step, the fixed random
feedback matrices, and the state each layer returned last (restored on modules that keep it
on themselves, such as snnTorch neurons with ``init_hidden=True``). Save it between steps,
after the backward pass of the last one; a freshly built model and learner that load it (and
the user's own state tensors, for explicit-state models) continue with the gradients an
uninterrupted run would give.

A layer fed by one Linear/Conv (or by weights of its own) is planned again at load time; a
layer fed through a chain of operations is planned from its first step's graph, and its
traces are put in place right after.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

from snn_ostl.chains.windowed import window_for
from snn_ostl.errors import ConfigurationError, Problem, StateError
from snn_ostl.traces.window import PLACEHOLDER

__all__ = ["FORMAT", "install", "layer_state", "load", "save"]

#: Version of the checkpoint layout.
FORMAT = 1
_PLACEHOLDER = "per-synapse trace held by its window"


def _pack(value: Any) -> Any:
    """A trace (list of tensors, numbers, None, placeholders) as plain saveable values."""
    if isinstance(value, list):
        return [_pack(v) for v in value]
    if value is PLACEHOLDER:
        return _PLACEHOLDER
    if isinstance(value, Tensor):
        return value.detach().clone()
    return value


def _unpack(value: Any, like: Tensor) -> Any:
    if isinstance(value, list):
        return [_unpack(v, like) for v in value]
    if isinstance(value, str) and value == _PLACEHOLDER:
        return PLACEHOLDER
    if isinstance(value, Tensor):
        return value.to(device=like.device)
    return value


def _refuse(layer: Any, why: str, fix: str) -> ConfigurationError:
    return ConfigurationError([Problem(layer.path, type(layer.module).__name__, why, fix)])


def layer_state(layer: Any) -> dict[str, Any]:
    """What one layer's next step needs, as saveable values."""
    if layer.fed_back and layer.has_traces:
        raise _refuse(
            layer,
            "its recurrence is written in the forward (its own spikes fed back through a "
            "synapse); the fed-back spikes' trace is tied to the output tensor of the last "
            "step, which a checkpoint cannot carry.",
            "save at the end of a sequence (after learner.reset()), or use variant='ostl-no-h'.",
        )
    groups = {}
    for g in layer.groups:
        if g.pending is not None:  # an advance still to apply: apply it now
            layer.snapshots.flush(g)
        window = None
        if g.window is not None:
            if g.window.needed() != g.window.latest:
                raise StateError(
                    f"{layer.path} ({type(layer.module).__name__}): a step's backward has not "
                    "run yet; save the learner's state between steps, after the backward pass "
                    "of the last one."
                )
            g.window.flush(g.window.latest)  # its terms reach .grad now, the base moves up
            base = g.window.base
            window = None if base is None else {k: t.detach().clone() for k, t in base.items()}
        groups[g.name] = {
            "form": g.form,
            "trace": _pack(g.trace),
            "window": window,
            "presynaptic": sorted(g.presynaptic),
            "folded": g.folded,
            "states": g.states,
        }
    return {
        "binding": "chain" if layer.block is not None else "direct",
        "synapse": layer.synapse_path,
        "has_traces": layer.has_traces,
        "batch": layer.batch,
        "neuron_shape": None if layer.neuron_shape is None else tuple(layer.neuron_shape),
        "dtype": layer.dtype,
        "decay": layer.decay,
        "derived": _pack_derived(layer.derived),
        "last_state": None
        if layer._last_state is None
        else [a.clone() for a, _version, _graph in layer._last_state],
        "groups": groups,
    }


def _pack_derived(derived: dict) -> dict:
    return {k: (j, _pack(d)) for k, (j, d) in derived.items()}


def save(learner: Any) -> dict[str, Any]:
    """The learner's state (see :meth:`snn_ostl.OSTL.state_dict`)."""
    rule = learner.rule
    if not rule.uses_engine and rule.trace_bytes():
        raise ValueError(
            f"rule {rule.name!r} keeps traces of its own, which a checkpoint saved in the "
            "middle of a sequence does not cover: save between sequences (after "
            "learner.reset())."
        )
    return {
        "format": FORMAT,
        "variant": learner.variant,
        "learning_signal": learner.learning_signal,
        "flush_every": learner.flush_every,
        "feedback": {str(k): m.clone() for k, m in learner.signals.matrices.items()},
        "feedback_seen": {str(k): w.clone() for k, w in learner.signals._seen.items()},
        "rule": learner.rule.name,
        "rule_state": learner.rule.state_dict(),
        "layers": {path: layer_state(layer) for path, layer in learner.layers.items()},
    }


def load(learner: Any, state: dict[str, Any]) -> None:
    """Check ``state`` against the learner and plan every layer it can plan now."""
    if state.get("format") != FORMAT:
        raise ValueError(
            f"this checkpoint has layout {state.get('format')!r}; this version of snn_ostl "
            f"reads layout {FORMAT}."
        )
    if state.get("rule", learner.rule.name) != learner.rule.name:
        raise ValueError(
            f"the checkpoint was saved by a learner with rule={state['rule']!r}, this one has "
            f"rule={learner.rule.name!r}; create the learner with the same rule."
        )
    for option in ("variant", "learning_signal", "flush_every"):
        if state[option] != getattr(learner, option):
            raise ValueError(
                f"the checkpoint was saved by a learner with {option}={state[option]!r}, "
                f"this one has {option}={getattr(learner, option)!r}; create the learner "
                "with the same options."
            )
    missing = set(state["layers"]) ^ set(learner.layers)
    if missing:
        raise ValueError(
            "the checkpoint's stateful layers differ from this model's: "
            f"{sorted(missing)}. Load it into a model built the same way."
        )
    learner.signals.matrices.update(state["feedback"])
    learner.signals._seen.update(state.get("feedback_seen", {}))
    learner.rule.load_state_dict(state.get("rule_state", {}))
    for path, saved in state["layers"].items():
        layer = learner.layers[path]
        learner._unbind(layer)
        layer.reset()
        if not saved["has_traces"]:
            continue
        if saved["binding"] == "direct":
            synapse = None
            if saved["synapse"] is not None:
                synapse = learner.model.get_submodule(saved["synapse"])
            learner._bind(layer, None if synapse is None else (synapse, None))
            install(layer, saved)
        else:
            layer.pending_load = saved  # installed once its first step has planned it
        if saved["last_state"] is not None:
            states = tuple(_unpack(s, _like(layer)) for s in saved["last_state"])
            layer.adapter.restore_state(layer.module, states)


def _like(layer: Any) -> Tensor:
    p = next(iter(layer.module.parameters()), None)
    if p is None and layer.groups:
        p = layer.groups[0].param
    return p if p is not None else torch.empty(0)


def install(layer: Any, saved: dict[str, Any]) -> None:
    """Put saved traces in place in a planned layer."""
    layer.pending_load = None
    names = {g.name for g in layer.groups}
    if names != set(saved["groups"]):
        raise StateError(
            f"{layer.path} ({type(layer.module).__name__}): the checkpoint trains "
            f"{sorted(saved['groups'])} in this layer, the model now trains {sorted(names)}. "
            "Freeze the same parameters as when the checkpoint was saved."
        )
    for g in layer.groups:
        entry = saved["groups"][g.name]
        if entry["form"] != g.form:
            raise StateError(
                f"{layer.path}: {g.name} was traced in the {entry['form']} form when saved and "
                f"is planned in the {g.form} form now; build the model the same way."
            )
        like = g.param
        g.trace = _unpack(entry["trace"], like)
        g.presynaptic = frozenset(entry["presynaptic"])
        g.folded = entry["folded"]
        g.states = entry["states"]
        windowed = g.form == "per-synapse" and (g.chain is None or g.fold is not None)
        if entry["window"] is not None or (layer.flush_every > 1 and windowed):
            states = sorted(set(range(len(g.trace or []))) - g.presynaptic)
            window = window_for(layer, g, states)
            if entry["window"] is not None:
                window.base = {k: t.to(like.device) for k, t in entry["window"].items()}
            g.window = window
    like = layer.groups[0].param if layer.groups else torch.empty(0)
    layer.batch = saved["batch"]
    layer.neuron_shape = (
        None if saved["neuron_shape"] is None else torch.Size(saved["neuron_shape"])
    )
    layer.dtype, layer.device = saved["dtype"], like.device
    layer.decay = saved["decay"]
    layer.derived = {k: (j, _unpack(d, like)) for k, (j, d) in saved["derived"].items()}
    if saved["last_state"] is not None:
        layer._last_state = tuple(
            (s, s._version, False) for s in (_unpack(t, like) for t in saved["last_state"])
        )
    layer.has_traces = True
