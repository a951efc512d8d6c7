"""The adapter of ``snn.SLSTM``: an LSTM cell firing from its hidden state, full Jacobian."""

from __future__ import annotations

from collections.abc import Callable

import snntorch as snn
import torch
import torch.nn.functional as F
from snn_ostl.adapters.snntorch._base import _SnnTorchState
from snn_ostl.adapters.snntorch._common import (
    EXAMPLE_SIZE,
    SUBTRACT,
    ZERO,
    _mechanism,
    _reset_signal,
)
from torch import Tensor, nn

from snn_ostl.adapter import DenseAdapter
from snn_ostl.registry import register_adapter


def _slstm_examples() -> dict[str, Callable[[], nn.Module]]:
    n = EXAMPLE_SIZE
    return {
        "none": lambda: snn.SLSTM(n, n, threshold=0.1),
        "subtract, learn_threshold, init_hidden": lambda: snn.SLSTM(
            n, n, threshold=0.1, reset_mechanism="subtract", learn_threshold=True, init_hidden=True
        ),
    }


@register_adapter(snn.SLSTM, examples=_slstm_examples())
class SLSTMAdapter(_SnnTorchState, DenseAdapter):
    """``snn.SLSTM``: an ``nn.LSTMCell`` whose hidden output is the membrane (``mem = h``,
    ``syn = c``), with spikes fired from ``mem``. Generic OSTL with the full cell Jacobian."""

    state_names = ("syn", "mem")
    variants = ("ostl",)

    def problems(self, module, variant):
        out = super().problems(module, variant)
        if module.input_size != module.hidden_size:
            out.append(
                (
                    f"input_size={module.input_size} differs from hidden_size="
                    f"{module.hidden_size}: snnTorch 1.0.0's SLSTM compares its state with the "
                    "input's shape and replaces it by zeros at every step, so it has no memory.",
                    "use input_size == hidden_size (put an nn.Linear in front to change the "
                    "width), or torch.nn.LSTMCell with your own spike function.",
                )
            )
        return out

    def trained_parameters(self, module):
        return {name: p for name, p in module.named_parameters() if p.requires_grad}

    def step(self, module, inputs, state, params):
        syn_prev, mem_prev = state
        cell = module.lstm_cell

        def get(name: str) -> Tensor | None:
            full = f"lstm_cell.{name}"
            return params[full] if full in params else getattr(cell, name)

        threshold = params.get("threshold", module.threshold)
        r = _reset_signal(mem_prev, threshold)
        gates = F.linear(inputs, get("weight_ih"), get("bias_ih")) + F.linear(
            mem_prev, get("weight_hh"), get("bias_hh")
        )
        i, f, g, o = gates.chunk(4, dim=1)
        syn = torch.sigmoid(f) * syn_prev + torch.sigmoid(i) * torch.tanh(g)
        mem = torch.sigmoid(o) * torch.tanh(syn)
        mechanism = _mechanism(module)
        if mechanism == SUBTRACT:
            mem = mem - r * threshold
        elif mechanism == ZERO:
            mem = mem - mem * r
        return syn, mem
