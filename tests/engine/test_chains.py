"""Layers fed through a chain: every operation between synapse and neuron, against the oracle.

Each setting puts a synapse (Linear, Conv1d/2d/3d, ConvTranspose2d, Embedding, or a sum of two)
and a chain (pooling, dropout, batch/layer norm, scaling, views, padding) in front of a float64
neuron, then a second stateful layer on top, and compares the learner's gradients with the
oracle (BPTT with the upper layer's state detached) to 1e-10. The neurons: a leaky cell whose
traces factorise, the same cell with a differentiable zero reset, a two-state synaptic cell,
and the paper's SNU.
"""

from __future__ import annotations

import warnings

import pytest
import torch
import torch.nn.functional as F
from conftest import assert_spiking, full_bptt, seeded
from torch import nn
from toy_cells import ToyLeaky, ToySynaptic

import snn_ostl
from snn_ostl.testing import compare, oracle_gradients, ostl_gradients

DT = torch.float64
TOL = 1e-10
T, B = 7, 3


class Lambda(nn.Module):
    """A tensor operation written in the forward, as users write ``10 * conv(x)``."""

    def __init__(self, fn) -> None:
        super().__init__()
        self.fn = fn

    def forward(self, x):
        return self.fn(x)


def _cell(kind: str) -> nn.Module:
    if kind == "leaky":
        return ToyLeaky(beta=0.8, threshold=0.4)
    if kind == "zero-reset":
        return ToyLeaky(beta=0.8, threshold=0.4, reset="zero")
    if kind == "synaptic":
        return ToySynaptic(threshold=0.3)
    if kind == "norse-lif":  # a current that factorises beside a membrane that does not
        import norse.torch as norse

        return norse.LIFCell()
    raise ValueError(kind)


#: name -> (synapse factory, chain factory, input shape of one sample, neurons after the chain)
SETTINGS = {
    "conv-maxpool": (
        lambda: nn.Conv2d(2, 3, 3, dtype=DT),
        lambda: nn.MaxPool2d(2),
        (2, 8, 8),
        3 * 3 * 3,
    ),
    "conv-avgpool": (
        lambda: nn.Conv2d(2, 3, 3, dtype=DT),
        lambda: nn.AvgPool2d(2),
        (2, 8, 8),
        27,
    ),
    "conv-scale-maxpool": (
        lambda: nn.Conv2d(2, 3, 3, dtype=DT),
        lambda: Lambda(lambda z: 10 * F.max_pool2d(z, 2)),
        (2, 8, 8),
        27,
    ),
    "conv-scale": (
        lambda: nn.Conv2d(2, 3, 3, padding=1, dtype=DT),
        lambda: Lambda(lambda z: 0.5 * z),
        (2, 4, 4),
        48,
    ),
    "conv-dropout-maxpool": (
        lambda: nn.Conv2d(2, 3, 3, dtype=DT),
        lambda: nn.Sequential(nn.Dropout(0.3), nn.MaxPool2d(2)),
        (2, 8, 8),
        27,
    ),
    "conv-batchnorm-train": (
        lambda: nn.Conv2d(2, 3, 3, bias=False, dtype=DT),
        lambda: nn.Sequential(nn.BatchNorm2d(3, dtype=DT), nn.MaxPool2d(2)),
        (2, 8, 8),
        27,
    ),
    "conv-batchnorm-eval": (
        lambda: nn.Conv2d(2, 3, 3, dtype=DT),
        lambda: nn.Sequential(nn.BatchNorm2d(3, dtype=DT).eval(), nn.MaxPool2d(2)),
        (2, 8, 8),
        27,
    ),
    "conv-overlapping-maxpool": (
        lambda: nn.Conv2d(2, 3, 3, dtype=DT),
        lambda: nn.MaxPool2d(3, stride=2),
        (2, 9, 9),
        27,
    ),
    "conv-pad-relu-adaptive": (
        lambda: nn.Conv2d(2, 3, 3, dtype=DT),
        lambda: nn.Sequential(nn.ZeroPad2d(1), nn.ReLU(), nn.AdaptiveMaxPool2d(3)),
        (2, 6, 6),
        27,
    ),
    "conv-flatten": (
        lambda: nn.Conv2d(2, 3, 3, dtype=DT),
        lambda: nn.Sequential(nn.MaxPool2d(2), nn.Flatten()),
        (2, 8, 8),
        27,
    ),
    "conv-reflect-strided": (
        lambda: nn.Conv2d(
            2, 3, 3, stride=2, padding=1, dilation=2, padding_mode="reflect", dtype=DT
        ),
        lambda: nn.Identity(),
        (2, 9, 9),
        3 * 4 * 4,
    ),
    "conv1d-maxpool": (
        lambda: nn.Conv1d(2, 4, 3, dtype=DT),
        lambda: nn.MaxPool1d(2),
        (2, 10),
        16,
    ),
    "conv3d": (
        lambda: nn.Conv3d(1, 2, 2, dtype=DT),
        lambda: nn.Identity(),
        (1, 3, 3, 3),
        16,
    ),
    "conv-transpose": (
        lambda: nn.ConvTranspose2d(2, 2, 2, stride=2, dtype=DT),
        lambda: nn.Identity(),
        (2, 2, 2),
        32,
    ),
    "linear-dropout": (
        lambda: nn.Linear(6, 5, dtype=DT),
        lambda: nn.Dropout(0.4),
        (6,),
        5,
    ),
    "linear-shuffled-every-step": (  # the feature -> neuron map changes at every step
        lambda: nn.Linear(6, 5, dtype=DT),
        lambda: Lambda(lambda z: z[:, torch.randperm(5)]),
        (6,),
        5,
    ),
    "linear-layernorm": (
        lambda: nn.Linear(6, 5, dtype=DT),
        lambda: nn.LayerNorm(5, dtype=DT),
        (6,),
        5,
    ),
    "linear-batchnorm-eval": (
        lambda: nn.Linear(6, 5, dtype=DT),
        lambda: nn.BatchNorm1d(5, dtype=DT).eval(),
        (6,),
        5,
    ),
    "embedding": (
        lambda: nn.Embedding(7, 5, dtype=DT),
        lambda: nn.Identity(),
        (),
        5,
    ),
}


class ChainNet(nn.Module):
    """synapse -> chain -> neuron -> flatten -> Linear -> leaky neuron (the layer above)."""

    def __init__(self, setting: str, cell: str) -> None:
        super().__init__()
        synapse, chain, _, neurons = SETTINGS[setting]
        self.syn = synapse()
        self.chain = chain()
        self.lif = _cell(cell)
        self.fc = nn.Linear(neurons, 3, dtype=DT)
        self.top = ToyLeaky(beta=0.7, threshold=0.3)
        if isinstance(self.chain, nn.Sequential) and isinstance(self.chain[0], nn.BatchNorm2d):
            with torch.no_grad():  # random running statistics, so eval mode is not the identity
                self.chain[0].running_mean.uniform_(-0.5, 0.5)
                self.chain[0].running_var.uniform_(0.5, 2.0)

    def forward(self, x, states):
        spikes, s1 = self.lif(self.chain(self.syn(x)), states[0])
        out, s2 = self.top(self.fc(spikes.flatten(1)), states[1])
        return out, (s1, s2), spikes


def _data(setting: str, seed: int = 0):
    gen = torch.Generator().manual_seed(seed)
    shape = SETTINGS[setting][2]
    if setting == "embedding":
        x = torch.randint(0, 7, (T, B), generator=gen)
    else:
        x = torch.rand(T, B, *shape, generator=gen, dtype=DT) * 2.0
    target = torch.randn(T, B, 3, generator=gen, dtype=DT)
    return x, target


def _runner(net, x, target, rates):
    def run():
        torch.manual_seed(11)  # the same dropout masks in every pass
        states = (None, None)
        for t in range(T):
            _out, states, spikes = net(x[t], states)
            rates.append(float(spikes.detach().mean()))
            yield ((states[1][0] - target[t]) ** 2).sum()

    return run


#: Weight gains that make the lower layer spike at a useful rate in every setting.
GAINS = {
    "conv-avgpool": 5.0,
    "conv-reflect-strided": 3.0,
    "conv-scale": 4.0,
    "conv-batchnorm-train": 0.3,
    "conv-batchnorm-eval": 3.0,
    "conv1d-maxpool": 3.0,
    "linear-shuffled-every-step": 3.0,
    "conv3d": 3.0,
    "linear-dropout": 3.0,
    "linear-batchnorm-eval": 4.0,
}


def _tuned(setting: str, cell: str) -> ChainNet:
    torch.manual_seed(3)
    net = ChainNet(setting, cell)
    with torch.no_grad():
        net.syn.weight.mul_(2.0 * GAINS.get(setting, 1.0) * (15.0 if cell == "norse-lif" else 1.0))
        net.fc.weight.mul_(3.0)
        if setting == "conv-avgpool":
            net.syn.bias.fill_(1.0)
        if setting == "linear-shuffled-every-step":
            net.syn.bias.fill_(1.5)
        if setting == "linear-batchnorm-eval":
            net.chain.bias.fill_(0.8)
        if setting == "conv-batchnorm-train":  # normalised currents: lower them by the affine
            net.chain[0].weight.fill_(0.6)
            net.chain[0].bias.fill_(-0.6)
    return net


CELLS = ["leaky", "zero-reset", "synaptic"]
NORSE = ["conv-maxpool", "conv-scale", "conv-dropout-maxpool", "linear-dropout", "embedding"]


@pytest.mark.parametrize(
    ("setting", "cell"),
    [(s, c) for s in SETTINGS for c in CELLS] + [(s, "norse-lif") for s in NORSE],
)
def test_chain_equals_oracle(setting, cell):
    net = _tuned(setting, cell)
    x, target = _data(setting)
    rates: list[float] = []
    run = _runner(net, x, target, rates)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # nothing is approximated, so nothing warns
        grads, owners, order = ostl_gradients(net, run)
    assert_spiking([sum(rates) / len(rates)], f"{setting}/{cell}")
    assert owners["syn.weight"] == "lif"
    for name, _p in net.chain.named_parameters():
        assert owners[f"chain.{name}"] == "lif", name
    reference = oracle_gradients(net, run, owners, order)
    errors = compare(grads, reference)
    assert max(errors.values()) <= TOL, errors


@pytest.mark.parametrize("setting", ["conv-maxpool", "linear-dropout", "embedding"])
def test_chain_differs_from_full_bptt_below_a_stateful_layer(setting):
    """Negative control: the lower layer's OSTL gradient is not BPTT's (the upper memory)."""
    net = _tuned(setting, "leaky")
    x, target = _data(setting)
    run = _runner(net, x, target, [])
    grads, _, _ = ostl_gradients(net, run)
    full = full_bptt(net, run)
    assert compare({"w": grads["syn.weight"]}, {"w": full["syn.weight"]})["w"] > 1e-4


@pytest.mark.parametrize("variant", ["eprop", "ostl-no-h"])
@pytest.mark.parametrize("setting", ["conv-maxpool", "linear-dropout"])
def test_chain_variants_equal_their_oracle(setting, variant):
    """Norse's LIFCell (whose reset is a differentiable gate) under e-prop and OSTL w/o H."""
    import norse.torch as norse

    net = _tuned(setting, "leaky")
    net.lif, net.top = norse.LIFCell(), norse.LICell()
    x, target = _data(setting)
    rates: list[float] = []
    gain = 4.0 if setting == "conv-maxpool" else 12.0

    def run():
        torch.manual_seed(11)
        states = (None, None)
        for t in range(T):
            spikes, s1 = net.lif(net.chain(net.syn(x[t])) * gain, states[0])
            out, s2 = net.top(net.fc(spikes.flatten(1)), states[1])
            states = (s1, s2)
            rates.append(float(spikes.detach().mean()))
            yield ((out - target[t]) ** 2).sum()

    grads, owners, order = ostl_gradients(net, run, variant=variant)
    assert_spiking([sum(rates) / len(rates)], f"{setting}/{variant}")
    reference = oracle_gradients(net, run, owners, order, variant=variant)
    assert max(compare(grads, reference).values()) <= TOL


@pytest.mark.parametrize("cell", ["synaptic", "zero-reset", "norse-lif"])
@pytest.mark.parametrize(
    "setting", ["conv-maxpool", "conv-scale", "conv-batchnorm-train", "linear-layernorm"]
)
def test_whole_sequence_backward_equals_per_step(setting, cell):
    """Per step, a single-state trace advances inside the backward; with one backward at the
    end every step's advance runs before the next step, out of place while snapshots wait."""
    net = _tuned(setting, cell)
    x, target = _data(setting)
    run = _runner(net, x, target, [])
    per_step, _, _ = ostl_gradients(net, run)
    whole, _, _ = ostl_gradients(net, run, per_step=False)
    assert max(compare(whole, per_step).values()) <= TOL


class TwoSynapses(nn.Module):
    """``lif(fc_a(x) + pool(conv_b(z)).flatten(1))``: two synapses summed into one current."""

    def __init__(self) -> None:
        super().__init__()
        self.fc_a = nn.Linear(4, 12, dtype=DT)
        self.conv_b = nn.Conv2d(1, 3, 3, dtype=DT)
        self.lif = ToyLeaky(beta=0.8, threshold=0.4, reset="zero")
        self.fc = nn.Linear(12, 2, dtype=DT)
        self.top = ToyLeaky(beta=0.7, threshold=0.3)

    def forward(self, x, z, states):
        current = self.fc_a(x) + F.max_pool2d(self.conv_b(z), 2).flatten(1)
        spikes, s1 = self.lif(current, states[0])
        out, s2 = self.top(self.fc(spikes), states[1])
        return out, (s1, s2), spikes


def test_sum_of_two_synapses_equals_oracle():
    torch.manual_seed(5)
    net = TwoSynapses()
    gen = torch.Generator().manual_seed(2)
    x = torch.rand(T, B, 4, generator=gen, dtype=DT) * 2
    z = torch.rand(T, B, 1, 6, 6, generator=gen, dtype=DT) * 2
    target = torch.randn(T, B, 2, generator=gen, dtype=DT)
    rates: list[float] = []

    def run():
        states = (None, None)
        for t in range(T):
            _out, states, spikes = net(x[t], z[t], states)
            rates.append(float(spikes.detach().mean()))
            yield ((states[1][0] - target[t]) ** 2).sum()

    grads, owners, order = ostl_gradients(net, run)
    assert owners["fc_a.weight"] == owners["conv_b.weight"] == "lif"
    assert_spiking([sum(rates) / len(rates)], "two synapses")
    reference = oracle_gradients(net, run, owners, order)
    assert max(compare(grads, reference).values()) <= TOL


def test_a_second_backward_through_an_advanced_step_is_refused():
    """The step's backward advanced the trace in place; a second one would read e_t."""
    net = _tuned("conv-maxpool", "zero-reset")
    x, _ = _data("conv-maxpool")
    with snn_ostl.OSTL(net) as learner:
        learner.reset()
        _, states, _ = net(x[0], (None, None))
        states[1][0].sum().backward()
        _, states, _ = net(x[1], states)
        loss = states[1][0].sum()
        loss.backward(retain_graph=True)
        with pytest.raises(snn_ostl.StateError, match="second backward"):
            loss.backward()
    with snn_ostl.OSTL(net, advance_in_backward=False) as learner:  # the way out
        learner.reset()
        _, states, _ = net(x[0], (None, None))
        states[1][0].sum().backward()
        _, states, _ = net(x[1], states)
        loss = states[1][0].sum()
        loss.backward(retain_graph=True)
        loss.backward()


def _summary_after_a_sequence(setting: str, cell: str) -> tuple[str, int]:
    """The learner's summary and trace bytes after one sequence with a backward per step."""
    net = _tuned(setting, cell)
    x, target = _data(setting)
    with snn_ostl.OSTL(net) as learner:
        learner.reset()
        for loss in _runner(net, x, target, [])():
            loss.backward()
        return learner.summary(), learner.trace_bytes()


def test_summary_names_the_chain_and_the_form():
    text, _ = _summary_after_a_sequence("linear-layernorm", "leaky")
    rows = {line.split()[2]: line for line in text.splitlines()[3:] if line.startswith("lif")}
    # a layer norm mixes the features: every weight entry reaches every neuron
    assert "full-jacobian" in rows["syn.weight"] and "through layer_norm" in rows["syn.weight"]
    assert "chain.weight" in rows


def test_a_current_computed_differently_later_is_refused():
    class Switch(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.syn = nn.Conv2d(1, 2, 3, dtype=DT)
            self.lif = ToyLeaky(reset="zero")
            self.pool = True

        def forward(self, x, state):
            z = self.syn(x)
            return self.lif(F.max_pool2d(z, 2) if self.pool else F.avg_pool2d(z, 2), state)

    net = Switch()
    x = torch.rand(3, 2, 1, 6, 6, dtype=DT)
    with snn_ostl.OSTL(net) as learner:
        learner.reset()
        _, state = net(x[0], None)
        net.pool = False
        with pytest.raises(snn_ostl.StateError, match=r"lif \(ToyLeaky\).*max_pool2d.*avg_pool2d"):
            net(x[1], state)


def test_one_synapse_feeding_two_layers_is_refused():
    class Fork(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.syn = nn.Linear(3, 4, dtype=DT)
            self.a = ToyLeaky(reset="zero")
            self.b = ToyLeaky(reset="zero")

        def forward(self, x):
            z = self.syn(x)
            return self.a(2 * z)[0] + self.b(3 * z)[0]

    net = Fork()
    with snn_ostl.OSTL(net) as learner:
        learner.reset()
        with pytest.raises(snn_ostl.StateError, match="syn feeds both a and b"):
            net(torch.rand(2, 3, dtype=DT))


def test_random_feedback_through_an_embedding_is_refused_up_front():
    net = ChainNet("embedding", "leaky")
    with pytest.raises(snn_ostl.UnsupportedModuleError, match=r"syn \(Embedding\).*random"):
        snn_ostl.OSTL(net, learning_signal="random")


@pytest.mark.parametrize("cell", ["zero-reset", "synaptic"])
def test_snapshots_are_released_without_the_cycle_collector(cell):
    """A step's snapshot goes when its graph goes, by reference counting alone: memory would
    otherwise grow until Python's cycle collector happens to run (a TraceBudgetError)."""
    import gc

    net = _tuned("conv-maxpool", cell)
    x, target = _data("conv-maxpool")
    pending = []
    gc.disable()
    try:
        with snn_ostl.OSTL(net) as learner:
            learner.reset()
            for loss in _runner(net, x, target, [])():
                loss.backward()
                pending.append(learner.pending_bytes)
    finally:
        gc.enable()
    assert pending[1] > 0
    assert max(pending[1:]) == pending[1], pending


def test_trace_bytes_is_what_the_summary_totals():
    text, total = _summary_after_a_sequence("conv-maxpool", "synaptic")
    line = next(line for line in text.splitlines() if line.startswith("total trace memory"))
    assert total > 0
    assert f"{total / 2**20:.2f} MiB" in line


def test_one_output_fed_to_two_neurons_is_refused():
    """``z = fc(x); a(z); b(z)``: the second neuron would train fc again with its own traces."""

    class Fork(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 4, dtype=DT)
            self.a = ToyLeaky()
            self.b = ToyLeaky(reset="zero")

        def forward(self, x):
            z = self.fc(x)
            return self.a(z)[0] + self.b(z)[0]

    with snn_ostl.OSTL(Fork()) as learner:
        learner.reset()
        with pytest.raises(snn_ostl.StateError, match="fc feeds both a and b"):
            learner.model(torch.rand(2, 3, dtype=DT))


def test_a_feature_extractor_with_batch_norm_below_is_listed_whole():
    """Conv -> BatchNorm -> ReLU feeding the layer's Linear: both are below it, both named."""

    class Front(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.conv = nn.Conv2d(1, 2, 3, dtype=DT)
            self.norm = nn.BatchNorm2d(2, dtype=DT)
            self.fc = nn.Linear(2 * 4 * 4, 5, dtype=DT)
            self.lif = ToyLeaky(reset="zero")

        def forward(self, x, state=None):
            h = F.relu(self.norm(self.conv(x))).flatten(1)
            return self.lif(self.fc(h), state)

    net = Front()
    x = torch.rand(2, 1, 6, 6, dtype=DT)
    with snn_ostl.OSTL(net), pytest.raises(snn_ostl.UnsupportedModuleError) as info:
        net(x)
    assert sorted(p.path for p in info.value.problems) == ["conv", "norm"]
    assert "norm (BatchNorm2d): it runs before the stateful layer lif" in str(info.value)
    with snn_ostl.OSTL(net, instantaneous_below=True) as learner:
        learner.reset()
        net(x)[0].sum().backward()
        summary = learner.summary()
    rows = {line.split()[2]: line for line in summary.splitlines()[3:] if len(line.split()) > 2}
    for name in ("conv.weight", "norm.weight", "norm.bias"):
        assert "approximation: below lif" in rows[name], name


# ----------------------------------------------------------------------------- flush_every
class _ConvIntoLIF(nn.Module):
    """A convolution straight into Norse LIFCell (or through ``10 *`` and a dropout), then a
    Linear into a second LIFCell: the convolution's per-synapse trace goes to a window."""

    def __init__(self, dims: int, between: bool) -> None:
        import norse.torch as nt

        super().__init__()
        conv = nn.Conv2d if dims == 2 else nn.Conv1d
        self.conv = conv(2, 3, 3, padding=1, dtype=DT)
        self.between = between
        self.drop = nn.Dropout(0.2)
        self.lif, self.lif2 = nt.LIFCell(), nt.LIFCell()
        self.fc = nn.Linear(3 * (25 if dims == 2 else 5), 2, dtype=DT)
        with torch.no_grad():
            self.conv.weight.mul_(2.0 if between else 20.0)

    def forward(self, x):
        s = s2 = None
        for frame in x:
            a = self.conv(frame)
            if self.between:
                a = self.drop(10 * a)
            z, s = self.lif(a, s)
            _, s2 = self.lif2(self.fc(z.flatten(1)), s2)
            yield s2.v, z


@pytest.mark.parametrize("dims", [2, 1])
@pytest.mark.parametrize("between", [False, True], ids=["direct", "scaled-dropout"])
@pytest.mark.parametrize("flush_every", [3, 16])
def test_a_convolution_window_adds_the_same_gradient(dims, between, flush_every):
    """flush_every > 1 on a convolution's per-synapse trace (positions folded into the batch
    of a Linear-style window): the oracle's gradient, and the window is really used."""
    pytest.importorskip("norse")
    torch.manual_seed(0)
    net = _ConvIntoLIF(dims, between)
    shape = (9, 3, 2, 5, 5) if dims == 2 else (9, 3, 2, 5)
    x = torch.rand(shape, generator=seeded(40), dtype=DT) * 2.0
    y = torch.randn(9, 3, 2, generator=seeded(41), dtype=DT)
    rates: list[float] = []

    def run():
        torch.manual_seed(3)  # the same dropout masks in every replay
        for (out, z), target in zip(net(x), y):
            rates.append(float(z.detach().mean()))
            yield (out - target).pow(2).sum()

    grads, owners, order = ostl_gradients(net, run, flush_every=flush_every)
    assert_spiking([sum(rates) / len(rates)], "conv layer")
    reference = oracle_gradients(net, run, owners, order)
    errors = compare(grads, reference)
    assert max(errors.values()) <= TOL, errors
    with snn_ostl.OSTL(net, flush_every=flush_every) as learner:
        next(iter(run())).backward()
        (weight,) = [g for g in learner.layers["lif"].groups if g.name == "conv.weight"]
        assert weight.window is not None
