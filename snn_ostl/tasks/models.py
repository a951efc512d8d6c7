"""Step models of the tasks: stacks of stateful layers with a Linear readout.

One class covers every framework the command line offers, so the same task can be trained
with the native SNU / sSNU, snnTorch ``Leaky``, Norse ``LIFCell`` or ``torch.nn.LSTMCell``.
Each layer is a synapse (an ``nn.Linear`` for the frameworks whose neurons have no weights,
``nn.Identity`` otherwise) followed by the neuron, called with an explicit state every step,
as the OSTL learner expects; the readout sees the last layer's output at every step.
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["CELLS", "StepNet"]

#: cell name -> framework it comes from
CELLS = {
    "snu": "native",
    "ssnu": "native",
    "leaky": "snntorch",
    "lif": "norse",
    "lstm": "torch",
}


def _make_cell(cell: str, n_in: int, n_out: int, options: dict[str, Any]) -> nn.Module:
    if cell in ("snu", "ssnu"):
        from snn_ostl.cells.snu import SNU

        return SNU(n_in, n_out, soft=cell == "ssnu", **options)
    if cell == "leaky":
        import snntorch

        return snntorch.Leaky(**{"beta": 0.9, **options})
    if cell == "lif":
        from norse.torch import LIFCell

        return LIFCell(**options)
    if cell == "lstm":
        return nn.LSTMCell(n_in, n_out)
    raise ValueError(f"unknown cell {cell!r}; known cells: {', '.join(CELLS)}")


class StepNet(nn.Module):
    """Stateful layers of one kind, then a Linear readout, played one time step per call.

    Args:
        sizes: ``[inputs, hidden_1, ..., hidden_L]``.
        outputs: Size of the readout.
        cell: ``"snu"``, ``"ssnu"`` (native), ``"leaky"`` (snnTorch), ``"lif"`` (Norse) or
            ``"lstm"`` (torch).
        options: Keyword arguments of every neuron (e.g. ``decay`` for the SNU, ``beta`` for
            ``Leaky``); ignored by ``lstm``.

    Shape:
        ``forward(x [B, inputs], state) -> (readout [B, outputs], state)``; the state is a list
        with one entry per layer, from :meth:`init_state`.
    """

    def __init__(
        self,
        sizes: list[int],
        outputs: int,
        *,
        cell: str = "snu",
        options: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"unknown cell {cell!r}; known cells: {', '.join(CELLS)}")
        self.cell, self.sizes = cell, list(sizes)
        options = dict(options or {})
        weightless = cell in ("leaky", "lif")
        self.synapses = nn.ModuleList(
            nn.Linear(a, b) if weightless else nn.Identity() for a, b in itertools.pairwise(sizes)
        )
        self.neurons = nn.ModuleList(
            _make_cell(cell, a, b, options) for a, b in itertools.pairwise(sizes)
        )
        self.readout = nn.Linear(sizes[-1], outputs)

    @property
    def framework(self) -> str:
        """The framework of the stateful layers."""
        return CELLS[self.cell]

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> list:
        """The state at the start of a sequence: zeros (explicit for snnTorch), else None."""
        if self.cell == "leaky":
            return [torch.zeros(batch_size, n, device=device) for n in self.sizes[1:]]
        return [None] * len(self.neurons)

    def forward(self, x: Tensor, state: list) -> tuple[Tensor, list]:
        h, new = x, []
        for synapse, neuron, s in zip(self.synapses, self.neurons, state):
            if self.cell == "lstm":
                s = neuron(synapse(h), s)
                h = s[0]
            else:
                h, s = neuron(synapse(h), s)
            new.append(s)
        return self.readout(h), new

    @torch.no_grad()
    def constrain(self) -> None:
        """Keep learned decays in [0, 1] (above 1 a unit's memory grows without bound)."""
        for neuron in self.neurons:
            decay = getattr(neuron, "decay", None)
            if isinstance(decay, nn.Parameter):
                decay.clamp_(0.0, 1.0)

    def describe(self) -> str:
        """One line such as ``64-128 snntorch.Leaky -> Linear(10)``."""
        kind = {
            "snu": "SNU",
            "ssnu": "sSNU",
            "leaky": "snntorch.Leaky",
            "lif": "norse.LIFCell",
            "lstm": "nn.LSTMCell",
        }[self.cell]
        recurrent = any(getattr(n, "recurrent", False) for n in self.neurons)
        sizes = "-".join(str(s) for s in self.sizes)
        rec = " recurrent" if recurrent else ""
        return f"{sizes}{rec} {kind} -> Linear({self.readout.out_features})"
