"""The adapters of Norse's LIF family: the LIF cells and the IAF cell (a LIF without leak).

``LIFCell``, ``LIFRecurrentCell``, ``LIFBoxCell`` and ``IAFCell``; ``LIFCell`` has hand-written
partials (the hot path), the others use the autograd reference.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import ClassVar

import norse.torch as nt
import torch
from norse.torch.functional.iaf import IAFFeedForwardState, iaf_feed_forward_step
from norse.torch.functional.lif import (
    LIFFeedForwardState,
    LIFParameters,
    LIFState,
    lif_feed_forward_step,
    lif_step,
)
from norse.torch.functional.lif_box import (
    LIFBoxFeedForwardState,
    LIFBoxParameters,
    lif_box_feed_forward_step,
)
from norse.torch.functional.reset import reset_subtract
from snn_ostl.adapters.norse._base import NorseCellAdapter, _RecurrentMixin
from snn_ostl.adapters.norse._common import (
    _DT,
    _I,
    _N,
    _SURROGATES,
    _coef,
    _detached,
    _per_neuron,
    _weights,
    surrogate_derivative,
)
from snn_ostl.adapters.norse._eprop import _iaf_eprop_step, _lif_box_eprop_step, _lif_eprop_step
from torch import Tensor, nn

from snn_ostl.adapter import StepRecord
from snn_ostl.derivatives import ElementwiseDerivatives, Partial
from snn_ostl.registry import register_adapter

_LIF_EXAMPLES = {
    "default": lambda: nt.LIFCell(),
    "triangle surrogate, per-neuron threshold": lambda: nt.LIFCell(
        p=LIFParameters(method="triangle", alpha=torch.as_tensor(0.3), v_th=_per_neuron(0.8, 1.2))
    ),
    "trained tau_mem_inv and v_th": lambda: nt.LIFCell(
        p=LIFParameters(
            tau_mem_inv=nn.Parameter(torch.full((_N,), 100.0, dtype=_DT)),
            v_th=nn.Parameter(torch.tensor(1.0, dtype=_DT)),
        )
    ),
}


# ---------------------------------------------------------------------------- LIF
@register_adapter(nt.LIFCell, examples=_LIF_EXAMPLES)
class LIFCellAdapter(NorseCellAdapter):
    """``LIFCell``: i += a; v integrates i; z = Θ(v - v_th); v = (1-z) v + z v_reset (gate kept).

    Partials are written out (the hot path) for every surrogate of Norse 1.1; the tests check
    them against autograd of :meth:`cell`.
    """

    state_names = ("v", "i")
    state_type = LIFFeedForwardState
    step_fn = staticmethod(lif_feed_forward_step)
    eprop_step = staticmethod(_lif_eprop_step)
    initial = ("v_leak", None)

    def derivatives(
        self, module: nn.Module, step: StepRecord, variant: str, current: Callable[[], Tensor]
    ) -> ElementwiseDerivatives:
        p, dt = module.p, module.dt
        if p.method not in _SURROGATES:
            return super().derivatives(module, step, variant, current)
        v, i = step.prev
        v_leak, v_th, v_reset = _detached(p.v_leak), _detached(p.v_th), _detached(p.v_reset)
        # the forward, as Norse computes it (its coefficients in the precision of p)
        i_new = i + current()
        dm = _coef(dt * _detached(p.tau_mem_inv), v)
        drive = (v_leak - v) + i_new
        v_dec = v + dm * drive
        keep = 1.0 + _coef(-dt * _detached(p.tau_syn_inv), v)  # ∂i_t/∂i_new
        x = v_dec - v_th
        z = (x > 0).to(v_dec.dtype)
        sg = surrogate_derivative(x, p.method, p.alpha)
        if variant == "eprop":
            sg = None  # the reset gate is detached: no path through the own spike
        # ∂v_t/∂v_dec: the gate (1 - z) plus the reset path through z
        gate = 1.0 - z if sg is None else (1.0 - z) + (v_reset - v_dec) * sg
        d_v = gate * (1.0 - dm)
        d_i = gate * dm
        state = [[d_v, d_i], [None, keep]]
        cur = [d_i, keep]
        params: dict[str, list[Partial]] = {}
        for key in self.neuron_parameters(module):
            name = key[2:]
            if name == "tau_mem_inv":
                params[key] = [gate * dt * drive, None]
            elif name == "tau_syn_inv":
                params[key] = [None, -dt * i_new]
            elif name == "v_leak":
                params[key] = [gate * dm, None]
            elif name == "v_th":
                params[key] = [None if sg is None else (v_dec - v_reset) * sg, None]
            elif name == "v_reset":
                params[key] = [z, None]
        return ElementwiseDerivatives(state, cur, params)


@register_adapter(
    nt.LIFRecurrentCell,
    examples={
        "default": lambda: nt.LIFRecurrentCell(
            _I, _N, input_weights=_weights(_N, _I), recurrent_weights=_weights(_N, _N, 0.5)
        ),
        "trained per-neuron v_th": lambda: nt.LIFRecurrentCell(
            _I,
            _N,
            p=LIFParameters(v_th=nn.Parameter(_per_neuron(0.8, 1.2))),
            input_weights=_weights(_N, _I),
            recurrent_weights=_weights(_N, _N, 0.5),
        ),
    },
)
class LIFRecurrentCellAdapter(_RecurrentMixin, NorseCellAdapter):
    """``LIFRecurrentCell``: state (z, v, i); reset detached by Norse; full Jacobian."""

    state_names = ("z", "v", "i")
    state_type = LIFState
    step_fn = staticmethod(lif_step)
    initial = (None, "v_leak", None)


@register_adapter(
    nt.LIFBoxCell,
    examples={
        "default": lambda: nt.LIFBoxCell(),
        "subtractive reset": lambda: nt.LIFBoxCell(p=LIFBoxParameters(reset_method=reset_subtract)),
    },
)
class LIFBoxCellAdapter(NorseCellAdapter):
    """``LIFBoxCell``: a LIF neuron without synaptic current (the SNU with a kept gate)."""

    state_names = ("v",)
    state_type = LIFBoxFeedForwardState
    step_fn = staticmethod(lif_box_feed_forward_step)
    eprop_step = staticmethod(_lif_box_eprop_step)
    initial = ("v_leak",)


@register_adapter(
    nt.IAFCell,
    examples={"default": lambda: nt.IAFCell()},
)
class IAFCellAdapter(NorseCellAdapter):
    """``IAFCell``: v += a; z = Θ(v - v_th); v = (1-z) v + z v_reset (no leak)."""

    state_names = ("v",)
    state_type = IAFFeedForwardState
    step_fn = staticmethod(iaf_feed_forward_step)
    eprop_step = staticmethod(_iaf_eprop_step)
    initial = ("v_reset",)
    frozen: ClassVar[dict[str, str]] = {
        "v_reset": "Norse starts IAFCell from p.v_reset without detaching it, a dependency of "
        "the initial state that eligibility traces do not carry.",
    }
