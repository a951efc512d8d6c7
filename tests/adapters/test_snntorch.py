"""snnTorch 1.0 neurons under OSTL: exactness, hand-written partials, model styles, refusals.

The registry drives the parametrised cases: every example of every snnTorch adapter is checked
as a one-stateful-layer model against full BPTT (float32, relative error <= 1e-4, snnTorch's
spikes being float32) and as a two-layer stack against the exact oracle, with a negative
control and a spike-rate check, so adding an example adds its cases.
"""

from __future__ import annotations

import warnings
from collections import OrderedDict
from collections.abc import Callable

import pytest
import torch
from conftest import assert_spiking
from conftest import full_bptt as _full_bptt
from conftest import reset_states as _reset
from torch import nn

pytest.importorskip("snntorch")

import snntorch as snn
from snn_ostl.adapters.snntorch import EXAMPLE_SIZE, spikes_like_input
from snntorch import surrogate

import snn_ostl
from snn_ostl.adapter import DenseAdapter, ElementwiseAdapter, StepRecord
from snn_ostl.derivatives import elementwise_derivatives
from snn_ostl.registry import adapter_for, registered
from snn_ostl.testing import compare, oracle_gradients, ostl_gradients

TOL = 1e-4
T, B, N_IN, N = 10, 3, 5, EXAMPLE_SIZE

ENTRIES = [
    (entry.module_type.__name__, name, entry.adapter, factory)
    for entry in registered()
    if entry.adapter.framework == "snntorch"
    for name, factory in entry.examples
]
IDS = [f"{kind}-{name}" for kind, name, _, _ in ENTRIES]
CASES = [(adapter, factory) for _, _, adapter, factory in ENTRIES]
VARIANT_CASES = [
    pytest.param(adapter, factory, variant, id=f"{i}-{variant}")
    for (adapter, factory), i in zip(CASES, IDS)
    for variant in adapter.variants
    if variant != "ostl"
]


# ----------------------------------------------------------------------------- helpers
@pytest.fixture(autouse=True, scope="module")
def _one_thread():
    """Tiny tensors: torch's thread pool only adds contention (10-50x slower on a busy box)."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def _quiet(factory: Callable[[], nn.Module]) -> nn.Module:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return factory()


def _step(neuron: nn.Module, current: torch.Tensor, state: tuple) -> tuple:
    """One call of an snnTorch neuron in its own style: (spikes, new explicit state, mem)."""
    adapter = adapter_for(neuron)
    if neuron.init_hidden:
        out = neuron(current)
        spk = out[0] if isinstance(out, tuple) else out
        mem = out[-1] if isinstance(out, tuple) else None
        return spk, state, mem
    out = neuron(current, *state)
    # RLeaky/RSynaptic return their whole state (spikes first); the others (spk, *state)
    new = out if len(out) == len(adapter.state_names) else out[1:]
    return out[0], new, out[-1]


def _fresh_state(neuron: nn.Module) -> tuple:
    """What snnTorch's init_* functions give before the first step: empty tensors."""
    return tuple(torch.zeros(0) for _ in adapter_for(neuron).state_names)


class Stack(nn.Module):
    """Linear -> neuron, repeated, then a Linear readout; explicit state when the neuron wants it.

    The loss of a step is the readout's squared error plus a small term on the top neuron's
    membrane when the neuron returns it (a loss on a state, not only on spikes).
    """

    def __init__(self, neurons: list[nn.Module], first_synapse: bool = True) -> None:
        super().__init__()
        fcs = []
        for k in range(len(neurons)):
            if k == 0 and not first_synapse:
                fcs.append(nn.Identity())
                continue
            fc = nn.Linear(N_IN if k == 0 else N, N)
            if k > 0:
                with torch.no_grad():
                    fc.weight.mul_(2.5)
                    fc.bias.add_(0.3)
            fcs.append(fc)
        self.fcs = nn.ModuleList(fcs)
        self.neurons = nn.ModuleList(neurons)
        self.readout = nn.Linear(N, 2)

    def forward(self, x, states):
        h, new, spikes, mem = x, [], [], None
        for fc, neuron, state in zip(self.fcs, self.neurons, states):
            h, state, mem = _step(neuron, fc(h), state)
            new.append(state)
            spikes.append(h)
        return self.readout(h), new, spikes, mem


def _make_run(model: Stack, x: torch.Tensor, target: torch.Tensor, rates: list):
    def run():
        states = [_fresh_state(n) for n in model.neurons]
        for t in range(x.shape[0]):
            out, states, spikes, mem = model(x[t], states)
            rates.append([float((s != 0).float().mean()) for s in spikes])
            loss = (out - target[t]).pow(2).sum()
            if mem is not None:
                loss = loss + 0.1 * mem.pow(2).mean()
            yield loss

    return run


def _inputs(dense_first: bool, scale: float = 1.5):
    x = torch.rand(T, B, N if dense_first else N_IN) * scale
    return x, torch.randn(T, B, 2)


def _max(err: dict[str, float]) -> float:
    return max(err.values())


# ----------------------------------------------------------------------------- exactness
@pytest.mark.parametrize(("adapter", "factory"), CASES, ids=IDS)
def test_one_layer_equals_full_bptt(adapter, factory):
    dense = isinstance(adapter, DenseAdapter)
    model = Stack([_quiet(factory)], first_synapse=not dense)
    x, target = _inputs(dense)
    rates: list = []
    run = _make_run(model, x, target, rates)
    grads, owners, _ = ostl_gradients(model, run)
    assert_spiking(torch.tensor(rates).mean(0).tolist(), "one layer")
    full = _full_bptt(model, run)
    err = compare(grads, full)
    assert _max(err) <= TOL, err
    # every parameter of the neuron and of its synapse has an eligibility trace
    assert set(owners) == {
        n for n, p in model.named_parameters() if p.requires_grad and not n.startswith("readout")
    }


@pytest.mark.parametrize(("adapter", "factory"), CASES, ids=IDS)
def test_two_layers_equal_oracle_and_differ_from_bptt(adapter, factory):
    model = Stack([_quiet(factory), _quiet(factory)])
    x, target = _inputs(False)
    rates: list = []
    run = _make_run(model, x, target, rates)
    # SLSTM owns its input weights: the Linear in front of the upper one is below it
    grads, owners, order = ostl_gradients(model, run, instantaneous_below=True)
    assert_spiking(torch.tensor(rates).mean(0).tolist(), "two layers")
    reference = oracle_gradients(model, run, owners, order)
    err = compare(grads, reference)
    assert _max(err) <= TOL, err
    # negative control: the lower layer misses the residual term through the upper memory
    full = _full_bptt(model, run)
    assert compare(grads, full)["fcs.0.weight"] > 1e-3


@pytest.mark.parametrize(("adapter", "factory", "variant"), VARIANT_CASES)
def test_variants_equal_their_oracle(adapter, factory, variant):
    model = Stack([_quiet(factory), _quiet(factory)])
    x, target = _inputs(False)
    rates: list = []
    run = _make_run(model, x, target, rates)
    grads, owners, order = ostl_gradients(model, run, variant=variant)
    assert_spiking(torch.tensor(rates).mean(0).tolist(), variant)
    reference = oracle_gradients(model, run, owners, order, variant=variant)
    err = compare(grads, reference)
    assert _max(err) <= TOL, err


@pytest.mark.parametrize(
    "factory",
    [
        lambda: snn.Leaky(beta=0.9, reset_delay=False),
        lambda: snn.RLeaky(beta=0.9, linear_features=N),
    ],
    ids=["Leaky-reset_delay=False", "RLeaky-all-to-all"],
)
def test_eprop_differs_from_ostl_where_the_own_spikes_matter(factory):
    model = Stack([_quiet(factory)])
    x, target = _inputs(False)
    run = _make_run(model, x, target, [])
    ostl, _, _ = ostl_gradients(model, run)
    eprop, _, _ = ostl_gradients(model, run, variant="eprop")
    assert compare(eprop, ostl)["fcs.0.weight"] > 1e-3


def test_eprop_equals_ostl_when_snntorch_detaches_the_reset():
    model = Stack([snn.Leaky(beta=0.9, reset_mechanism="zero")])
    x, target = _inputs(False)
    run = _make_run(model, x, target, [])
    ostl, _, _ = ostl_gradients(model, run)
    eprop, _, _ = ostl_gradients(model, run, variant="eprop")
    assert _max(compare(eprop, ostl)) <= 1e-6


# ----------------------------------------------------------------------------- derivatives
def _steps(adapter, module, k: int = 4):
    """A few steps of the module from random states (some above threshold): StepRecords."""
    records = []
    state = adapter.initial_state(module, torch.zeros(B, N, dtype=torch.float64))
    with spikes_like_input(module):
        for _ in range(k):
            x = torch.randn(B, N, dtype=torch.float64) * 1.5
            prev = tuple(s.detach() + 0.8 * torch.randn_like(s) for s in state)
            args, kwargs = adapter.write_state(module, (x,), {}, prev)
            with torch.no_grad():
                module(*args, **kwargs)
            state = adapter.new_state(module, args, kwargs, None)
            records.append(StepRecord(x, prev, tuple(s.detach() for s in state)))
    return records


def _total_current(adapter, module, step: StepRecord) -> torch.Tensor:
    current = step.current
    for s in adapter.internal_synapses(module):
        w = module.get_parameter(s.weight)
        b = module.get_parameter(s.bias) if s.bias else None
        current = current + torch.nn.functional.linear(step.prev[int(s.source)], w, b)
    return current


def _same(a, b, what):
    if a is None or b is None:
        zero = a if b is None else b
        assert zero is None or float(torch.as_tensor(zero).abs().max()) < 1e-12, what
        return
    a, b = torch.as_tensor(a, dtype=torch.float64), torch.as_tensor(b, dtype=torch.float64)
    a, b = torch.broadcast_tensors(a, b)
    torch.testing.assert_close(a, b, rtol=1e-9, atol=1e-10, msg=what)


def _reference_cell(adapter, module, variant):
    """The autograd reference of a variant: the cell with what the variant ignores cut."""
    cut = adapter._cuts_own_reset(module, variant)
    if adapter._cuts_recurrent(module, variant) and not adapter.internal_synapses(module):
        return lambda a, s, p: adapter._rcell(module, a, s, p, cut_reset=cut, cut_rec=True)
    return lambda a, s, p: adapter._cell(module, a, s, p, cut_reset=cut)


ELEMENTWISE = [
    pytest.param(adapter, factory, id=i)
    for (adapter, factory), i in zip(CASES, IDS)
    if isinstance(adapter, ElementwiseAdapter)
]


@pytest.mark.parametrize(("adapter", "factory"), ELEMENTWISE)
def test_cell_reproduces_snntorch_forward_and_partials_match_autograd(adapter, factory):
    module = _quiet(factory).double()
    reset_seen = False
    for step in _steps(adapter, module):
        current = _total_current(adapter, module, step)
        params = dict(adapter.neuron_parameters(module))
        with spikes_like_input(module):
            new = adapter.cell(module, current, step.prev, params)
        for got, want in zip(new, step.new):
            torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
        reset_seen |= bool((step.prev[-1] > module.threshold).any())
        for variant in adapter.variants:
            cell = _reference_cell(adapter, module, variant)
            with spikes_like_input(module):
                want = elementwise_derivatives(cell, current, step.prev, params)
                got = adapter.derivatives(module, step, variant, lambda c=current: c)
            if adapter.factorised(module, variant):
                entries = [*got.current, *(p for row in got.state for p in row)]
                assert all(p is None or isinstance(p, float) for p in entries)
            for k in range(len(step.prev)):
                _same(got.current[k], want.current[k], f"{variant} ∂s{k}/∂a")
                for j in range(len(step.prev)):
                    _same(got.state[k][j], want.state[k][j], f"{variant} ∂s{k}/∂s{j}")
                for name in params:
                    _same(got.params[name][k], want.params[name][k], f"{variant} ∂s{k}/∂{name}")
    assert reset_seen


FORMS = {
    ("Leaky", "subtract"): "presynaptic",
    ("Leaky", "none"): "presynaptic",
    ("Leaky", "learn_beta, learn_threshold"): "presynaptic",
    ("Leaky", "zero"): "per-synapse",
    ("Leaky", "subtract, reset_delay=False"): "per-synapse",
    ("Leaky", "per-neuron beta"): "per-synapse",
    ("Synaptic", "subtract"): "presynaptic",
    ("Synaptic", "none"): "presynaptic",
    ("Synaptic", "zero"): "per-synapse",
    ("Synaptic", "per-neuron alpha and beta"): "per-synapse",
    ("Lapicque", "R and C, subtract"): "presynaptic",
    ("Lapicque", "R and C, zero, init_hidden"): "per-synapse",
    ("Alpha", "none"): "presynaptic",
    ("Alpha", "zero"): "per-synapse",
    ("RLeaky", "all-to-all"): "full-jacobian",
    ("RLeaky", "one-to-one"): "per-synapse",
    ("RSynaptic", "all-to-all"): "full-jacobian",
    ("SLSTM", "none"): "full-jacobian",
}


@pytest.mark.parametrize(("kind", "name", "form"), [(*k, v) for k, v in FORMS.items()])
def test_trace_form_follows_the_settings(kind, name, form):
    entry = next(e for e in registered() if e.module_type.__name__ == kind)
    factory = dict(entry.examples)[name]
    dense = isinstance(entry.adapter, DenseAdapter)
    model = Stack([_quiet(factory)], first_synapse=not dense)
    x, _ = _inputs(dense)
    with snn_ostl.OSTL(model) as learner:
        learner.reset()
        model(x[0], [_fresh_state(model.neurons[0])])
        layer = learner.layers["neurons.0"]
        weights = [g for g in layer.groups if g.role in ("weight", "cell")]
        assert weights and {g.form for g in weights} == {form}
        assert form in learner.summary()
        # one-state factorised neurons get the synapse's own backward at the filtered input
        fused = form == "presynaptic" and len(entry.adapter.state_names) == 1
        assert (layer.fused_group is not None) == fused


# ----------------------------------------------------------------------------- model styles
def test_sequential_with_init_hidden_stepped_by_the_caller():
    net = nn.Sequential(
        nn.Linear(N_IN, N),
        snn.Leaky(beta=0.9, init_hidden=True),
        nn.Linear(N, N),
        snn.Synaptic(alpha=0.8, beta=0.9, init_hidden=True, output=True),
    )
    with torch.no_grad():
        net[2].weight.mul_(2.5)
        net[2].bias.add_(0.3)
    x, _ = _inputs(False)
    rates: list = []

    def run():
        for t in range(T):
            spk, _syn, mem = net(x[t])
            rates.append(float(spk.detach().mean()))
            yield (mem - 0.5).pow(2).sum() + spk.sum()

    grads, owners, order = ostl_gradients(net, run)
    assert_spiking([sum(rates) / len(rates)], "sequential")
    err = compare(grads, oracle_gradients(net, run, owners, order))
    assert _max(err) <= TOL, err


class Tutorial5(nn.Module):
    """snnTorch tutorial 5: the forward runs its own time loop and returns stacked records."""

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(N_IN, N)
        self.lif1 = snn.Leaky(beta=0.9)
        self.fc2 = nn.Linear(N, 3)
        self.lif2 = snn.Leaky(beta=0.9)
        with torch.no_grad():
            self.fc2.weight.mul_(2.5)
            self.fc2.bias.add_(0.3)

    def forward(self, x):
        mem1 = self.lif1.init_leaky()
        mem2 = self.lif2.init_leaky()
        spk2_rec, mem2_rec, spk1_rec = [], [], []
        for step in range(x.shape[0]):
            spk1, mem1 = self.lif1(self.fc1(x[step]), mem1)
            spk2, mem2 = self.lif2(self.fc2(spk1), mem2)
            spk1_rec.append(spk1)
            spk2_rec.append(spk2)
            mem2_rec.append(mem2)
        return torch.stack(spk2_rec), torch.stack(mem2_rec), torch.stack(spk1_rec)


def test_tutorial5_time_loop_with_one_backward():
    net = Tutorial5()
    x, _ = _inputs(False)
    target = torch.tensor([0, 2, 1])
    rates: list = []

    def run():
        spk2, mem2, spk1 = net(x)
        rates.append([float(spk1.detach().mean()), float(spk2.detach().mean())])
        for t in range(T):
            yield nn.functional.cross_entropy(mem2[t], target)

    grads, owners, order = ostl_gradients(net, run, per_step=False)
    assert_spiking(rates[0], "tutorial 5")
    err = compare(grads, oracle_gradients(net, run, owners, order))
    assert _max(err) <= TOL, err
    # the upper layer alone is exact against full BPTT
    full = _full_bptt(net, run)
    assert compare(grads, full)["fc2.weight"] <= TOL
    assert compare(grads, full)["fc1.weight"] > 1e-3


def test_float64_model_does_not_break_at_the_next_layer():
    net = nn.Sequential(
        nn.Linear(N_IN, N), snn.Leaky(beta=0.9, init_hidden=True), nn.Linear(N, 2)
    ).double()
    x = torch.rand(T, B, N_IN, dtype=torch.float64) * 1.5
    with pytest.raises(RuntimeError):  # snnTorch alone: float32 spikes into a float64 Linear
        net(x[0])
    _reset(net)

    def run():
        for t in range(T):
            yield net(x[t]).pow(2).sum()

    grads, _, _ = ostl_gradients(net, run)
    assert all(g.dtype == torch.float64 for g in grads.values())
    with spikes_like_input(net):
        full = _full_bptt(net, run)
    assert _max(compare(grads, full)) <= 1e-10


@pytest.mark.parametrize(
    "neuron",
    [
        lambda: snn.Leaky(beta=0.9, init_hidden=True),
        lambda: snn.Synaptic(alpha=0.8, beta=0.9, init_hidden=True),
    ],
    ids=["Leaky", "Synaptic"],
)
def test_conv_synapse_with_presynaptic_traces_equals_full_bptt(neuron):
    net = nn.Sequential(nn.Conv2d(1, 3, 3, padding=1), neuron(), nn.Flatten(), nn.Linear(75, 2))
    x = torch.rand(T, B, 1, 5, 5) * 2
    rates: list = []

    def run():
        for t in range(T):
            out = net(x[t])
            rates.append(float(net[1].mem.detach().gt(net[1].threshold).float().mean()))
            yield out.pow(2).sum()

    grads, _, _ = ostl_gradients(net, run)
    assert_spiking([sum(rates) / len(rates)], "conv")
    assert _max(compare(grads, _full_bptt(net, run))) <= TOL


# ----------------------------------------------------------------------------- state
def test_reset_is_per_model():
    a = nn.Sequential(nn.Linear(N_IN, N), snn.Leaky(beta=0.9, init_hidden=True))
    b = nn.Sequential(nn.Linear(N_IN, N), snn.Leaky(beta=0.9, init_hidden=True))
    x = torch.rand(B, N_IN) * 3
    a(x)
    b(x)
    kept = b[1].mem.clone()
    with snn_ostl.OSTL(a) as learner:
        learner.reset()
        assert a[1].mem.numel() == 0
        assert torch.equal(b[1].mem, kept)


def test_passed_state_of_another_shape_is_refused_with_the_module_path():
    """A state with a graph that does not fit the input: snnTorch would drop it silently."""
    model = nn.Sequential(OrderedDict(fc=nn.Linear(N_IN, N), lif=snn.Leaky(beta=0.9)))
    with snn_ostl.OSTL(model) as learner:
        learner.reset()
        _, mem = model.lif(model.fc(torch.rand(B + 1, N_IN)), torch.zeros(B + 1, N))
        cur = model.fc(torch.rand(B, N_IN))
        with pytest.raises(snn_ostl.StateError, match=r"lif \(Leaky\).*shape"):
            model.lif(cur, mem)


def test_a_constant_state_of_another_shape_starts_from_zeros_as_in_snntorch():
    """``init_leaky()`` of an earlier batch size: snnTorch restarts from zeros, so does OSTL."""
    model = nn.Sequential(OrderedDict(fc=nn.Linear(N_IN, N), lif=snn.Leaky(beta=0.9)))
    x = torch.rand(B, N_IN)
    plain_spk, plain_mem = model.lif(model.fc(x), torch.zeros(B + 1, N))
    with snn_ostl.OSTL(model) as learner:
        learner.reset()
        spk, mem = model.lif(model.fc(x), torch.zeros(B + 1, N))
    torch.testing.assert_close(mem, plain_mem, rtol=0, atol=0)
    torch.testing.assert_close(spk, plain_spk, rtol=0, atol=0)


def test_kept_state_of_an_old_batch_is_refused_until_reset():
    model = nn.Sequential(nn.Linear(N_IN, N), snn.Leaky(beta=0.9, init_hidden=True))
    with snn_ostl.OSTL(model) as learner:
        learner.reset()
        model(torch.rand(B, N_IN))
        with pytest.raises(snn_ostl.StateError, match="reset"):
            model(torch.rand(B + 1, N_IN))
        learner.reset()
        model(torch.rand(B + 1, N_IN))


def test_explicit_state_starts_from_init_and_continues():
    lif = snn.Leaky(beta=0.9)
    model = nn.Sequential(nn.Linear(N_IN, N), lif)
    x = torch.rand(3, B, N_IN) * 3
    with snn_ostl.OSTL(model) as learner:
        learner.reset()
        mem = lif.init_leaky()
        outs = []
        for t in range(3):
            _, mem = lif(model[0](x[t]), mem)
            outs.append(mem.detach().clone())
    _reset(model)
    mem = lif.init_leaky()
    for t in range(3):
        _, mem = lif(model[0](x[t]), mem)
        torch.testing.assert_close(mem, outs[t])


# ----------------------------------------------------------------------------- refusals
REFUSED = {
    "LSO surrogate": (lambda: snn.Leaky(beta=0.9, spike_grad=surrogate.LSO()), "LSO"),
    "SSO surrogate": (lambda: snn.Leaky(beta=0.9, spike_grad=surrogate.SSO()), "stochastic"),
    "RSynaptic reset_delay=False": (
        lambda: snn.RSynaptic(alpha=0.8, beta=0.9, linear_features=N, reset_delay=False),
        "reset_delay=False",
    ),
    "Lapicque(beta)": (lambda: snn.Lapicque(beta=0.9), "1 + ln"),
    "Lapicque learn_beta": (lambda: snn.Lapicque(beta=0.9, learn_beta=True), "learn_beta"),
    "SLSTM input != hidden": (lambda: snn.SLSTM(4, N), "input_size=4"),
    "inhibition": (lambda: snn.Leaky(beta=0.9, inhibition=True), "inhibition"),
    "state_quant": (lambda: snn.Leaky(beta=0.9, state_quant=lambda m: m), "state_quant"),
    "RLeaky conv recurrence": (
        lambda: snn.RLeaky(beta=0.9, conv2d_channels=2, kernel_size=3),
        "Conv2d",
    ),
    "reset changed after construction": (
        lambda: _changed_reset(snn.Leaky(beta=0.9)),
        "after the neuron was built",
    ),
    "LeakyParallel": (lambda: snn.LeakyParallel(N, N), "whole sequence"),
    "SConv2dLSTM": (lambda: snn.SConv2dLSTM(1, 2, 3), "convolutions"),
    "DeltaLeaky (a Leaky subclass)": (lambda: snn.DeltaLeaky(beta=0.9), "subclasses Leaky"),
}


def _changed_reset(lif: nn.Module) -> nn.Module:
    lif.reset_mechanism = "zero"
    return lif


@pytest.mark.parametrize(("factory", "text"), REFUSED.values(), ids=REFUSED.keys())
def test_refusals_name_the_module_and_a_fix(factory, text):
    neuron = _quiet(factory)
    model = nn.Sequential(
        OrderedDict(fc=nn.Linear(N_IN, N), block=nn.Sequential(OrderedDict(lif=neuron)))
    )
    with pytest.raises(snn_ostl.UnsupportedModuleError) as info:
        snn_ostl.OSTL(model)
    message = str(info.value)
    assert "block.lif" in message
    assert text in message
    assert "Fix:" in message
    assert snn_ostl.validate(model)


def test_alpha_learn_alpha_fails_inside_snntorch_itself():
    with pytest.raises(TypeError):
        snn.Alpha(alpha=0.9, beta=0.8, learn_alpha=True)


def test_refused_layer_is_listed_with_strict_false():
    model = nn.Sequential(
        nn.Linear(N_IN, N), snn.Leaky(beta=0.9, spike_grad=surrogate.LSO()), nn.Linear(N, 2)
    )
    with snn_ostl.OSTL(model, strict=False) as learner:
        assert "1" not in learner.layers
