"""Per-step partial derivatives of a cell, and a generic way to get them from autograd.

Shape letters used throughout snn_ostl:

- ``B``: batch size.
- ``N``: neuron shape of one sample (``[N]`` for a dense layer, ``[C, H, W]`` after a Conv2d).
- ``S``: number of state tensors of a cell (1 for snnTorch ``Leaky``, 2 for the SNU's (s, y)).
- ``I``: input features of a synapse.
- ``P``: number of elements of one parameter.

An *elementwise* cell updates each neuron from its own state and its own input current
``a_t`` (``[B, *N]``), so its Jacobians are diagonal and can be stored as tensors broadcastable to
``[B, *N]``. A *dense* cell mixes neurons (torch RNN cells); its Jacobians are full matrices.

Only :func:`torch.autograd.grad` is used here: ``torch.func`` transforms fail on the
old-style ``autograd.Function`` surrogates of snnTorch and Norse.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import NamedTuple

import torch
from torch import Tensor

__all__ = [
    "DenseDerivatives",
    "ElementwiseDerivatives",
    "Factored",
    "Partial",
    "dense_derivatives",
    "elementwise_derivatives",
]

#: A partial derivative of an elementwise cell: a tensor broadcastable to ``[B, *N]``, a Python
#: number (the same for every neuron and step), or None (exactly zero).
Partial = Tensor | float | None


@dataclass
class ElementwiseDerivatives:
    """Partial derivatives of one step of an elementwise cell.

    Attributes:
        state: ``state[k][j] = ∂s^k_t / ∂s^j_{t-1}``, an S x S table of :data:`Partial`.
        current: ``current[k] = ∂s^k_t / ∂a_t`` for the input current ``a_t``.
        params: For each of the cell's own elementwise parameters (broadcastable to N),
            ``params[name][k] = ∂s^k_t / ∂φ`` per element.
        derived: ``derived[k] = (j, D)`` declares that state k reaches synapse parameters only
            through state j of the same step: ``∂s^k_t/∂θ = D ∂s^j_t/∂θ`` for every synapse
            weight and bias θ (the SNU's output ``y = h(s)``, with ``D = h'``). Synapse traces
            are then kept for j alone (:mod:`snn_ostl.traces.derived`). Optional: a fast path.
    """

    state: list[list[Partial]]
    current: list[Partial]
    params: dict[str, list[Partial]] = field(default_factory=dict)
    derived: dict[int, tuple[int, Partial]] = field(default_factory=dict)

    @property
    def num_states(self) -> int:
        return len(self.current)

    def is_constant(self) -> bool:
        """True when every state and current partial is a plain number (trace factorises)."""
        entries = [*self.current, *(x for row in self.state for x in row)]
        return all(e is None or isinstance(e, (int, float)) for e in entries)


class Factored(NamedTuple):
    """``∂s_t/∂θ`` of a parameter that multiplies an input: ``rows[b, :, r] * input[b, i]``.

    For ``θ`` of shape ``[R, I]`` (a weight; ``input`` ``[B, I]``) or ``[R]`` (a bias; ``input``
    None), with ``rows = ∂s_t/∂(θ's output)`` of shape ``[B, S*N, R]``. Kept apart so the
    engine never materialises more than the trace it adds into.
    """

    rows: Tensor
    input: Tensor | None

    def dense(self) -> Tensor:
        """The ``[B, S*N, P]`` partial."""
        if self.input is None:
            return self.rows
        batch, size, _ = self.rows.shape
        return (self.rows.unsqueeze(-1) * self.input[:, None, None, :]).reshape(batch, size, -1)


@dataclass
class DenseDerivatives:
    """Partial derivatives of one step of a dense cell, flattened over states and neurons.

    Attributes:
        state: ``∂s_t / ∂s_{t-1}``, shape [B, S*N, S*N] (states concatenated in order).
        params: ``∂s_t / ∂θ`` for each trained parameter, shape [B, S*N, P], or
            :class:`Factored`.
    """

    state: Tensor
    params: dict[str, Tensor | Factored]


def _as_partial(grad: Tensor | None) -> Partial:
    return None if grad is None else grad


def elementwise_derivatives(
    cell: Callable[[Tensor, tuple[Tensor, ...], dict[str, Tensor]], tuple[Tensor, ...]],
    current: Tensor,
    state: Sequence[Tensor],
    params: dict[str, Tensor],
) -> ElementwiseDerivatives:
    """Partial derivatives of an elementwise cell by autograd (the generic reference).

    Each neuron's new state depends only on its own old state, current and parameters, so one
    backward pass per new state tensor with a cotangent of ones yields every neuron's partials at
    once. Scalar or per-neuron parameters are expanded to ``[B, *N]`` first so that their partials
    come out per neuron instead of summed.

    Args:
        cell: ``cell(current, state, params) -> new_state``: one step, pure.
        current: a_t, shape ``[B, *N]``.
        state: S tensors of shape ``[B, *N]``.
        params: The cell's elementwise parameters (any shape broadcastable to ``[B, *N]``).

    Returns:
        The partials, every entry a tensor of shape ``[B, *N]`` or None.
    """
    with torch.enable_grad():
        a = current.detach().requires_grad_(True)
        old = tuple(s.detach().requires_grad_(True) for s in state)
        expanded = {
            name: p.detach().expand_as(a).clone().requires_grad_(True) for name, p in params.items()
        }
        new = cell(a, old, expanded)
        inputs = (*old, a, *expanded.values())
        num = len(old)
        rows: list[list[Partial]] = []
        currents: list[Partial] = []
        per_param: dict[str, list[Partial]] = {name: [] for name in expanded}
        for k, s_new in enumerate(new):
            if not s_new.requires_grad:
                rows.append([None] * num)
                currents.append(None)
                for name in per_param:
                    per_param[name].append(None)
                continue
            grads = torch.autograd.grad(
                s_new,
                inputs,
                torch.ones_like(s_new),
                retain_graph=k + 1 < len(new),
                allow_unused=True,
            )
            rows.append([_as_partial(g) for g in grads[:num]])
            currents.append(_as_partial(grads[num]))
            for name, g in zip(per_param, grads[num + 1 :]):
                per_param[name].append(_as_partial(g))
    return ElementwiseDerivatives(rows, currents, per_param)


def dense_derivatives(
    step: Callable[[Tensor, tuple[Tensor, ...], dict[str, Tensor]], tuple[Tensor, ...]],
    inputs: Tensor,
    state: Sequence[Tensor],
    params: dict[str, Tensor],
) -> DenseDerivatives:
    """Full per-sample Jacobians of any cell by autograd (the paper's generic OSTL).

    One backward per (sample, state element): exact for any cell, and O(B * S*N) backward
    passes per step, so meant for small layers (LSTM/GRU cells of tens of units) and as the
    reference hand-written adapters are tested against.

    Args:
        step: ``step(inputs, state, params) -> new_state``; ``params`` replace the cell's own.
        inputs: The cell's input for one step, shape [B, ...].
        state: S tensors of shape [B, N_k].
        params: The trained parameters, by name.

    Returns:
        ``state`` [B, S*N, S*N] and ``params[name]`` [B, S*N, P].
    """
    batch = inputs.shape[0]
    names = list(params)
    state_rows: list[Tensor] = []
    param_rows: dict[str, list[Tensor]] = {name: [] for name in names}
    with torch.enable_grad():
        for b in range(batch):
            x_b = inputs[b : b + 1].detach()
            old = tuple(s[b : b + 1].detach().requires_grad_(True) for s in state)
            leaves = {name: p.detach().requires_grad_(True) for name, p in params.items()}
            new = torch.cat([s.reshape(1, -1) for s in step(x_b, old, leaves)], dim=1)
            width = new.shape[1]
            eye = torch.eye(width, dtype=new.dtype, device=new.device)
            wrt = (*old, *leaves.values())
            grads = torch.autograd.grad(
                new, wrt, eye.unsqueeze(1), is_grads_batched=True, allow_unused=True
            )
            state_part = [
                torch.zeros(width, o.numel(), dtype=new.dtype, device=new.device)
                if g is None
                else g.reshape(width, -1)
                for o, g in zip(old, grads[: len(old)])
            ]
            state_rows.append(torch.cat(state_part, dim=1))
            for name, g, p in zip(names, grads[len(old) :], leaves.values()):
                param_rows[name].append(
                    torch.zeros(width, p.numel(), dtype=new.dtype, device=new.device)
                    if g is None
                    else g.reshape(width, -1)
                )
    return DenseDerivatives(
        torch.stack(state_rows), {name: torch.stack(rows) for name, rows in param_rows.items()}
    )
