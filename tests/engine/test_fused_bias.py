"""The bias of a fused layer: run with a scaled gradient, handed back after every forward."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from toy_cells import ToyLeaky

import snn_ostl
from snn_ostl.errors import StateError

DT = torch.float64
DECAY = 0.8  # ToyLeaky's beta: the bias's filtered input is f_t = 1 + 0.8 f_{t-1}


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.syn = nn.Linear(4, 3, dtype=DT)
        self.lif = ToyLeaky(threshold=0.3)
        self.lif.threshold.requires_grad_(False)  # weight and bias only: an all-fused layer

    def forward(self, x, state):
        return self.lif(self.syn(x), state)


def _steps(net, n, x):
    state = None
    for _ in range(n):
        out, state = net(x, state)
        yield out


def test_bias_is_a_parameter_again_after_each_step_and_scaled_inside():
    net = Net()
    bias = net.syn.bias
    seen = []
    x = torch.rand(2, 4, dtype=DT)
    with snn_ostl.OSTL(net) as learner:
        # registered after the learner's hooks: runs inside the synapse's forward, after the swap
        net.syn.register_forward_pre_hook(lambda m, args: seen.append(m.bias))
        for out in _steps(net, 3, x):
            out.sum().backward()
            assert net.syn.bias is bias and net.syn._parameters["bias"] is bias
        assert learner.layers["lif"].all_fused
    assert seen[0] is bias  # f_1 = 1: nothing to scale
    for swapped in seen[1:]:
        assert not isinstance(swapped, nn.Parameter) and swapped.grad_fn is not None
        torch.testing.assert_close(swapped, bias, rtol=0, atol=0)
    assert dict(net.named_parameters())["syn.bias"] is bias


def test_hooks_on_the_bias_see_one_gradient_scaled_by_the_filtered_input():
    net = Net()
    calls = []
    net.syn.bias.register_hook(lambda g: calls.append(g.clone()))
    x = torch.rand(2, 4, dtype=DT)
    unscaled = []

    def keep_output_gradient(module, args, out):  # ∂L/∂a_t summed over the batch
        out.register_hook(lambda g: unscaled.append(g.sum(0)))

    net.syn.register_forward_hook(keep_output_gradient)
    with snn_ostl.OSTL(net):
        for out in _steps(net, 4, x):
            before = len(calls)
            out.sum().backward()
            assert len(calls) == before + 1  # one gradient per backward, both paths summed
    f, expected = 0.0, []
    for g in unscaled:
        f = DECAY * f + 1.0
        expected.append(f * g)
    assert all(float(g.abs().sum()) > 0 for g in unscaled)  # spikes pass gradient
    for got, want in zip(calls, expected):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


def test_a_synapse_that_raises_gets_its_bias_back():
    net = Net()
    bias = net.syn.bias
    with snn_ostl.OSTL(net):
        state = None
        for _ in range(2):  # from the second step on, the bias is swapped in the forward
            out, state = net(torch.rand(2, 4, dtype=DT), state)
            out.sum().backward()
        with pytest.raises(RuntimeError):
            net(torch.rand(2, 5, dtype=DT), state)  # wrong width: F.linear raises
        assert net.syn._parameters["bias"] is bias


def test_a_bias_replaced_after_the_first_step_is_refused():
    net = Net()
    with snn_ostl.OSTL(net):
        out, state = net(torch.rand(2, 4, dtype=DT), None)
        out.sum().backward()
        net.syn.bias = nn.Parameter(torch.zeros(3, dtype=DT))
        with pytest.raises(StateError, match=r"syn \(Linear\): its bias is no longer"):
            net(torch.rand(2, 4, dtype=DT), state)
