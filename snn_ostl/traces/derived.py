"""Synapse traces without the derived states of a cell.

When a state is a function of another state of the same step (the SNU's ``y_t = h(s_t)``), its
synapse trace is that state's trace times a per-neuron factor: ``e^y_t = D_t e^s_t`` with
``D_t = h'``. Storing ``e^y`` as well doubles the per-synapse traces and quadruples a recurrent
layer's full-Jacobian update, so the synapse traces keep ``e^s`` alone and the factor is folded
into the Jacobian and into the state gradients of the backward pass (exact, not approximate):

- Jacobian: ``J'[j][m] = J[j][m] + Σ_{k derived from m} J[j][k] D^k_{t-1}``;
- contraction: ``ĝ'^m = ĝ^m + Σ_{k derived from m} ĝ^k D^k_{t-1}``.

Derived states keep a None trace, so the trace-form functions need no change. A cell declares
its derived states in :attr:`snn_ostl.derivatives.ElementwiseDerivatives.derived`.
"""

from __future__ import annotations

from collections.abc import Sequence

from torch import Tensor

from snn_ostl.derivatives import Partial

__all__ = ["Derived", "fold_grads", "fold_jacobian"]

#: ``{k: (j, D)}``: state k equals a function of state j of the same step, with factor D.
Derived = dict[int, tuple[int, Partial]]


def _times(a: Partial, b: Partial) -> Partial:
    if a is None or b is None:
        return None
    return a * b


def _plus(a: Partial, b: Partial) -> Partial:
    if a is None:
        return b
    return a if b is None else a + b


def fold_jacobian(
    jac: Sequence[Sequence[Partial]],
    current: Sequence[Partial],
    derived: Derived,
    previous: Derived,
) -> tuple[list[list[Partial]], list[Partial]]:
    """The Jacobian and current partials of the kept states alone.

    Args:
        jac: S x S partials ``∂s^k_t/∂s^j_{t-1}``.
        current: S partials ``∂s^k_t/∂a_t``.
        derived: This step's derived states (which rows and columns to drop).
        previous: The factors of step t-1 (``D_{t-1}``, used for the columns); empty at the
            first step, where the traces of step t-1 are zero anyway.

    Returns:
        ``(J', c')`` with None in the rows and columns of derived states.
    """
    out = [list(row) for row in jac]
    for row in out:
        for k, (m, _) in derived.items():
            factor = previous.get(k, (m, None))[1]
            row[m] = _plus(row[m], _times(row[k], factor))
            row[k] = None
    cur = list(current)
    for k in derived:
        out[k] = [None] * len(jac)
        cur[k] = None
    return out, cur


def fold_grads(grads: Sequence[Tensor | None], previous: Derived) -> list[Tensor | None]:
    """``ĝ'^m = ĝ^m + Σ_k ĝ^k D^k_{t-1}``; derived states get None."""
    out = list(grads)
    for k, (m, factor) in previous.items():
        out[m] = _plus(out[m], _times(grads[k], factor))
        out[k] = None
    return out
