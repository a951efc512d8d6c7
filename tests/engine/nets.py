"""Model factories and sequence runners shared by the engine tests."""

from __future__ import annotations

import itertools
from collections.abc import Callable

import torch
from conftest import seeded
from torch import nn

import snn_ostl

DT = torch.float64


class StackNet(nn.Module):
    """stateless front -> stateful SNU/sSNU layers -> stateless back -> Linear readout."""

    def __init__(
        self,
        sizes: list[int],
        *,
        recurrent: bool = False,
        soft: bool = False,
        front: nn.Module | None = None,
        **cell_options,
    ) -> None:
        super().__init__()
        self.front = front if front is not None else nn.Identity()
        cell = snn_ostl.SoftSNU if soft else snn_ostl.SNU
        cell_options.setdefault("threshold", 0.2)
        self.cells = nn.ModuleList(
            cell(a, b, recurrent=recurrent, dtype=DT, **cell_options)
            for a, b in itertools.pairwise(sizes)
        )
        self.back = nn.Sequential(nn.Linear(sizes[-1], 4, dtype=DT), nn.Tanh())
        self.readout = nn.Linear(4, 2, dtype=DT)

    def forward(self, x, states):
        h = self.front(x)
        new = []
        for cell, state in zip(self.cells, states):
            h, state = cell(h, state)
            new.append(state)
        return self.readout(self.back(h)), new


def stack_runner(
    net: StackNet, x: torch.Tensor, target: torch.Tensor, rates: list | None = None
) -> Callable:
    """A run() generator factory: one sequence from zero state, MSE loss per step."""

    def run():
        states = [None] * len(net.cells)
        for t in range(x.shape[0]):
            out, states = net(x[t], states)
            if rates is not None:
                rates.append([float(s.y.detach().mean()) for s in states])
            yield ((out - target[t]) ** 2).sum()

    return run


def data(steps: int = 12, batch: int = 3, features: int = 8, seed: int = 0, scale: float = 2.0):
    gen = seeded(seed)
    x = torch.rand(steps, batch, features, generator=gen, dtype=DT) * scale
    target = torch.randn(steps, batch, 2, generator=gen, dtype=DT)
    return x, target


def mean_rates(rates: list[list[float]]) -> list[float]:
    return torch.tensor(rates).mean(0).tolist()


def add_norse_pair(net: nn.Module) -> None:
    """Give ``net`` two Norse layers: ``fc1`` Linear(5, 7) -> ``lif1`` LIFCell -> ``fc2``
    Linear(7, 3) -> ``lif2`` LIFCell, in float64, the weights scaled by 12 so both spike."""
    import norse.torch as nt

    net.fc1 = nn.Linear(5, 7, dtype=DT)
    net.fc2 = nn.Linear(7, 3, dtype=DT)
    net.lif1, net.lif2 = nt.LIFCell(), nt.LIFCell()
    with torch.no_grad():
        net.fc1.weight.mul_(12.0)
        net.fc2.weight.mul_(12.0)
