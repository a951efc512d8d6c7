"""Norse 1.1 cells under OSTL (float64): exactness, hand-written partials, model styles, refusals.

The registry drives the parametrised cases: every example of every Norse adapter is checked as a
one-stateful-layer model against full BPTT and as a two-layer stack against the exact oracle
(with a negative control), so adding an adapter or an example adds its cases.
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_spiking, seeded
from conftest import full_bptt as _full_bptt
from torch import nn

pytest.importorskip("norse")

import norse.torch as nt
from norse.torch.functional.lif import LIFParameters
from norse.torch.functional.threshold import threshold
from snn_ostl.adapters import load_available

import snn_ostl
from snn_ostl.adapter import ElementwiseAdapter, StepRecord
from snn_ostl.errors import UnsupportedModuleError
from snn_ostl.registry import adapter_for, registered
from snn_ostl.testing import compare, oracle_gradients, ostl_gradients

load_available(import_frameworks=True)

from snn_ostl.adapters.norse import NorseCellAdapter, surrogate_derivative  # noqa: E402

DT = torch.float64
TOL = 1e-10
T, B = 10, 3

EXAMPLES = [
    (entry.adapter, factory)
    for entry in registered()
    if entry.adapter.framework == "norse"
    for _, factory in entry.examples
]
IDS = [
    f"{entry.module_type.__name__}-{name}"
    for entry in registered()
    if entry.adapter.framework == "norse"
    for name, _ in entry.examples
]


# Tiny tensors: a second intra-op thread only contends with the other test worker.
pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------- helpers
def _sizes(cell: nn.Module) -> tuple[int, int]:
    """(inputs, neurons) of an example cell."""
    return int(getattr(cell, "input_size", 4)), int(getattr(cell, "hidden_size", 5))


def _internal(adapter, cell) -> bool:
    return bool(adapter.internal_synapses(cell))


class Layers(nn.Module):
    """synapse -> cell, repeated, then a Linear readout; threads every cell's state explicitly.

    Cells with their own input weights get no synapse (the first) or a bridging Linear (later
    layers). ``detach_from = k`` detaches the previous state of cells k, k+1, ... at every step:
    the exact oracle of the parameters of cell k-1 that the model does not register (Norse's
    ``p`` fields).
    """

    def __init__(self, adapter, make: Callable[[], nn.Module], depth: int) -> None:
        super().__init__()
        self.adapter = adapter
        self.cells = nn.ModuleList(make() for _ in range(depth))
        inputs, n = _sizes(self.cells[0])
        internal = _internal(adapter, self.cells[0])
        self.synapses = nn.ModuleList()
        for k in range(depth):
            if internal:
                self.synapses.append(nn.Identity() if k == 0 else nn.Linear(n, inputs, dtype=DT))
            else:
                self.synapses.append(nn.Linear(inputs if k == 0 else n, n, dtype=DT))
        self.readout = nn.Linear(n, 2, dtype=DT)
        self.inputs = inputs
        self.detach_from: int | None = None

    def neuron_parameters(self) -> dict[str, nn.Parameter]:
        """The ``p`` parameters by the name the learner gives them (``cells.k.p.<field>``)."""
        return {
            f"cells.{k}.{name}": p
            for k, cell in enumerate(self.cells)
            for name, p in self.adapter.neuron_parameters(cell).items()
        }

    def forward(self, x, states):
        new, spikes = [], []
        for k, (synapse, cell, state) in enumerate(zip(self.synapses, self.cells, states)):
            if state is not None and self.detach_from is not None and k >= self.detach_from:
                state = type(state)(*(s.detach() for s in state))
            x, state = cell(synapse(x), state)
            new.append(state)
            spikes.append(x)
        return self.readout(x), new, spikes


def _take_p_grads(model: Layers) -> dict[str, torch.Tensor]:
    """Collect and clear the gradients of the unregistered ``p`` parameters."""
    out = {}
    for name, p in model.neuron_parameters().items():
        if p.grad is not None:
            out[name] = p.grad.clone()
        p.grad = None
    return out


def _runner(model: Layers, x, target, rates: list | None = None):
    def run():
        states = [None] * len(model.cells)
        for t in range(x.shape[0]):
            out, states, spikes = model(x[t], states)
            if rates is not None:
                rates.append([float(z.detach().mean()) for z in spikes])
            yield ((out - target[t]) ** 2).sum()

    return run


def _tune(model: Layers, adapter, seed: int = 0):
    """Input scale and synapse gains that make every spiking layer fire 10-60% of the time."""
    gen = seeded(seed)
    x = torch.rand(T, B, model.inputs, generator=gen, dtype=DT)
    target = torch.randn(T, B, 2, generator=gen, dtype=DT)
    if not adapter.spiking:
        return x, target
    for k, synapse in enumerate(model.synapses):
        for _ in range(10):
            rates: list = []
            with torch.no_grad():
                list(_runner(model, x, target, rates)())
            rate = _rates(rates)[k]
            if 0.1 <= rate <= 0.6:
                break
            factor = 2.0 if rate < 0.1 else 0.7
            if k == 0:
                x = x * factor
            else:
                with torch.no_grad():
                    synapse.weight.mul_(factor)
    return x, target


def _rates(rates: list) -> list[float]:
    return torch.tensor(rates).mean(0).tolist()


# ----------------------------------------------------------------------------- registry cases
@pytest.mark.parametrize(("adapter", "make"), EXAMPLES, ids=IDS)
def test_one_layer_equals_full_bptt(adapter, make):
    torch.manual_seed(0)
    model = Layers(adapter, make, depth=1)
    x, target = _tune(model, adapter)
    rates: list = []
    run = _runner(model, x, target, rates)
    _take_p_grads(model)
    grads, _, _ = ostl_gradients(model, run)
    grads.update(_take_p_grads(model))
    if adapter.spiking:
        assert_spiking(_rates(rates), "one layer")
    reference = _full_bptt(model, run)
    reference.update(_take_p_grads(model))
    names = {n for n, _ in model.named_parameters()} | set(model.neuron_parameters())
    assert set(grads) == set(reference) == names
    errors = compare(grads, reference)
    assert max(errors.values()) <= TOL, errors


VARIANT_CASES = [(a, m, v) for a, m in EXAMPLES for v in a.variants]
VARIANT_IDS = [f"{i}-{v}" for (a, _), i in zip(EXAMPLES, IDS) for v in a.variants]


@pytest.mark.parametrize(("adapter", "make", "variant"), VARIANT_CASES, ids=VARIANT_IDS)
def test_two_layers_equal_oracle(adapter, make, variant):
    torch.manual_seed(1)
    model = Layers(adapter, make, depth=2)
    x, target = _tune(model, adapter)
    rates: list = []
    run = _runner(model, x, target, rates)
    _take_p_grads(model)
    with warnings.catch_warnings():
        # a bridging Linear before a cell with its own weights gets its instantaneous gradient
        warnings.simplefilter("ignore")
        grads, owners, order = ostl_gradients(model, run, variant=variant, instantaneous_below=True)
    grads.update(_take_p_grads(model))
    if adapter.spiking:
        assert_spiking(_rates(rates), "two layers")
    reference = oracle_gradients(model, run, owners, order, variant=variant)
    _take_p_grads(model)
    for k, cell in enumerate(model.cells):  # the oracle of the p parameters of cell k
        model.detach_from = k + 1
        with adapter.variant_forward(cell, variant):
            _full_bptt(model, run)
        reference.update(
            {n: g for n, g in _take_p_grads(model).items() if n.startswith(f"cells.{k}.")}
        )
    model.detach_from = None
    errors = compare(grads, reference)
    assert max(errors.values()) <= TOL, errors
    # negative control: the lower layer is not full BPTT
    full = _full_bptt(model, run)
    # (LSNN cells let the current in after the spike decision, so no error reaches a lower LSNN
    # layer within one step: OSTL and its oracle give it no gradient at all)
    lower = [n for n, owner in owners.items() if owner == "cells.0" and n in full]
    assert lower
    ours = {n: grads.get(n, torch.zeros_like(full[n])) for n in lower}
    assert max(compare(ours, {n: full[n] for n in lower}).values()) > 1e-6


# ----------------------------------------------------------------------------- hand-written
def _overrides(adapter) -> bool:
    return type(adapter).derivatives is not ElementwiseAdapter.derivatives


def _assert_partials_equal(fast, slow, like: torch.Tensor, what: str) -> None:
    def full(p):
        if p is None:
            return torch.zeros_like(like)
        if isinstance(p, torch.Tensor):
            return p.expand_as(like).to(like.dtype)
        return torch.full_like(like, p)

    pairs = [
        *((f"state[{k}][{j}]", a, b) for k, (ra, rb) in enumerate(zip(fast.state, slow.state))
          for j, (a, b) in enumerate(zip(ra, rb))),
        *((f"current[{k}]", a, b) for k, (a, b) in enumerate(zip(fast.current, slow.current))),
        *((f"{name}[{k}]", a, b) for name in slow.params
          for k, (a, b) in enumerate(zip(fast.params[name], slow.params[name]))),
    ]  # fmt: skip
    assert set(fast.params) == set(slow.params), what
    for label, a, b in pairs:
        fa, fb = full(a), full(b)
        scale = max(float(fb.abs().max()), 1e-300)
        assert float((fa - fb).abs().max()) <= 1e-13 * max(scale, 1.0), f"{what} {label}"


def _partials_on_steps(adapter, cell, x: torch.Tensor, weight: torch.Tensor | None):
    """Hand-written vs autograd partials of ``cell`` on the steps of one sequence (all variants)."""
    state = None
    checked = spikes = 0
    for t in range(x.shape[0]):
        a = x[t]
        current = a if weight is None else F.linear(a, weight)
        prev = adapter.read_state(cell, (a, state), {})
        if prev is None:
            prev = adapter.initial_state(cell, a)
        with torch.no_grad():
            out, state = cell(a, adapter.state_type(*prev))
        step = StepRecord(current=a, prev=prev, new=tuple(state))
        for variant in adapter.variants:
            fast = adapter.derivatives(cell, step, variant, lambda c=current: c)
            slow = NorseCellAdapter.derivatives(adapter, cell, step, variant, lambda c=current: c)
            _assert_partials_equal(fast, slow, prev[0], f"{variant} step {t}")
        # the engine's default reference (autograd of cell() with its defaults) agrees too
        fast = adapter.derivatives(cell, step, "ostl", lambda c=current: c)
        slow = ElementwiseAdapter.derivatives(adapter, cell, step, "ostl", lambda c=current: c)
        _assert_partials_equal(fast, slow, prev[0], f"step {t}")
        checked += 1
        spikes += int(out.sum()) if adapter.spiking else 0
    return checked, spikes


HAND_WRITTEN = [(a, m) for a, m in EXAMPLES if _overrides(a)]
HAND_IDS = [i for (a, _), i in zip(EXAMPLES, IDS) if _overrides(a)]


@pytest.mark.parametrize(("adapter", "make"), HAND_WRITTEN, ids=HAND_IDS)
def test_hand_written_partials_match_autograd(adapter, make):
    torch.manual_seed(2)
    cell = make()
    inputs, n = _sizes(cell)
    weight = getattr(cell, "input_weights", None)
    width = inputs if weight is not None else n
    x = torch.rand(T, B, width, dtype=DT) * (3.0 if adapter.spiking else 1.0)
    checked, spikes = _partials_on_steps(adapter, cell, x, None if weight is None else weight)
    assert checked == T
    if adapter.spiking:
        assert spikes > 0


@pytest.mark.parametrize("method", ["super", "triangle", "tanh", "circ", "heavi_erfc", "heaviside"])
def test_lif_partials_every_surrogate_and_trained_field(method):
    torch.manual_seed(3)
    n = 6
    trained = {
        "tau_syn_inv": nn.Parameter(torch.full((n,), 200.0, dtype=DT)),
        "tau_mem_inv": nn.Parameter(torch.tensor(100.0, dtype=DT)),
        "v_leak": nn.Parameter(torch.zeros(n, dtype=DT)),
        "v_th": nn.Parameter(torch.linspace(0.8, 1.2, n, dtype=DT)),
        "v_reset": nn.Parameter(torch.tensor(-0.1, dtype=DT)),
    }
    cell = nt.LIFCell(p=LIFParameters(method=method, alpha=torch.as_tensor(0.7), **trained))
    adapter = adapter_for(cell)
    assert set(adapter.neuron_parameters(cell)) == {f"p.{k}" for k in trained}
    x = torch.rand(T, B, n, dtype=DT) * 3.0
    _, spikes = _partials_on_steps(adapter, cell, x, None)
    assert spikes > 0


def test_li_partials_are_numbers_and_pin_norse_dynamics():
    """Current jumps first, then the voltage integrates: dt=1e-3 gives decays 0.9 and 0.8."""
    cell = nt.LICell()
    adapter = adapter_for(cell)
    assert adapter.factorised(cell, "ostl")
    a = torch.rand(2, 3, dtype=DT)
    prev = adapter.initial_state(cell, a)
    step = StepRecord(current=a, prev=prev, new=tuple(cell(a, None)[1]))
    d = adapter.derivatives(cell, step, "ostl", lambda: a)
    assert d.is_constant()
    (j_vv, j_vi), (j_iv, j_ii) = d.state
    assert j_iv is None
    assert j_vv == pytest.approx(0.9, abs=1e-7) and j_vi == pytest.approx(0.1, abs=1e-7)
    assert j_ii == pytest.approx(0.8, abs=1e-7)
    assert d.current == [pytest.approx(0.1, abs=1e-7), pytest.approx(0.8, abs=1e-7)]
    # the current reaches the voltage in the same step
    v, _ = cell(a, None)
    assert torch.allclose(v, 0.1 * a, atol=1e-7)


def test_superspike_ignores_alpha_in_norse_1_1():
    """Pinned: Norse 1.1.0's SuperSpike gradient is 1/(|x|+1)^2 whatever alpha is."""
    x = torch.linspace(-3, 3, 25, dtype=DT, requires_grad=True)
    expected = 1.0 / (x.detach().abs() + 1.0) ** 2
    for alpha in (1.0, 10.0, 100.0):
        (grad,) = torch.autograd.grad(threshold(x, "super", alpha).sum(), x)
        assert torch.allclose(grad, expected, rtol=0, atol=1e-15), alpha
    assert torch.equal(surrogate_derivative(x.detach(), "super", 3.0), expected)


@pytest.mark.parametrize("method", ["triangle", "tanh", "circ", "heavi_erfc"])
def test_surrogate_derivatives_match_norse(method):
    x = torch.linspace(-2, 2, 41, dtype=DT, requires_grad=True)
    alpha = torch.as_tensor(0.7)
    (grad,) = torch.autograd.grad(threshold(x, method, alpha).sum(), x)
    assert torch.allclose(surrogate_derivative(x.detach(), method, alpha), grad, atol=1e-14)


EPROP = [(a, m) for a, m in EXAMPLES if a.eprop_step is not None]
EPROP_IDS = [i for (a, _), i in zip(EXAMPLES, IDS) if a.eprop_step is not None]


@pytest.mark.parametrize(("adapter", "make"), EPROP, ids=EPROP_IDS)
def test_eprop_steps_compute_norses_values(adapter, make):
    """The e-prop copies of Norse's steps differ only in gradients, never in values."""
    torch.manual_seed(8)
    cell = make()
    state = None
    for t in range(T):
        a = torch.rand(B, 5, dtype=DT) * 4.0
        prev = adapter.initial_state(cell, a) if state is None else tuple(state)
        z, state = adapter.step_fn(a, adapter.state_type(*prev), cell.p, cell.dt)
        z_cut, state_cut = adapter.eprop_step(a, adapter.state_type(*prev), cell.p, cell.dt)
        assert torch.equal(z, z_cut), t
        assert all(torch.equal(u, w) for u, w in zip(state, state_cut)), t


# ----------------------------------------------------------------------------- model styles
def _spike_recorder(modules: list[nn.Module], rates: list):
    """Forward hooks (the user's own) that record each module's mean output per step."""
    handles = []
    for k, m in enumerate(modules):

        def hook(mod, args, out, k=k):
            rates.append((k, float(out[0].detach().mean())))

        handles.append(m.register_forward_hook(hook))
    return handles


def _per_layer(rates: list, layers: int) -> list[float]:
    return [
        sum(r for k, r in rates if k == j) / sum(1 for k, _ in rates if k == j)
        for j in range(layers)
    ]


def _assert_oracle(model, run, per_step=True, variant="ostl", lower: str | None = None):
    grads, owners, order = ostl_gradients(model, run, per_step=per_step, variant=variant)
    reference = oracle_gradients(model, run, owners, order, variant=variant)
    errors = compare(grads, reference)
    assert set(grads) == {n for n, p in model.named_parameters() if p.requires_grad}
    assert max(errors.values()) <= TOL, errors
    if lower is not None:
        full = _full_bptt(model, run)
        names = [n for n in grads if n.startswith(lower)]
        assert names
        diff = compare({n: grads[n] for n in names}, {n: full[n] for n in names})
        assert max(diff.values()) > 1e-6, diff
    return owners


def test_sequential_state_lif_then_li():
    torch.manual_seed(4)
    model = nt.SequentialState(
        nn.Linear(4, 6, dtype=DT), nt.LIFCell(), nn.Linear(6, 3, dtype=DT), nt.LICell()
    )
    x = torch.rand(T, B, 4, dtype=DT) * 6.0
    target = torch.randn(T, B, 3, dtype=DT)
    rates: list = []
    handles = _spike_recorder([model[1]], rates)

    def run():
        state = None
        for t in range(T):
            out, state = model(x[t], state)
            yield ((out - target[t]) ** 2).sum()

    owners = _assert_oracle(model, run, lower="0.")
    assert_spiking(_per_layer(rates, 1), "SequentialState")
    assert owners["0.weight"] == "1" and owners["2.weight"] == "3"
    for h in handles:
        h.remove()


class Threading(nn.Module):
    """A custom module threading explicit state: recurrent LIF -> Linear -> LIF -> readout."""

    def __init__(self) -> None:
        super().__init__()
        self.rec = nt.LIFRecurrentCell(
            4,
            6,
            input_weights=nn.Parameter(torch.randn(6, 4, dtype=DT)),
            recurrent_weights=nn.Parameter(torch.randn(6, 6, dtype=DT) * 0.5),
        )
        self.fc = nn.Linear(6, 5, dtype=DT)
        self.lif = nt.LIFCell()
        self.readout = nn.Linear(5, 2, dtype=DT)

    def forward(self, x, state=None):
        s1, s2 = state if state is not None else (None, None)
        z1, s1 = self.rec(x, s1)
        z2, s2 = self.lif(self.fc(z1), state=s2)
        return self.readout(z2), (s1, s2)


@pytest.mark.parametrize("variant", ["ostl", "ostl-no-h", "eprop"])
def test_custom_module_threading_state(variant):
    torch.manual_seed(5)
    model = Threading()
    with torch.no_grad():
        model.fc.weight.mul_(32.0)
    x = torch.rand(T, B, 4, dtype=DT) * 4.0
    target = torch.randn(T, B, 2, dtype=DT)
    rates: list = []
    handles = _spike_recorder([model.rec, model.lif], rates)

    def run():
        state = None
        for t in range(T):
            out, state = model(x[t], state)
            yield ((out - target[t]) ** 2).sum()

    _assert_oracle(model, run, variant=variant, lower="rec.")
    assert_spiking(_per_layer(rates, 2), variant)
    for h in handles:
        h.remove()


def test_recurrent_variants_change_the_trace_form():
    model = Threading()
    x = torch.rand(B, 4, dtype=DT)
    forms = {}
    for variant in ("ostl", "eprop"):
        with snn_ostl.OSTL(model, variant=variant) as learner:
            learner.reset()
            model(x)
            forms[variant] = {g.name: g.form for g in learner.layers["rec"].groups}
    assert forms["ostl"] == {
        "rec.input_weights": "full-jacobian",
        "rec.recurrent_weights": "full-jacobian",
    }
    assert forms["eprop"] == {
        "rec.input_weights": "per-synapse",
        "rec.recurrent_weights": "per-synapse",
    }


class Mixed(nn.Module):
    """LSNN -> LIFAdEx -> LICell readout, each fed by a Linear: three stateful layers.

    (An LSNN cell lets its current in after the spike decision, so it sits at the bottom: above
    another layer it would stop every instantaneous error from reaching the layer below.)
    """

    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(4, 6, dtype=DT)
        self.lsnn = nt.LSNNCell(
            p=nt.LSNNParameters(tau_adapt_inv=torch.as_tensor(50.0), beta=torch.as_tensor(0.5))
        )
        self.fc2 = nn.Linear(6, 5, dtype=DT)
        self.adex = nt.LIFAdExCell(p=nt.LIFAdExParameters(v_leak=torch.tensor(0.0, dtype=DT)))
        self.fc3 = nn.Linear(5, 2, dtype=DT)
        self.li = nt.LICell()

    def forward(self, x, state=None):
        s1, s2, s3 = state if state is not None else (None, None, None)
        z1, s1 = self.lsnn(self.fc1(x), s1)
        z2, s2 = self.adex(self.fc2(z1), s2)
        v, s3 = self.li(self.fc3(z2), s3)
        return v, (s1, s2, s3)


def test_mixed_stack_with_li_readout():
    torch.manual_seed(6)
    model = Mixed()
    with torch.no_grad():
        model.fc2.weight.mul_(12.0)
        model.fc3.weight.mul_(4.0)
    x = torch.rand(T, B, 4, dtype=DT) * 24.0
    target = torch.randn(T, B, 2, dtype=DT)
    rates: list = []
    handles = _spike_recorder([model.lsnn, model.adex], rates)

    def run():
        state = None
        for t in range(T):
            v, state = model(x[t], state)
            yield ((v - target[t]) ** 2).sum()

    _assert_oracle(model, run, lower="fc1.")
    assert_spiking(_per_layer(rates, 2), "mixed")
    with snn_ostl.OSTL(model) as learner:
        learner.reset()
        model(x[0])
        forms = {g.name: g.form for layer in learner.layers.values() for g in layer.groups}
    assert forms["fc1.weight"] == forms["fc2.weight"] == "per-synapse"
    assert forms["fc3.weight"] == forms["fc3.bias"] == "presynaptic"
    for h in handles:
        h.remove()


class ConvNet4Style(nn.Module):
    """Norse's ConvNet4 pattern: forward loops over time itself and returns stacked voltages."""

    def __init__(self, conv: bool = False) -> None:
        super().__init__()
        self.conv = conv
        if conv:
            self.conv1 = nn.Conv2d(1, 2, 3, dtype=DT)
            features = 2 * 2 * 2
        else:
            self.conv1 = nn.Linear(16, 6, dtype=DT)
            features = 6
        self.lif0 = nt.LIFCell(p=LIFParameters(v_th=torch.as_tensor(0.7)))
        self.fc1 = nn.Linear(features, 5, dtype=DT)
        self.lif1 = nt.LIFCell()
        self.out = nt.LILinearCell(5, 3)
        self.out.input_weights = nn.Parameter(self.out.input_weights.detach().to(DT) * 3.0)

    def forward(self, x):
        seq_length, batch_size = x.shape[:2]
        s0 = s1 = so = None
        voltages = torch.zeros(seq_length, batch_size, 3, dtype=DT)
        for ts in range(seq_length):
            z = self.conv1(x[ts] if self.conv else x[ts].flatten(1))
            z, s0 = self.lif0(z, s0)
            if self.conv:
                z = F.max_pool2d(z, 1).flatten(1)
            z = self.fc1(z)
            z, s1 = self.lif1(z, s1)
            v, so = self.out(F.relu(z), so)
            voltages[ts, :, :] = v
        return voltages


def test_convnet4_style_one_backward_equals_oracle():
    torch.manual_seed(7)
    model = ConvNet4Style()
    with torch.no_grad():
        model.conv1.weight.mul_(6.0)
        model.fc1.weight.mul_(10.0)
    x = torch.rand(T, B, 1, 4, 4, dtype=DT)
    target = torch.randn(T, B, 3, dtype=DT)
    rates: list = []
    handles = _spike_recorder([model.lif0, model.lif1], rates)

    def run():
        voltages = model(x)
        for t in range(T):
            yield ((voltages[t] - target[t]) ** 2).sum()

    _assert_oracle(model, run, per_step=False, lower="conv1.")
    assert_spiking(_per_layer(rates, 2), "ConvNet4")
    for h in handles:
        h.remove()


def test_conv_synapse_into_lif_equals_oracle():
    """Norse's ConvNet4 with a Conv2d synapse: LIFCell's traces behind a convolution are
    per-synapse (one filter's fan-in per neuron), exact against the oracle."""
    torch.manual_seed(7)
    model = ConvNet4Style(conv=True)
    with torch.no_grad():
        model.conv1.weight.mul_(6.0)
        model.fc1.weight.mul_(10.0)
    x = torch.rand(T, B, 1, 4, 4, dtype=DT)
    target = torch.randn(T, B, 3, dtype=DT)
    rates: list = []
    handles = _spike_recorder([model.lif0, model.lif1], rates)

    def run():
        voltages = model(x)
        for t in range(T):
            yield ((voltages[t] - target[t]) ** 2).sum()

    owners = _assert_oracle(model, run, per_step=False, lower="conv1.")
    assert owners["conv1.weight"] == "lif0"
    assert_spiking(_per_layer(rates, 2), "ConvNet4 with a conv synapse")
    for h in handles:
        h.remove()


def test_conv_synapse_into_li_uses_presynaptic_traces():
    """LICell factorises, so a Conv synapse works: its trace is the filtered input image."""
    torch.manual_seed(9)
    model = nt.SequentialState(
        nn.Conv2d(1, 2, 3, dtype=DT), nt.LICell(), nn.Flatten(), nn.Linear(8, 2, dtype=DT)
    )
    x = torch.rand(T, B, 1, 4, 4, dtype=DT)
    target = torch.randn(T, B, 2, dtype=DT)

    def run():
        state = None
        for t in range(T):
            out, state = model(x[t], state)
            yield ((out - target[t]) ** 2).sum()

    grads, owners, _ = ostl_gradients(model, run)
    assert owners["0.weight"] == owners["0.bias"] == "1"
    reference = _full_bptt(model, run)
    assert max(compare(grads, reference).values()) <= TOL
    with snn_ostl.OSTL(model) as learner:
        learner.reset()
        model(x[0])
        forms = {g.name: g.form for g in learner.layers["1"].groups}
        traces = {g.name: g.trace for g in learner.layers["1"].groups}
    assert forms == {"0.weight": "presynaptic", "0.bias": "presynaptic"}
    assert tuple(traces["0.weight"][0].shape) == (B, 1, 4, 4)  # the filtered input
    assert all(isinstance(b, float) for b in traces["0.bias"])  # one number per state


# ----------------------------------------------------------------------------- refusals
def _refused(module: nn.Module, *patterns: str, **options) -> str:
    model = nn.Sequential(nn.Linear(3, 3, dtype=DT), module)
    with pytest.raises(UnsupportedModuleError) as info:
        snn_ostl.OSTL(model, **options)
    message = str(info.value)
    assert "1 (" in message  # the module path inside the model
    for pattern in patterns:
        assert pattern in message, message
    return message


@pytest.mark.parametrize(
    ("module", "cell"),
    [
        (nt.LIF(), "LIFCell"),
        (nt.LIFRecurrent(3, 4), "LIFRecurrentCell"),
        (nt.LI(), "LICell"),
        (nt.LSNN(), "LSNNCell"),
        (nt.LSNNRecurrent(3, 4), "LSNNRecurrentCell"),
        (nt.IAF(), "IAFCell"),
        (nt.LIFAdEx(), "LIFAdExCell"),
    ],
    ids=lambda v: type(v).__name__ if isinstance(v, nn.Module) else v,
)
def test_sequence_modules_are_refused_with_the_cell_to_use(module, cell):
    _refused(module, "whole sequence", f"norse.torch.{cell}")


def test_unsupported_norse_modules_are_refused():
    for module in (nt.LIFExCell(), nt.IzhikevichCell(nt.functional.izhikevich.tonic_spiking)):
        _refused(module, "no OSTL adapter")
    _refused(nt.Lift(nt.LIFCell()), "whole sequence")


def test_adjoint_is_refused():
    _refused(nt.LIFCell(p=LIFParameters(method="adjoint")), "adjoint")
    _refused(nt.LSNNCell(adjoint=True), "adjoint")


def test_untrainable_p_fields_are_refused():
    p = nt.IAFParameters(v_reset=nn.Parameter(torch.tensor(0.0, dtype=DT)))
    _refused(nt.IAFCell(p=p), "p.v_reset")
    _refused(nt.LIFCell(p=LIFParameters(alpha=nn.Parameter(torch.tensor(100.0)))), "p.alpha")


def test_every_norse_adapter_is_registered_and_documented():
    names = {e.module_type.__name__ for e in registered() if e.adapter.framework == "norse"}
    assert names == {
        "LIFCell",
        "LIFBoxCell",
        "LIFRecurrentCell",
        "LICell",
        "LILinearCell",
        "LSNNCell",
        "LSNNRecurrentCell",
        "IAFCell",
        "LIFAdExCell",
    }
    for entry in registered():
        if entry.adapter.framework == "norse":
            assert isinstance(entry.adapter, NorseCellAdapter)
            assert entry.examples, entry.module_type


@pytest.mark.parametrize(("adapter", "make", "variant"), VARIANT_CASES, ids=VARIANT_IDS)
def test_flush_every_equals_oracle(adapter, make, variant):
    """History terms flushed every 3 steps: the oracle's gradient, every variant; and the same
    gradient as flush_every=1 with a feedback learning signal (hooks on weights included)."""
    torch.manual_seed(1)
    model = Layers(adapter, make, depth=2)
    x, target = _tune(model, adapter)
    rates: list = []
    run = _runner(model, x, target, rates)
    _take_p_grads(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        grads, owners, order = ostl_gradients(
            model, run, variant=variant, flush_every=3, instantaneous_below=True
        )
        _take_p_grads(model)
        direct = [
            ostl_gradients(
                model,
                run,
                variant=variant,
                learning_signal="direct",
                instantaneous_below=True,
                **kw,
            )[0]
            for kw in ({}, {"flush_every": 3})
        ]
    _take_p_grads(model)
    if adapter.spiking:
        assert_spiking(_rates(rates), "two layers")
    reference = oracle_gradients(model, run, owners, order, variant=variant)
    grads = {n: g for n, g in grads.items() if n in reference}
    assert grads
    assert max(compare(grads, reference).values()) <= TOL
    assert max(compare(direct[1], direct[0]).values()) <= TOL
