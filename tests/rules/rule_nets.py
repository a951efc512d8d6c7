"""Small float64 models and gradient helpers shared by the learning-rule tests."""

from __future__ import annotations

import torch
from torch import nn

import snn_ostl
from snn_ostl.cells import LeakyRNNCell

DT = torch.float64
T, B, N_IN, N, N_OUT = 12, 2, 5, 7, 3
THRESHOLD = 0.4
DECAY = 0.8


class RecurrentSNUNet(nn.Module):
    """A recurrent spiking layer (SNU, per-unit thresholds) and a linear readout."""

    def __init__(self) -> None:
        super().__init__()
        self.cell = snn_ostl.SNU(
            N_IN, N, recurrent=True, bias=True, decay=DECAY, threshold=THRESHOLD, dtype=DT
        )
        with torch.no_grad():
            self.cell.bias.uniform_(-0.2, 0.2)
            # unit thresholds of their own (still trained) make the comparison per neuron
            self.cell.threshold.add_(torch.linspace(-0.1, 0.1, N, dtype=DT))
        self.out = nn.Linear(N, N_OUT, dtype=DT)

    def forward(self, x, state):
        y, state = self.cell(x, state)
        return self.out(y), state


class LeakyRateNet(nn.Module):
    """Murray's leaky rate units and a linear readout."""

    def __init__(self, tau: float) -> None:
        super().__init__()
        self.cell = LeakyRNNCell(N_IN, N, tau=tau, dtype=DT)
        with torch.no_grad():
            self.cell.bias.uniform_(-0.5, 0.5)
        self.out = nn.Linear(N, N_OUT, dtype=DT)

    def forward(self, x, h):
        h = self.cell(x, h)
        return self.out(h), h


def grads_of(net: nn.Module) -> dict[str, torch.Tensor]:
    """Every parameter's ``.grad``, copied (parameters without one left out)."""
    return {n: p.grad.detach().clone() for n, p in net.named_parameters() if p.grad is not None}


def zero_grads(net: nn.Module) -> None:
    for p in net.parameters():
        p.grad = None


def norse_lif_parameters(c):
    """Norse's LIF parameters in float64 from a :class:`equations_local.NorseLIF` (Norse keeps
    them in float32 by default, and a float32 0.1 integration factor would differ from the
    reference's by 1.5e-9)."""
    from norse.torch.functional.lif import LIFParameters

    return LIFParameters(
        tau_syn_inv=torch.tensor(c.tau_syn_inv, dtype=DT),
        tau_mem_inv=torch.tensor(c.tau_mem_inv, dtype=DT),
        v_leak=torch.tensor(c.v_leak, dtype=DT),
        v_th=torch.tensor(c.v_th, dtype=DT),
        v_reset=torch.tensor(c.v_reset, dtype=DT),
    )
