"""Spike functions with surrogate derivatives for the native cells.

Written as straight-through expressions of ordinary torch ops rather than as an
``autograd.Function``: the forward value is exactly the Heaviside step (``f - f.detach()`` is
exactly zero), the derivative is that of the smooth ``f``, and the result works with every
autograd feature (double backward, ``is_grads_batched``), which the generic Jacobian code uses.
"""

from __future__ import annotations

from torch import Tensor

__all__ = ["fast_sigmoid_derivative", "spike"]


def spike(x: Tensor, slope: float = 5.0) -> Tensor:
    """Heaviside step ``x > 0`` whose gradient is ``1 / (1 + slope*|x|)^2``.

    Args:
        x: Membrane potential minus threshold, any shape.
        slope: Steepness of the surrogate derivative.

    Returns:
        Spikes in {0, 1}, same shape and dtype as ``x``.
    """
    smooth = x / (1.0 + slope * x.abs())
    return (x > 0).to(x.dtype) + (smooth - smooth.detach())


def fast_sigmoid_derivative(x: Tensor, slope: float = 5.0) -> Tensor:
    """The derivative :func:`spike` uses, written out for analytic Jacobians."""
    return 1.0 / (1.0 + slope * x.abs()) ** 2
