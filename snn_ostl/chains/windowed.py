"""``flush_every`` windows for a convolution that feeds its neurons directly.

A convolution's per-synapse trace ``e[(o, p), b, f]`` (channel o at position p, input patch entry
f) is a Linear's per-synapse trace over a larger batch: each (sample, position) pair is one
"sample" whose input row is the patch ``U[b, p, :]``, shared by the O output channels, and the
weight gradient sums over samples and positions alike. Folded that way,
``[B, O, *P] -> [B * P, O]`` for the neurons' partials and state gradients and
``[B, *P, F] -> [B * P, F]`` for the patches, the window of :mod:`snn_ostl.traces.window` adds
the history terms every ``flush_every`` steps in matrix products, with the same gradient.
Elementwise operations between convolution and neurons (Norse's ``10 * conv(x)``, a dropout)
join the neurons' partials ``∂s/∂a`` as a factor per neuron.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor, nn

from snn_ostl.chains.ops import kind
from snn_ostl.chains.tangents import synapse_rows
from snn_ostl.chains.walk import Block
from snn_ostl.traces import per_synapse as PS
from snn_ostl.traces.window import PLACEHOLDER, Window

__all__ = ["ConvFold", "advance_windowed", "fold_for"]

_CONVS = (nn.Conv1d, nn.Conv2d, nn.Conv3d)


class ConvFold:
    """Neurons ``[B, O, *P]`` as ``[B * P, O]``: positions join the batch.

    Args:
        channels: O, the convolution's output channels.
    """

    def __init__(self, channels: int) -> None:
        self.channels = channels

    def partial(self, p: Any, like: Tensor) -> Any:
        """A partial or state gradient broadcastable to ``like`` ``[B, O, *P]``, folded."""
        if not isinstance(p, Tensor):
            return p
        p = p.expand_as(like)
        batch = like.shape[0]
        return p.reshape(batch, self.channels, -1).transpose(1, 2).reshape(-1, self.channels)

    def grads(self, g: Tensor) -> Tensor:
        return self.partial(g, g)

    @staticmethod
    def rows(rows: Tensor) -> Tensor:
        """Patches ``[B, *P, F]`` as ``[B * P, F]``."""
        return rows.reshape(-1, rows.shape[-1])


def fold_for(block: Block, current: Tensor, windowed: bool) -> ConvFold | None:
    """A fold when the block is one convolution straight into channel-first neurons."""
    if not windowed or len(block.synapses) != 1 or block.params:
        return None
    use = block.synapses[0]
    module = use.module
    if type(module) not in _CONVS or module.groups != 1:
        return None
    if kind(use) not in ("identity", "elementwise"):  # (elementwise: 10 * conv(x), dropout)
        return None
    if use.output is None or use.output.shape != current.shape:
        return None
    return ConvFold(module.out_channels)


def advance_windowed(layer: Any, g: Any, d: Any, use: Any, current: Tensor) -> None:
    """Push one step of a folded convolution weight's trace into its window."""
    fold: ConvFold = g.fold
    jac = [[fold.partial(p, current) for p in row] for row in d.state]
    partials = list(d.current)
    if use.nodes:  # elementwise operations in between: their factor joins ∂s/∂a
        with torch.enable_grad():
            (factor,) = torch.autograd.grad(
                current, use.output, torch.ones_like(current), retain_graph=True
            )
        partials = [None if c is None else c * factor for c in partials]
    partials = [fold.partial(p, current) for p in partials]
    x = fold.rows(synapse_rows(use.module, use.input, current.dtype))
    if g.trace is None:
        g.presynaptic = PS.presynaptic_states(jac, partials)
    old = g.trace or [None] * d.num_states
    new, plan = PS.plan(jac, partials, old, x, fold.channels, g.presynaptic, True)
    if g.window is None:  # the window starts from the zero trace
        states = sorted(set(range(d.num_states)) - g.presynaptic)
        g.window = window_for(layer, g, states)
    g.window.push(plan)
    g.trace = [PLACEHOLDER if k in plan.rows else t for k, t in enumerate(new)]


def window_for(layer: Any, g: Any, states: list[int]) -> Window:
    """A window for ``g`` with the learner's settings (averaging, checks, fold): the one
    constructor of every ``flush_every`` window (Linear, convolution, a checkpoint's)."""
    window = Window(g.param, states, g.presynaptic, layer.flush_every, layer.path, g.pool)
    window.reduce, window.name, window.on_refused = layer.grad_reduce, g.name, layer.on_refused
    window.fold = g.fold
    return window
