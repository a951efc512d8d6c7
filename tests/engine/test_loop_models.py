"""Models whose forward runs its own time loop (snnTorch tutorial 5 style), trained online."""

from __future__ import annotations

import snntorch as snn
import torch
from conftest import seeded
from torch import nn

import snn_ostl


class LoopNet(nn.Module):
    """Unchanged tutorial-5 style: init the state, loop over time, return stacked records."""

    def __init__(self):
        super().__init__()
        self.fc1 = nn.Linear(12, 16)
        self.lif1 = snn.Leaky(beta=0.9, threshold=0.5)
        self.fc2 = nn.Linear(16, 4)
        self.lif2 = snn.Leaky(beta=0.8, threshold=0.2)

    def forward(self, x):
        mem1, mem2 = self.lif1.init_leaky(), self.lif2.init_leaky()
        spikes, membranes = [], []
        for t in range(x.shape[0]):
            spk1, mem1 = self.lif1(self.fc1(x[t]), mem1)
            spk2, mem2 = self.lif2(self.fc2(spk1), mem2)
            spikes.append(spk2)
            membranes.append(mem2)
        return torch.stack(spikes), torch.stack(membranes)


def _data(steps):
    gen = seeded(0)
    return torch.rand(steps, 6, 12, generator=gen) * 2, torch.randint(0, 4, (6,), generator=gen)


def test_backward_at_equals_one_backward_after_forward():
    torch.manual_seed(0)
    net = LoopNet()
    x, labels = _data(15)
    loss_fn = nn.CrossEntropyLoss()
    with snn_ostl.OSTL(net) as learner:
        learner.reset()
        spikes, membranes = net(x)
        sum(loss_fn(m, labels) for m in membranes).backward()
        whole = {n: p.grad.clone() for n, p in net.named_parameters()}
        net.zero_grad()
        learner.reset()
        with learner.backward_at(net.lif2, lambda out, t: loss_fn(out[1], labels)):
            online_spikes, online_membranes = net(x)
        online = {n: p.grad.clone() for n, p in net.named_parameters()}
    assert not online_membranes.requires_grad  # the records hold no graph
    assert 0.02 < float(spikes.mean()) < 0.9  # the output layer spikes
    torch.testing.assert_close(online_spikes, spikes.detach())
    for name in whole:
        torch.testing.assert_close(online[name], whole[name], rtol=1e-5, atol=1e-6)


class _LiveCounter:
    """Counts tensors saved for backward that are still alive, and the peak of that count."""

    def __init__(self):
        self.live = self.peak = 0

    def pack(self, tensor):
        counter = self

        class Held:
            def __init__(self):
                self.tensor = tensor
                counter.live += 1
                counter.peak = max(counter.peak, counter.live)

            def __del__(self):
                counter.live -= 1

        return Held()

    @staticmethod
    def unpack(held):
        return held.tensor


def _peak_saved(net, steps):
    x, labels = _data(steps)
    loss_fn = nn.CrossEntropyLoss()
    counter = _LiveCounter()
    with snn_ostl.OSTL(net) as learner:
        learner.reset()
        with (
            torch.autograd.graph.saved_tensors_hooks(counter.pack, counter.unpack),
            learner.backward_at(net.lif2, lambda out, t: loss_fn(out[1], labels)),
        ):
            net(x)
    return counter.peak


def test_backward_at_keeps_memory_flat():
    """The most tensors saved for backward at any moment does not grow with T."""
    net = LoopNet()
    short, long = _peak_saved(net, 10), _peak_saved(net, 100)
    assert short > 0
    assert long == short
