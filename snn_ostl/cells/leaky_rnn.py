"""The leaky rate RNN of Murray's RFLO paper (eLife 2019), as a pure step and a thin module.

One step of N units with input x (shape ``[B, I]``) and time constant τ (in steps):

    u_t = W_in x_t + b + W_rec h_{t-1}
    h_t = (1 - 1/τ) h_{t-1} + (1/τ) φ(u_t)

φ is tanh (or ReLU). With τ = 1 it is ``torch.nn.RNNCell``.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from snn_ostl.cells.snu import _FeedbackLinear

__all__ = ["LeakyRNNCell", "leaky_rnn_step"]


def leaky_rnn_step(
    x: Tensor,
    h: Tensor,
    weight_ih: Tensor,
    weight_hh: Tensor,
    bias: Tensor | None,
    tau: float,
    *,
    nonlinearity: str = "tanh",
    detach_recurrent: bool = False,
    feedback_weight: Tensor | None = None,
) -> Tensor:
    """One step of the leaky rate RNN.

    Args:
        x: Input ``[B, I]``.
        h: Previous rates ``[B, N]``.
        weight_ih: ``W_in``, ``[N, I]``.
        weight_hh: ``W_rec``, ``[N, N]``.
        bias: ``[N]`` or None.
        tau: Time constant in steps (>= 1).
        nonlinearity: ``"tanh"`` or ``"relu"``.
        detach_recurrent: Cut the time path through ``W_rec h_{t-1}`` (what RFLO ignores).
        feedback_weight: Send the error to x through this ``[N, I]`` matrix instead of W_in.

    Returns:
        The new rates ``[B, N]``.
    """
    if feedback_weight is not None and x.requires_grad:
        u = _FeedbackLinear.apply(x, weight_ih, bias, feedback_weight)
    else:
        u = F.linear(x, weight_ih, bias)
    u = u + F.linear(h.detach() if detach_recurrent else h, weight_hh)
    rate = torch.tanh(u) if nonlinearity == "tanh" else torch.relu(u)
    return (1.0 - 1.0 / tau) * h + rate / tau


class LeakyRNNCell(nn.Module):
    """A layer of leaky rate units (Murray 2019), called once per step like ``nn.RNNCell``.

    Args:
        input_size: Input features I.
        hidden_size: Number of units N.
        tau: Time constant in steps (>= 1; 1 gives ``nn.RNNCell``).
        nonlinearity: ``"tanh"`` or ``"relu"``.
        bias: Add an input bias.
        device: Where to create the parameters.
        dtype: Parameter dtype.

    Shape:
        ``forward(x [B, I], h [B, N] or None) -> h [B, N]``.
    """

    def __init__(
        self,
        input_size: int,
        hidden_size: int,
        tau: float = 10.0,
        nonlinearity: str = "tanh",
        bias: bool = True,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> None:
        super().__init__()
        if nonlinearity not in ("tanh", "relu"):
            raise ValueError(
                f"LeakyRNNCell nonlinearity must be 'tanh' or 'relu', not {nonlinearity!r}"
            )
        if tau < 1:
            raise ValueError(f"LeakyRNNCell tau must be >= 1 step, got {tau}")
        factory = {"device": device, "dtype": dtype}
        self.input_size, self.hidden_size = input_size, hidden_size
        self.tau, self.nonlinearity = float(tau), nonlinearity
        self.weight_ih = nn.Parameter(
            torch.empty(hidden_size, input_size, **factory).uniform_(-1, 1) / math.sqrt(input_size)
        )
        # Murray's initial recurrent weights: Gaussian with spectral radius about g = 1.5
        self.weight_hh = nn.Parameter(
            torch.randn(hidden_size, hidden_size, **factory) * (1.5 / math.sqrt(hidden_size))
        )
        self.bias = nn.Parameter(torch.zeros(hidden_size, **factory)) if bias else None
        # Set by the learner around one step (variants and random feedback); never by users.
        self.detach_recurrent = False
        self.feedback_weight: Tensor | None = None

    def forward(self, x: Tensor, h: Tensor | None = None) -> Tensor:
        if h is None:
            h = x.new_zeros(x.shape[0], self.hidden_size, dtype=self.weight_ih.dtype)
        return leaky_rnn_step(
            x,
            h,
            self.weight_ih,
            self.weight_hh,
            self.bias,
            self.tau,
            nonlinearity=self.nonlinearity,
            detach_recurrent=self.detach_recurrent,
            feedback_weight=self.feedback_weight,
        )

    def extra_repr(self) -> str:
        return f"{self.input_size}, {self.hidden_size}, tau={self.tau:g}, {self.nonlinearity}"
