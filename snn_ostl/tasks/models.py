"""Step models of the tasks: stacks of stateful layers with a Linear readout.

One class covers every framework the command line offers, so the same task can be trained
with the native SNU / sSNU, snnTorch ``Leaky``, Norse ``LIFCell`` or ``torch.nn.LSTMCell``.
Each layer is a synapse (an ``nn.Linear`` for the frameworks whose neurons have no weights,
``nn.Identity`` otherwise) followed by the neuron, called with an explicit state every step,
as the OSTL learner expects; the readout sees the last layer's output at every step.

Two learning rules need a model of their own kind, which :func:`rule_model` builds from the
task's sizes: RFLO trains leaky rate units (:class:`snn_ostl.cells.LeakyRNNCell`, cell
``leaky-rnn`` of :class:`StepNet`), SuperSpike a stack of ``nn.Linear`` -> snnTorch ``Leaky``
layers whose last layer is the output (:class:`SpikingOutputNet`).
"""

from __future__ import annotations

import itertools
from typing import Any

import torch
from torch import Tensor, nn

__all__ = ["CELLS", "MODEL_KINDS", "SpikingOutputNet", "StepNet", "rule_model"]

#: cell name -> framework it comes from
CELLS = {
    "snu": "native",
    "ssnu": "native",
    "leaky": "snntorch",
    "lif": "norse",
    "lstm": "torch",
    "leaky-rnn": "native",
    "lsnn": "norse",
}

#: The models :func:`rule_model` builds, and what each is.
MODEL_KINDS = {
    "leaky-rnn": "the task's hidden sizes as leaky rate units (LeakyRNNCell) with a Linear readout",
    "spiking-output": "Linear -> snntorch.Leaky layers of the task's hidden sizes and a spiking "
    "output layer with one neuron per class (no Linear readout)",
}
#: Time constant (steps) of the leaky rate units when the task's options do not set one.
LEAKY_RNN_TAU = 10.0
#: Membrane decay of the SuperSpike model's Leaky neurons when the task's options do not set one.
SPIKING_BETA = 0.9


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
    if cell == "lsnn":
        # adaptive LIF neurons (the ALIF / LSNN units of Bellec et al.), fed by a Linear
        from norse.torch import LSNNCell
        from norse.torch.functional.lsnn import LSNNParameters

        fields = {k: torch.as_tensor(v) for k, v in options.items()}
        return LSNNCell(p=LSNNParameters(**fields))
    if cell == "lstm":
        return nn.LSTMCell(n_in, n_out)
    if cell == "leaky-rnn":
        from snn_ostl.cells.leaky_rnn import LeakyRNNCell

        return LeakyRNNCell(n_in, n_out, **{"tau": LEAKY_RNN_TAU, **options})
    raise ValueError(f"unknown cell {cell!r}; known cells: {', '.join(CELLS)}")


class StepNet(nn.Module):
    """Stateful layers of one kind, then a Linear readout, played one time step per call.

    Args:
        sizes: ``[inputs, hidden_1, ..., hidden_L]``.
        outputs: Size of the readout.
        cell: ``"snu"``, ``"ssnu"``, ``"leaky-rnn"`` (native), ``"leaky"`` (snnTorch),
            ``"lif"``, ``"lsnn"`` (Norse) or ``"lstm"`` (torch).
        options: Keyword arguments of every neuron (e.g. ``decay`` for the SNU, ``beta`` for
            ``Leaky``, ``tau`` for ``leaky-rnn``); ignored by ``lstm``.

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
        weightless = cell in ("leaky", "lif", "lsnn")
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
            elif self.cell == "leaky-rnn":
                h = s = neuron(synapse(h), s)
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
            "leaky-rnn": "LeakyRNNCell",
            "lsnn": "norse.LSNNCell",
        }[self.cell]
        recurrent = self.cell == "leaky-rnn" or any(
            getattr(n, "recurrent", False) for n in self.neurons
        )
        sizes = "-".join(str(s) for s in self.sizes)
        rec = " recurrent" if recurrent else ""
        if self.cell == "leaky-rnn":
            kind += f" (tau {self.neurons[0].tau:g})"
        return f"{sizes}{rec} {kind} -> Linear({self.readout.out_features})"


class SpikingOutputNet(nn.Module):
    """``nn.Linear`` -> snnTorch ``Leaky`` layers whose last layer is the output: its spikes.

    The model SuperSpike trains: every neuron is fed by one Linear, and the output is the
    spikes of the last spiking layer (one neuron per class; the class is read from the spike
    counts).

    Args:
        sizes: ``[inputs, hidden_1, ..., hidden_L, outputs]``.
        beta: Membrane decay of every neuron (not learned).

    Shape:
        ``forward(x [B, inputs], state) -> (spikes [B, outputs], state)``.
    """

    cell = "leaky"

    def __init__(self, sizes: list[int], *, beta: float = SPIKING_BETA) -> None:
        super().__init__()
        import snntorch

        self.sizes, self.beta = list(sizes), beta
        self.synapses = nn.ModuleList(nn.Linear(a, b) for a, b in itertools.pairwise(sizes))
        self.neurons = nn.ModuleList(snntorch.Leaky(beta=beta) for _ in sizes[1:])

    def init_state(self, batch_size: int, device: torch.device | str | None = None) -> list:
        """Zero membranes, one per layer."""
        return [torch.zeros(batch_size, n, device=device) for n in self.sizes[1:]]

    def forward(self, x: Tensor, state: list) -> tuple[Tensor, list]:
        h, new = x, []
        for synapse, neuron, mem in zip(self.synapses, self.neurons, state):
            h, mem = neuron(synapse(h), mem)
            new.append(mem)
        return h, new

    def describe(self) -> str:
        """One line such as ``64-16-10 snntorch.Leaky, spiking output``."""
        sizes = "-".join(str(s) for s in self.sizes)
        return f"{sizes} snntorch.Leaky (beta {self.beta:g}), spiking output"


def rule_model(kind: str, sizes: list[int], outputs: int, options: dict[str, Any]) -> nn.Module:
    """The model of kind ``kind`` (see :data:`MODEL_KINDS`) with the task's sizes.

    Args:
        kind: ``"leaky-rnn"`` or ``"spiking-output"``.
        sizes: ``[inputs, hidden_1, ..., hidden_L]``.
        outputs: Classes (or readout size).
        options: The task's ``cell_options``: ``leaky-rnn`` reads ``tau`` from its entry
            ``leaky-rnn``, ``spiking-output`` reads ``beta`` from its entry ``leaky``.
    """
    if kind == "leaky-rnn":
        return StepNet(sizes, outputs, cell="leaky-rnn", options=options.get("leaky-rnn", {}))
    if kind == "spiking-output":
        beta = options.get("leaky", {}).get("beta", SPIKING_BETA)
        return SpikingOutputNet([*sizes, outputs], beta=beta)
    raise ValueError(f"unknown model kind {kind!r}; known: task, {', '.join(MODEL_KINDS)}")
