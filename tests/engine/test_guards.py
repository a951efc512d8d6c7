"""Misuse that used to give a wrong gradient with no error: now exact, or a typed error.

Each test plays what a user does (freeze a weight, reset with snnTorch's own utility, take one
step under ``torch.no_grad()``, catch an error and go on, copy the model...) and compares the
learner's gradient with the oracle of :mod:`snn_ostl.testing` run on the very same closure, or
expects the error that names the module. snnTorch's spikes are float32 (tolerance 1e-4); Norse
runs in float64 (1e-10).
"""

from __future__ import annotations

import copy

import pytest
import torch
from conftest import assert_spiking, seeded
from nets import add_norse_pair
from torch import nn

pytest.importorskip("snntorch")
pytest.importorskip("norse")

import snntorch as snn
from snntorch import utils as snn_utils

import snn_ostl
from snn_ostl.testing import compare, oracle_gradients, ostl_gradients

T, B = 8, 4
TOL = {torch.float32: 1e-4, torch.float64: 1e-10}


class SnnMLP(nn.Module):
    """Two Linear -> Leaky layers, explicit membranes, as in snnTorch's tutorials."""

    def __init__(self, hidden: bool = False) -> None:
        super().__init__()
        self.fc1, self.fc2 = nn.Linear(5, 7), nn.Linear(7, 3)
        self.hidden = hidden
        self.lif1 = snn.Leaky(beta=0.9, init_hidden=hidden)
        self.lif2 = snn.Leaky(beta=0.8, init_hidden=hidden, output=hidden)
        with torch.no_grad():
            self.fc1.weight.mul_(3.0)
            self.fc2.weight.mul_(3.0)
        self.rates: list[float] = []

    def step(self, x, m1, m2):
        if self.hidden:
            s1 = self.lif1(self.fc1(x))
            _, m2 = self.lif2(self.fc2(s1))
        else:
            s1, m1 = self.lif1(self.fc1(x), m1)
            _, m2 = self.lif2(self.fc2(s1), m2)
        self.rates.append(float(s1.detach().mean()))
        return m1, m2

    def forward(self, x):
        m1 = m2 = None
        if not self.hidden:
            m1, m2 = self.lif1.init_leaky(), self.lif2.init_leaky()
        for frame in x:
            m1, m2 = self.step(frame, m1, m2)
            yield m2


class NorseMLP(nn.Module):
    """Linear -> LIFCell -> Linear -> LIFCell in float64, Norse's own style."""

    def __init__(self) -> None:
        super().__init__()
        add_norse_pair(self)

    def forward(self, x):
        s1 = s2 = None
        for frame in x:
            z1, s1 = self.lif1(self.fc1(frame), s1)
            _, s2 = self.lif2(self.fc2(z1), s2)
            yield s2.v


def _data(dtype=torch.float32, seed=0):
    x = torch.rand(T, B, 5, generator=seeded(seed), dtype=dtype) * 2.0
    y = torch.randn(T, B, 3, generator=seeded(seed + 1), dtype=dtype)
    return x, y


def _run(net, x, y):
    return lambda: ((out - target).pow(2).sum() for out, target in zip(net(x), y))


def _grads(net):
    return {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}


def _oracle(net, run):
    """The oracle on ``run``, with a throwaway learner to learn the layers' order."""
    _, owners, order = ostl_gradients(net, run)
    return oracle_gradients(net, run, owners, order)


def _assert_exact(grads, reference, dtype=torch.float32):
    assert set(grads) == set(reference), (set(grads), set(reference))
    errors = compare(grads, reference)
    assert max(errors.values()) <= TOL[dtype], errors


# ------------------------------------------------------------------------ freezing, replacing
def test_frozen_synapse_weight_with_trained_bias_is_exact():
    """snnTorch Leaky's fastest path rode the bias on the weight's substitution."""
    net = SnnMLP()
    net.fc1.weight.requires_grad_(False)
    x, y = _data()
    grads, _, _ = ostl_gradients(net, _run(net, x, y))
    assert "fc1.weight" not in grads
    _assert_exact(grads, _oracle(net, _run(net, x, y)))
    assert_spiking([sum(net.rates) / len(net.rates)], "Leaky")


@pytest.mark.parametrize("change", ["unfreeze", "freeze", "replace"])
@pytest.mark.parametrize("framework", ["snntorch", "norse"])
def test_parameters_changed_between_sequences_are_planned_again(framework, change):
    net = SnnMLP() if framework == "snntorch" else NorseMLP()
    dtype = torch.float32 if framework == "snntorch" else torch.float64
    x, y = _data(dtype)
    if change == "unfreeze":
        net.fc1.weight.requires_grad_(False)
    with snn_ostl.OSTL(net) as learner:
        for loss in _run(net, x, y)():
            loss.backward()
        if change == "replace":
            net.fc1.weight = nn.Parameter(net.fc1.weight.detach() * 1.1)
        else:
            net.fc1.weight.requires_grad_(change == "unfreeze")
        net.zero_grad(set_to_none=True)
        learner.reset()
        for loss in _run(net, x, y)():
            loss.backward()
        summary = str(learner.summary())
    grads = _grads(net)
    assert ("fc1.weight" in grads) == (change != "freeze")
    assert ("fc1.weight" in summary) == (change != "freeze")
    _assert_exact(grads, _oracle(net, _run(net, x, y)), dtype)


@pytest.mark.parametrize("change", ["unfreeze", "replace"])
def test_parameters_changed_within_a_sequence_are_refused(change):
    net = SnnMLP()
    x, y = _data()
    if change == "unfreeze":
        net.fc2.weight.requires_grad_(False)
    with snn_ostl.OSTL(net):
        losses = _run(net, x, y)()
        for t, loss in enumerate(losses):
            loss.backward()
            if t == 2:
                if change == "replace":
                    net.fc2.weight = nn.Parameter(net.fc2.weight.detach().clone())
                else:
                    net.fc2.weight.requires_grad_(True)
                with pytest.raises(snn_ostl.StateError, match=r"lif2 \(Leaky\).*fc2\.weight"):
                    next(losses)
                break


# ------------------------------------------------------------------------ the state
@pytest.mark.parametrize("how", ["snntorch-utils-reset", "reset-mem", "fresh-zeros"])
def test_a_new_sequence_without_learner_reset_starts_fresh(how, monkeypatch):
    """snnTorch's own resets (and fresh zeros) start the traces again, as learner.reset() does."""
    net = SnnMLP(hidden=how != "fresh-zeros")
    # snnTorch's utils.reset walks every init_hidden neuron of the process: only these two
    monkeypatch.setattr(snn.SpikingNeuron, "instances", [net.lif1, net.lif2])
    x, y = _data()
    x2, y2 = _data(seed=7)
    with snn_ostl.OSTL(net):
        for loss in _run(net, x, y)():
            loss.backward()
        net.zero_grad(set_to_none=True)
        if how == "snntorch-utils-reset":
            snn_utils.reset(net)
        elif how == "reset-mem":
            net.lif1.reset_mem()
            net.lif2.reset_mem()
        for loss in _run(net, x2, y2)():  # "fresh-zeros": the forward's init_leaky()
            loss.backward()
    grads = _grads(net)
    _assert_exact(grads, _oracle(net, _run(net, x2, y2)))


def _with_no_grad_step(net, x, y, at: int):
    """One step taken under torch.no_grad() in the middle of the sequence (no loss there)."""

    def run():
        m1 = m2 = None
        for t, (frame, target) in enumerate(zip(x, y)):
            if t == at:
                with torch.no_grad():
                    z1, m1 = net.lif1(net.fc1(frame), m1)
                    _, m2 = net.lif2(net.fc2(z1), m2)
                continue
            z1, m1 = net.lif1(net.fc1(frame), m1)
            _, m2 = net.lif2(net.fc2(z1), m2)
            yield (m2.v - target).pow(2).sum()

    return run


def test_a_step_under_no_grad_cuts_the_traces_as_it_cuts_the_graph():
    net = NorseMLP()
    x, y = _data(torch.float64)
    run = _with_no_grad_step(net, x, y, at=3)
    grads, _, _ = ostl_gradients(net, run)
    _assert_exact(grads, _oracle(net, run), torch.float64)


def test_a_state_changed_by_the_model_is_refused():
    net = NorseMLP()
    x, _ = _data(torch.float64)
    with snn_ostl.OSTL(net):
        _, s1 = net.lif1(net.fc1(x[0]))
        halved = type(s1)(*(t * 0.5 for t in s1))
        with pytest.raises(snn_ostl.StateError, match=r"lif1 \(LIFCell\).*returned"):
            net.lif1(net.fc1(x[1]), halved)


def test_a_caught_error_leaves_the_traces_as_they_were():
    """A call that raises (here a state that does not fit the input: the adapter's
    StateError, raised after the synapse ran) is not a step."""
    net = SnnMLP()
    x, y = _data()
    caught = []

    def run():
        m1, m2 = net.lif1.init_leaky(), net.lif2.init_leaky()
        for t, (frame, target) in enumerate(zip(x, y)):
            if t == 3:
                try:  # (plain snnTorch, in the oracle's run, does not raise)
                    net.lif1(net.fc1(frame)[:2], m1.expand(B, -1)[:3])
                except snn_ostl.StateError:
                    caught.append(t)
            m1, m2 = net.step(frame, m1, m2)
            yield (m2 - target).pow(2).sum()

    grads, _, _ = ostl_gradients(net, run)
    assert caught == [3]
    _assert_exact(grads, _oracle(net, run))


def test_a_synapse_called_twice_before_its_neuron_counts_once():
    """fc1 called once for logging, then again for the step: the last call feeds the neuron."""
    net = SnnMLP()
    x, y = _data()

    def run():
        m1, m2 = net.lif1.init_leaky(), net.lif2.init_leaky()
        for frame, target in zip(x, y):
            net.fc1(frame * 0.5).detach()  # a probe the user looks at
            m1, m2 = net.step(frame, m1, m2)
            yield (m2 - target).pow(2).sum()

    grads, _, _ = ostl_gradients(net, run)
    _assert_exact(grads, _oracle(net, run))


def test_dtype_change_between_sequences_needs_only_reset():
    net = NorseMLP()
    x, y = _data(torch.float64)
    with snn_ostl.OSTL(net) as learner:
        for loss in _run(net, x, y)():
            loss.backward()
        net.float()
        learner.reset()
        net.zero_grad(set_to_none=True)
        xf, yf = x.float(), y.float()
        for loss in _run(net, xf, yf)():
            loss.backward()
    grads = _grads(net)
    _assert_exact(grads, _oracle(net, _run(net, xf, yf)), torch.float32)


# ------------------------------------------------------------------------ the model object
def test_a_deep_copy_of_an_attached_model_is_a_plain_model():
    net = NorseMLP()
    x, y = _data(torch.float64)
    plain = copy.deepcopy(net)  # before attaching: the reference for the copy
    with snn_ostl.OSTL(net):
        twin = copy.deepcopy(net)
        total = 0
        for loss, twin_loss in zip(_run(net, x, y)(), _run(twin, x, y)()):
            loss.backward()  # the original, online
            total = total + twin_loss
        total.backward()  # the copy: plain BPTT through the whole sequence
        grads = _grads(net)
    torch.stack(list(_run(plain, x, y)())).sum().backward()
    _assert_exact(_grads(twin), _grads(plain), torch.float64)
    _assert_exact(grads, _oracle(net, _run(net, x, y)), torch.float64)


def test_attaching_to_the_neuron_alone_is_refused():
    """OSTL(model.lif1) cannot see fc1, whose parameters feed the neuron's current."""
    net = SnnMLP()
    x, y = _data()
    with snn_ostl.OSTL(net.lif1), pytest.raises(snn_ostl.ConfigurationError, match="OSTL\\(model"):
        for loss in _run(net, x, y)():
            loss.backward()


@pytest.mark.parametrize("device", ["cpu"])
def test_autocast_is_refused(device):
    net = SnnMLP()
    x, y = _data()
    autocast = torch.autocast(device, dtype=torch.bfloat16)
    refused = pytest.raises(snn_ostl.ConfigurationError, match=r"lif1 \(Leaky\).*autocast")
    with snn_ostl.OSTL(net), autocast, refused:
        next(iter(_run(net, x, y)()))


def test_one_module_stepped_for_two_streams_is_refused():
    """One neuron module used for two interleaved sequences: the traces follow one."""
    net = SnnMLP()
    x, _ = _data()
    with snn_ostl.OSTL(net):
        ma, mb = net.lif1.init_leaky(), net.lif1.init_leaky()
        with pytest.raises(snn_ostl.StateError, match=r"lif1 \(Leaky\).*two streams"):
            for frame in x:
                _, ma = net.lif1(net.fc1(frame), ma)
                _, mb = net.lif1(net.fc1(frame * 0.5), mb)


# ------------------------------------------------------------------------ several learners
def _windowed_run(net, x, y, optimizer, between=lambda: None):
    """Per-step backward and optimizer step (lr 0: the gradient accumulates, the weights stay)."""
    with snn_ostl.OSTL(net, flush_every=4) as learner:
        for loss in _run(net, x, y)():
            between()
            loss.backward()
            optimizer.step()
        learner.flush()
    return _grads(net)


def test_another_models_optimizer_step_does_not_flush_a_learner():
    """The flush runs before the steps of the optimizers that hold the learner's parameters."""
    net, other = NorseMLP(), NorseMLP()
    x, y = _data(torch.float64)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.0)
    other_optimizer = torch.optim.SGD(other.parameters(), lr=0.0)
    with snn_ostl.OSTL(other, flush_every=4):
        # other's optimizer steps between net's forward and backward, at every step
        grads = _windowed_run(net, x, y, optimizer, between=other_optimizer.step)
    _assert_exact(grads, _oracle(net, _run(net, x, y)), torch.float64)


def test_two_learners_in_two_threads_give_what_each_gives_alone():
    import threading

    nets = [NorseMLP(), NorseMLP()]
    data = [_data(torch.float64, seed=s) for s in (3, 9)]
    results: dict[int, dict] = {}
    barrier = threading.Barrier(2)

    def work(k: int) -> None:
        net, (x, y) = nets[k], data[k]
        optimizer = torch.optim.SGD(net.parameters(), lr=0.0)
        barrier.wait()
        results[k] = _windowed_run(net, x, y, optimizer, between=lambda: None)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=60)
    for k in range(2):
        net, (x, y) = nets[k], data[k]
        _assert_exact(results[k], _oracle(net, _run(net, x, y)), torch.float64)


# ------------------------------------------------------------------------ torch.compile
class _StepNet(nn.Module):
    """One time step per call, the shape torch.compile is usually applied to."""

    def __init__(self) -> None:
        super().__init__()
        self.net = SnnMLP()

    def forward(self, frame, m1, m2):
        return self.net.step(frame, m1, m2)


@pytest.mark.parametrize("order", ["compile-then-attach", "attach-then-compile"])
def test_torch_compile_before_or_after_attaching_is_exact(order):
    import torch._dynamo

    torch._dynamo.reset()
    model = _StepNet()
    inner = model.net
    x, y = _data()

    def run(step_fn):
        def sequence():
            m1, m2 = inner.lif1.init_leaky(), inner.lif2.init_leaky()
            for frame, target in zip(x[:4], y[:4]):
                m1, m2 = step_fn(frame, m1, m2)
                yield (m2 - target).pow(2).sum()

        return sequence

    if order == "compile-then-attach":
        compiled = torch.compile(model)
        learner = snn_ostl.OSTL(compiled)
    else:
        learner = snn_ostl.OSTL(model)
        compiled = torch.compile(model)
    try:
        for loss in run(compiled)():
            loss.backward()
    finally:
        learner.detach()
    grads = _grads(model)
    model.zero_grad(set_to_none=True)
    _assert_exact(grads, _oracle(model, run(model)))


# ------------------------------------------------------------------------ .grad between flushes
@pytest.mark.parametrize("touch", ["clip", "zero_grad", "manual-update"])
def test_touching_grad_before_the_flush_is_refused(touch):
    """With flush_every > 1 some history terms wait for a flush; clipping or zeroing .grad
    before it would cut them off the gradient they belong to."""
    net = NorseMLP()
    x, y = _data(torch.float64)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.0)
    with snn_ostl.OSTL(net, flush_every=4):
        losses = _run(net, x, y)()
        for _ in range(3):
            next(losses).backward()
        if touch == "clip":
            nn.utils.clip_grad_norm_(net.parameters(), 0.1)
        elif touch == "zero_grad":
            optimizer.zero_grad()
        else:
            with torch.no_grad():
                net.fc1.weight.grad.mul_(0.5)
        with pytest.raises(snn_ostl.StateError, match=r"lif1: the \.grad of fc1\.weight"):
            optimizer.step()


def test_clipping_after_learner_flush_is_exact():
    net = NorseMLP()
    x, y = _data(torch.float64)
    optimizer = torch.optim.SGD(net.parameters(), lr=0.0)
    with snn_ostl.OSTL(net, flush_every=4) as learner:
        for loss in _run(net, x, y)():
            loss.backward()
        learner.flush()
        nn.utils.clip_grad_norm_(net.parameters(), 0.1)
        optimizer.step()
    grads = _grads(net)
    reference = _oracle(net, _run(net, x, y))
    total = torch.cat([g.flatten() for g in reference.values()]).norm()
    clipped = {n: g * (0.1 / (total + 1e-6)) for n, g in reference.items()}
    _assert_exact(grads, clipped, torch.float64)


def test_a_restart_by_a_constant_state_is_named_as_such():
    """A call that received a constant state restarted the traces and then failed (here in a
    forward pre-hook of the user's); the next call hands the state returned before, with its
    graph: the error says which call started the new sequence, not learner.reset()."""
    net = NorseMLP()
    x, _ = _data(torch.float64)
    with snn_ostl.OSTL(net) as learner:
        z1, s1 = net.lif1(net.fc1(x[0]))
        (net.lif2(net.fc2(z1))[1].v.sum()).backward()

        def fail(module, args):
            raise RuntimeError("the user's own check")

        handle = net.lif1.register_forward_pre_hook(fail)
        with pytest.raises(RuntimeError, match="own check"):
            net.lif1(net.fc1(x[1]), type(s1)(*(t.detach() * 0 for t in s1)))
        handle.remove()
        with pytest.raises(snn_ostl.StateError, match="an earlier call of this module"):
            net.lif1(net.fc1(x[2]), s1)
        learner.reset()
        z1, s1 = net.lif1(net.fc1(x[0]))
        learner.reset()
        with pytest.raises(snn_ostl.StateError, match=r"learner\.reset\(\) started"):
            net.lif1(net.fc1(x[1]), s1)
