"""Attach, detach, context manager, double attach, and backward after detach (Opacus style)."""

from __future__ import annotations

import pytest
import torch
from nets import StackNet, data, stack_runner

import snn_ostl


def _forward_all(net, x):
    states = [None] * len(net.cells)
    outs = []
    for t in range(x.shape[0]):
        out, states = net(x[t], states)
        outs.append(out.detach())
    return torch.stack(outs)


def _hook_count(model):
    return sum(
        len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
        for m in model.modules()
    )


def test_attaching_changes_no_forward_output():
    net = StackNet([8, 6, 5], recurrent=True)
    x, _ = data()
    before = _forward_all(net, x)
    with snn_ostl.OSTL(net):
        during = _forward_all(net, x)
    after = _forward_all(net, x)
    assert torch.equal(before, during)
    assert torch.equal(before, after)


def test_detach_leaves_model_as_it_was():
    net = StackNet([8, 6], recurrent=True)
    keys, kind, hooks = list(net.state_dict()), type(net), _hook_count(net)
    learner = snn_ostl.OSTL(net)
    assert snn_ostl.is_attached(net)
    assert _hook_count(net) > hooks
    learner.detach()
    assert not snn_ostl.is_attached(net)
    assert _hook_count(net) == hooks
    assert list(net.state_dict()) == keys and type(net) is kind
    assert all(not hasattr(p, "ostl") for p in net.parameters())


def test_context_manager_detaches_on_exit_and_on_error():
    net = StackNet([8, 6])
    with pytest.raises(RuntimeError, match="boom"), snn_ostl.OSTL(net):
        raise RuntimeError("boom")
    assert not snn_ostl.is_attached(net)


def test_double_attach_is_refused_clearly():
    net = StackNet([8, 6])
    with snn_ostl.OSTL(net):
        with pytest.raises(snn_ostl.AlreadyAttachedError, match="already attached"):
            snn_ostl.OSTL(net)
        with pytest.raises(snn_ostl.AlreadyAttachedError):
            snn_ostl.OSTL(net.cells[0])  # a submodule of an attached model
    snn_ostl.OSTL(net).detach()  # fine again after detaching


def test_learner_methods_after_detach_raise():
    learner = snn_ostl.OSTL(StackNet([8, 6]))
    learner.detach()
    with pytest.raises(snn_ostl.DetachedLearnerError, match="detached"):
        learner.reset()


def test_backward_after_detach_keeps_history_of_attached_steps():
    """A graph built while attached still carries its OSTL history terms."""
    net = StackNet([8, 6], recurrent=True)
    x, target = data()
    run = stack_runner(net, x, target)
    with snn_ostl.OSTL(net) as learner:
        learner.reset()
        losses = list(run())
        expected = torch.autograd.grad(
            torch.stack(losses).sum(), list(net.parameters()), retain_graph=True
        )
    got = torch.autograd.grad(torch.stack(losses).sum(), list(net.parameters()))
    for a, b in zip(got, expected):
        torch.testing.assert_close(a, b, rtol=0, atol=0)
    # and a forward after detach is plain BPTT again: no history node, gradients through time
    states = [None]
    for t in range(3):
        _out, states = net(x[t], states)
    assert states[0].s.grad_fn is not None
    assert "Inject" not in type(states[0].s.grad_fn).__name__


def test_no_grad_forward_leaves_traces_alone():
    net = StackNet([8, 6])
    x, _ = data()
    with snn_ostl.OSTL(net) as learner:
        with torch.no_grad():
            net(x[0], [None])
        assert not learner.layers["cells.0"].has_traces
        net(x[0], [None])
        assert learner.layers["cells.0"].has_traces


def test_a_forward_that_raises_leaves_no_hook_state_behind():
    """Post-hooks run even when forward raises, so nothing stays installed or half-done."""
    from torch import nn

    cell = snn_ostl.SNU(4, 3, threshold=0.2, dtype=torch.float64)
    model = nn.Sequential(nn.Linear(4, 4, dtype=torch.float64), cell)
    x = torch.rand(2, 4, dtype=torch.float64)
    with snn_ostl.OSTL(cell, variant="eprop") as learner:
        _, state = cell(x)
        bad = snn_ostl.SNUState(state.s[:1], state.y)
        with pytest.raises(snn_ostl.StateError):
            cell(x, bad)  # refused inside the pre-hook, after its variant context was entered
        assert cell.detach_spikes is False  # the e-prop context was undone
        learner.reset()
        cell(x)[0].sum().backward()  # the next step works and trains
    with snn_ostl.OSTL(model, instantaneous_below=True):
        with pytest.raises(RuntimeError):
            model(torch.rand(2, 5, dtype=torch.float64))  # the Linear fails after its pre-hook
        out, _ = model(x)
    plain, _ = model(x)
    torch.testing.assert_close(out.detach(), plain.detach())
