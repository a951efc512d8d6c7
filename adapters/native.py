"""Adapter of the native :class:`snn_ostl.SNU` and :class:`snn_ostl.SoftSNU` cells.

State (s, y), both [B, N]; y is the spike state that e-prop cuts. W (and the optional input
bias) are synapses on the module's input, H a recurrent synapse driven by y_{t-1}. The partials
below are the derivatives of :func:`snn_ostl.cells.snu.snu_step` written out; the tests check them
against :func:`snn_ostl.derivatives.elementwise_derivatives`.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator

import torch
from torch import Tensor, nn

from snn_ostl.adapter import ElementwiseAdapter, InternalSynapse, StepRecord
from snn_ostl.cells.snu import SNU, SNUState, SoftSNU
from snn_ostl.cells.surrogate import fast_sigmoid_derivative, spike
from snn_ostl.derivatives import ElementwiseDerivatives
from snn_ostl.registry import register_adapter

__all__ = ["SNUAdapter"]

_EXAMPLES = {
    "feed-forward": lambda: SNU(6, 5, dtype=torch.float64),
    "recurrent": lambda: SNU(6, 5, recurrent=True, dtype=torch.float64),
    "learned decay": lambda: SNU(6, 5, learn_decay=True, decay_per_unit=True, dtype=torch.float64),
}


@register_adapter(SNU, examples=_EXAMPLES)
class SNUAdapter(ElementwiseAdapter):
    """The SNU: s_t = g(a_t + l s_{t-1} (1 - y_{t-1})), y_t = h(s_t - threshold)."""

    state_names = ("s", "y")
    spike_states = (1,)
    variants = ("ostl", "ostl-no-h", "eprop")

    def read_state(self, module, args, kwargs):
        state = args[1] if len(args) > 1 else kwargs.get("state")
        return None if state is None else tuple(state)

    def write_state(self, module, args, kwargs, state):
        if len(args) > 1:
            return (args[0], SNUState(*state), *args[2:]), kwargs
        return args, {**kwargs, "state": SNUState(*state)}

    def initial_state(self, module, current):
        return tuple(module.initial_state(current))

    def new_state(self, module, args, kwargs, output):
        return tuple(output[1])

    def neuron_parameters(self, module: SNU) -> dict[str, nn.Parameter]:
        out = {}
        for name in ("decay", "threshold"):
            value = getattr(module, name)
            if isinstance(value, nn.Parameter):
                out[name] = value
        return out

    def constant_parameters(self, module: SNU) -> dict[str, Tensor]:
        return {
            name: getattr(module, name)
            for name in ("decay", "threshold")
            if not isinstance(getattr(module, name), nn.Parameter)
        }

    def internal_synapses(self, module: SNU) -> list[InternalSynapse]:
        out = [InternalSynapse("weight", "input", "bias" if module.bias is not None else None)]
        if module.recurrent_weight is not None:
            out.append(InternalSynapse("recurrent_weight", 1))
        return out

    @contextlib.contextmanager
    def variant_forward(self, module: SNU, variant: str) -> Iterator[None]:
        old = module.detach_spikes, module.detach_recurrent
        module.detach_spikes = variant == "eprop"
        module.detach_recurrent = variant == "ostl-no-h"
        try:
            yield
        finally:
            module.detach_spikes, module.detach_recurrent = old

    @contextlib.contextmanager
    def input_feedback(self, module: SNU, matrix: Tensor) -> Iterator[None]:
        module.feedback_weight = matrix
        try:
            yield
        finally:
            module.feedback_weight = None

    def cell(self, module: SNU, current, state, params):
        s_prev, y_prev = state
        u = current + params["decay"] * s_prev * (1.0 - y_prev)
        s = torch.relu(u) if module.activation == "relu" else u
        if module.soft:
            y = torch.sigmoid(s - params["threshold"])
        else:
            y = spike(s - params["threshold"], module.slope)
        return s, y

    def derivatives(
        self, module: SNU, step: StepRecord, variant: str, current: Callable[[], Tensor]
    ) -> ElementwiseDerivatives:
        s_prev, y_prev = step.prev
        s_new = step.new[0]
        decay, threshold = module.decay.detach(), module.threshold.detach()
        # ReLU: u > 0 exactly where s > 0, so g' needs no recomputation of the current.
        g_prime = (s_new > 0).to(s_new.dtype) if module.activation == "relu" else 1.0
        if module.soft:
            sig = torch.sigmoid(s_new - threshold)
            h_prime = sig * (1.0 - sig)
        else:
            h_prime = fast_sigmoid_derivative(s_new - threshold, module.slope)
        open_gate = 1.0 - y_prev
        j_ss = g_prime * decay * open_gate
        j_sy = -g_prime * decay * s_prev
        state = [[j_ss, j_sy], [h_prime * j_ss, h_prime * j_sy]]
        current_partials = [g_prime, h_prime * g_prime]
        params = {}
        if isinstance(module.decay, nn.Parameter):
            d_s = g_prime * s_prev * open_gate
            params["decay"] = [d_s, h_prime * d_s]
        if isinstance(module.threshold, nn.Parameter):
            params["threshold"] = [None, -h_prime]
        # y = h(s - threshold): synapses reach y only through s, so their traces keep s alone
        return ElementwiseDerivatives(state, current_partials, params, derived={1: (0, h_prime)})


register_adapter(SoftSNU, examples={"soft": lambda: SoftSNU(6, 5, dtype=torch.float64)})(SNUAdapter)
