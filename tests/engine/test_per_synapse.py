"""Per-synapse traces: the fused contract-and-advance of the backward, and when it may run."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_spiking, seeded
from hypothesis import given, settings
from hypothesis import strategies as st
from nets import StackNet, data, mean_rates, stack_runner

import snn_ostl
from snn_ostl.testing import compare, oracle_gradients, ostl_gradients
from snn_ostl.traces import per_synapse as PS

DT = torch.float64
TOL = 1e-10


def _reference_advance(jac, current, e, x):
    """``e^k_t[n,b,i] = Σ_j J[k][j][b,n] e^j[n,b,i] + c^k[b,n] x[b,i]``, all states per synapse."""
    out = []
    for row, c in zip(jac, current):
        acc = torch.einsum("bn,bi->nbi", c, x)
        for p, tr in zip(row, e):
            acc = acc + p.t()[..., None] * tr
        out.append(acc)
    return out


@settings(max_examples=25, deadline=None)
@given(
    neurons=st.integers(1, 7),
    chunk=st.integers(1, 9),
    mixing=st.booleans(),
    numbers=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_contract_and_advance_equals_contract_then_advance(neurons, chunk, mixing, numbers, seed):
    """Any chunking, with and without states that read each other, numbers or tensors."""
    gen = seeded(seed)
    batch, width = 3, 5

    def rand(*shape):
        return torch.randn(*shape, generator=gen, dtype=DT)

    jac = [[rand(batch, neurons), rand(batch, neurons) if mixing else None], [None, 0.7]]
    if numbers:
        jac[0][0] = 0.9
    current = [rand(batch, neurons), rand(batch, neurons)]
    e = [rand(neurons, batch, width), rand(neurons, batch, width)]
    x = rand(batch, width)
    grads = [rand(batch, neurons), rand(batch, neurons)]
    full = [
        [p if isinstance(p, torch.Tensor) else torch.full((batch, neurons), p or 0.0, dtype=DT)]
        for row in jac
        for p in row
    ]
    dense_jac = [[full[0][0], full[1][0]], [full[2][0], full[3][0]]]
    expected_grad = sum(torch.einsum("bn,nbi->ni", g, tr) for g, tr in zip(grads, e))
    expected = _reference_advance(dense_jac, current, e, x)

    old_chunk = PS.CHUNK_BYTES
    PS.CHUNK_BYTES = chunk * batch * width * 8 * 2
    try:
        new, step = PS.plan(jac, current, e, x, neurons)
        grad = PS.contract_and_advance(grads, new, step)
    finally:
        PS.CHUNK_BYTES = old_chunk
    torch.testing.assert_close(grad, expected_grad, rtol=1e-12, atol=1e-12)
    for got, want in zip(new, expected):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    assert new[0] is e[0] and new[1] is e[1]  # advanced in place


@settings(max_examples=15, deadline=None)
@given(neurons=st.integers(1, 6), chunk=st.integers(1, 7), seed=st.integers(0, 2**16))
def test_advance_in_place_and_elsewhere(neurons, chunk, seed):
    """The advance without a backward: into the same tensors or into spare ones."""
    gen = seeded(seed)
    batch, width = 2, 4

    def rand(*shape):
        return torch.randn(*shape, generator=gen, dtype=DT)

    jac = [[rand(batch, neurons), rand(batch, neurons)], [rand(batch, neurons), None]]
    current = [rand(batch, neurons), rand(batch, neurons)]
    e = [rand(neurons, batch, width), rand(neurons, batch, width)]
    x = rand(batch, width)
    zero = torch.zeros(batch, neurons, dtype=DT)
    expected = _reference_advance(
        [[jac[0][0], jac[0][1]], [jac[1][0], zero]], current, [t.clone() for t in e], x
    )
    old_chunk = PS.CHUNK_BYTES
    PS.CHUNK_BYTES = chunk * batch * width * 8 * 2
    try:
        _, step = PS.plan(jac, current, e, x, neurons)
        elsewhere = PS.advance(step, e, [torch.empty_like(t) for t in e])
        in_place = PS.advance(step, e, e)
    finally:
        PS.CHUNK_BYTES = old_chunk
    for a, b, want in zip(elsewhere, in_place, expected):
        torch.testing.assert_close(a, want, rtol=1e-12, atol=1e-12)
        torch.testing.assert_close(b, want, rtol=1e-12, atol=1e-12)
    assert in_place[0] is e[0] and elsewhere[0] is not e[0]


@pytest.mark.parametrize("scale", [1.0, 0.8])
def test_membrane_reading_the_new_current_reuses_its_filtered_input(scale):
    """Norse's order (the current jumps first, the membrane reads it): the membrane's input term
    is the current's new filtered input times a number, so the step brings no vector of its own."""
    gen = seeded(0)
    batch, neurons, width = 3, 4, 5

    def rand(*shape):
        return torch.randn(*shape, generator=gen, dtype=DT)

    gate = rand(batch, neurons)  # ∂v_t/∂i_t: one tensor for both of v's input terms
    jac = [[rand(batch, neurons), gate], [None, scale]]
    current = [gate, scale]
    e = [rand(neurons, batch, width), rand(batch, width)]
    x = rand(batch, width)
    new, step = PS.plan(jac, current, e, x, neurons, frozenset({1}))
    ((_, vec),) = step.broadcast[0]
    assert vec is new[1]  # x̄_t = scale (x̄_{t-1} + x_t), no sum of its own
    expanded = [[jac[0][0], gate], [torch.zeros_like(gate), torch.full_like(gate, scale)]]
    want = _reference_advance(expanded[:1], current[:1], [e[0], e[1].expand(neurons, -1, -1)], x)[0]
    got = PS.advance(step, new)[0]
    torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("case", ["own coefficient", "other decay", "current elsewhere"])
def test_input_terms_that_are_not_a_multiple_keep_their_own_vector(case):
    """No alias unless the terms share one coefficient and the filtered input uses one number."""
    gen = seeded(1)
    batch, neurons, width = 2, 3, 4

    def rand(*shape):
        return torch.randn(*shape, generator=gen, dtype=DT)

    gate = rand(batch, neurons)
    jac = [[rand(batch, neurons), gate], [None, 0.8]]
    current = [gate, 0.8]
    if case == "own coefficient":
        current[0] = gate.clone()  # equal values, but not known to be the same
    elif case == "other decay":
        jac[1][1] = 0.7  # x̄_t = 0.7 x̄_{t-1} + 0.8 x_t
    else:
        current[0] = None  # v reads i_{t-1} only; x̄_t also holds x_t
    e = [rand(neurons, batch, width), rand(batch, width)]
    x = rand(batch, width)
    new, step = PS.plan(jac, current, e, x, neurons, frozenset({1}))
    assert all(vec is not new[1] for _, vec in step.broadcast[0])
    dense = [torch.zeros_like(gate) if c is None else c for c in current]
    want = _reference_advance(
        [[jac[0][0], gate]], dense[:1], [e[0], e[1].expand(neurons, -1, -1)], x
    )[0]
    torch.testing.assert_close(PS.advance(step, new)[0], want, rtol=1e-12, atol=1e-12)


def _net():
    torch.manual_seed(0)
    return StackNet([8, 6, 5], threshold=0.3)  # feed-forward SNU: per-synapse traces


def test_online_loop_keeps_one_trace_buffer_and_matches_oracle():
    """With a backward every step the traces never move: one buffer per state, no spares."""
    net = _net()
    x, target = data()
    rates: list = []
    run = stack_runner(net, x, target, rates)
    addresses: set[int] = set()

    def watched():
        for loss in run():
            group = learner.layers["cells.0"].groups[0]
            if group.trace is not None:
                addresses.update(t.data_ptr() for t in group.trace if t is not None)
            yield loss

    with snn_ostl.OSTL(net) as learner:
        learner.reset()
        for loss in watched():
            loss.backward()
        group = learner.layers["cells.0"].groups[0]
        assert group.form == "per-synapse" and not group.pool
        assert group.trace[1] is None  # y = h(s) is derived: its trace is h' e^s, never stored
    assert len(addresses) == 1  # the trace of s: the same tensor at every step
    assert_spiking(mean_rates(rates))
    grads, owners, order = ostl_gradients(net, run)
    assert max(compare(grads, oracle_gradients(net, run, owners, order)).values()) <= TOL


def test_backward_every_other_step_matches_oracle():
    """Steps without a backward advance on their own; steps with one fuse; both exact."""
    net = _net()
    x, target = data()
    rates: list = []
    run = stack_runner(net, x, target, rates)

    def every_other():
        held = None
        for t, loss in enumerate(run()):
            held = loss if held is None else held + loss
            if t % 2 == 1:
                yield held
                held = None
        if held is not None:
            yield held

    grads, owners, order = ostl_gradients(net, every_other)
    assert_spiking(mean_rates(rates))
    reference = oracle_gradients(net, run, owners, order)
    assert max(compare(grads, reference).values()) <= TOL


@pytest.mark.parametrize("advance_in_backward", [True, False])
def test_second_backward_through_a_step(advance_in_backward):
    """In-place advance spends a step's snapshot: a second backward says so; opting out works."""
    net = _net()
    x, target = data()
    weight = net.cells[0].weight
    with snn_ostl.OSTL(net, advance_in_backward=advance_in_backward) as learner:
        learner.reset()
        states = [None, None]
        for t in range(3):
            out, states = net(x[t], states)
            loss = ((out - target[t]) ** 2).sum()
            before = weight.grad.clone() if weight.grad is not None else 0.0
            loss.backward(retain_graph=True)
        first = weight.grad - before
        if advance_in_backward:
            with pytest.raises(snn_ostl.StateError, match="advance_in_backward=False"):
                loss.backward()
        else:
            before = weight.grad.clone()
            loss.backward()  # the snapshot is intact: the same contribution again
            torch.testing.assert_close(weight.grad - before, first, rtol=1e-12, atol=0)
