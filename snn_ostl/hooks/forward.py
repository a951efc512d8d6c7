"""How a learner sits in the model's forward pass: the module hooks of :class:`snn_ostl.OSTL`.

Before each step of a stateful module the pre-hook detaches the previous state, binds the layer
to the synapse that fed it and attaches the history node; the post-hook advances the traces. The
synapse hooks record which Linear/Conv fed which layer and, for fused layers, let the synapse
save the filtered input in place of its input. Kept apart from :mod:`snn_ostl.learner`, whose
class holds the public API and inherits these methods.
"""

from __future__ import annotations

import contextlib
import os
import sys
import warnings
import weakref
from typing import Any

import torch
from torch import Tensor, nn

from snn_ostl.adapter import DenseAdapter
from snn_ostl.chains.walk import Block, ChainTooLongError, walk
from snn_ostl.errors import (
    ConfigurationError,
    DetachedLearnerError,
    Problem,
    StateError,
    UnsupportedModuleError,
)
from snn_ostl.hooks.guards import StepGuards
from snn_ostl.hooks.layer import Layer

__all__ = ["ForwardHooks"]

_INTERNAL = tuple(os.path.dirname(m.__file__) + os.sep for m in (torch, __import__("snn_ostl")))


def _user_frame() -> int:
    """The ``stacklevel`` of the first caller outside torch and snn_ostl (the user's line)."""
    frame, level = sys._getframe(1), 1
    while frame is not None and frame.f_code.co_filename.startswith(_INTERNAL):
        frame, level = frame.f_back, level + 1
    return level


def _fed_twice(synapse: str, first: str, second: str) -> StateError:
    return StateError(
        f"{synapse} feeds both {first} and {second}; a synapse may feed one stateful layer "
        "only. Give each layer its own Linear/Conv module."
    )


class ForwardHooks(StepGuards):
    """The hook methods of :class:`snn_ostl.OSTL` (no state of their own)."""

    def _check_attached(self) -> None:
        if not self._attached:
            raise DetachedLearnerError(
                "this OSTL learner was detached; attach a new one with snn_ostl.OSTL(model)."
            )

    def _note(self, path: str) -> None:
        if path not in self._order:
            self._order[path] = len(self._order)

    def _synapse_pre(self, module: nn.Module, args: tuple) -> tuple | None:
        if not torch.is_grad_enabled() or module not in self._synapse_paths:
            return None
        given = args
        if self._outputs and args:
            args = self._cut_recurrence(module, args)
        new_args = self.signals.before_synapse(module, args)
        layer = self._fused.get(module)
        if layer is not None:
            x = (new_args or args)[0]
            filtered = layer.filtered_input(x)

            # The synapse saves its input only for its weight gradient: give it x̃_t instead,
            # so its own backward computes ∂L/∂a_t · x̃_t (the factorised form).
            def pack(t: Tensor) -> Tensor:
                same = t.data_ptr() == x.data_ptr() and t.shape == x.shape
                return filtered if same and t.stride() == x.stride() else t

            ctx = torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)
            ctx.__enter__()
            self._saving[module] = ctx
            layer.swap_bias(module)  # inside the hooks: see Layer.swap_bias
        if new_args is None and args is not given:  # the recurrent input was cut
            return args
        return new_args

    def _cut_recurrence(self, module: nn.Module, args: tuple) -> tuple:
        """Detach a synapse input that is a layer's own output fed back by the user's loop.

        ``spk, mem = lif(fc_in(x) + fc_rec(spk), mem)``: at step t, ``fc_rec`` reads the
        layer's output of step t-1, whose graph the backward of step t-1 has already freed.
        The input is a recurrent input of that layer: held fixed, as the layer's own previous
        state is, and its weight is traced through the layer's eligibility.
        """
        x = args[0]
        hit = self._outputs.get(id(x))
        if hit is None or hit[0]() is not x:
            return args
        owner = hit[1]
        path = self._synapse_paths[module]
        feeds_owner = self._feeds.get(module) is owner
        runs_before = self._order.get(owner.path, -1) > self._order.get(path, 1 << 30)
        if not (feeds_owner or runs_before):
            return args
        self._recurrent_now.add(module)
        if feeds_owner and self.variant == "ostl" and owner.block is not None:
            # the layer's own spikes: traced through the layer (snn_ostl.chains.fedback)
            if not owner.fed_back:
                owner.start_fed_back(path, self.learning_signal)
            return (owner.fed_back_input(x), *args[1:])
        return (x.detach(), *args[1:])

    def _synapse_post(self, module: nn.Module, args: tuple, output: Tensor) -> Tensor | None:
        ctx = self._saving.pop(module, None)
        if ctx is not None:
            self._fused[module].restore_bias()
            ctx.__exit__(None, None, None)
        if output is None or not torch.is_grad_enabled() or module not in self._synapse_paths:
            return output  # None: forward raised; not ours: a deep copy's module
        self._note(self._synapse_paths[module])
        output = self.signals.after_synapse(module, args, output, self._synapse_paths[module])
        # the output itself, not a weak reference: a chain (``chain(syn(x))``) drops the
        # Python object long before the layer's step, and the walk needs it as a leaf
        self._recent[module] = (output, self.signals.synapse_input(module, args))
        return output

    def _model_post(self, module: nn.Module, args: tuple, output: Any) -> Any:
        if not torch.is_grad_enabled() or not self._attached or module is not self.model:
            return None
        return self.signals.after_model(output)

    def _peek_synapse(self, current: Tensor) -> tuple[nn.Module, Tensor] | None:
        """The synapse whose output is exactly ``current``, if any (left in place)."""
        for module, (out, x) in self._recent.items():
            if out is current:
                return module, x
        return None

    def _make_pre(self, layer: Layer):
        def hook(module: nn.Module, args: tuple, kwargs: dict):
            if module is not layer.module:  # a deep copy of the model carries the hooks along
                return None
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
        self._guard_call(layer, module)
        if not self._distributed_checked:
            self._check_distributed(layer, module)
        try:
            current = adapter.current(module, args, kwargs)
            prev = adapter.read_state(module, args, kwargs)
        except StateError as err:
            raise StateError(f"{layer.path or '<root>'} ({type(module).__name__}): {err}") from err
        if not self._guard_state(layer, prev, current):
            # The module starts from its zero state or from a constant one (fresh zeros,
            # snnTorch's utils.reset, a step under no_grad): a new sequence, so the traces
            # restart too, as BPTT's gradient stops at a constant state.
            layer.reset()
        if prev is None:
            prev = adapter.initial_state(module, current)
        self._guard_plan(layer, current, prev)
        inputs: dict[str | int, Tensor] = {}
        owns_input = layer.owns_input_weights
        found, block = None, None
        # at a new sequence the current may be computed anew: the layer is then planned again
        replan = layer.bound and not layer.has_traces and layer.pending_load is None
        if owns_input:
            pass
        elif layer.block is not None:  # bound through a chain: walk it at every step
            block = self._walk_block(layer, current)
            if replan and block.signature() != layer._block_signature:
                self._unbind(layer)
                found = self._direct_use(layer, block, current)
                block = None if found is not None else block
        else:
            found = self._peek_synapse(current)
            moved = found is None or found[0] is not layer.synapse
            if replan and layer.synapse is not None and moved:
                self._unbind(layer)
            direct = found is not None and layer.direct_ok(found[0])
            if not layer.bound and not direct and current.grad_fn is not None:
                found, block = None, self._walk_block(layer, current)
            elif found is not None:
                del self._recent[found[0]]
        if not layer.bound:
            if block is not None:
                self._bind_chain(layer, block, current)
            else:
                self._bind(layer, found)
            if layer.pending_load is not None:
                self._install_checkpoint(layer, prev)
        elif block is not None:
            layer.check_block(block)
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
        fixed = getattr(adapter, "recurrent_only", ()) if self.variant == "ostl-no-h" else ()
        if fixed:  # (torch RNN cells) states that act only through the hidden-to-hidden weights
            state = tuple(s.detach() if k in fixed else s for k, s in enumerate(state))
        self._track_pending(layer)
        if owns_input and current.requires_grad and self.learning_signal != "backprop":
            stack = contextlib.ExitStack()
            stack.push(layer.variant_ctx)
            args, kwargs = self._internal_feedback(layer, args, kwargs, current, stack)
            layer.variant_ctx = stack
        return adapter.write_state(module, args, kwargs, state)

    def _make_post(self, layer: Layer):
        def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any):
            if module is not layer.module:
                return None
            ctx = getattr(layer, "variant_ctx", None)
            if ctx is not None:
                layer.variant_ctx = None
                ctx.__exit__(None, None, None)
            if output is None:  # forward raised: the step never happened
                layer.step = None
                layer.undo_filtered_input()
            if layer.step is None:
                return None
            if layer.block is not None:
                layer.note_output(layer.adapter.spikes(output))
            layer.after_step(layer.adapter.new_state(module, args, kwargs, output))
            self.signals.after_layer(layer, output)
            self.rule.after_layer(layer, output)
            self._record_output(layer, output)
            return None

        return hook

    def _direct_use(self, layer: Layer, block: Block, current: Tensor):
        """``(synapse, input)`` when the block is one synapse whose output is the current."""
        if len(block.synapses) != 1 or block.params or block.ops:
            return None
        use = block.synapses[0]
        if use.output is not current or not layer.direct_ok(use.module):
            return None
        return use.module, use.input

    def _record_output(self, layer: Layer, output: Any) -> None:
        """Remember the tensor the layer passes on (its spikes) until its next step."""
        spikes = layer.adapter.spikes(output)
        if not isinstance(spikes, Tensor):
            return
        old = self._latest.get(layer.path)
        if old is not None:
            self._outputs.pop(old, None)
        self._latest[layer.path] = id(spikes)
        self._outputs[id(spikes)] = (weakref.ref(spikes), layer, spikes.grad_fn)

    def _walk_block(self, layer: Layer, current: Tensor) -> Block:
        """The synapses and operations that feed ``current`` at this step (see chains.walk)."""
        nodes = {}
        for module, (out, x) in self._recent.items():
            if out.grad_fn is not None:
                nodes[out.grad_fn] = (self._synapse_paths[module], module, out, x)
        stops = {node for _ref, _owner, node in self._outputs.values() if node is not None}
        where = f"{layer.path or '<root>'} ({type(layer.module).__name__})"
        try:
            block = walk(current, nodes, stops, self._param_names())
        except ChainTooLongError as err:
            raise StateError(
                f"{where}: {err}. Its input current seems to depend on tensors carried over "
                "from earlier steps. Compute the current from this step's synapses (Linear, "
                "Conv, Embedding) and stateless operations only."
            ) from err
        if block.outside:
            shapes = ", ".join(str(tuple(p.shape)) for p in block.outside)
            raise ConfigurationError(
                [
                    Problem(
                        layer.path,
                        type(layer.module).__name__,
                        f"its input current depends on trained parameters of shape {shapes} "
                        "that the module the learner is attached to does not hold (a synapse "
                        "outside it); their eligibility cannot be kept.",
                        "attach the learner to the model that holds both the neuron and its "
                        "synapses, e.g. snn_ostl.OSTL(model) rather than OSTL(model.lif), or "
                        "freeze those parameters.",
                    )
                ]
            )
        for name in block.params:
            owner_path = name.rsplit(".", 1)[0] if "." in name else ""
            module = self._plan.synapses.get(owner_path)
            if module is not None:  # reached through an output another layer consumed
                owner = self._owner(module)
                first = owner.path if owner is not None else "another layer"
                raise _fed_twice(owner_path, first, layer.path)
        for use in block.synapses:
            self._recent.pop(use.module, None)
            if use.module in self._recurrent_now:
                self._recurrent_now.discard(use.module)
                use.recurrent = True
        recurrent = [u.path for u in block.synapses if u.recurrent]
        if recurrent and self.variant == "ostl" and not layer.fed_back:
            raise ConfigurationError(
                [
                    Problem(
                        layer.path,
                        type(layer.module).__name__,
                        f"{', '.join(recurrent)} feeds the layer's own output of the previous "
                        "step back into its current (recurrence written in the forward). Under "
                        "variant='ostl' its eligibility needs the Jacobian through the layer's "
                        "spikes, which is not implemented for hand-written recurrence.",
                        "use variant='ostl-no-h' or 'eprop' (exact for those rules: the fed-back "
                        "spikes are held fixed), or a recurrent neuron such as snnTorch's "
                        "RLeaky or Norse's LIFRecurrentCell, which variant='ostl' trains "
                        "exactly.",
                    )
                ]
            )
        return block

    def _owner(self, synapse: nn.Module) -> Layer | None:
        """The layer a synapse already feeds (through a chain or directly), if any."""
        layer = self._feeds.get(synapse)
        if layer is not None:
            return layer
        return next((lay for lay in self.layers.values() if lay.synapse is synapse), None)

    def _param_names(self) -> dict[int, str]:
        """``id(parameter)`` -> qualified name, as the model names them (read once)."""
        if self._names is None:
            self._names = {id(p): n for n, p in self.model.named_parameters()}
        return self._names

    def _bind_chain(self, layer: Layer, block: Block, current: Tensor) -> None:
        for use in block.synapses:
            owner = self._owner(use.module)
            if owner is not None and owner is not layer:
                raise _fed_twice(use.path, owner.path, layer.path)
        layer.bind_chain(block, current)
        for use in block.synapses:
            self._feeds[use.module] = layer
        watched = [(layer.path, layer.module)] + [(u.path, u.module) for u in block.synapses]
        for name in block.params:
            path = name.rsplit(".", 1)[0] if "." in name else ""
            watched.append((path, self.model.get_submodule(path)))
        layer.watch(watched)
        self._note_unbound(layer)

    def _internal_feedback(self, layer, args, kwargs, current, stack):
        """Random/direct feedback for a layer whose input weights live inside the module."""
        module, adapter = layer.module, layer.adapter
        if self.learning_signal in ("direct", "local"):
            return adapter.write_input(module, args, kwargs, current.detach())
        if isinstance(adapter, DenseAdapter):
            raise ConfigurationError(
                [
                    Problem(
                        layer.path,
                        type(module).__name__,
                        f"learning_signal={self.learning_signal!r} sends the error below a "
                        "layer through a random matrix in place of its input weights, but "
                        "this cell's input weights live inside its step, and its input "
                        "carries a gradient (a layer below learns from it).",
                        "put this cell at the bottom of the model, feed it from an external "
                        "Linear, or use learning_signal='backprop' or 'direct'.",
                    )
                ]
            )
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
            owner = self._owner(synapse)
            if owner is not None:
                raise _fed_twice(path, owner.path, layer.path)
        layer.bind(path, synapse)
        # Name every trained parameter as the model does (an adapter may reach a parameter
        # that another module registers, e.g. a Norse LIFParameters field).
        names = self._param_names()
        for g in layer.groups:
            g.name = names.get(id(g.param), g.name)
        if layer.fused_group is not None:
            self._fused[synapse] = layer
        layer.watch([(layer.path, layer.module)] + ([(path, synapse)] if synapse else []))
        self._note_unbound(layer)

    def _chain_module_pre(self, module: nn.Module, args: tuple) -> None:
        if torch.is_grad_enabled() and module in self._chain_paths:
            self._note(self._chain_paths[module])

    def _note_unbound(self, layer: Layer) -> None:
        """Refuse (or, when allowed, warn about) trained modules below ``layer``.

        A synapse or normalisation that ran before ``layer`` in this step without being part
        of any layer's block feeds a layer's synapse from below (a feature extractor). Its
        exact eligibility is not kept; its instantaneous gradient is an approximation.
        """
        bound = {lay.synapse for lay in self.layers.values()} | set(self._feeds)
        owned = {id(g.param) for lay in self.layers.values() for g in lay.groups}
        below = []
        candidates = [*self._plan.synapses.items(), *self._plan.chain_modules.items()]
        for p, m in candidates:
            if p not in self._order or m in bound or p in self._plan.instantaneous:
                continue
            trained = [q for q in m.parameters(recurse=False) if q.requires_grad]
            if not trained or all(id(q) in owned for q in trained):
                continue
            below.append((p, m))
        if not below:
            return
        if not self.instantaneous_below:
            raise UnsupportedModuleError(
                [
                    Problem(
                        p,
                        type(m).__name__,
                        f"it runs before the stateful layer {layer.path} and reaches its input "
                        "current only through a synapse (a feature extractor below the layer); "
                        "its exact OSTL gradient would need that layer's eligibility with "
                        "respect to its parameters, which is not kept.",
                        "freeze it (requires_grad=False), move it into the layer's chain, or "
                        "accept its instantaneous gradient (an approximation) with "
                        "OSTL(model, instantaneous_below=True).",
                    )
                    for p, m in below
                ]
            )
        for p, _m in below:
            self._plan.instantaneous[p] = (
                f"instantaneous gradient (approximation: below {layer.path})"
            )
            warnings.warn(
                f"{p} runs before the stateful layer {layer.path} without feeding its current "
                "through a chain; it is trained with its instantaneous gradient (an "
                "approximation, see learner.summary()).",
                stacklevel=_user_frame(),
            )
