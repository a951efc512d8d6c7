"""Each trace form against the oracle, with external Linear and Conv synapses."""

from __future__ import annotations

import pytest
import torch
from conftest import assert_spiking, full_bptt
from snn_ostl.adapters.native import SNUAdapter
from torch import nn
from toy_cells import ToyLeaky

import snn_ostl
from snn_ostl.adapter import StepRecord
from snn_ostl.derivatives import elementwise_derivatives
from snn_ostl.testing import compare, oracle_gradients, ostl_gradients

DT = torch.float64
TOL = 1e-10


class ToyNet(nn.Module):
    """synapse -> ToyLeaky -> (flatten) -> synapse -> ToyLeaky -> readout."""

    def __init__(self, conv: bool, reset: str, depth: int = 2, fused: bool = False):
        super().__init__()
        if conv:
            self.syn1 = nn.Conv2d(2, 3, 3, padding=1, dtype=DT)
            width = 3 * 4 * 4
        else:
            self.syn1 = nn.Linear(8, 6, dtype=DT)
            width = 6
        self.lif1 = ToyLeaky(threshold=0.3, reset=reset, fused=fused)
        self.flat = nn.Flatten()
        self.depth = depth
        if depth == 2:
            self.syn2 = nn.Linear(width, 5, dtype=DT)
            self.lif2 = ToyLeaky(threshold=0.2, reset=reset, fused=fused)
            width = 5
        self.readout = nn.Linear(width, 2, dtype=DT)

    def forward(self, x, states):
        spk, s1 = self.lif1(self.syn1(x), states[0])
        new = [s1]
        h = self.flat(spk)
        rates = [spk.mean()]
        if self.depth == 2:
            h, s2 = self.lif2(self.syn2(h), states[1])
            new.append(s2)
            rates.append(h.mean())
        return self.readout(h), new, rates


def _runner(net, x, target, rates):
    def run():
        states = [None, None]
        for t in range(x.shape[0]):
            out, states, r = net(x[t], states)
            rates.append([float(v.detach()) for v in r])
            yield ((out - target[t]) ** 2).sum()

    return run


CASES = [
    ("linear-presynaptic", False, "subtract", "presynaptic", False),
    ("linear-presynaptic-fused", False, "subtract", "presynaptic", True),
    ("linear-per-synapse", False, "zero", "per-synapse", False),
    ("conv-presynaptic", True, "subtract", "presynaptic", False),
    ("conv-presynaptic-fused", True, "subtract", "presynaptic", True),
]


@pytest.mark.parametrize(
    ("conv", "reset", "form", "fused"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
@pytest.mark.parametrize("depth", [1, 2])
def test_trace_form_against_oracle(conv, reset, form, fused, depth):
    torch.manual_seed(1)
    net = ToyNet(conv, reset, depth, fused)
    shape = (10, 3, 2, 4, 4) if conv else (10, 3, 8)
    x = torch.rand(*shape, dtype=DT) * 1.5
    target = torch.randn(10, 3, 2, dtype=DT)
    rates: list = []
    run = _runner(net, x, target, rates)
    with snn_ostl.OSTL(net) as learner:
        learner.reset()
        for loss in run():
            loss.backward()
        forms = {g.name: g.form for layer in learner.layers.values() for g in layer.groups}
        assert learner.layers["lif1"].groups[0].fused == fused
    assert forms["syn1.weight"] == form
    assert forms["syn1.bias"] == ("presynaptic" if form == "presynaptic" else "elementwise")
    assert forms["lif1.threshold"] == "elementwise"
    assert_spiking(torch.tensor(rates).mean(0).tolist())
    grads, owners, order = ostl_gradients(net, run)
    reference = oracle_gradients(net, run, owners, order)
    assert max(compare(grads, reference).values()) <= TOL
    if depth == 1:
        assert max(compare(grads, full_bptt(net, run)).values()) <= TOL
    whole, _, _ = ostl_gradients(net, run, per_step=False)
    assert max(compare(whole, reference).values()) <= TOL


@pytest.mark.parametrize("conv", [False, True], ids=["linear", "conv"])
@pytest.mark.parametrize("depth", [1, 2])
def test_all_fused_layer_against_oracle(conv, depth):
    """With no neuron parameter trained, a fused layer's weight and bias both take their
    gradient from the synapse's own backward (the bias through its filtered-input scale) and the
    layer adds no history node. Exact against the oracle, per step and in one backward."""
    torch.manual_seed(2)
    net = ToyNet(conv, "subtract", depth, fused=True)
    for cell in (net.lif1, getattr(net, "lif2", None)):
        if cell is not None:
            cell.threshold.requires_grad_(False)
    shape = (10, 3, 2, 4, 4) if conv else (10, 3, 8)
    x = torch.rand(*shape, dtype=DT) * 1.5
    target = torch.randn(10, 3, 2, dtype=DT)
    rates: list = []
    run = _runner(net, x, target, rates)
    with snn_ostl.OSTL(net) as learner:
        learner.reset()
        next(iter(run()))  # one step binds the layers
        layer = learner.layers["lif1"]
        assert layer.all_fused
        assert [(g.name, g.fused) for g in layer.groups] == [
            ("syn1.weight", True),
            ("syn1.bias", True),
        ]
    rates.clear()  # (the spike rates of the whole sequences below)
    grads, owners, order = ostl_gradients(net, run)
    assert_spiking(torch.tensor(rates).mean(0).tolist())
    reference = oracle_gradients(net, run, owners, order)
    assert max(compare(grads, reference).values()) <= TOL
    whole, _, _ = ostl_gradients(net, run, per_step=False)
    assert max(compare(whole, reference).values()) <= TOL


def test_presynaptic_trace_is_input_sized():
    """The factorised form stores [B, I] per state, never [B, N, I]."""
    net = ToyNet(conv=False, reset="subtract", depth=1)
    with snn_ostl.OSTL(net) as learner:
        net(torch.rand(3, 8, dtype=DT), [None, None])
        group = next(g for g in learner.layers["lif1"].groups if g.name == "syn1.weight")
        assert [tuple(t.shape) for t in group.trace] == [(3, 8)]


@pytest.mark.parametrize(
    "options",
    [{}, {"soft": True}, {"activation": "identity"}, {"learn_decay": True, "decay_per_unit": True}],
    ids=["snu", "ssnu", "identity", "learned-decay"],
)
def test_snu_analytic_derivatives_match_autograd(options):
    """The hand-written SNU partials equal the generic autograd ones on the same step."""
    cell_type = snn_ostl.SoftSNU if options.pop("soft", False) else snn_ostl.SNU
    cell = cell_type(4, 5, threshold=0.2, dtype=DT, **options)
    adapter = SNUAdapter()
    x = torch.rand(3, 4, dtype=DT) * 2
    state = cell.initial_state(x)
    for _ in range(4):  # a few steps so that y_{t-1} and s_{t-1} are not zero
        _, state = cell(x, state)
    _, new = cell(x, state)
    step = StepRecord(current=x, prev=tuple(state), new=tuple(new))
    current = torch.nn.functional.linear(x, cell.weight)
    analytic = adapter.derivatives(cell, step, "ostl", lambda: current)
    params = {**adapter.neuron_parameters(cell), **adapter.constant_parameters(cell)}
    generic = elementwise_derivatives(
        lambda a, s, p: adapter.cell(cell, a, s, p), current, tuple(state), params
    )

    def dense(p):
        if p is None:
            return torch.zeros(3, 5, dtype=DT)
        return torch.as_tensor(p, dtype=DT).expand(3, 5)

    for k in range(2):
        torch.testing.assert_close(dense(analytic.current[k]), dense(generic.current[k]))
        for j in range(2):
            torch.testing.assert_close(dense(analytic.state[k][j]), dense(generic.state[k][j]))
        for name in analytic.params:
            torch.testing.assert_close(
                dense(analytic.params[name][k]), dense(generic.params[name][k])
            )


@pytest.mark.parametrize("fused", [False, True])
def test_conv1d_presynaptic_against_oracle(fused):
    torch.manual_seed(2)
    net = nn.ModuleDict(
        {
            "syn": nn.Conv1d(2, 3, 3, padding=1, dtype=DT),
            "lif": ToyLeaky(threshold=0.3, fused=fused),
            "readout": nn.Linear(3 * 6, 2, dtype=DT),
        }
    )
    x = torch.rand(10, 3, 2, 6, dtype=DT) * 1.5
    target = torch.randn(10, 3, 2, dtype=DT)
    rates: list = []

    def run():
        state = None
        for t in range(10):
            spk, state = net["lif"](net["syn"](x[t]), state)
            rates.append(float(spk.detach().mean()))
            yield ((net["readout"](spk.flatten(1)) - target[t]) ** 2).sum()

    grads, owners, order = ostl_gradients(net, run)
    assert_spiking([sum(rates) / len(rates)])
    reference = oracle_gradients(net, run, owners, order)
    assert max(compare(grads, reference).values()) <= TOL
    assert max(compare(grads, full_bptt(net, run)).values()) <= TOL


def test_mixed_per_synapse_form_against_oracle():
    """A constant-partial state keeps a [B, I] trace next to a per-synapse [N, B, I] one."""
    from toy_cells import ToySynaptic

    torch.manual_seed(3)
    net = nn.ModuleDict(
        {
            "fc1": nn.Linear(8, 6, dtype=DT),
            "syn1": ToySynaptic(),
            "fc2": nn.Linear(6, 5, dtype=DT),
            "syn2": ToySynaptic(threshold=0.3),
            "readout": nn.Linear(5, 2, dtype=DT),
        }
    )
    x = torch.rand(10, 3, 8, dtype=DT)
    target = torch.randn(10, 3, 2, dtype=DT)
    rates: list = []

    def run():
        s1 = s2 = None
        for t in range(10):
            y1, s1 = net["syn1"](net["fc1"](x[t]), s1)
            y2, s2 = net["syn2"](net["fc2"](y1), s2)
            rates.append([float(y1.detach().mean()), float(y2.detach().mean())])
            yield ((net["readout"](y2) - target[t]) ** 2).sum()

    with snn_ostl.OSTL(net) as learner:
        net["syn1"](net["fc1"](x[0]))
        group = next(g for g in learner.layers["syn1"].groups if g.name == "fc1.weight")
        assert group.form == "per-synapse" and group.presynaptic == {0}
        assert [tuple(t.shape) for t in group.trace] == [(3, 8), (6, 3, 8)]
    grads, owners, order = ostl_gradients(net, run)
    assert_spiking(torch.tensor(rates).mean(0).tolist())
    reference = oracle_gradients(net, run, owners, order)
    assert max(compare(grads, reference).values()) <= TOL


@pytest.mark.parametrize("train_threshold", [True, False], ids=["history-node", "all-fused"])
def test_fused_layer_restarts_cleanly_from_a_none_state(train_threshold):
    """Regression: a None state after a first sequence, with no learner.reset(), must give the
    same gradient as a fresh learner even though the synapse computed x̃ before the neuron saw
    that a new sequence starts."""
    torch.manual_seed(4)
    net = ToyNet(conv=False, reset="subtract", depth=1, fused=True)
    net.lif1.threshold.requires_grad_(train_threshold)
    x = torch.rand(2, 6, 3, 8, dtype=DT) * 1.5
    target = torch.randn(6, 3, 2, dtype=DT)

    def sequence(seq):
        states = [None, None]
        for t in range(6):
            out, states, _ = net(x[seq, t], states)
            ((out - target[t]) ** 2).sum().backward()

    with snn_ostl.OSTL(net):
        sequence(0)
        net.zero_grad()
        sequence(1)  # starts from None: a new sequence, no reset() called
        continued = {n: p.grad.clone() for n, p in net.named_parameters() if p.requires_grad}
    net.zero_grad()
    with snn_ostl.OSTL(net):
        sequence(1)
        fresh = {n: p.grad.clone() for n, p in net.named_parameters() if p.requires_grad}
    assert max(compare(continued, fresh).values()) <= TOL


def test_derived_state_is_left_out_of_synapse_traces():
    """The SNU's y = h(s) is derived: synapse traces keep s alone (a quarter of the full-Jacobian
    update); the learned threshold, which moves y directly, keeps both states. Exact either way."""
    from conftest import assert_spiking
    from nets import StackNet, data, mean_rates, stack_runner

    torch.manual_seed(5)
    net = StackNet([8, 6], recurrent=True, learn_decay=True)
    x, target = data()
    rates: list = []
    run = stack_runner(net, x, target, rates)
    with snn_ostl.OSTL(net) as learner:
        learner.reset()
        for loss in run():
            loss.backward()
        shapes = {g.name: tuple(g.trace.shape) for g in learner.layers["cells.0"].groups}
    batch, n = x.shape[1], 6
    assert shapes["cells.0.weight"] == (batch, n, 8 * n)
    assert shapes["cells.0.recurrent_weight"] == (batch, n, n * n)
    assert shapes["cells.0.threshold"] == (batch, 2 * n, n)
    grads, _, _ = ostl_gradients(net, run)
    assert_spiking(mean_rates(rates))
    assert max(compare(grads, full_bptt(net, run)).values()) <= TOL
