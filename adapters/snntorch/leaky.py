"""The adapter of ``snn.Leaky``, with hand-written derivatives (the hot path)."""

from __future__ import annotations

from collections.abc import Callable

import snntorch as snn
import torch
from snn_ostl.adapters.snntorch._base import _SnnTorchElementwise
from snn_ostl.adapters.snntorch._common import (
    EXAMPLE_SIZE,
    SUBTRACT,
    ZERO,
    _clamp_mask,
    _delayed,
    _is_scalar,
    _mechanism,
    _plus,
    _reset_factorises,
    _reset_signal,
    _tidy,
    _times,
    _value,
)
from torch import nn

from snn_ostl.derivatives import ElementwiseDerivatives, Partial
from snn_ostl.registry import register_adapter


def _leaky_examples() -> dict[str, Callable[[], nn.Module]]:
    n = EXAMPLE_SIZE
    return {
        "subtract": lambda: snn.Leaky(beta=0.9),
        "subtract, init_hidden": lambda: snn.Leaky(beta=0.9, init_hidden=True),
        "subtract, init_hidden, output": lambda: snn.Leaky(
            beta=0.85, init_hidden=True, output=True
        ),
        "zero": lambda: snn.Leaky(beta=0.9, reset_mechanism="zero"),
        "none": lambda: snn.Leaky(beta=0.8, reset_mechanism="none", threshold=1.5),
        "subtract, reset_delay=False": lambda: snn.Leaky(beta=0.9, reset_delay=False),
        "zero, reset_delay=False, fast_sigmoid": lambda: snn.Leaky(
            beta=0.9,
            reset_mechanism="zero",
            reset_delay=False,
            spike_grad=snn.surrogate.fast_sigmoid(slope=5),
        ),
        "learn_beta, learn_threshold": lambda: snn.Leaky(
            beta=0.9, learn_beta=True, learn_threshold=True
        ),
        "per-neuron beta": lambda: snn.Leaky(beta=torch.linspace(0.7, 0.95, n)),
        "per-neuron beta and threshold, learned, zero": lambda: snn.Leaky(
            beta=torch.linspace(0.75, 0.95, n),
            threshold=torch.linspace(0.8, 1.2, n),
            learn_beta=True,
            learn_threshold=True,
            reset_mechanism="zero",
            init_hidden=True,
        ),
        "graded spikes, learned": lambda: snn.Leaky(
            beta=0.9, graded_spikes_factor=0.5, learn_graded_spikes_factor=True
        ),
        "learned, reset_delay=False": lambda: snn.Leaky(
            beta=0.9, learn_beta=True, learn_threshold=True, reset_delay=False
        ),
    }


@register_adapter(snn.Leaky, examples=_leaky_examples())
class LeakyAdapter(_SnnTorchElementwise):
    """``snn.Leaky``: ``mem_t = clamp(β) mem_{t-1} + a_t - r_t θ`` (r the detached reset)."""

    state_names = ("mem",)

    def factorised(self, module, variant):
        return _is_scalar(module.beta) and _reset_factorises(module, variant)

    def fusable(self, module, variant):
        # With the reset applied at the next step (detached), a_t and mem_{t-1} reach the
        # spikes and the returned membrane only through mem_t. Not with reset_delay=False:
        # the spikes are fired from the membrane before its reset.
        return self.factorised(module, variant) and _delayed(module)

    def _cell(self, module, current, state, params, *, cut_reset):
        (mem,) = state
        beta = _value(module, params, "beta")
        threshold = _value(module, params, "threshold")
        r = _reset_signal(mem, threshold)
        mechanism = _mechanism(module)
        if mechanism == ZERO:
            m = beta.clamp(0, 1) * ((1 - r) * mem) + current
        else:
            m = beta.clamp(0, 1) * mem + current
            if mechanism == SUBTRACT:
                m = m - r * threshold
        return (self._delayed_reset(module, m, r, threshold, params, cut_reset=cut_reset),)

    def derivatives(self, module, step, variant, current):
        (mem,) = step.prev
        beta, threshold = module.beta.detach(), module.threshold.detach()
        decay = beta.clamp(0, 1)
        learned = self.neuron_parameters(module)
        if not learned and _delayed(module) and self.factorised(module, variant):
            return ElementwiseDerivatives([[float(decay)]], [1.0], {})  # the hot path
        r = _reset_signal(mem, threshold)
        mechanism = _mechanism(module)
        if mechanism == ZERO:
            keep = 1 - r
            j_m: Partial = decay * keep
            d_beta = _clamp_mask(beta) * keep * mem
            d_thr: Partial = None
            m_prev = keep * mem
        else:
            j_m = decay
            d_beta = _clamp_mask(beta) * mem
            d_thr = -r if mechanism == SUBTRACT else None
            m_prev = mem
        if _delayed(module):
            if self.factorised(module, variant):
                j_m = float(decay)
            dm, dt = 1.0, None
        else:
            m = decay * m_prev + current()
            if mechanism == SUBTRACT:
                m = m - r * threshold
            dm, dt = self._after_spike(module, m, r, threshold, variant)
        params: dict[str, list[Partial]] = {}
        if "beta" in learned:
            params["beta"] = [_times(dm, d_beta)]
        if "threshold" in learned:
            params["threshold"] = [_plus(_times(dm, d_thr), dt)]
        if "graded_spikes_factor" in learned:
            params["graded_spikes_factor"] = [None]
        return _tidy(ElementwiseDerivatives([[_times(dm, j_m)]], [dm], params))
