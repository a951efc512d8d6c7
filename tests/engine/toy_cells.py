"""Small neurons defined only for the engine tests.

``ToyLeaky`` is a leaky integrator with a subtractive reset whose gate is detached (its traces
factorise: presynaptic form) or a zero reset through a differentiable gate (per-synapse form).
It exercises external Linear/Conv synapses without depending on snnTorch or Norse.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

from snn_ostl.adapter import ElementwiseAdapter
from snn_ostl.cells.surrogate import spike
from snn_ostl.derivatives import ElementwiseDerivatives
from snn_ostl.registry import register_adapter


class ToyLeaky(nn.Module):
    """s_t = beta s_{t-1} + a_t - reset, y_t = spike(s_t - threshold); state (s,) [B, *N]."""

    def __init__(
        self, beta: float = 0.8, threshold: float = 0.5, reset: str = "subtract", fused: bool = True
    ):
        super().__init__()
        self.beta, self.reset_mode, self.fused_ok = beta, reset, fused
        self.threshold = nn.Parameter(torch.tensor(threshold, dtype=torch.float64))

    def forward(self, a: Tensor, state: tuple[Tensor] | None = None):
        s_prev = torch.zeros_like(a) if state is None else state[0]
        gate = spike(s_prev - self.threshold)
        if self.reset_mode == "subtract":
            s = self.beta * s_prev + a - gate.detach() * self.threshold
        else:  # zero reset through a differentiable gate: J depends on the spikes
            s = self.beta * s_prev * (1.0 - gate) + a
        return spike(s - self.threshold), (s,)


@register_adapter(ToyLeaky, examples={"toy": lambda: ToyLeaky()})
class ToyLeakyAdapter(ElementwiseAdapter):
    state_names = ("s",)

    def read_state(self, module, args, kwargs):
        state = args[1] if len(args) > 1 else kwargs.get("state")
        return None if state is None else tuple(state)

    def write_state(self, module, args, kwargs, state):
        return (args[0], tuple(state)), {}

    def initial_state(self, module, current):
        return (torch.zeros_like(current),)

    def new_state(self, module, args, kwargs, output):
        return tuple(output[1])

    def neuron_parameters(self, module):
        return {"threshold": module.threshold}

    def factorised(self, module, variant):
        return module.reset_mode == "subtract"

    def fusable(self, module, variant):
        return module.fused_ok

    def cell(self, module, current, state, params):
        (s_prev,) = state
        thr = params["threshold"]
        gate = spike(s_prev - thr)
        if module.reset_mode == "subtract":
            return (module.beta * s_prev + current - gate.detach() * thr,)
        return (module.beta * s_prev * (1.0 - gate) + current,)

    def derivatives(self, module, step, variant, current):
        d = super().derivatives(module, step, variant, current)
        if module.reset_mode == "subtract":
            # the partials are the constants beta and 1: say so, so traces factorise
            d.state, d.current = [[module.beta]], [1.0]
        return d


class ToySynaptic(nn.Module):
    """i_t = 0.7 i + a; s_t = 0.8 s (1 - gate(s)) + i_t; y = spike(s - thr); state (i, s).

    The synaptic current has constant partials (presynaptic trace) while the membrane's reset
    gate is differentiable (per-synapse trace): the mixed per-synapse form.
    """

    def __init__(self, threshold: float = 0.4):
        super().__init__()
        self.threshold = threshold

    def forward(self, a: Tensor, state: tuple[Tensor, Tensor] | None = None):
        i, s = (torch.zeros_like(a), torch.zeros_like(a)) if state is None else state
        i_new = 0.7 * i + a
        s_new = 0.8 * s * (1.0 - spike(s - self.threshold)) + i_new
        return spike(s_new - self.threshold), (i_new, s_new)


@register_adapter(ToySynaptic, examples={"toy": lambda: ToySynaptic()})
class ToySynapticAdapter(ToyLeakyAdapter):
    state_names = ("i", "s")

    def initial_state(self, module, current):
        return (torch.zeros_like(current), torch.zeros_like(current))

    def neuron_parameters(self, module):
        return {}

    def factorised(self, module, variant):
        return False

    def cell(self, module, current, state, params):
        i, s = state
        i_new = 0.7 * i + current
        return i_new, 0.8 * s * (1.0 - spike(s - module.threshold)) + i_new

    def derivatives(self, module, step, variant, current):
        _, s = step.prev
        x = s - module.threshold
        gate = spike(x).detach()
        slope = 1.0 / (1.0 + 5.0 * x.abs()) ** 2
        j_ss = 0.8 * (1.0 - gate) - 0.8 * s * slope
        # numbers where the partial is the same for every neuron: i's trace factorises
        return ElementwiseDerivatives([[0.7, None], [0.7, j_ss]], [1.0, 1.0], {})
