"""``OSTL(flush_every=W)``: per-synapse history terms added to .grad every W steps, exactly."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_spiking, seeded
from hypothesis import given, settings
from hypothesis import strategies as st
from nets import StackNet, data, mean_rates, stack_runner

import snn_ostl
from snn_ostl.testing import compare, oracle_gradients, ostl_gradients
from snn_ostl.traces.window import contract_base

TOL = 1e-10


def _net(seed: int = 0) -> StackNet:
    torch.manual_seed(seed)
    return StackNet([8, 6, 5], threshold=0.3)  # feed-forward SNU: per-synapse traces


def _grouped(run, every: int):
    """Losses summed over ``every`` steps: one backward per group (1: every step)."""

    def losses():
        held = None
        for t, loss in enumerate(run()):
            held = loss if held is None else held + loss
            if (t + 1) % every == 0:
                yield held
                held = None
        if held is not None:
            yield held

    return losses


@settings(max_examples=20, deadline=None)
@given(
    flush_every=st.integers(2, 20),
    backward_every=st.integers(1, 13),
    steps=st.integers(2, 15),
    seed=st.integers(0, 3),
)
def test_any_flush_interval_and_backward_pattern_equals_oracle(
    flush_every, backward_every, steps, seed
):
    """Flushes before, at and after the end; a backward every step, every few steps, at the end."""
    net = _net(seed)
    x, target = data(steps=steps, seed=seed)
    rates: list = []
    run = stack_runner(net, x, target, rates)
    grads, owners, order = ostl_gradients(
        net, _grouped(run, backward_every), flush_every=flush_every
    )
    assert_spiking(mean_rates(rates))
    reference = oracle_gradients(net, run, owners, order)
    assert max(compare(grads, reference).values()) <= TOL


def _reference(net, run):
    _, owners, order = ostl_gradients(net, run)
    return oracle_gradients(net, run, owners, order)


def test_grad_waits_for_the_flush_and_optimizer_step_flushes():
    """Between flushes the weight lacks its history terms; optimizer.step() adds them first."""
    net = _net()
    x, target = data(steps=10)
    run = stack_runner(net, x, target)
    reference = _reference(net, run)
    weight = net.cells[0].weight
    before = weight.detach().clone()
    optimizer = torch.optim.SGD(net.parameters(), lr=1.0)
    optimizer.zero_grad(set_to_none=True)
    with snn_ostl.OSTL(net, flush_every=100) as learner:
        learner.reset()
        for loss in run():
            loss.backward()
        partial = weight.grad.clone()  # the instantaneous terms only, so far
        assert (partial - reference["cells.0.weight"]).abs().max() > 1e-6
        optimizer.step()
    torch.testing.assert_close(
        before - weight.detach(), reference["cells.0.weight"], rtol=1e-10, atol=1e-12
    )


def test_flush_reset_and_detach_add_the_pending_terms():
    net = _net()
    x, target = data(steps=9)
    run = stack_runner(net, x, target)
    reference = _reference(net, run)["cells.0.weight"]
    weight = net.cells[0].weight
    for finish in ("flush", "reset", "detach"):
        weight.grad = None
        learner = snn_ostl.OSTL(net, flush_every=50)
        learner.reset()
        for loss in run():
            loss.backward()
        getattr(learner, finish)()
        torch.testing.assert_close(weight.grad, reference, rtol=1e-10, atol=1e-12)
        if learner.attached:
            learner.detach()  # a second flush adds nothing
            torch.testing.assert_close(weight.grad, reference, rtol=1e-10, atol=1e-12)


def test_window_stays_bounded_and_holds_one_base():
    """With a backward every step the window keeps at most W steps of factors."""
    net = _net()
    x, target = data(steps=40)
    run = stack_runner(net, x, target)
    with snn_ostl.OSTL(net, flush_every=4) as learner:
        learner.reset()
        sizes, bases = [], set()
        for loss in run():
            loss.backward()
            window = learner.layers["cells.0"].groups[0].window
            sizes.append(len(window.plans))
            if window.base is not None:
                bases.update(t.data_ptr() for t in window.base.values())
        assert max(sizes) <= 5 and len(bases) == 1
        assert "every 4 steps" in learner.summary()


def _three_steps_twice_backward(learner_options: dict, finish: str) -> torch.Tensor | None:
    """Three steps with a retained graph, ``finish`` on the learner, then the last loss's
    backward again; returns the weight's .grad."""
    net = _net()
    x, target = data(steps=4)
    with snn_ostl.OSTL(net, **learner_options) as learner:
        learner.reset()
        states = [None, None]
        for t in range(3):
            out, states = net(x[t], states)
            loss = ((out - target[t]) ** 2).sum()
            loss.backward(retain_graph=True)
        getattr(learner, finish)()
        loss.backward()
        learner.flush()
        return net.cells[0].weight.grad.clone()


def test_second_backward_after_a_flush_that_moved_the_base_is_refused():
    # flush_every=2: the flush moves the base past the last step
    with pytest.raises(snn_ostl.StateError, match="already flushed up to step"):
        _three_steps_twice_backward({"flush_every": 2}, "flush")


def test_second_backward_after_a_reset_is_refused():
    # flush_every=2: the base exists by then, and reset() gives it to the next sequence
    with pytest.raises(snn_ostl.StateError, match=r"ended by learner\.reset"):
        _three_steps_twice_backward({"flush_every": 2}, "reset")


def test_second_backward_after_a_flush_that_kept_the_base_adds_its_terms_again():
    """Under half a window the flush keeps the base: a second backward is then counted again,
    like autograd counts it, and equals the per-step learner that keeps every snapshot."""
    windowed = _three_steps_twice_backward({"flush_every": 8}, "flush")
    snapshots = _three_steps_twice_backward({"advance_in_backward": False}, "flush")
    once = _three_steps_twice_backward({"advance_in_backward": False}, "__repr__")
    assert (snapshots - once).abs().max() == 0  # (the flush changes nothing there)
    torch.testing.assert_close(windowed, snapshots, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("bad", [0, -3, 2.5, True, "8"])
def test_flush_every_must_be_a_whole_number(bad):
    with pytest.raises(ValueError, match="flush_every"):
        snn_ostl.OSTL(_net(), flush_every=bad)


def _trace_tensors(layer) -> set[int]:
    g = layer.groups[0]
    if g.window is not None and g.window.base is not None:
        return {t.data_ptr() for t in g.window.base.values()}
    return {t.data_ptr() for t in g.trace if isinstance(t, torch.Tensor) and t.dim() == 3}


@pytest.mark.parametrize("flush_every", [1, 4])
def test_a_new_sequence_reuses_the_trace_buffer_unless_a_step_still_needs_it(flush_every):
    """reset() hands the largest tensor to the next sequence; a pending backward keeps it."""
    net = _net()
    xs = [data(steps=9, seed=s) for s in (1, 2, 3)]
    runs = [stack_runner(net, x, target) for x, target in xs]
    separate = [ostl_gradients(net, run)[0] for run in runs]
    weight = net.cells[0].weight
    weight.grad = None
    with snn_ostl.OSTL(net, flush_every=flush_every) as learner:
        layer = learner.layers["cells.0"]
        seen = []
        for run in runs[:2]:  # a backward at every step: nothing waits at reset()
            learner.reset()
            for loss in run():
                loss.backward()
            learner.flush()
            seen.append(_trace_tensors(layer))
        assert seen[0] == seen[1]
        learner.reset()
        held = torch.stack(list(runs[2]())).sum()  # every step of sequence 3 waits
        learner.reset()
        for loss in runs[0]():  # sequence 1 again, while sequence 3's traces are still needed
            loss.backward()
        learner.flush()
        held.backward()  # sequence 3's traces were left alone: its gradient is intact
    expected = sum(
        (s["cells.0.weight"] for s in [*separate, separate[0]]), torch.zeros_like(weight)
    )
    torch.testing.assert_close(weight.grad, expected, rtol=1e-9, atol=1e-12)


@pytest.mark.parametrize("per_sample", [True, False])
def test_base_contraction_both_ways(per_sample):
    """The CPU loop and the GPU einsum of the base contraction, against a plain sum."""
    gen = seeded(0)
    lam = torch.randn(5, 4, generator=gen, dtype=torch.float64)
    base = torch.randn(5, 4, 7, generator=gen, dtype=torch.float64)
    expected = (lam[..., None] * base).sum(0)
    got = contract_base(lam, base, per_sample)
    torch.testing.assert_close(got, expected, rtol=1e-12, atol=1e-12)


def test_hooks_on_the_weight_see_the_flushed_terms():
    """A gradient hook (here: a mask) applies to the history terms a flush adds, as per step."""
    net = _net()
    x, target = data(steps=10)
    run = stack_runner(net, x, target)
    weight = net.cells[0].weight
    mask = torch.rand(weight.shape, generator=seeded(0)) > 0.5
    seen: list = []

    def hook(grad):
        assert grad is not None
        seen.append(grad.shape)
        return grad * mask

    handle = weight.register_hook(hook)
    try:
        per_step = ostl_gradients(net, run)[0]["cells.0.weight"]
        flushed = ostl_gradients(net, run, flush_every=3)[0]["cells.0.weight"]
    finally:
        handle.remove()
    assert seen and not per_step[~mask].any()
    torch.testing.assert_close(flushed, per_step, rtol=1e-10, atol=1e-12)
