"""Eligibility traces: pure update and contraction functions (no hooks, no modules).

A trace ``e^k`` holds ``d s^k_t / d θ`` for one parameter θ and each state tensor k, carried
forward in time with ``e_t = J_t e_{t-1} + ∂s_t/∂θ`` (the theory page's eligibility). Traces
are never updated in place: an update returns new tensors, so a snapshot that a pending backward
still needs stays valid (a backward over the whole sequence). Three storage forms exist:

- presynaptic: when J and ∂s/∂a are plain numbers, ``e^k[b, n, i] = x̄^k[b, i]`` for every
  neuron n, so only the filtered input ``x̄`` (``[B, *I]``) is stored; the gradient is the
  synapse's own weight-gradient evaluated at ``x̄`` (works for Linear and Conv alike).
- per-synapse: ``e^k`` of shape ``[N, B, I]`` for a Linear synapse of any elementwise cell
  (its own module, :mod:`snn_ostl.traces.per_synapse`).
- dense: ``e`` of shape [B, S*N, P] for cells whose Jacobian mixes neurons.

Elementwise parameters of the cell itself (decay, threshold) keep an ``[B, *N]`` trace per state.
Shape letters are defined in :mod:`snn_ostl.derivatives`.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from snn_ostl.derivatives import Partial

__all__ = [
    "SynapseOp",
    "contract_dense",
    "contract_elementwise",
    "contract_presynaptic",
    "dense_from_elementwise",
    "mix",
    "update_dense",
    "update_elementwise",
    "update_presynaptic",
]

Traces = list[Tensor | None]


@dataclass(frozen=True)
class SynapseOp:
    """A synapse linear in its input: ``a = op(x; W) + b``.

    Attributes:
        kind: ``"linear"``, ``"conv1d"`` or ``"conv2d"``.
        stride, padding, dilation, groups: Convolution settings (unused for Linear).
    """

    kind: str
    stride: tuple[int, ...] = (1,)
    padding: tuple[int, ...] | str = (0,)
    dilation: tuple[int, ...] = (1,)
    groups: int = 1
    #: Embedding: the table's rows V, and the row that takes no gradient (or -1).
    rows: int = 0
    padding_idx: int = -1

    @classmethod
    def of(cls, module: nn.Module) -> SynapseOp:
        """The op of an ``nn.Linear``, ``nn.Conv1d``, ``nn.Conv2d`` or ``nn.Embedding``."""
        if isinstance(module, nn.Linear):
            return cls("linear")
        if isinstance(module, nn.Embedding):
            pad = -1 if module.padding_idx is None else module.padding_idx
            return cls("embedding", rows=module.num_embeddings, padding_idx=pad)
        kind = {nn.Conv1d: "conv1d", nn.Conv2d: "conv2d"}[type(module)]
        return cls(kind, module.stride, module.padding, module.dilation, module.groups)

    def one_hot(self, index: Tensor, dtype: torch.dtype) -> Tensor:
        """An embedding's input as the table's rows selected, ``[*B, V]`` (the padding row
        left out: it takes no gradient)."""
        x = F.one_hot(index.long(), self.rows).to(dtype)
        if self.padding_idx >= 0:
            x[..., self.padding_idx] = 0
        return x

    def apply(self, x: Tensor, weight: Tensor) -> Tensor:
        """The synapse without bias: ``op(x; W)``."""
        if self.kind == "linear":
            return F.linear(x, weight)
        if self.kind == "embedding":  # x: the rows selected, [*B, V]
            return x @ weight
        conv = F.conv1d if self.kind == "conv1d" else F.conv2d
        return conv(x, weight, None, self.stride, self.padding, self.dilation, self.groups)

    def weight_grad(self, x: Tensor, grad_out: Tensor, weight: Tensor) -> Tensor:
        """∂/∂W of ``<grad_out, op(x; W)>``: the module's ordinary weight gradient at x."""
        if self.kind == "linear":
            g = grad_out.reshape(-1, grad_out.shape[-1])
            return g.transpose(0, 1) @ x.reshape(-1, x.shape[-1])
        if self.kind == "embedding":  # [V, D]: the filtered rows times the neurons' gradient
            g = grad_out.reshape(-1, grad_out.shape[-1])
            return x.reshape(-1, x.shape[-1]).transpose(0, 1) @ g
        fn = torch.nn.grad.conv1d_weight if self.kind == "conv1d" else torch.nn.grad.conv2d_weight
        padding = self.padding
        if isinstance(padding, str):
            # torch.nn.grad needs numbers; "same"/"valid" are rare here, so use autograd.
            with torch.enable_grad():
                w = weight.detach().requires_grad_(True)
                return torch.autograd.grad(self.apply(x, w), w, grad_out)[0]
        return fn(x, weight.shape, grad_out, self.stride, padding, self.dilation, self.groups)

    def bias_grad(self, grad_out: Tensor) -> Tensor:
        """∂/∂b of ``<grad_out, op(x; W) + b>``: sum over all but the channel dimension."""
        if self.kind == "linear":
            return grad_out.reshape(-1, grad_out.shape[-1]).sum(0)
        return grad_out.sum(dim=[d for d in range(grad_out.dim()) if d != 1])


def _expand(partial: Partial, extra: int) -> Partial:
    if isinstance(partial, Tensor) and extra:
        return partial.reshape(*partial.shape, *([1] * extra))
    return partial


def mix(jac: Sequence[Sequence[Partial]], traces: Traces, extra: int = 0) -> Traces:
    """``out^k = Σ_j jac[k][j] * traces[j]`` for elementwise Jacobians.

    Args:
        jac: S x S table of partials broadcastable to ``[B, *N]``.
        traces: S tensors ``[B, *N, *extra dims]`` (or None for zero).
        extra: Number of trailing trace dimensions beyond ``[B, *N]``.
    """
    out: Traces = []
    for row in jac:
        acc = None
        for partial, trace in zip(row, traces):
            if partial is None or trace is None:
                continue
            term = _expand(partial, extra) * trace
            acc = term if acc is None else acc + term
        out.append(acc)
    return out


def _add(a: Tensor | None, b: Tensor | None) -> Tensor | None:
    if a is None:
        return b
    return a if b is None else a + b


# ----------------------------------------------------------------------------- presynaptic
def update_presynaptic(
    jac: Sequence[Sequence[Partial]], current: Sequence[Partial], xbar: Traces, x: Tensor | float
) -> Traces:
    """``x̄^k_t = Σ_j J[k][j] x̄^j_{t-1} + c^k x_t`` with numeric J and c.

    Args:
        jac: S x S numbers (or None).
        current: S numbers ``∂s^k/∂a``.
        xbar: S filtered inputs shaped like x, or None.
        x: The synapse input at step t, ``[B, *I]``. For a bias pass ``1.0``: the trace then
            stays a plain number per state.
    """
    mixed = mix(jac, xbar)
    return [
        _add(m, None if c is None or c == 0 else (x if c == 1 else c * x))
        for m, c in zip(mixed, current)
    ]


def contract_presynaptic(
    op: SynapseOp, grads: Sequence[Tensor | None], xbar: Traces, weight: Tensor
) -> Tensor | None:
    """``Σ_k weight_grad(x̄^k, ĝ^k)``: the history term for a synapse weight."""
    out = None
    for g, xb in zip(grads, xbar):
        if g is not None and xb is not None:
            out = _add(out, op.weight_grad(xb, g, weight))
    return out


# ----------------------------------------------------------------------------- elementwise
def update_elementwise(
    jac: Sequence[Sequence[Partial]], immediate: Sequence[Partial], e: Traces, like: Tensor
) -> Traces:
    """``e^k_t = Σ_j J[k][j] e^j_{t-1} + ∂s^k_t/∂φ`` for a cell's own elementwise parameter.

    Args:
        jac: S x S partials broadcastable to ``[B, *N]``.
        immediate: S partials ``∂s^k/∂φ`` per neuron.
        e: S traces ``[B, *N]`` or None.
        like: A ``[B, *N]`` tensor that fixes shape, dtype and device.
    """
    mixed = mix(jac, e)
    out: Traces = []
    for m, d in zip(mixed, immediate):
        if d is not None and not isinstance(d, Tensor):
            d = torch.full_like(like, d)
        elif d is not None and d.shape != like.shape:
            d = d.expand_as(like)
        out.append(_add(m, d))
    return out


def contract_elementwise(
    grads: Sequence[Tensor | None], e: Traces, shape: torch.Size
) -> Tensor | None:
    """``Σ_k ĝ^k e^k`` summed down to the parameter's shape."""
    out = None
    for g, tr in zip(grads, e):
        if g is not None and tr is not None:
            out = _add(out, g * tr)
    return None if out is None else out.sum_to_size(shape)


# ----------------------------------------------------------------------------- dense
def dense_from_elementwise(jac: Sequence[Sequence[Partial]], like: Tensor) -> Tensor:
    """Build the full [B, S*N, S*N] matrix of an elementwise Jacobian (diagonal blocks).

    Args:
        jac: S x S partials broadcastable to ``[B, N]``.
        like: A ``[B, N]`` tensor.
    """
    batch, n = like.shape[0], like[0].numel()
    size = len(jac)
    out = like.new_zeros(batch, size, n, size, n)
    for k, row in enumerate(jac):
        for j, partial in enumerate(row):
            if partial is None:
                continue
            diag = partial if isinstance(partial, Tensor) else torch.full_like(like, partial)
            out[:, k, :, j, :] = torch.diag_embed(diag.expand_as(like).reshape(batch, n))
    return out.reshape(batch, size * n, size * n)


def update_dense(jac: Tensor, e: Tensor) -> Tensor:
    """``J_t e_{t-1}`` with J ``[B, S*N, S*N]`` and traces ``[B, S*N, P]``.

    The caller adds the immediate term ``∂s_t/∂θ`` in place; it is mostly zeros, so it is never
    built as a full tensor.
    """
    return torch.bmm(jac, e)


def contract_dense(grads: Sequence[Tensor | None], e: Tensor, shape: torch.Size) -> Tensor:
    """``Σ_b ĝ_b · e_b`` with ĝ the S state gradients concatenated -> parameter gradient."""
    flat = [
        torch.zeros(e.shape[0], e.shape[1] // len(grads), dtype=e.dtype, device=e.device)
        if g is None
        else g.reshape(g.shape[0], -1)
        for g in grads
    ]
    g_all = torch.cat(flat, dim=1)
    return torch.einsum("bm,bmp->p", g_all, e).reshape(shape)
