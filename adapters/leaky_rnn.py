"""Adapter of the native :class:`snn_ostl.cells.LeakyRNNCell` (Murray's leaky rate units).

State ``(h,)`` ``[B, N]``. ``W_in`` (and the bias) are synapses on the module's input,
``W_rec`` a recurrent synapse driven by ``h_{t-1}``; the neuron itself is elementwise:
``h_t = (1 - 1/τ) h_{t-1} + φ(u_t)/τ``, so ``∂h_t/∂h_{t-1} = 1 - 1/τ`` (plus ``W_rec``'s path,
which the engine adds for ``variant="ostl"``) and ``∂h_t/∂u_t = φ'(u_t)/τ``.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

from snn_ostl.adapter import ElementwiseAdapter, InternalSynapse, StepRecord
from snn_ostl.cells.leaky_rnn import LeakyRNNCell
from snn_ostl.derivatives import ElementwiseDerivatives
from snn_ostl.registry import register_adapter

__all__ = ["LeakyRNNAdapter"]

_EXAMPLES = {
    "tanh": lambda: LeakyRNNCell(6, 5, tau=4.0, dtype=torch.float64),
    "relu, no bias": lambda: LeakyRNNCell(
        6, 5, tau=2.0, nonlinearity="relu", bias=False, dtype=torch.float64
    ),
}


@register_adapter(LeakyRNNCell, examples=_EXAMPLES)
class LeakyRNNAdapter(ElementwiseAdapter):
    """``h_t = (1 - 1/τ) h_{t-1} + φ(W_in x_t + b + W_rec h_{t-1}) / τ``."""

    state_names = ("h",)
    variants = ("ostl", "ostl-no-h")

    def read_state(self, module, args, kwargs):
        h = args[1] if len(args) > 1 else kwargs.get("h")
        return None if h is None else (h,)

    def write_state(self, module, args, kwargs, state):
        if len(args) > 1:
            return (args[0], state[0], *args[2:]), kwargs
        return args, {**kwargs, "h": state[0]}

    def initial_state(self, module, current):
        return (current.new_zeros(current.shape[0], module.hidden_size),)

    def new_state(self, module, args, kwargs, output):
        return (output,)

    def spikes(self, output):
        return output

    def problems(self, module: nn.Module, variant: str) -> list[tuple[str, str]]:
        if variant not in self.variants:
            return [
                (
                    f"variant {variant!r} is not defined for LeakyRNNCell: its units have no "
                    "spikes to cut.",
                    "use variant='ostl' or 'ostl-no-h' (rule='rflo').",
                )
            ]
        return []

    def neuron_parameters(self, module: LeakyRNNCell) -> dict[str, nn.Parameter]:
        return {}

    def internal_synapses(self, module: LeakyRNNCell) -> list[InternalSynapse]:
        bias = "bias" if module.bias is not None else None
        return [InternalSynapse("weight_ih", "input", bias), InternalSynapse("weight_hh", 0)]

    @contextlib.contextmanager
    def variant_forward(self, module: LeakyRNNCell, variant: str) -> Iterator[None]:
        old = module.detach_recurrent
        module.detach_recurrent = variant == "ostl-no-h"
        try:
            yield
        finally:
            module.detach_recurrent = old

    @contextlib.contextmanager
    def input_feedback(self, module: LeakyRNNCell, matrix: Tensor) -> Iterator[None]:
        module.feedback_weight = matrix
        try:
            yield
        finally:
            module.feedback_weight = None

    def cell(self, module: LeakyRNNCell, current, state, params):
        (h,) = state
        rate = torch.tanh(current) if module.nonlinearity == "tanh" else torch.relu(current)
        return ((1.0 - 1.0 / module.tau) * h + rate / module.tau,)

    def derivatives(
        self, module: LeakyRNNCell, step: StepRecord, variant: str, current: Callable[[], Tensor]
    ) -> ElementwiseDerivatives:
        leak = 1.0 - 1.0 / module.tau
        # φ(u_t) recovered from the two states: no second pass over the current
        rate = (step.new[0] - leak * step.prev[0]) * module.tau
        slope = 1.0 - rate * rate if module.nonlinearity == "tanh" else (rate > 0).to(rate.dtype)
        return ElementwiseDerivatives([[leak]], [slope / module.tau])
