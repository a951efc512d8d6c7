"""The cell contract: how the learner sees one type of stateful module.

An adapter says where a module keeps its state, which tensor is its input current, how one step
maps ``(current, state) -> state`` and what that step's partial derivatives are. The learner
does the rest (traces, hooks, learning signals). Two kinds exist:

- :class:`ElementwiseAdapter`: each neuron updates from its own state and its own current
  ``a_t`` (snnTorch and Norse neurons, the SNU). The synapse feeding ``a_t`` is either an
  ``nn.Linear``/``nn.Conv`` module called right before the neuron (found at the first step) or
  weights inside the module (:meth:`ElementwiseAdapter.internal_synapses`), possibly driven by
  one of the layer's own state tensors (recurrent weights).
- :class:`DenseAdapter`: a cell that mixes neurons inside its step (torch RNN cells). Its full
  Jacobians come from :func:`snn_ostl.derivatives.dense_derivatives`.

Every adapter must match the generic autograd derivatives of its own ``cell``; hand-written
``derivatives`` are fast paths, tested against :func:`snn_ostl.derivatives.elementwise_derivatives`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

from torch import Tensor, nn

from snn_ostl.derivatives import (
    DenseDerivatives,
    ElementwiseDerivatives,
    dense_derivatives,
    elementwise_derivatives,
)

__all__ = ["CellAdapter", "DenseAdapter", "ElementwiseAdapter", "InternalSynapse", "StepRecord"]

Args = tuple[Any, ...]
Kwargs = dict[str, Any]


@dataclass
class InternalSynapse:
    """Weights inside a stateful module that feed its current linearly: ``a += W @ input``.

    Attributes:
        weight: Name of the weight parameter on the module (shape ``[N, I]``).
        source: ``"input"`` (the module's input x_t) or the index k of the state tensor whose
            previous value drives it (recurrent weights: ``a_t += H s^k_{t-1}``).
        bias: Name of a bias parameter added to the current (shape ``[N]``), or None.
    """

    weight: str
    source: str | int = "input"
    bias: str | None = None


@dataclass
class StepRecord:
    """What the learner knows about one step of one module.

    Attributes:
        current: a_t, the input current (for internal synapses, the module's input x_t).
        prev: The previous state, S tensors ``[B, *N]``, detached from older steps.
        new: The new state, S tensors ``[B, *N]``.
        args, kwargs, output: The module call, as the hooks saw it.
    """

    current: Tensor
    prev: tuple[Tensor, ...]
    new: tuple[Tensor, ...] = ()
    args: Args = ()
    kwargs: Kwargs | None = None
    output: Any = None


class CellAdapter:
    """Base class of every adapter. Subclasses are registered with :func:`register_adapter`.

    Attributes:
        state_names: Names of the S state tensors, in the order the learner stores them.
        spike_states: Indices of state tensors that are the layer's own spikes (cut by e-prop).
        variants: The OSTL variants this adapter can compute exactly.
        framework: ``"snn_ostl"``, ``"torch"``, ``"snntorch"`` or ``"norse"`` (for the docs table).
    """

    state_names: ClassVar[tuple[str, ...]] = ("state",)
    spike_states: ClassVar[tuple[int, ...]] = ()
    variants: ClassVar[tuple[str, ...]] = ("ostl",)
    framework: ClassVar[str] = "snn_ostl"
    kind: ClassVar[str] = "elementwise"

    # --- validation -------------------------------------------------------------------
    def problems(self, module: nn.Module, variant: str) -> list[tuple[str, str]]:
        """Reasons this module cannot be trained exactly, as (why, fix) pairs."""
        if variant not in self.variants:
            return [
                (
                    f"variant {variant!r} is not available for {type(module).__name__} "
                    f"(available: {', '.join(self.variants)}).",
                    "choose one of those variants, or another neuron type.",
                )
            ]
        return []

    def approximations(self, module: nn.Module) -> list[str]:
        """Approximations the user opted into for this module (shown in the summary)."""
        return []

    # --- state plumbing ---------------------------------------------------------------
    def read_state(
        self, module: nn.Module, args: Args, kwargs: Kwargs
    ) -> tuple[Tensor, ...] | None:
        """The previous state this call will use, or None when the module starts from zero."""
        raise NotImplementedError

    def write_state(
        self, module: nn.Module, args: Args, kwargs: Kwargs, state: tuple[Tensor, ...]
    ) -> tuple[Args, Kwargs]:
        """Make this call use ``state`` as its previous state; returns the new call arguments."""
        raise NotImplementedError

    def initial_state(self, module: nn.Module, current: Tensor) -> tuple[Tensor, ...]:
        """The zero state the module would start from for this input."""
        raise NotImplementedError

    def new_state(
        self, module: nn.Module, args: Args, kwargs: Kwargs, output: Any
    ) -> tuple[Tensor, ...]:
        """The state the call produced."""
        raise NotImplementedError

    def current(self, module: nn.Module, args: Args, kwargs: Kwargs) -> Tensor:
        """The input of the call: a_t (or x_t for modules with internal synapses)."""
        return args[0] if args else next(iter(kwargs.values()))

    def restore_state(self, module: nn.Module, state: tuple[Tensor, ...]) -> None:
        """Put back a state the module keeps on itself (a checkpoint's); others do nothing."""

    def reset(self, module: nn.Module) -> None:
        """Forget any state the module keeps on itself (per module, never process-wide)."""

    def spikes(self, output: Any) -> Tensor:
        """The tensor the layer passes on to the next layer."""
        return output[0] if isinstance(output, tuple) else output

    # --- variants ---------------------------------------------------------------------
    @contextlib.contextmanager
    def variant_forward(self, module: nn.Module, variant: str) -> Iterator[None]:
        """Context in which the module's own forward cuts what ``variant`` ignores.

        The learner enters it around every step and :mod:`snn_ostl.testing` around its BPTT
        oracle; it never changes a forward value, only which paths carry gradients.
        """
        if variant not in self.variants:
            raise NotImplementedError(
                f"{type(self).__name__} does not implement variant {variant!r}"
            )
        yield

    # --- learning signals ---------------------------------------------------------------
    def write_input(
        self, module: nn.Module, args: Args, kwargs: Kwargs, x: Tensor
    ) -> tuple[Args, Kwargs]:
        """Replace the call's input (used to cut exact backprop below the layer)."""
        if args:
            return (x, *args[1:]), kwargs
        key = next(iter(kwargs))
        return args, {**kwargs, key: x}

    @contextlib.contextmanager
    def input_feedback(self, module: nn.Module, matrix: Tensor) -> Iterator[None]:
        """Context in which the module sends its input error through ``matrix`` (shape of its
        input weights) instead of the weights: only needed for cells with internal input weights.
        """
        raise NotImplementedError(
            f"{type(module).__name__} has internal input weights and no random-feedback support"
        )
        yield  # pragma: no cover


class ElementwiseAdapter(CellAdapter):
    """An adapter of a cell whose neurons evolve independently given their current."""

    kind = "elementwise"

    def neuron_parameters(self, module: nn.Module) -> dict[str, nn.Parameter]:
        """Trainable parameters of the neuron itself, broadcastable to ``[*N]`` (decay, ...)."""
        return {}

    def internal_synapses(self, module: nn.Module) -> list[InternalSynapse]:
        """Weights inside the module that feed its current (empty: the synapse is outside)."""
        return []

    def factorised(self, module: nn.Module, variant: str) -> bool:
        """Whether J and ∂s/∂a are the same for every neuron and step (presynaptic traces)."""
        return False

    def fusable(self, module: nn.Module, variant: str) -> bool:
        """Whether a_t and s_{t-1} reach the step's outputs only through s_t (one state tensor).

        Then, with factorised traces, ``ĝ_{t-1} = J ∂L/∂s_t`` exactly and the whole synapse
        weight gradient is the synapse's own backward evaluated at the filtered input: the
        learner substitutes ``x̃_t`` for ``x_t`` among the tensors the synapse saves for backward,
        so OSTL costs the same matrix products as BPTT. The bias gets its filtered input (a
        number) the same way, and a layer with no other trained parameter keeps no history
        node. Such a layer reads ``J`` (from :meth:`derivatives`) at the first step of each
        sequence only: return True only where ``J`` cannot change within a sequence.
        """
        return False

    def cell(
        self,
        module: nn.Module,
        current: Tensor,
        state: tuple[Tensor, ...],
        params: dict[str, Tensor],
    ) -> tuple[Tensor, ...]:
        """One step of the neuron from its current, pure: ``(a_t, s_{t-1}, φ) -> s_t``.

        ``params`` replace the module's neuron parameters and may be expanded to ``[B, *N]``.
        """
        raise NotImplementedError

    def derivatives(
        self, module: nn.Module, step: StepRecord, variant: str, current: Callable[[], Tensor]
    ) -> ElementwiseDerivatives:
        """Partial derivatives of this step. The default asks autograd (the reference).

        Args:
            module: The neuron module.
            step: The step's record.
            variant: ``"ostl"``, ``"ostl-no-h"`` or ``"eprop"``.
            current: Returns a_t, the summed current into the neurons ``[B, *N]`` (computed on
                demand: analytic adapters rarely need it).
        """
        params = {name: p for name, p in self.neuron_parameters(module).items()}
        params.update(self.constant_parameters(module))
        return elementwise_derivatives(
            lambda a, s, ph: self.cell(module, a, s, ph), current(), step.prev, params
        )

    def constant_parameters(self, module: nn.Module) -> dict[str, Tensor]:
        """Untrained per-neuron settings the generic derivatives must see expanded."""
        return {}


class DenseAdapter(CellAdapter):
    """An adapter of a cell that mixes neurons inside its step; derivatives by autograd."""

    kind = "dense"

    def step(
        self,
        module: nn.Module,
        inputs: Tensor,
        state: tuple[Tensor, ...],
        params: dict[str, Tensor],
    ) -> tuple[Tensor, ...]:
        """One step, pure: ``(x_t, s_{t-1}, θ) -> s_t`` with ``params`` replacing the module's."""
        raise NotImplementedError

    def derivatives(
        self,
        module: nn.Module,
        inputs: Tensor,
        state: tuple[Tensor, ...],
        params: dict[str, Tensor],
    ) -> DenseDerivatives:
        """Partial derivatives of one step. The default asks autograd (the reference, one
        backward per sample); hand-written adapters return the same, faster."""
        return dense_derivatives(
            lambda x, s, p: self.step(module, x, s, p), inputs, tuple(state), params
        )

    def trained_parameters(self, module: nn.Module) -> dict[str, nn.Parameter]:
        """Every parameter the cell's traces cover."""
        return {name: p for name, p in module.named_parameters(recurse=False) if p.requires_grad}
