"""The adapters of Norse's adaptive neurons: ``LSNNCell``, ``LSNNRecurrentCell``, ``LIFAdExCell``.

Their threshold (LSNN) or adaptation current (AdEx) is a third state tensor.
"""

from __future__ import annotations

import norse.torch as nt
import torch
from norse.torch.functional.lif_adex import (
    LIFAdExFeedForwardState,
    LIFAdExParameters,
    lif_adex_feed_forward_step,
)
from norse.torch.functional.lsnn import (
    LSNNFeedForwardState,
    LSNNParameters,
    LSNNState,
    lsnn_feed_forward_step,
    lsnn_step,
)
from snn_ostl.adapters.norse._base import NorseCellAdapter, _RecurrentMixin
from snn_ostl.adapters.norse._common import _I, _N, _f64, _weights
from snn_ostl.adapters.norse._eprop import _lif_adex_eprop_step, _lsnn_eprop_step

from snn_ostl.registry import register_adapter


@register_adapter(
    nt.LSNNCell,
    examples={
        "default": lambda: nt.LSNNCell(),
        "fast adaptation": lambda: nt.LSNNCell(
            p=LSNNParameters(tau_adapt_inv=torch.as_tensor(50.0), beta=torch.as_tensor(0.5))
        ),
    },
)
class LSNNCellAdapter(NorseCellAdapter):
    """``LSNNCell``: adaptive threshold b; the current enters i after the spike decision."""

    state_names = ("v", "i", "b")
    state_type = LSNNFeedForwardState
    step_fn = staticmethod(lsnn_feed_forward_step)
    eprop_step = staticmethod(_lsnn_eprop_step)
    initial = ("v_leak", None, "v_th")


@register_adapter(
    nt.LSNNRecurrentCell,
    examples={
        "fast adaptation": lambda: nt.LSNNRecurrentCell(
            _I,
            _N,
            p=LSNNParameters(tau_adapt_inv=torch.as_tensor(50.0), beta=torch.as_tensor(0.5)),
            input_weights=_weights(_N, _I),
            recurrent_weights=_weights(_N, _N, 0.5),
        ),
    },
)
class LSNNRecurrentCellAdapter(_RecurrentMixin, NorseCellAdapter):
    """``LSNNRecurrentCell``: state (z, v, i, b); reset detached by Norse; full Jacobian."""

    state_names = ("z", "v", "i", "b")
    state_type = LSNNState
    step_fn = staticmethod(lsnn_step)
    initial = (None, "v_leak", None, "v_th")


@register_adapter(
    nt.LIFAdExCell,
    examples={
        "float64 parameters": lambda: nt.LIFAdExCell(p=_f64(LIFAdExParameters())),
        "strong adaptation": lambda: nt.LIFAdExCell(
            p=_f64(LIFAdExParameters(adaptation_spike=torch.as_tensor(0.5)))
        ),
    },
)
class LIFAdExCellAdapter(NorseCellAdapter):
    """``LIFAdExCell``: adaptive exponential LIF, state (v, i, a)."""

    state_names = ("v", "i", "a")
    state_type = LIFAdExFeedForwardState
    step_fn = staticmethod(lif_adex_feed_forward_step)
    eprop_step = staticmethod(_lif_adex_eprop_step)
    initial = ("v_leak", None, None)
