"""The rules that are settings of the exact engine: OSTL, e-prop, RFLO and SnAp-n.

Each keeps part of the RTRL gradient ``dL/dθ = Σ_t δ_t · e_t`` with the eligibility
``e_t = J_t e_{t-1} + ∂s_t/∂θ`` of one stateful layer and the learning signal ``δ_t``:

=================  ===============================================  =========================
rule               eligibility ``e_t``                              learning signal ``δ_t``
=================  ===============================================  =========================
``ostl``           exact (full ``J_t``)                             exact instantaneous backprop
``ostl-no-h``      ``J_t`` without the recurrent weights            exact instantaneous backprop
``eprop-*``        ``J_t`` without the layer's own spikes           ``Wᵀ`` (symmetric), fixed
                                                                    random ``B`` (random), or
                                                                    ``B`` that follows ``W``'s
                                                                    updates (adaptive)
``rflo``           ``J_t`` without the recurrent weights (leak      fixed random ``B``
                   only)
``snap-n``         ``J_t`` restricted to the entries a weight       exact instantaneous backprop
                   reaches within n steps
=================  ===============================================  =========================
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ClassVar

import torch
from torch import Tensor

from snn_ostl.errors import Problem
from snn_ostl.rules.base import Rule, refuse_distributed, register_rule

__all__ = ["RFLO", "EProp", "OSTLRule", "SnAp"]


@register_rule("ostl", "ostl-no-h")
class OSTLRule(Rule):
    """Online Spatio-Temporal Learning (Bohnstingl et al., IEEE TNNLS 2022).

    The exact eligibility of each stateful layer, the instantaneous error between layers.

    Args:
        variant: ``"ostl"`` (exact), ``"ostl-no-h"`` or ``"eprop"``.
        learning_signal: ``"backprop"``, ``"random"``, ``"adaptive"`` or ``"direct"``.
    """

    keeps = "the exact eligibility of each stateful layer, instantaneous error between layers"

    def __init__(self, variant: str = "ostl", learning_signal: str = "backprop") -> None:
        self.variant, self.learning_signal = variant, learning_signal
        self.name = variant if learning_signal == "backprop" else f"{variant}/{learning_signal}"

    @classmethod
    def preset(cls, name: str) -> Callable[[], Rule]:
        return lambda: cls(variant=name)


@register_rule("eprop-symmetric", "eprop-random", "eprop-adaptive")
class EProp(Rule):
    """e-prop (Bellec et al., Nature Communications 2020).

    The eligibility keeps the neuron's own dynamics and drops every path through the layer's
    own spikes (the reset and, for recurrent layers, the recurrent weights, which see the
    previous spikes). The learning signal reaches the layer through the readout:

    - ``"symmetric"``: the readout's own weights ``Wᵀ`` (exact instantaneous backprop);
    - ``"random"``: a fixed random matrix ``B`` of the same shape (random e-prop);
    - ``"adaptive"``: ``B`` starts random and receives every update its weight receives,
      ``B ← (1 - feedback_decay) B + ΔW`` (adaptive e-prop, as in Kolen-Pollack learning).

    Args:
        feedback: ``"symmetric"``, ``"random"`` or ``"adaptive"``.
        feedback_decay: Weight decay of ``B`` per update (adaptive only).
    """

    variant = "eprop"
    keeps = "the neuron's own dynamics; no path through its spikes; readout feedback"
    FEEDBACK: ClassVar[dict[str, str]] = {
        "symmetric": "backprop",
        "random": "random",
        "adaptive": "adaptive",
    }

    def __init__(self, feedback: str = "symmetric", feedback_decay: float = 0.0) -> None:
        if feedback not in self.FEEDBACK:
            raise ValueError(
                f"EProp(feedback={feedback!r}) is not valid; use "
                + ", ".join(repr(f) for f in self.FEEDBACK)
            )
        if not 0.0 <= feedback_decay < 1.0:
            raise ValueError(f"EProp(feedback_decay={feedback_decay!r}) must lie in [0, 1)")
        self.feedback, self.feedback_decay = feedback, feedback_decay
        self.learning_signal = self.FEEDBACK[feedback]
        self.name = f"eprop-{feedback}"

    @classmethod
    def preset(cls, name: str) -> Callable[[], Rule]:
        return lambda: cls(feedback=name.removeprefix("eprop-"))

    def describe(self) -> str:
        if self.feedback == "adaptive" and self.feedback_decay:
            return f"{self.name} (feedback_decay={self.feedback_decay})"
        return self.name


@register_rule("rflo")
class RFLO(Rule):
    """Random-feedback local online learning (Murray, eLife 2019).

    For leaky recurrent units ``h_t = (1 - 1/τ) h_{t-1} + (1/τ) φ(W h_{t-1} + U x_t)`` the
    eligibility of a weight keeps the unit's leak and drops the recurrent weights' influence,
    ``q_t = (1 - 1/τ) q_{t-1} + (1/τ) φ'(u_t) r_t`` (``r`` the presynaptic rate), and the
    readout error reaches the units through a fixed random matrix ``B``.
    """

    name = "rflo"
    variant = "ostl-no-h"
    learning_signal = "random"
    keeps = "the unit's leak only; fixed random readout feedback"


@register_rule("snap-1", "snap-2")
class SnAp(Rule):
    """SnAp-n, the n-step sparse approximation of RTRL (Menick et al., ICLR 2021).

    The trace of a weight keeps only the state entries that weight reaches within ``n`` steps;
    the rest is dropped at every step. A weight of row ``i`` reaches unit ``i`` at once
    (SnAp-1 keeps exactly those entries: each unit's own states), and in one more step every
    unit ``k`` with a recurrent connection ``i → k`` (SnAp-2; for a dense recurrent matrix
    that is every unit, which makes SnAp-2 the exact traces). Only layers whose traces are full
    Jacobians (recurrent layers) change: feed-forward layers' traces are already SnAp-1's.

    Args:
        n: 1 or 2.
    """

    variant = "ostl"
    keeps = "the Jacobian entries a weight reaches within n steps"
    masks_traces = True

    def __init__(self, n: int = 1) -> None:
        if n not in (1, 2):
            raise ValueError(f"SnAp(n={n!r}) is not offered; use n=1 or n=2")
        self.n = n
        self.name = f"snap-{n}"
        self._masks: dict[tuple[int, str], Tensor] = {}

    @classmethod
    def preset(cls, name: str) -> Callable[[], Rule]:
        return lambda: cls(n=int(name.rsplit("-", 1)[1]))

    def problems(self, learner: Any, plan: Any) -> list[Problem]:
        from snn_ostl.adapter import DenseAdapter

        out = []
        for path, (module, adapter) in plan.layers.items():
            if isinstance(adapter, DenseAdapter):
                out.append(
                    Problem(
                        path,
                        type(module).__name__,
                        "SnAp-n masks the traces by the units each weight row reaches; the "
                        "gates of this cell mix units inside its step, so that reach is not "
                        "known here.",
                        "use rule='ostl' or 'ostl-no-h' for torch RNN cells, or an SNU / "
                        "snnTorch RLeaky / Norse LIFRecurrentCell layer.",
                    )
                )
        return out

    def reset(self) -> None:
        self._masks.clear()  # weights may have changed sparsity between sequences

    def after_layer(self, layer: Any, output: Any) -> None:
        """Refuse full traces that the mask does not reach (chains, hand-written recurrence)."""
        if layer.recurrent:
            refuse_distributed(self, layer.path, type(layer.module).__name__)
        # (a feed-forward layer's chain may mix neurons within a step, LayerNorm: every entry
        # is reached at once there, so its exact traces are SnAp-n's too)
        chained = any(g.form == "full-jacobian" and g.chain is not None for g in layer.groups)
        if (chained and layer.recurrent) or getattr(layer, "fed_back", False):
            from snn_ostl.errors import ConfigurationError

            raise ConfigurationError(
                [
                    Problem(
                        layer.path,
                        type(layer.module).__name__,
                        f"{self.name} masks the full traces of a recurrent neuron fed by its "
                        "Linear synapse; this layer's full traces run through a chain of "
                        "operations or through recurrence written in the forward, where the "
                        "mask is not applied.",
                        "feed the recurrent neuron from its Linear directly, or use "
                        "rule='ostl' (exact) or 'ostl-no-h' for this model.",
                    )
                ]
            )

    def trace_mask(self, layer: Any, group: Any) -> Tensor | None:
        """``[R*N, P]`` mask of the entries of a ``[B, R*N, P]`` trace that SnAp-n keeps."""
        key = (id(layer), group.name)
        mask = self._masks.get(key)
        if mask is not None:
            return mask
        param, states = group.param, len(group.states)
        neurons = layer.neuron_shape.numel() if layer.neuron_shape is not None else None
        if neurons is None:
            return None
        reach = torch.eye(neurons, dtype=torch.bool, device=param.device)
        if self.n == 2:
            for synapse in layer._internal():
                if isinstance(synapse.source, int):
                    weight = layer.module.get_parameter(synapse.weight).detach()
                    reach = reach | (weight != 0)  # [k, i]: unit i reaches unit k
            for weight in getattr(layer, "fed_back_weights", lambda: [])():
                reach = reach | (weight.detach() != 0)
        # the unit each element of the parameter feeds: its row (modulo the neurons)
        if param.dim() == 0:
            unit = None
        else:
            rows = param.shape[0]
            per_row = param.numel() // rows
            unit = (torch.arange(param.numel(), device=param.device) // per_row) % neurons
        if unit is None:
            kept = torch.ones(neurons, param.numel(), dtype=torch.bool, device=param.device)
        else:
            kept = reach[:, unit]  # [k, P]
        mask = kept.repeat(states, 1).to(param.dtype)
        self._masks[key] = mask
        return mask
