"""The adapters of the recurrent snnTorch neurons ``snn.RLeaky`` and ``snn.RSynaptic``.

Their previous spikes are state 0 and drive ``recurrent``: an all-to-all ``nn.Linear`` (an
internal synapse, full Jacobian) or the one-to-one ``V`` (elementwise).
"""

from __future__ import annotations

from collections.abc import Callable

import snntorch as snn
import torch
import torch.nn.functional as F
from snn_ostl.adapters.snntorch._base import _SnnTorchElementwise
from snn_ostl.adapters.snntorch._common import (
    EXAMPLE_SIZE,
    NONE,
    SUBTRACT,
    ZERO,
    _delayed,
    _mechanism,
    _reset_signal,
    _tidy,
    _value,
)
from snn_ostl.adapters.snntorch._spikes import _spike
from torch import Tensor, nn

from snn_ostl.adapter import InternalSynapse, StepRecord
from snn_ostl.derivatives import elementwise_derivatives
from snn_ostl.registry import register_adapter


def _rleaky_examples() -> dict[str, Callable[[], nn.Module]]:
    n = EXAMPLE_SIZE
    return {
        "all-to-all": lambda: snn.RLeaky(beta=0.9, linear_features=n),
        "all-to-all, init_hidden": lambda: snn.RLeaky(
            beta=0.9, linear_features=n, init_hidden=True
        ),
        "all-to-all, zero, learned": lambda: snn.RLeaky(
            beta=0.85,
            linear_features=n,
            reset_mechanism="zero",
            learn_beta=True,
            learn_threshold=True,
        ),
        "all-to-all, reset_delay=False": lambda: snn.RLeaky(
            beta=0.9, linear_features=n, reset_delay=False
        ),
        "one-to-one": lambda: snn.RLeaky(beta=0.9, all_to_all=False, V=0.5),
        "one-to-one, per-neuron V, learned": lambda: snn.RLeaky(
            beta=torch.linspace(0.8, 0.95, n),
            all_to_all=False,
            V=torch.linspace(-0.5, 0.5, n),
            learn_beta=True,
            learn_threshold=True,
        ),
    }


def _rsynaptic_examples() -> dict[str, Callable[[], nn.Module]]:
    n = EXAMPLE_SIZE
    return {
        "all-to-all": lambda: snn.RSynaptic(alpha=0.8, beta=0.9, linear_features=n),
        "all-to-all, zero, init_hidden": lambda: snn.RSynaptic(
            alpha=0.8, beta=0.9, linear_features=n, reset_mechanism="zero", init_hidden=True
        ),
        "one-to-one, learned": lambda: snn.RSynaptic(
            alpha=0.8,
            beta=0.9,
            all_to_all=False,
            V=0.3,
            learn_alpha=True,
            learn_beta=True,
            learn_threshold=True,
        ),
    }


class _RecurrentMixin(_SnnTorchElementwise):
    """RLeaky and RSynaptic: the previous spikes drive ``recurrent`` (a Linear, all-to-all, or
    an elementwise ``V``, one-to-one)."""

    spike_states = (0,)

    def problems(self, module, variant):
        out = super().problems(module, variant)
        if isinstance(getattr(module, "recurrent", None), nn.Conv2d):
            out.append(
                (
                    "its recurrent connection is a Conv2d; exact OSTL for convolutional "
                    "recurrence needs a full Jacobian over every pixel, which is not implemented.",
                    "use linear_features=... (all-to-all Linear) or all_to_all=False (one-to-one), "
                    "or an snn.Leaky after your own Conv2d.",
                )
            )
        return out

    def _all_to_all(self, module) -> bool:
        return isinstance(getattr(module, "recurrent", None), nn.Linear)

    def internal_synapses(self, module):
        if not self._all_to_all(module):
            return []
        bias = module.recurrent.bias
        return [InternalSynapse("recurrent.weight", 0, None if bias is None else "recurrent.bias")]

    def neuron_parameters(self, module):
        out = super().neuron_parameters(module)
        v = getattr(module, "V", None)
        if not self._all_to_all(module) and isinstance(v, nn.Parameter):
            out["V"] = v
        return out

    def _recurrent_in(self, module, spk: Tensor, params: dict, *, cut: bool) -> Tensor | float:
        """The one-to-one recurrent term ``V * spk_{t-1}`` (0 for all-to-all: outside the cell)."""
        if self._all_to_all(module):
            return 0.0
        spk = spk.detach() if cut else spk
        return spk * _value(module, params, "V")

    def _total_current(self, module, step: StepRecord) -> Tensor:
        if not self._all_to_all(module):
            return step.current
        rec = module.recurrent
        return step.current + F.linear(step.prev[0], rec.weight.detach(), _detached(rec.bias))

    def derivatives(self, module, step, variant, current):
        params = dict(self.neuron_parameters(module))
        cut_reset = self._cuts_own_reset(module, variant)
        cut_rec = self._cuts_recurrent(module, variant)
        return _tidy(
            elementwise_derivatives(
                lambda a, s, p: self._rcell(module, a, s, p, cut_reset=cut_reset, cut_rec=cut_rec),
                self._total_current(module, step),
                step.prev,
                params,
            )
        )

    def _cell(self, module, current, state, params, *, cut_reset):
        return self._rcell(module, current, state, params, cut_reset=cut_reset, cut_rec=False)

    def _rcell(self, module, current, state, params, *, cut_reset, cut_rec):
        raise NotImplementedError


def _detached(t: Tensor | None) -> Tensor | None:
    return None if t is None else t.detach()


@register_adapter(snn.RLeaky, examples=_rleaky_examples())
class RLeakyAdapter(_RecurrentMixin):
    """``snn.RLeaky``: Leaky with ``recurrent(spk_{t-1})`` added to the current; state
    ``(spk, mem)`` where ``spk`` (state 0) is the layer's own spikes."""

    state_names = ("spk", "mem")

    def _rcell(self, module, current, state, params, *, cut_reset, cut_rec):
        spk_prev, mem = state
        beta = _value(module, params, "beta")
        threshold = _value(module, params, "threshold")
        r = _reset_signal(mem, threshold)
        base = (
            beta.clamp(0, 1) * mem
            + current
            + self._recurrent_in(module, spk_prev, params, cut=cut_rec)
        )
        mechanism = _mechanism(module)
        if mechanism == SUBTRACT:
            m = base - r * threshold
        elif mechanism == ZERO:
            m = base - r * base
        else:
            m = base
        gsf = _value(module, params, "graded_spikes_factor")
        spk = _spike(module, m - threshold) * gsf
        if not _delayed(module):
            q = spk / gsf
            do_reset = (q.detach() if cut_reset else q) - r
            m = m - do_reset * threshold if mechanism == SUBTRACT else m - do_reset * m
        return spk, m


@register_adapter(snn.RSynaptic, examples=_rsynaptic_examples())
class RSynapticAdapter(_RecurrentMixin):
    """``snn.RSynaptic``: Synaptic with ``recurrent(spk_{t-1})`` added to the synaptic current;
    state ``(spk, syn, mem)``."""

    state_names = ("spk", "syn", "mem")
    param_names = ("alpha", "beta", "threshold", "graded_spikes_factor")

    def problems(self, module, variant):
        out = super().problems(module, variant)
        if not module.reset_delay and _mechanism(module) != NONE:
            out.append(
                (
                    "reset_delay=False is broken in snnTorch 1.0.0's RSynaptic: it reads the spike "
                    "argument instead of the new spikes (a TypeError when the state lives on the "
                    "module) and never applies the reset to the membrane it keeps.",
                    "use reset_delay=True (the default), or snn.RLeaky(reset_delay=False).",
                )
            )
        return out

    def _rcell(self, module, current, state, params, *, cut_reset, cut_rec):
        spk_prev, syn_prev, mem = state
        alpha = _value(module, params, "alpha")
        beta = _value(module, params, "beta")
        threshold = _value(module, params, "threshold")
        r = _reset_signal(mem, threshold)
        syn = (
            alpha.clamp(0, 1) * syn_prev
            + current
            + self._recurrent_in(module, spk_prev, params, cut=cut_rec)
        )
        m = beta.clamp(0, 1) * mem + syn
        mechanism = _mechanism(module)
        if mechanism == SUBTRACT:
            m = m - r * threshold
        elif mechanism == ZERO:
            m = m - m * r
        gsf = _value(module, params, "graded_spikes_factor")
        spk = _spike(module, m - threshold) * gsf
        return spk, syn, m
