"""DECOLLE: deep continuous local learning (Kaiser, Mostafa & Neftci, Frontiers 2020).

Every hidden stateful layer ``l`` gets a fixed random readout ``G_l`` of its spikes and a loss
of its own, ``L_l = loss(G_l y_l, target)``. The layer is trained by its local loss alone,
through its own eligibility with the path through its own spikes cut (its traces are
e-prop's); the input from the layer below is held fixed, and no error comes down from the
layers above. The top layer (the last stateful layer of a step) is trained by the user's own
loss on the model's output, through its own eligibility as well.

>>> learner = snn_ostl.OSTL(net, rule=snn_ostl.rules.DECOLLE(outputs=10))
>>> out = net(x_t)
>>> loss = F.cross_entropy(out, y) + learner.rule.local_loss(y)
>>> loss.backward()   # each layer's .grad: its own local loss only
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor

from snn_ostl.rules.base import Rule, register_rule

__all__ = ["DECOLLE"]

LossFn = Callable[[Tensor, Tensor], Tensor]


def _mse_one_hot(readout: Tensor, target: Tensor) -> Tensor:
    """Mean squared error to ``target``, or to its one-hot code for class indices."""
    if not target.is_floating_point():
        target = F.one_hot(target.long(), readout.shape[-1]).to(readout.dtype)
    return F.mse_loss(readout, target)


_LOSSES: dict[str, LossFn] = {"mse": _mse_one_hot, "cross_entropy": F.cross_entropy}


@register_rule("decolle")
class DECOLLE(Rule):
    """Local losses through fixed random readouts, one per hidden stateful layer.

    Args:
        outputs: Size of each local readout (the target's classes or features). None: read
            from the first float target's last dimension.
        loss: ``"mse"`` (to the one-hot code of class indices, as in the paper),
            ``"cross_entropy"``, or a callable ``(readout [B, outputs], target) -> loss``.
        seed: Seed of the readout matrices (saved with :meth:`snn_ostl.OSTL.state_dict`).
        top: Give the top stateful layer a local readout too (then the user's own loss is
            optional); False: the top layer learns from the user's loss on the model output.
    """

    name = "decolle"
    variant = "eprop"
    learning_signal = "local"
    keeps = "each layer's own e-prop eligibility; error from its fixed random local readout"

    def __init__(
        self,
        outputs: int | None = None,
        loss: str | LossFn = "mse",
        seed: int = 0,
        top: bool = False,
    ) -> None:
        if isinstance(loss, str) and loss not in _LOSSES:
            raise ValueError(
                f"DECOLLE(loss={loss!r}) is not known; use 'mse', 'cross_entropy' or a callable"
            )
        if outputs is not None and (not isinstance(outputs, int) or outputs < 1):
            raise ValueError(f"DECOLLE(outputs={outputs!r}) must be a positive whole number")
        self.outputs, self.seed, self.top = outputs, seed, top
        self.loss_name = loss if isinstance(loss, str) else getattr(loss, "__name__", "custom")
        self.loss_fn: LossFn = _LOSSES[loss] if isinstance(loss, str) else loss
        self.readouts: dict[str, Tensor] = {}
        self._spikes: dict[str, Tensor] = {}

    def describe(self) -> str:
        return f"decolle (local {self.loss_name} loss, {self.outputs or '?'} readout outputs)"

    def reset(self) -> None:
        self._spikes.clear()

    def after_layer(self, layer: Any, output: Any) -> None:
        if torch.is_grad_enabled():
            self._spikes[layer.path] = layer.adapter.spikes(output)

    def readout(self, path: str, spikes: Tensor) -> Tensor:
        """The fixed random readout ``G_l`` of layer ``path``: ``[outputs, neurons]``."""
        width = spikes[0].numel()
        matrix = self.readouts.get(path)
        if matrix is None or matrix.shape[1] != width:
            order = sorted(self.learner.layers).index(path)
            gen = torch.Generator().manual_seed(self.seed + 7919 * order)
            draw = torch.rand(self.outputs, width, generator=gen, dtype=torch.float64)
            matrix = (draw * 2 - 1) / math.sqrt(width)
            self.readouts[path] = matrix
        return matrix.to(dtype=spikes.dtype, device=spikes.device)

    def local_readouts(self) -> dict[str, Tensor]:
        """Each hidden layer's readout ``G_l y_l`` of this step, ``[B, outputs]``."""
        order = self.learner.execution_order()
        ran = sorted(self._spikes, key=lambda p: order.get(p, -1))
        if not self.top:
            ran = ran[:-1]
        out = {}
        for path in ran:
            spikes = self._spikes[path]
            out[path] = spikes.flatten(1) @ self.readout(path, spikes).T
        return out

    def local_loss(self, target: Tensor) -> Tensor:
        """The sum of the hidden layers' local losses at this step.

        Call after the step's forward; add it to the loss you backpropagate.

        Args:
            target: What every local readout should produce: class indices ``[B]`` or a
                tensor ``[B, outputs]``.

        Raises:
            ValueError: No step ran since the last :meth:`~snn_ostl.OSTL.reset`, or the
                readout size is unknown (class indices without ``outputs``).
        """
        if not self._spikes:
            raise ValueError(
                "DECOLLE.local_loss(target): no layer stepped since the last reset; call it "
                "after the model's forward of the step."
            )
        if self.outputs is None:
            if not target.is_floating_point():
                raise ValueError(
                    "DECOLLE needs the size of its local readouts for class-index targets: "
                    "pass DECOLLE(outputs=<number of classes>)."
                )
            self.outputs = target.shape[-1]
        readouts = self.local_readouts()
        if not readouts:
            raise ValueError(
                "DECOLLE.local_loss(target): the model has a single stateful layer, which "
                "learns from your own loss; use DECOLLE(top=True) to give it a local readout."
            )
        return sum(self.loss_fn(y, target) for y in readouts.values())  # type: ignore[return-value]

    def state_dict(self) -> dict[str, Any]:
        readouts = {k: v.clone() for k, v in self.readouts.items()}
        return {"outputs": self.outputs, "readouts": readouts}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.outputs = state["outputs"]
        self.readouts = {k: v.clone() for k, v in state["readouts"].items()}
