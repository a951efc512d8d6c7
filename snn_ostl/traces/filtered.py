"""SuperSpike's eligibility: per-synapse surrogate traces, filtered by a double exponential.

For a Linear synapse ``W`` (``[N, I]``) into elementwise spiking neurons, with ``ε * x`` the
presynaptic input filtered by the neurons' sub-threshold response (one trace per neuron state,
``[B, I]``: the response is the same for every neuron),

    e_t[b, i, j] = ∂y_t/∂a_t[b, i] x_t[b, j] + Σ_k ∂y_t/∂s^k_{t-1}[b, i] (ε * x)^k_{t-1}[b, j]

is ``σ'(U_i) ∂U_i/∂w_ij`` with the reset ignored, and the eligibility SuperSpike (Zenke &
Ganguli 2018) multiplies with its error is ``λ = α * e``, the double-exponential filter
:func:`double_exponential_step` applied per synapse (``[B, N, I]``, two stages).
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass, field
from typing import Any

from torch import Tensor, nn

__all__ = ["SpikingLayer", "double_exponential_step"]


def double_exponential_step(
    state: tuple[Tensor, Tensor] | None, value: Tensor, a_rise: float, a_decay: float
) -> tuple[Tensor, Tensor]:
    """One step of the unit-area double-exponential filter, from zero when ``state`` is None.

    ``h_t = a_r h_{t-1} + (1 - a_r) u_t``, ``f_t = a_d f_{t-1} + (1 - a_d) h_t``.

    Returns:
        ``(h_t, f_t)``; ``f_t`` is the filtered value.
    """
    if state is None:
        rise = (1 - a_rise) * value
        return rise, (1 - a_decay) * rise
    rise = a_rise * state[0] + (1 - a_rise) * value
    return rise, a_decay * state[1] + (1 - a_decay) * rise


@dataclass
class SpikingLayer:
    """One Linear -> spiking neuron pair under SuperSpike, and its traces."""

    path: str
    module: nn.Module
    adapter: Any
    synapse: nn.Linear | None = None
    synapse_path: str = ""
    below: str | None = None  # the layer whose spikes feed this synapse
    decay: list[list[float]] = field(default_factory=list)  # J0[k][j], at rest
    drive: list[float] = field(default_factory=list)  # c0[k] = ∂s^k/∂a, at rest
    psp: list[Tensor] | None = None  # ε * x per state, [B, I]
    psp_bias: list[float] | None = None
    filtered: tuple[Tensor, Tensor] | None = None  # (rise, λ), [B, N, I]
    filtered_bias: tuple[Tensor, Tensor] | None = None  # [B, N]
    leaves: tuple[Tensor, Tensor, tuple[Tensor, ...]] | None = None  # x, a, s_{t-1}
    last_new: tuple[weakref.ref, ...] = ()
    spikes: Tensor | None = None

    @property
    def elig(self) -> Tensor | None:
        """λ_t, ``[B, N, I]``."""
        return None if self.filtered is None else self.filtered[1]

    @property
    def elig_bias(self) -> Tensor | None:
        """λ_t of the bias, ``[B, N]``."""
        return None if self.filtered_bias is None else self.filtered_bias[1]

    def clear(self) -> None:
        self.psp = self.psp_bias = self.filtered = self.filtered_bias = None
        self.leaves, self.last_new, self.spikes = None, (), None

    def trace_bytes(self) -> int:
        tensors = [*(self.filtered or ()), *(self.filtered_bias or ()), *(self.psp or [])]
        return sum(t.numel() * t.element_size() for t in tensors)

    def advance(self, x: Tensor, partials: tuple, a: Tensor, a_rise: float, a_decay: float) -> None:
        """One step: ``e_t`` from the step's partials and the PSP traces, then the filter.

        Args:
            x: The synapse input ``[B, I]``.
            partials: ``∂y_t/∂a_t`` and ``∂y_t/∂s^k_{t-1}`` (``[B, *N]`` each, or None).
            a: The step's current (for the shape of a missing partial).
            a_rise: Per-step factor of the filter's rise.
            a_decay: Per-step factor of its decay.
        """
        batch = x.shape[0]
        dy_da = a.new_zeros(a.shape) if partials[0] is None else partials[0]
        dy_da = dy_da.reshape(batch, -1)
        states = len(self.drive)
        old, old_bias = self.psp, self.psp_bias
        has_bias = self.synapse.bias is not None
        elig = dy_da.unsqueeze(2) * x.unsqueeze(1)  # [B, N, I]
        elig_b = dy_da.clone() if has_bias else None
        if old is not None:
            for k in range(states):
                g = partials[1 + k]
                if g is None:
                    continue
                g = g.reshape(batch, -1)
                elig = elig + g.unsqueeze(2) * old[k].unsqueeze(1)
                if has_bias:
                    elig_b = elig_b + g * old_bias[k]
        # the PSP per state: (ε * x)^k_t = Σ_j J0[k][j] (ε * x)^j_{t-1} + c0[k] x_t
        new, new_bias = [], []
        for k in range(states):
            trace, trace_b = self.drive[k] * x, self.drive[k]
            if old is not None:
                for j in range(states):
                    if self.decay[k][j]:
                        trace = trace + self.decay[k][j] * old[j]
                        trace_b = trace_b + self.decay[k][j] * old_bias[j]
            new.append(trace)
            new_bias.append(trace_b)
        self.psp, self.psp_bias = new, new_bias
        self.filtered = double_exponential_step(self.filtered, elig, a_rise, a_decay)
        if has_bias:
            self.filtered_bias = double_exponential_step(
                self.filtered_bias, elig_b, a_rise, a_decay
            )
