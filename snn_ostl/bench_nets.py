"""The benchmark's networks: the paper's 784-256-256-10 MNIST net built three ways.

snnTorch ``Leaky`` (factorised, fused presynaptic traces), Norse ``LIFCell`` (per-synapse traces:
Norse's reset is a differentiable gate) and the native SNU. Kept apart from
:mod:`snn_ostl.bench`, which times them.
"""

from __future__ import annotations

import itertools

__all__ = ["NETWORKS", "PER_SYNAPSE", "build"]

NETWORKS = {
    "snntorch-leaky": "snnTorch Leaky (presynaptic, fused)",
    "norse-lif": "Norse LIFCell (per-synapse)",
    "native-snu": "snn_ostl SNU (per-synapse)",
}


#: The networks whose weights have per-synapse traces (where ``flush_every`` matters).
PER_SYNAPSE = ("norse-lif", "native-snu")


def _detached(model, state):
    """A state of nested tuples, lists and NamedTuples, cut from the graph of earlier steps."""
    import torch

    if isinstance(state, torch.Tensor):
        return state.detach()
    if isinstance(state, tuple) and hasattr(state, "_fields"):
        return type(state)(*(_detached(model, s) for s in state))
    if isinstance(state, (tuple, list)):
        return type(state)(_detached(model, s) for s in state)
    return state


def build(network: str, sizes: tuple[int, ...]):
    """Model, ``step(model, x_t, state) -> (output, state)``, ``reset(model)`` and
    ``detach(model, state) -> state`` (cuts the previous steps off, for the floor row)."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    layers: list[nn.Module] = []
    if network == "snntorch-leaky":
        import snntorch as snn

        for a, b in itertools.pairwise(sizes[:-1]):
            layers += [nn.Linear(a, b), snn.Leaky(beta=0.9, init_hidden=True)]
        layers.append(nn.Linear(sizes[-2], sizes[-1]))
        model = nn.Sequential(*layers)

        def step(m, x, state):
            return m(x), None

        def reset(m):
            for layer in m:
                if isinstance(layer, snn.Leaky):
                    layer.reset_mem()

        def detach(m, state):
            for layer in m:  # this instance's state only (not snnTorch's class-wide detach)
                if isinstance(layer, snn.Leaky):
                    layer.mem = layer.mem.detach()
            return state

        return model, step, reset, detach
    if network == "norse-lif":
        import norse.torch as norse

        for a, b in itertools.pairwise(sizes[:-1]):
            layers += [nn.Linear(a, b), norse.LIFCell()]
        layers.append(nn.Linear(sizes[-2], sizes[-1]))
        model = norse.SequentialState(*layers)
        return model, (lambda m, x, state: m(x, state)), (lambda m: None), _detached
    if network == "native-snu":
        import snn_ostl

        class SNUNet(nn.Module):
            def __init__(self):
                super().__init__()
                self.cells = nn.ModuleList(
                    snn_ostl.SNU(a, b, threshold=0.5) for a, b in itertools.pairwise(sizes[:-1])
                )
                self.readout = nn.Linear(sizes[-2], sizes[-1])

            def forward(self, x, states):
                states = states or [None] * len(self.cells)
                new = []
                for cell, s in zip(self.cells, states):
                    x, s = cell(x, s)
                    new.append(s)
                return self.readout(x), new

        return SNUNet(), (lambda m, x, state: m(x, state)), (lambda m: None), _detached
    raise ValueError(f"unknown network {network!r}; choose from {', '.join(NETWORKS)}")
