"""Shared helpers of the Norse adapters: surrogate derivatives, coefficients, example settings.

:func:`surrogate_derivative` writes out the derivative of Norse 1.1.0's ``threshold``; the
small helpers turn Norse's coefficients (kept in the precision of ``p``) into partials; the
rest builds the float64 example modules of the tests and the docs table.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

_DT = torch.float64

#: Fields of Norse parameter tuples that are settings, never trained.
_SETTINGS = ("method", "alpha", "reset_method")

#: Threshold methods whose surrogate derivative :func:`surrogate_derivative` writes out.
_SURROGATES = ("super", "heaviside", "triangle", "tanh", "circ", "heavi_erfc")


def surrogate_derivative(x: Tensor, method: str, alpha: Any) -> Tensor | None:
    """The derivative Norse 1.1.0's ``threshold(x, method, alpha)`` backpropagates.

    Args:
        x: The argument of the threshold (voltage minus threshold).
        method: ``p.method``.
        alpha: ``p.alpha``.

    Returns:
        The derivative, shaped like ``x``; None for ``"heaviside"`` (no gradient at all).

    Note:
        ``"super"`` (SuperSpike) ignores ``alpha`` in Norse 1.1.0: its gradient is
        ``1 / (|x| + 1)^2`` whatever ``alpha`` says (Norse's main branch changes this).
    """
    if method == "super":
        return 1.0 / (torch.abs(x) + 1.0).pow(2)
    if method == "heaviside":
        return None
    if method == "triangle":
        return alpha * torch.relu(1 - x.abs())
    if method == "tanh":
        return 1 - (x * alpha).tanh().pow(2)
    if method == "circ":
        root = (alpha**2 + x.pow(2)).sqrt()
        return (-(x.pow(2) / (2 * root.pow(3))) + 1 / (2 * root)) * 2 * alpha
    if method == "heavi_erfc":
        # Norse divides by sqrt(pi) computed in the default dtype (float32): replicate it
        return 2 * torch.exp(-(alpha * x).pow(2)) / torch.as_tensor(math.pi).sqrt()
    raise ValueError(f"unknown Norse threshold method {method!r}")


def _scalar(value: Any) -> bool:
    return not isinstance(value, Tensor) or value.numel() == 1


def _detached(value: Any) -> Any:
    return value.detach() if isinstance(value, Tensor) else value


def _coef(value: Any, like: Tensor) -> Tensor | float:
    """A coefficient Norse computed in the precision of ``p``, in the state's dtype."""
    if isinstance(value, Tensor):
        return float(value) if value.numel() == 1 else value.detach().to(like.dtype)
    return float(value)


# ---------------------------------------------------------------------------- examples
# Small float64 modules for the tests and the docs table. Norse keeps p in float32 by default;
# a float64 model then computes parts of its first step from float32 scalars (its initial
# voltage is p.v_leak), which only matters for the exponential of LIFAdExCell, so some examples
# carry float64 parameters (_f64).
_N = 5  # neurons of the examples with per-neuron settings
_I = 4  # inputs of the examples with their own input weights


def _per_neuron(start: float, stop: float) -> Tensor:
    return torch.linspace(start, stop, _N, dtype=_DT)


def _f64(p: Any) -> Any:
    """A Norse parameter tuple with every tensor field in float64."""
    return p._replace(
        **{
            k: torch.as_tensor(v, dtype=_DT)
            for k, v in p._asdict().items()
            if isinstance(v, (Tensor, int, float)) and not isinstance(v, bool)
        }
    )


def _weights(rows: int, cols: int, scale: float = 1.0) -> nn.Parameter:
    return nn.Parameter(torch.randn(rows, cols, dtype=_DT) * scale)
