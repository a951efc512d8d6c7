"""Native Spiking Neural Units: the SNU and the soft SNU (sSNU) of Woźniak et al. (2020).

One step of a layer of N units with input x (shape ``[B, I]``):

    a_t = W x_t (+ bias) (+ H y_{t-1})
    s_t = g(a_t + l * s_{t-1} * (1 - y_{t-1}))
    y_t = h(s_t - threshold)

g is the identity or ReLU, h a Heaviside step with a surrogate derivative (SNU) or a sigmoid
(sSNU), l the membrane decay. The state is the pair (s, y): y_{t-1} gates the reset and drives
the recurrent weights H. :func:`snu_step` is the pure step; :class:`SNU` is a thin module on top.
"""

from __future__ import annotations

import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from snn_ostl.cells.surrogate import spike

__all__ = ["SNU", "SNUState", "SoftSNU", "snu_step"]


class SNUState(NamedTuple):
    """State of an SNU layer.

    Attributes:
        s: Membrane state, shape ``[B, N]``.
        y: Output of the previous step, shape ``[B, N]``.
    """

    s: Tensor
    y: Tensor


class _FeedbackLinear(torch.autograd.Function):
    """``x W^T + b`` whose error reaches x through a fixed matrix, not W (feedback alignment)."""

    @staticmethod
    def forward(ctx, x, weight, bias, feedback):  # type: ignore[override]
        ctx.save_for_backward(x, feedback)
        ctx.has_bias = bias is not None
        return F.linear(x, weight, bias)

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        x, feedback = ctx.saved_tensors
        grad_bias = grad.sum(0) if ctx.has_bias else None
        return grad @ feedback, grad.transpose(0, 1) @ x, grad_bias, None


def snu_step(
    x: Tensor,
    state: SNUState,
    weight: Tensor,
    bias: Tensor | None,
    recurrent_weight: Tensor | None,
    decay: Tensor | float,
    threshold: Tensor | float,
    *,
    soft: bool = False,
    relu: bool = True,
    slope: float = 5.0,
    detach_spikes: bool = False,
    detach_recurrent: bool = False,
    feedback_weight: Tensor | None = None,
) -> tuple[Tensor, SNUState]:
    """One SNU step.

    Args:
        x: Input, shape ``[B, I]``.
        state: Previous state, each tensor ``[B, N]``.
        weight: Input weights W, shape ``[N, I]``.
        bias: Optional input bias, shape ``[N]``.
        recurrent_weight: Optional recurrent weights H, shape ``[N, N]``.
        decay: Membrane decay l, a float or a tensor broadcastable to ``[B, N]``.
        threshold: Threshold, a float or a tensor broadcastable to ``[B, N]``.
        soft: Sigmoid output (sSNU) instead of a step.
        relu: g = ReLU (otherwise the identity).
        slope: Steepness of the step's surrogate derivative.
        detach_spikes: Cut every gradient path through y_{t-1} (what e-prop ignores).
        detach_recurrent: Cut the time path through H y_{t-1} (what OSTL without H ignores).
        feedback_weight: Send the error to x through this ``[N, I]`` matrix instead of W (the
            ``"random"`` learning signal).

    Returns:
        The output y_t ``[B, N]`` and the new state.
    """
    s_prev, y_prev = state
    if detach_spikes:
        y_prev = y_prev.detach()
    if feedback_weight is not None and x.requires_grad:
        current = _FeedbackLinear.apply(x, weight, bias, feedback_weight)
    else:
        current = F.linear(x, weight, bias)
    if recurrent_weight is not None:
        y_in = y_prev.detach() if detach_recurrent else y_prev
        current = current + F.linear(y_in, recurrent_weight)
    u = current + decay * s_prev * (1.0 - y_prev)
    s = torch.relu(u) if relu else u
    y = torch.sigmoid(s - threshold) if soft else spike(s - threshold, slope)
    return y, SNUState(s, y)


class SNU(nn.Module):
    """A layer of Spiking Neural Units (feed-forward or recurrent).

    Args:
        in_features: I, size of each input sample.
        out_features: N, number of units.
        recurrent: Add all-to-all recurrent weights H (shape ``[N, N]``).
        bias: Add an input bias (shape ``[N]``).
        decay: Initial membrane decay l in ``[0, 1]``.
        learn_decay: Train the decay (one scalar, or one per unit with ``decay_per_unit``).
        decay_per_unit: Give every unit its own decay.
        threshold: Initial threshold (the paper's -b).
        learn_threshold: Train one threshold per unit.
        activation: g, ``"relu"`` or ``"identity"``.
        soft: Sigmoid output (the sSNU); the default is a spiking step.
        slope: Steepness of the step's surrogate derivative.
        device: Where to create the parameters.
        dtype: Parameter dtype (float64 for exactness tests).

    Shape:
        - input: ``[B, I]``; state: :class:`SNUState` of ``[B, N]`` tensors or ``None`` (zeros).
        - output: ``(y, state)`` with y of shape ``[B, N]``.
    """

    soft_default = False

    def __init__(
        self,
        in_features: int,
        out_features: int,
        *,
        recurrent: bool = False,
        bias: bool = False,
        decay: float = 0.8,
        learn_decay: bool = False,
        decay_per_unit: bool = False,
        threshold: float = 1.0,
        learn_threshold: bool = True,
        activation: str = "relu",
        soft: bool | None = None,
        slope: float = 5.0,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if activation not in ("relu", "identity"):
            raise ValueError(f"SNU activation must be 'relu' or 'identity', got {activation!r}")
        if not 0.0 <= decay <= 1.0:
            raise ValueError(f"SNU decay must lie in [0, 1], got {decay}")
        factory = {"device": device, "dtype": dtype}
        self.in_features, self.out_features = in_features, out_features
        self.activation = activation
        self.soft = self.soft_default if soft is None else soft
        self.slope = slope
        bound = 1.0 / math.sqrt(in_features)
        self.weight = nn.Parameter(torch.empty(out_features, in_features, **factory))
        nn.init.uniform_(self.weight, -bound, bound)
        self.bias = nn.Parameter(torch.zeros(out_features, **factory)) if bias else None
        self.recurrent_weight = None
        if recurrent:
            rbound = 1.0 / math.sqrt(out_features)
            self.recurrent_weight = nn.Parameter(
                torch.empty(out_features, out_features, **factory).uniform_(-rbound, rbound)
            )
        decay_t = torch.full((out_features,) if decay_per_unit else (), decay, **factory)
        if learn_decay:
            self.decay = nn.Parameter(decay_t)
        else:
            self.register_buffer("decay", decay_t)
        threshold_t = torch.full((out_features,), threshold, **factory)
        if learn_threshold:
            self.threshold = nn.Parameter(threshold_t)
        else:
            self.register_buffer("threshold", threshold_t)
        # Set by snn_ostl.testing to build the oracles of the OSTL variants; never by users.
        self.detach_spikes = False
        self.detach_recurrent = False
        # Set by the learner for the duration of one step with learning_signal="random".
        self.feedback_weight: Tensor | None = None

    @property
    def recurrent(self) -> bool:
        """Whether the layer has recurrent weights H."""
        return self.recurrent_weight is not None

    def initial_state(self, x: Tensor) -> SNUState:
        """Zero state for a batch like ``x`` (``[B, I]``)."""
        zeros = x.new_zeros(x.shape[0], self.out_features, dtype=self.weight.dtype)
        return SNUState(zeros, zeros.clone())

    def forward(self, x: Tensor, state: SNUState | None = None) -> tuple[Tensor, SNUState]:
        if state is None:
            state = self.initial_state(x)
        return snu_step(
            x,
            SNUState(*state),
            self.weight,
            self.bias,
            self.recurrent_weight,
            self.decay,
            self.threshold,
            soft=self.soft,
            relu=self.activation == "relu",
            slope=self.slope,
            detach_spikes=self.detach_spikes,
            detach_recurrent=self.detach_recurrent,
            feedback_weight=self.feedback_weight,
        )

    def extra_repr(self) -> str:
        kind = "soft" if self.soft else "spiking"
        rec = ", recurrent" if self.recurrent else ""
        return f"{self.in_features}, {self.out_features}{rec}, {kind}, g={self.activation}"


class SoftSNU(SNU):
    """The soft SNU (sSNU): an :class:`SNU` whose output is ``sigmoid(s - threshold)``."""

    soft_default = True
