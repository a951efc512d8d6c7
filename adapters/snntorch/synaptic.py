"""The adapter of ``snn.Synaptic`` (synaptic current and membrane), hand-written derivatives."""

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


def _synaptic_examples() -> dict[str, Callable[[], nn.Module]]:
    n = EXAMPLE_SIZE
    return {
        "subtract": lambda: snn.Synaptic(alpha=0.8, beta=0.9),
        "subtract, init_hidden": lambda: snn.Synaptic(alpha=0.8, beta=0.9, init_hidden=True),
        "zero": lambda: snn.Synaptic(alpha=0.8, beta=0.9, reset_mechanism="zero"),
        "none": lambda: snn.Synaptic(alpha=0.7, beta=0.8, reset_mechanism="none", threshold=2.0),
        "reset_delay=False": lambda: snn.Synaptic(alpha=0.8, beta=0.9, reset_delay=False),
        "learned alpha, beta, threshold": lambda: snn.Synaptic(
            alpha=0.8, beta=0.9, learn_alpha=True, learn_beta=True, learn_threshold=True
        ),
        "per-neuron alpha and beta": lambda: snn.Synaptic(
            alpha=torch.linspace(0.6, 0.85, n), beta=torch.linspace(0.8, 0.95, n)
        ),
    }


@register_adapter(snn.Synaptic, examples=_synaptic_examples())
class SynapticAdapter(_SnnTorchElementwise):
    """``snn.Synaptic``: ``syn_t = clamp(α) syn_{t-1} + a_t``, ``mem_t = clamp(β) mem_{t-1} +
    syn_t`` minus the reset."""

    state_names = ("syn", "mem")
    param_names = ("alpha", "beta", "threshold", "graded_spikes_factor")

    def factorised(self, module, variant):
        return (
            _is_scalar(module.alpha)
            and _is_scalar(module.beta)
            and _reset_factorises(module, variant)
        )

    def _cell(self, module, current, state, params, *, cut_reset):
        syn_prev, mem = state
        alpha = _value(module, params, "alpha")
        beta = _value(module, params, "beta")
        threshold = _value(module, params, "threshold")
        r = _reset_signal(mem, threshold)
        syn = alpha.clamp(0, 1) * syn_prev + current
        m = beta.clamp(0, 1) * mem + syn
        mechanism = _mechanism(module)
        if mechanism == SUBTRACT:
            m = m - r * threshold
        elif mechanism == ZERO:
            m = m - m * r
        return syn, self._delayed_reset(module, m, r, threshold, params, cut_reset=cut_reset)

    def derivatives(self, module, step, variant, current):
        syn_prev, mem = step.prev
        alpha, beta = module.alpha.detach(), module.beta.detach()
        threshold = module.threshold.detach()
        a_decay, b_decay = alpha.clamp(0, 1), beta.clamp(0, 1)
        r = _reset_signal(mem, threshold)
        mechanism = _mechanism(module)
        learned = self.neuron_parameters(module)
        keep: Partial = 1 - r if mechanism == ZERO else 1.0
        if _delayed(module):
            dm, dt = 1.0, None
        else:
            m = b_decay * mem + a_decay * syn_prev + current()
            m = m - r * threshold if mechanism == SUBTRACT else m - m * r
            dm, dt = self._after_spike(module, m, r, threshold, variant)
        dmk = _times(dm, keep)
        if self.factorised(module, variant):
            a_f, b_f = float(a_decay), float(b_decay)
            state: list[list[Partial]] = [[a_f, None], [a_f, b_f]]
            cur: list[Partial] = [1.0, 1.0]
        else:
            state = [[a_decay, None], [_times(dmk, a_decay), _times(dmk, b_decay)]]
            cur = [1.0, dmk]
        params: dict[str, list[Partial]] = {}
        if "alpha" in learned:
            d_syn = _clamp_mask(alpha) * syn_prev
            params["alpha"] = [d_syn, _times(dmk, d_syn)]
        if "beta" in learned:
            params["beta"] = [None, _times(dmk, _clamp_mask(beta) * mem)]
        if "threshold" in learned:
            d_thr = -r if mechanism == SUBTRACT else None
            params["threshold"] = [None, _plus(_times(dm, d_thr), dt)]
        if "graded_spikes_factor" in learned:
            params["graded_spikes_factor"] = [None, None]
        return _tidy(ElementwiseDerivatives(state, cur, params))
