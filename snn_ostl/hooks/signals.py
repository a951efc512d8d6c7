"""Learning signals: how the error of step t reaches each layer.

- ``"backprop"``: exact instantaneous backprop (the default; nothing to do here).
- ``"random"``: feedback alignment. Every synapse whose input carries a gradient sends the error
  down through a fixed random matrix of its weight's shape instead of the weight itself.
- ``"adaptive"``: random feedback whose matrices receive every update their weights receive,
  ``B ← (1 - decay) B + ΔW`` (adaptive e-prop; Kolen-Pollack learning). ``ΔW`` is read from
  the weight itself at its next use, so any optimizer and schedule works.
- ``"direct"``: direct feedback alignment. No error flows between layers; the error at the
  model's output reaches each stateful layer's output through a fixed random matrix.
- ``"local"``: no error flows between layers at all; each layer learns from what reaches its
  own output (DECOLLE's local readouts, :mod:`snn_ostl.rules.decolle`).

The matrices are drawn once per module from ``seed`` and kept for the learner's lifetime, so the
feedback is fixed across steps and reproducible.
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor, nn

from snn_ostl.traces.forms import SynapseOp

__all__ = ["FeedbackSignals"]


class _RandomFeedback(torch.autograd.Function):
    @staticmethod
    def forward(ctx, out, x, matrix, op, x_shape):  # type: ignore[override]
        ctx.save_for_backward(matrix)
        ctx.op, ctx.x_shape = op, x_shape
        return out.view_as(out)

    @staticmethod
    def backward(ctx, grad_out):  # type: ignore[override]
        (matrix,) = ctx.saved_tensors
        op: SynapseOp = ctx.op
        if op.kind == "linear":
            grad_x = grad_out @ matrix
        else:
            fn = torch.nn.grad.conv1d_input if op.kind == "conv1d" else torch.nn.grad.conv2d_input
            grad_x = fn(
                ctx.x_shape, matrix, grad_out, op.stride, op.padding, op.dilation, op.groups
            )
        return grad_out, grad_x, None, None, None


class _DirectFeedback(torch.autograd.Function):
    @staticmethod
    def forward(ctx, num_out, matrices, *tensors):  # type: ignore[override]
        ctx.num_out, ctx.matrices = num_out, matrices
        ctx.shapes = [t.shape for t in tensors]
        ctx.set_materialize_grads(False)
        return tuple(t.view_as(t) for t in tensors[:num_out])

    @staticmethod
    def backward(ctx, *grads):  # type: ignore[override]
        num_out, shapes = ctx.num_out, ctx.shapes
        batch = shapes[0][0]
        ref = next((g for g in grads if g is not None), None)
        if ref is None:  # nothing reached the outputs: nothing to send down
            return (None, None, *grads, *(None for _ in shapes[num_out:]))
        errors = [
            ref.new_zeros(batch, math.prod(s[1:])) if g is None else g.reshape(batch, -1)
            for g, s in zip(grads, shapes[:num_out])
        ]
        error = torch.cat(errors, dim=1)
        hidden = [(error @ m).reshape(s) for m, s in zip(ctx.matrices, shapes[num_out:])]
        return (None, None, *grads, *hidden)


class FeedbackSignals:
    """Implements the ``learning_signal`` option of :class:`snn_ostl.OSTL`.

    Args:
        kind: ``"backprop"``, ``"random"``, ``"adaptive"``, ``"direct"`` or ``"local"``.
        seed: Seed of the random matrices.
        decay: Weight decay of the adaptive matrices per update of their weight.
    """

    def __init__(self, kind: str, seed: int, decay: float = 0.0) -> None:
        self.kind, self.seed, self.decay = kind, seed, decay
        self.matrices: dict[Any, Tensor] = {}
        self._seen: dict[Any, Tensor] = {}  # adaptive: each weight as its matrix last saw it
        self._inputs: dict[nn.Module, Tensor] = {}
        self._hidden: list[tuple[str, Tensor]] = []

    def reset(self) -> None:
        """Forget per-step records (the matrices stay fixed)."""
        self._inputs.clear()
        self._hidden.clear()

    def _matrix(self, key: Any, shape: tuple[int, ...], like: Tensor, fan_in: int) -> Tensor:
        matrix = self.matrices.get(key)
        if matrix is None:
            gen = torch.Generator().manual_seed(self.seed + len(self.matrices))
            bound = 1.0 / math.sqrt(max(fan_in, 1))
            # drawn on the CPU generator's device whatever torch's default device: the same
            # matrix on every device, then moved next to the weight it replaces
            draw = torch.rand(shape, generator=gen, dtype=torch.float64, device=gen.device)
            matrix = (draw * 2 - 1) * bound
            self.matrices[key] = matrix = matrix.to(dtype=like.dtype, device=like.device)
        return matrix

    def matrix_for(self, key: Any, weight: Tensor) -> Tensor:
        """The random matrix that replaces ``weight`` in the backward pass.

        Fixed for ``"random"``; for ``"adaptive"`` it first takes in the change of ``weight``
        since its last use (the optimizer's update), decayed by ``decay``.
        """
        matrix = self._matrix(key, tuple(weight.shape), weight, weight[0].numel())
        if self.kind == "adaptive":
            now = weight.detach()
            seen = self._seen.get(key)
            if seen is None or seen.shape != now.shape:
                self._seen[key] = now.clone()
            elif not torch.equal(seen, now):
                # out of place: a graph not yet backpropagated may hold the old matrix
                matrix = matrix * (1.0 - self.decay) + (now - seen)
                self.matrices[key] = matrix
                seen.copy_(now)
        return matrix

    # ---------------------------------------------------------------- synapses
    def before_synapse(self, module: nn.Module, args: tuple) -> tuple | None:
        """Cut the exact backprop path through the synapse's weights when feedback is random."""
        if self.kind == "backprop" or not args or not args[0].requires_grad:
            return None
        self._inputs[module] = args[0]
        return (args[0].detach(), *args[1:])

    def synapse_input(self, module: nn.Module, args: tuple) -> Tensor:
        """The synapse's input x_t (without its graph) for the traces."""
        return args[0].detach()

    def after_synapse(self, module: nn.Module, args: tuple, output: Tensor, path: str) -> Tensor:
        """Route the error to the synapse's input through a fixed random matrix."""
        x = self._inputs.pop(module, None)
        if self.kind not in ("random", "adaptive") or x is None:
            return output
        matrix = self.matrix_for(path, module.weight)
        return _RandomFeedback.apply(output, x, matrix, SynapseOp.of(module), x.shape)

    # ---------------------------------------------------------------- direct feedback
    def after_layer(self, layer: Any, output: Any) -> None:
        """Remember the layer's spikes of this step (direct feedback targets them)."""
        if self.kind == "direct":
            self._hidden.append((layer.path, layer.adapter.spikes(output)))

    def after_model(self, output: Any) -> Any:
        """Send the output error to every hidden layer's spikes through random matrices."""
        hidden, self._hidden = self._hidden, []
        outs = (
            [output]
            if isinstance(output, Tensor)
            else [
                t
                for t in (output if isinstance(output, (tuple, list)) else [])
                if isinstance(t, Tensor)
            ]
        )
        hidden = [(p, y) for p, y in hidden if not any(y is o for o in outs) and y.requires_grad]
        if not outs or not hidden:
            return None
        width = sum(o[0].numel() for o in outs)
        matrices = [self._matrix(p, (width, y[0].numel()), y, width) for p, y in hidden]
        new = _DirectFeedback.apply(len(outs), matrices, *outs, *(y for _, y in hidden))
        if isinstance(output, Tensor):
            return new[0]
        it = iter(new)
        rebuilt = [next(it) if isinstance(t, Tensor) else t for t in output]
        return type(output)(rebuilt) if isinstance(output, tuple) else rebuilt
