"""Refusals of the snnTorch modules that run a whole sequence at once or have no adapter."""

from __future__ import annotations

import snntorch as snn

from snn_ostl.registry import register_refusal

_WHOLE_SEQUENCE_FIX = (
    "use snn.Leaky called once per time step (for example in a loop inside your forward)."
)
register_refusal(
    snn.LeakyParallel,
    "it runs the whole sequence in one call (an nn.RNN inside), so there is no step at which "
    "to carry eligibility traces forward.",
    _WHOLE_SEQUENCE_FIX,
)
register_refusal(
    snn.StateLeaky,
    "it computes the whole sequence at once with a causal convolution; there is no step at "
    "which to carry eligibility traces forward.",
    _WHOLE_SEQUENCE_FIX,
)
register_refusal(
    snn.LinearLeaky,
    "it computes the whole sequence at once (StateLeaky dynamics); there is no step at which "
    "to carry eligibility traces forward.",
    "use nn.Linear followed by snn.Leaky, called once per time step.",
)
register_refusal(
    snn.SConv2dLSTM,
    "its state is mixed by convolutions, so exact OSTL needs a full Jacobian over every pixel "
    "and channel, which is not implemented.",
    "use snn.SLSTM on flattened features, or a Conv2d followed by snn.Leaky.",
)
register_refusal(
    snn.AssociativeLeaky,
    "its associative state mixes neurons and no adapter exists for it.",
    "use snn.Leaky or snn.RLeaky, or register an adapter (see 'Writing an adapter').",
)
