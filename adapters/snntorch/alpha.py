"""The adapter of ``snn.Alpha`` (excitatory and inhibitory currents), derivatives by autograd."""

from __future__ import annotations

from collections.abc import Callable

import snntorch as snn
import torch
from snn_ostl.adapters.snntorch._base import _SnnTorchElementwise
from snn_ostl.adapters.snntorch._common import (
    NONE,
    SUBTRACT,
    ZERO,
    _is_scalar,
    _mechanism,
    _reset_signal,
    _value,
)
from torch import nn

from snn_ostl.registry import register_adapter


def _alpha_examples() -> dict[str, Callable[[], nn.Module]]:
    return {
        "zero": lambda: snn.Alpha(alpha=0.9, beta=0.8, threshold=0.5),
        "subtract": lambda: snn.Alpha(
            alpha=0.9, beta=0.8, threshold=0.5, reset_mechanism="subtract"
        ),
        "none": lambda: snn.Alpha(alpha=0.9, beta=0.8, reset_mechanism="none", threshold=1.5),
        "learn_beta, learn_threshold, init_hidden": lambda: snn.Alpha(
            alpha=0.9,
            beta=0.8,
            threshold=0.5,
            learn_beta=True,
            learn_threshold=True,
            init_hidden=True,
        ),
    }


@register_adapter(snn.Alpha, examples=_alpha_examples())
class AlphaAdapter(_SnnTorchElementwise):
    """``snn.Alpha``: excitatory and inhibitory currents, ``mem_t = τ (syn_exc + syn_inh)``
    with ``τ = ln α / (ln β − ln α) + 1``. Derivatives by autograd of :meth:`cell`."""

    state_names = ("syn_exc", "syn_inh", "mem")
    param_names = ("alpha", "beta", "threshold", "graded_spikes_factor")

    def factorised(self, module, variant):
        return _mechanism(module) == NONE and _is_scalar(module.alpha) and _is_scalar(module.beta)

    def _cell(self, module, current, state, params, *, cut_reset):
        exc_prev, inh_prev, mem = state
        alpha = _value(module, params, "alpha").clamp(0, 1)
        beta = _value(module, params, "beta").clamp(0, 1)
        threshold = _value(module, params, "threshold")
        r = _reset_signal(mem, threshold)
        exc = alpha * exc_prev + current
        inh = beta * inh_prev - current
        tau = torch.log(alpha) / (torch.log(beta) - torch.log(alpha)) + 1
        m = tau * (exc + inh)
        mechanism = _mechanism(module)
        if mechanism == SUBTRACT:
            return exc - threshold * r, inh - inh * r, m + inh_prev * r
        if mechanism == ZERO:
            return exc - exc * r, inh - inh * r, m - m * r
        return exc, inh, m
