"""torch's RNNCell, LSTMCell and GRUCell under OSTL (the paper's generic OSTL, float64).

The registry drives the cases: every example of every torch adapter is checked as a one-layer
model against full BPTT and as a two-layer stack against the exact oracle, with a negative
control (the lower layer of the stack differs from full BPTT).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from conftest import full_bptt as _full_bptt
from conftest import seeded
from snn_ostl.adapters import load_available
from torch import nn

import snn_ostl
from snn_ostl.errors import StateError, UnsupportedModuleError
from snn_ostl.registry import adapter_for, registered
from snn_ostl.testing import compare, max_relative_error, oracle_gradients, ostl_gradients

load_available()

DT = torch.float64
TOL = 1e-10
T, B = 8, 3

EXAMPLES = [
    factory
    for entry in registered()
    if entry.adapter.framework == "torch"
    for _, factory in entry.examples
]
IDS = [
    f"{entry.module_type.__name__}-{name}"
    for entry in registered()
    if entry.adapter.framework == "torch"
    for name, _ in entry.examples
]


# Tiny per-sample Jacobians: a second intra-op thread only contends (LSTM: 100x slower).
pytestmark = pytest.mark.usefixtures("one_thread")


class Stack(nn.Module):
    """cell -> (Linear bridge -> cell)* -> Linear readout, state threaded by the caller."""

    def __init__(self, make: Callable[[], nn.Module], depth: int) -> None:
        super().__init__()
        self.cells = nn.ModuleList(make() for _ in range(depth))
        first = self.cells[0]
        self.inputs, hidden = first.input_size, first.hidden_size
        self.bridges = nn.ModuleList(
            nn.Linear(hidden, self.inputs, dtype=DT) for _ in range(depth - 1)
        )
        self.readout = nn.Linear(hidden, 2, dtype=DT)

    def forward(self, x, states):
        new = []
        for k, (cell, state) in enumerate(zip(self.cells, states)):
            if k:
                x = self.bridges[k - 1](x)
            state = cell(x, state)
            new.append(state)
            x = state[0] if isinstance(state, tuple) else state
        return self.readout(x), new


def _data(inputs: int, seed: int = 0):
    gen = seeded(seed)
    x = torch.randn(T, B, inputs, generator=gen, dtype=DT)
    target = torch.randn(T, B, 2, generator=gen, dtype=DT)
    return x, target


def _runner(model: Stack, x, target):
    def run():
        states = [None] * len(model.cells)
        for t in range(T):
            out, states = model(x[t], states)
            yield ((out - target[t]) ** 2).sum()

    return run


@pytest.mark.parametrize("make", EXAMPLES, ids=IDS)
def test_one_layer_equals_full_bptt(make):
    torch.manual_seed(0)
    model = Stack(make, depth=1)
    x, target = _data(model.inputs)
    run = _runner(model, x, target)
    grads, owners, _ = ostl_gradients(model, run, instantaneous_below=True)
    reference = _full_bptt(model, run)
    assert set(grads) == set(reference) == {n for n, _ in model.named_parameters()}
    assert {n for n, o in owners.items() if o == "cells.0"} == {
        n for n in grads if n.startswith("cells.0.")
    }
    errors = compare(grads, reference)
    assert max(errors.values()) <= TOL, errors


@pytest.mark.parametrize("make", EXAMPLES, ids=IDS)
def test_two_layers_equal_oracle(make):
    torch.manual_seed(1)
    model = Stack(make, depth=2)
    x, target = _data(model.inputs, seed=1)
    run = _runner(model, x, target)
    grads, owners, order = ostl_gradients(model, run, instantaneous_below=True)
    reference = oracle_gradients(model, run, owners, order)
    errors = compare(grads, reference)
    assert max(errors.values()) <= TOL, errors
    full = _full_bptt(model, run)
    lower = [n for n in grads if n.startswith("cells.0.")]
    assert lower
    assert max(compare({n: grads[n] for n in lower}, {n: full[n] for n in lower}).values()) > 1e-3


@pytest.mark.parametrize("make", EXAMPLES, ids=IDS)
def test_one_backward_per_sequence_equals_per_step(make):
    torch.manual_seed(2)
    model = Stack(make, depth=2)
    x, target = _data(model.inputs, seed=2)
    run = _runner(model, x, target)
    per_step, _, _ = ostl_gradients(model, run, instantaneous_below=True)
    once, _, _ = ostl_gradients(model, run, per_step=False, instantaneous_below=True)
    assert max(compare(once, per_step).values()) <= 1e-12


@pytest.mark.parametrize("make", EXAMPLES, ids=IDS)
def test_step_computes_the_module(make):
    """The adapter's differentiable step gives the module's own values (its Jacobians' point)."""
    torch.manual_seed(5)
    cell = make()
    adapter = adapter_for(cell)
    x = torch.randn(B, cell.input_size, dtype=DT)
    state = tuple(torch.randn(B, cell.hidden_size, dtype=DT) for _ in adapter.state_names)
    hx = state if len(state) == 2 else state[0]
    with torch.no_grad():
        want = adapter.new_state(cell, (x, hx), {}, cell(x, hx))
        got = adapter.step(cell, x, state, {})
    for w, g in zip(want, got):
        torch.testing.assert_close(g, w, rtol=0, atol=1e-15)
    # params replace the module's own
    zeros = {n: torch.zeros_like(p) for n, p in cell.named_parameters()}
    with torch.no_grad():
        h = adapter.step(cell, x, state, zeros)[0]
    if isinstance(cell, nn.GRUCell):  # r = z = 1/2, n = 0
        expected = 0.5 * state[0]
    elif isinstance(cell, nn.LSTMCell):  # every gate 1/2, g = 0
        expected = 0.5 * torch.tanh(0.5 * state[1])
    else:
        expected = torch.zeros_like(h)
    torch.testing.assert_close(h, expected, rtol=0, atol=1e-15)


def test_traces_are_full_jacobians():
    model = Stack(lambda: nn.LSTMCell(3, 4, dtype=DT), depth=1)
    with snn_ostl.OSTL(model) as learner:
        learner.reset()
        model(torch.randn(B, 3, dtype=DT), [None])
        groups = {g.name: g for g in learner.layers["cells.0"].groups}
        shape = groups["cells.0.weight_ih"].trace.shape
    assert set(groups) == {f"cells.0.{n}" for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh")}
    assert {g.form for g in groups.values()} == {"full-jacobian"}
    # state (h, c): S*N = 8 rows per sample, one column per parameter element
    assert shape == (B, 8, 16 * 3)


def test_hx_as_keyword_and_explicit_initial_state():
    torch.manual_seed(3)
    cell = nn.GRUCell(3, 4, dtype=DT)
    readout = nn.Linear(4, 1, dtype=DT)
    model = nn.ModuleDict({"cell": cell, "readout": readout})
    x = torch.randn(T, B, 3, dtype=DT)

    def run():
        h = torch.zeros(B, 4, dtype=DT)  # an explicit zero state, passed by keyword
        for t in range(T):
            h = cell(x[t], hx=h)
            yield readout(h).pow(2).sum()

    grads, _, _ = ostl_gradients(model, run, instantaneous_below=True)
    reference = _full_bptt(model, run)
    assert max(compare(grads, reference).values()) <= TOL


def test_linear_before_the_cell_gets_its_instantaneous_gradient():
    """A Linear feeding a dense cell is not traced: the oracle counts the cell above it."""
    torch.manual_seed(4)

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.pre = nn.Linear(3, 3, dtype=DT)
            self.cell = nn.LSTMCell(3, 4, dtype=DT)
            self.out = nn.Linear(4, 2, dtype=DT)

        def forward(self, x, state):
            state = self.cell(self.pre(x), state)
            return self.out(state[0]), state

    net = Net()
    x, target = torch.randn(T, B, 3, dtype=DT), torch.randn(T, B, 2, dtype=DT)

    def run():
        state = None
        for t in range(T):
            out, state = net(x[t], state)
            yield ((out - target[t]) ** 2).sum()

    grads, owners, order = ostl_gradients(net, run, instantaneous_below=True)
    assert "pre.weight" not in owners
    reference = oracle_gradients(net, run, owners, order)
    assert max(compare(grads, reference).values()) <= TOL
    with snn_ostl.OSTL(net, instantaneous_below=True) as learner:
        learner.reset()
        for loss in run():
            loss.backward()
        assert "approximation" in learner.summary()


def test_other_variants_are_refused():
    model = nn.Sequential(nn.RNNCell(3, 4, dtype=DT))
    with pytest.raises(UnsupportedModuleError, match=r"0 \(RNNCell\).*variant='ostl'"):
        snn_ostl.OSTL(model, variant="eprop")


def test_unbatched_input_is_refused_with_a_fix():
    cell = nn.RNNCell(3, 4, dtype=DT)
    with snn_ostl.OSTL(cell) as learner:
        learner.reset()
        with pytest.raises(StateError, match="batch dimension"):
            cell(torch.randn(3, dtype=DT))


def test_whole_sequence_modules_name_the_cell():
    with pytest.raises(UnsupportedModuleError, match=r"lstm \(LSTM\).*nn\.LSTMCell"):
        snn_ostl.OSTL(nn.ModuleDict({"lstm": nn.LSTM(3, 4)}))


def test_every_torch_cell_is_registered():
    names = {e.module_type for e in registered() if e.adapter.framework == "torch"}
    assert names == {nn.RNNCell, nn.LSTMCell, nn.GRUCell}
    assert adapter_for(nn.LSTMCell(2, 3)).state_names == ("h", "c")


@pytest.mark.parametrize("make", EXAMPLES, ids=IDS)
def test_written_out_partials_equal_autograd(make):
    """Every entry of J_t and ∂s_t/∂θ, hand-written against the autograd reference."""
    from snn_ostl.adapter import DenseAdapter
    from snn_ostl.derivatives import Factored

    torch.manual_seed(3)
    cell = make()
    adapter = adapter_for(cell)
    x = torch.randn(B, cell.input_size, dtype=DT)
    states = adapter.initial_state(cell, x)
    state = tuple(torch.randn_like(s) for s in states)
    params = dict(cell.named_parameters())
    written = adapter.derivatives(cell, x, state, params)
    reference = DenseAdapter.derivatives(adapter, cell, x, state, params)
    torch.testing.assert_close(written.state, reference.state, rtol=1e-12, atol=1e-12)
    assert set(written.params) == set(reference.params) == set(params)
    for name, partial in written.params.items():
        assert isinstance(partial, Factored)
        torch.testing.assert_close(partial.dense(), reference.params[name], rtol=1e-12, atol=1e-12)


def test_autograd_reference_path_trains_the_same(monkeypatch):
    """A dense adapter without written-out partials (the default) gives the same gradients."""
    from snn_ostl.adapter import DenseAdapter

    torch.manual_seed(4)
    model = Stack(lambda: nn.LSTMCell(4, 5, dtype=DT), depth=2)
    x, target = _data(model.inputs, seed=4)
    run = _runner(model, x, target)
    written, _, _ = ostl_gradients(model, run, instantaneous_below=True)
    adapter_type = type(adapter_for(model.cells[0]))
    monkeypatch.setattr(adapter_type, "derivatives", DenseAdapter.derivatives)
    generic, _, _ = ostl_gradients(model, run, instantaneous_below=True)
    assert max(compare(written, generic).values()) <= 1e-12


RECURRENT_ONLY = [
    ("rnn", lambda: nn.RNNCell(4, 5, dtype=DT)),
    ("lstm", lambda: nn.LSTMCell(4, 5, dtype=DT)),
]


@pytest.mark.parametrize("make", [m for _, m in RECURRENT_ONLY], ids=[n for n, _ in RECURRENT_ONLY])
def test_without_hidden_to_hidden_equals_its_oracle_and_differs_from_ostl(make):
    """``variant="ostl-no-h"`` (RFLO's eligibility): BPTT with ``h_{t-1}`` detached where it
    enters the gates, for two stacked cells; the exact OSTL gradient is another one."""
    torch.manual_seed(3)
    model = Stack(make, depth=2)
    x, target = _data(model.inputs, seed=3)
    run = _runner(model, x, target)
    grads, owners, order = ostl_gradients(model, run, variant="ostl-no-h", instantaneous_below=True)
    reference = oracle_gradients(model, run, owners, order, variant="ostl-no-h")
    assert max(compare(grads, reference).values()) <= TOL
    exact, _, _ = ostl_gradients(model, run, instantaneous_below=True)
    assert compare(grads, exact)["cells.1.weight_hh"] > 1e-3


def test_rflo_on_an_rnn_cell_equals_murrays_rule_with_tau_one():
    """RFLO on ``nn.RNNCell`` (τ = 1): ``q_t = φ'(u_t) r_t``, the readout error sent back
    through the fixed random matrix ``B``; written out against the learner."""
    torch.manual_seed(4)
    model = Stack(lambda: nn.RNNCell(4, 5, dtype=DT), depth=1)
    x, target = _data(model.inputs, seed=4)
    with snn_ostl.OSTL(model, rule="rflo", seed=2) as learner:
        learner.reset()
        states = [None]
        for t in range(T):
            out, states = model(x[t], states)
            ((out - target[t]) ** 2).sum().backward()
        feedback = learner.signals.matrices["readout"]
    cell = model.cells[0]
    w_ih, w_hh = cell.weight_ih.detach(), cell.weight_hh.detach()
    b = cell.bias_ih.detach() + cell.bias_hh.detach()
    h = torch.zeros(B, 5, dtype=DT)
    expected = {"weight_ih": torch.zeros_like(w_ih), "weight_hh": torch.zeros_like(w_hh)}
    for t in range(T):
        u = x[t] @ w_ih.T + h @ w_hh.T + b
        h_new = torch.tanh(u)
        err = 2 * (
            h_new @ model.readout.weight.detach().T + model.readout.bias.detach() - target[t]
        )
        signal = (err @ feedback) * (1 - h_new**2)  # B ε_t, times φ'(u_t)
        expected["weight_ih"] += signal.T @ x[t]
        expected["weight_hh"] += signal.T @ h
        h = h_new
    for name, value in expected.items():
        got = getattr(cell, name).grad
        assert max_relative_error(got, value) <= TOL, name
    assert not torch.allclose(feedback, model.readout.weight.detach())


def test_gru_has_no_variant_without_hidden_to_hidden():
    model = nn.Sequential(nn.GRUCell(3, 4, dtype=DT))
    with pytest.raises(UnsupportedModuleError, match=r"also enters the update directly"):
        snn_ostl.OSTL(model, rule="rflo")


def test_random_feedback_refuses_a_cell_whose_input_learns():
    """A torch cell above another layer cannot send the error down through a random matrix
    (its input weights live inside its step): refused at its first step, with the fix."""
    torch.manual_seed(5)
    model = Stack(lambda: nn.RNNCell(4, 5, dtype=DT), depth=2)
    x, _ = _data(model.inputs, seed=5)
    with snn_ostl.OSTL(model, rule="rflo", instantaneous_below=True) as learner:
        learner.reset()
        with pytest.raises(UnsupportedModuleError, match=r"cells.1 \(RNNCell\).*bottom"):
            model(x[0], [None, None])
