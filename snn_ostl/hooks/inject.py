"""The autograd node that adds the history term of OSTL.

At step t the learner feeds a stateful module its previous state through :class:`Inject`. The
forward pass returns that state unchanged (the values never differ), so the module computes
exactly what it would have. In the backward pass the node receives ``ĝ_{t-1} = ∂L_t/∂s_{t-1}``
(through the paths inside step t only, because the state was detached before) and returns
``ĝ_{t-1} · e_{t-1}`` as the gradient of each trained parameter, where ``e_{t-1}`` is the
eligibility snapshot of the previous step. Autograd then accumulates it into ``.grad`` like any
other gradient, so ``loss.backward()``, ``torch.autograd.grad`` and gradient hooks all see the
OSTL gradient.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import Tensor

__all__ = ["History", "inject"]

#: Maps the state gradients (S tensors or None) to one gradient per trained parameter.
History = Callable[[Sequence[Tensor | None]], Sequence[Tensor | None]]


class _Inject(torch.autograd.Function):
    @staticmethod
    def forward(ctx, history: History, num_states: int, *tensors: Tensor):  # type: ignore[override]
        ctx.history = history
        ctx.num_states = num_states
        ctx.set_materialize_grads(False)
        # clone, not view: the module may later modify its state in place.
        return tuple(t.clone() for t in tensors[:num_states])

    @staticmethod
    def backward(ctx, *grads: Tensor | None):  # type: ignore[override]
        param_grads = ctx.history(grads) if any(g is not None for g in grads) else ()
        if not param_grads:
            param_grads = [None] * (len(ctx.needs_input_grad) - 2 - ctx.num_states)
        return (None, None, *grads, *param_grads)


def inject(
    history: History, states: Sequence[Tensor], params: Sequence[Tensor]
) -> tuple[Tensor, ...]:
    """Pass ``states`` through a node whose backward adds ``history(ĝ)`` to ``params``.

    Args:
        history: Computes the parameter gradients from the state gradients.
        states: The previous state, S tensors (detached from older steps).
        params: The trained parameters, in the order ``history`` returns their gradients.

    Returns:
        Copies of ``states`` that carry the history term.
    """
    return _Inject.apply(history, len(states), *states, *params)
