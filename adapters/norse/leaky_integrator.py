"""The adapters of Norse's leaky integrators ``LICell`` and ``LILinearCell`` (no spikes, no reset).

Their scalar decays make every partial constant, so their traces factorise (presynaptic).
"""

from __future__ import annotations

from collections.abc import Callable

import norse.torch as nt
import torch
from norse.torch.functional.leaky_integrator import LIState, li_feed_forward_step
from snn_ostl.adapters.norse._base import NorseCellAdapter
from snn_ostl.adapters.norse._common import _DT, _I, _N, _coef, _detached, _per_neuron, _scalar
from torch import Tensor, nn

from snn_ostl.adapter import InternalSynapse, StepRecord
from snn_ostl.derivatives import ElementwiseDerivatives, Partial
from snn_ostl.registry import register_adapter


# ---------------------------------------------------------------------------- leaky integrators
def _li_derivatives(
    adapter: NorseCellAdapter, module: nn.Module, step: StepRecord, current: Callable[[], Tensor]
) -> ElementwiseDerivatives:
    """v_t = v + dm ((v_leak - v) + i + a), i_t = (1 - ds)(i + a): constant partials."""
    p, dt = module.p, module.dt
    like = step.prev[0]
    dm = _coef(dt * _detached(p.tau_mem_inv), like)
    keep = 1.0 + _coef(-dt * _detached(p.tau_syn_inv), like)
    state: list[list[Partial]] = [[1.0 - dm, dm], [None, keep]]
    cur: list[Partial] = [dm, keep]
    trained = adapter.neuron_parameters(module)
    params: dict[str, list[Partial]] = {}
    if trained:
        v, i = step.prev
        i_jump = i + current()
        for key in trained:
            name = key[2:]
            if name == "tau_mem_inv":
                params[key] = [dt * ((_detached(p.v_leak) - v) + i_jump), None]
            elif name == "tau_syn_inv":
                params[key] = [None, -dt * i_jump]
            elif name == "v_leak":
                params[key] = [dm, None]
    return ElementwiseDerivatives(state, cur, params)


def _li_factorised(module: nn.Module) -> bool:
    return _scalar(module.p.tau_mem_inv) and _scalar(module.p.tau_syn_inv)


@register_adapter(
    nt.LICell,
    examples={
        "default": lambda: nt.LICell(),
        "per-neuron time constants": lambda: nt.LICell(
            p=nt.LIParameters(tau_mem_inv=_per_neuron(50.0, 150.0))
        ),
        "trained time constants": lambda: nt.LICell(
            p=nt.LIParameters(
                tau_mem_inv=nn.Parameter(torch.tensor(100.0, dtype=_DT)),
                tau_syn_inv=nn.Parameter(torch.tensor(200.0, dtype=_DT)),
            )
        ),
    },
)
class LICellAdapter(NorseCellAdapter):
    """``LICell``: the leaky integrator (no spikes, no reset), two presynaptic traces.

    With scalar time constants every partial is a plain number, so the engine keeps one filtered
    input per state (``x̄^v``, ``x̄^i``) instead of per-synapse traces; per-neuron time constants
    fall back to per-synapse traces.
    """

    state_names = ("v", "i")
    state_type = LIState
    step_fn = staticmethod(li_feed_forward_step)
    initial = ("v_leak", None)
    spiking = False

    def factorised(self, module, variant):
        return _li_factorised(module)

    def derivatives(self, module, step, variant, current):
        return _li_derivatives(self, module, step, current)


@register_adapter(
    nt.LILinearCell,
    examples={
        "default": lambda: _li_linear(_I, _N),
    },
)
class LILinearCellAdapter(LICellAdapter):
    """``LILinearCell``: a leaky integrator with its own ``input_weights`` (presynaptic trace)."""

    def _shape(self, module, x):
        return (x.shape[0], int(module.hidden_size))

    def _uses_step(self, module):
        return True

    def internal_synapses(self, module):
        return [InternalSynapse("input_weights", "input")]


def _li_linear(inputs: int, hidden: int) -> nn.Module:
    cell = nt.LILinearCell(inputs, hidden)
    cell.input_weights = nn.Parameter(cell.input_weights.detach().to(_DT))
    return cell
