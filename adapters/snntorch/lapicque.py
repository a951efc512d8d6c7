"""The adapter of ``snn.Lapicque`` (an RC circuit), and the refusal of its beta form."""

from __future__ import annotations

from collections.abc import Callable

import snntorch as snn
from snn_ostl.adapters.snntorch._base import _SnnTorchElementwise
from snn_ostl.adapters.snntorch._common import (
    SUBTRACT,
    ZERO,
    _is_scalar,
    _mechanism,
    _reset_signal,
    _tidy,
    _value,
)
from torch import Tensor, nn

from snn_ostl.derivatives import ElementwiseDerivatives, Partial
from snn_ostl.registry import register_adapter


def _lapicque_examples() -> dict[str, Callable[[], nn.Module]]:
    return {
        "R and C, subtract": lambda: snn.Lapicque(R=5.0, C=1.0),
        "R and C, zero, init_hidden": lambda: snn.Lapicque(
            R=5.0, C=1.0, reset_mechanism="zero", init_hidden=True
        ),
        "R and C, learn_threshold": lambda: snn.Lapicque(R=4.0, C=0.8, learn_threshold=True),
    }


@register_adapter(snn.Lapicque, examples=_lapicque_examples())
class LapicqueAdapter(_SnnTorchElementwise):
    """``snn.Lapicque`` as snnTorch computes it (forward Euler of an RC circuit):
    ``mem_t = (1 - Δt/(RC)) mem_{t-1} + (Δt/C) a_t`` minus the reset."""

    state_names = ("mem",)
    param_names = ("threshold", "graded_spikes_factor")

    def problems(self, module, variant):
        out = super().problems(module, variant)
        beta = module.beta
        if isinstance(beta, nn.Parameter):
            out.append(
                (
                    "learn_beta=True: snnTorch's Lapicque never uses beta in its update (it uses "
                    "R and C), so beta would never train.",
                    "build it with R and C (Lapicque(R=..., C=...)) and learn_beta=False, or use "
                    "snn.Leaky(beta=..., learn_beta=True).",
                )
            )
        elif isinstance(beta, Tensor) and beta.dim() == 0:
            b = float(beta)
            out.append(
                (
                    f"it was built from beta={b:g}, but snnTorch 1.0 then decays the membrane by "
                    f"1 + ln(beta) = {1 - float(module.time_step / (module.R * module.C)):g} per "
                    f"step and scales the input by -ln(beta), not by beta (a known snnTorch bug): "
                    "it would train a different neuron from the one asked for.",
                    "use snn.Leaky(beta=...) for a decay of exactly beta, or build "
                    "Lapicque(R=..., C=..., time_step=...) whose decay 1 - time_step/(R*C) is "
                    "what it computes.",
                )
            )
        return out

    def _decay_gain(self, module) -> tuple[Tensor, Tensor]:
        r_, c_, dt = module.R, module.C, module.time_step
        return 1 - (dt / (r_ * c_)), r_ * (1 / (r_ * c_)) * dt

    def factorised(self, module, variant):
        decay, gain = self._decay_gain(module)
        return _is_scalar(decay) and _is_scalar(gain) and _mechanism(module) != ZERO

    def fusable(self, module, variant):
        # The reset is always delayed (detached): a_t and mem_{t-1} act only through mem_t.
        return self.factorised(module, variant)

    def _cell(self, module, current, state, params, *, cut_reset):
        (mem,) = state
        threshold = _value(module, params, "threshold")
        r = _reset_signal(mem, threshold)
        base = (
            current * module.R * (1 / (module.R * module.C)) * module.time_step
            + (1 - (module.time_step / (module.R * module.C))) * mem
        )
        mechanism = _mechanism(module)
        if mechanism == SUBTRACT:
            return (base - r * threshold,)
        if mechanism == ZERO:
            return (base - r * base,)
        return (base,)

    def derivatives(self, module, step, variant, current):
        (mem,) = step.prev
        threshold = module.threshold.detach()
        r = _reset_signal(mem, threshold)
        decay, gain = self._decay_gain(module)
        mechanism = _mechanism(module)
        if self.factorised(module, variant):
            j: Partial = float(decay)
            c: Partial = float(gain)
        else:
            keep = 1 - r if mechanism == ZERO else 1.0
            j, c = keep * decay.to(mem.dtype), keep * gain.to(mem.dtype)
        params: dict[str, list[Partial]] = {}
        learned = self.neuron_parameters(module)
        if "threshold" in learned:
            params["threshold"] = [-r if mechanism == SUBTRACT else None]
        if "graded_spikes_factor" in learned:
            params["graded_spikes_factor"] = [None]
        return _tidy(ElementwiseDerivatives([[j]], [c], params))
