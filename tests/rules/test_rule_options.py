"""The ``rule=`` option itself: names, objects, conflicts, summaries, checkpoints, misuse."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import snn_ostl
from snn_ostl.errors import StateError, UnsupportedModuleError
from snn_ostl.rules import DECOLLE, EProp, SnAp, SuperSpike, make_rule, rule_names

DT = torch.float64


class TwoLayers(nn.Module):
    """Linear -> SNU -> Linear -> SNU, float64, explicit states."""

    def __init__(self, recurrent: bool = False) -> None:
        super().__init__()
        self.l1 = snn_ostl.SNU(3, 5, recurrent=recurrent, threshold=0.3, dtype=DT)
        self.l2 = snn_ostl.SNU(5, 2, threshold=0.3, dtype=DT)
        with torch.no_grad():  # strong enough that both layers spike
            self.l1.weight.abs_()
            self.l2.weight.abs_().mul_(2.0)

    def forward(self, x, states):
        y1, s1 = self.l1(x, states[0])
        y2, s2 = self.l2(y1, states[1])
        return y2, [s1, s2]


def _sequence(net, learner, steps=6, seed=0):
    gen = torch.Generator().manual_seed(seed)
    states = [None, None]
    for _ in range(steps):
        out, states = net(torch.rand(2, 3, generator=gen, dtype=DT) * 2, states)
        loss = ((out - 0.5) ** 2).sum()
        if isinstance(learner.rule, DECOLLE):
            loss = loss + learner.rule.local_loss(torch.tensor([0, 1]))
        loss.backward()


def test_every_registered_name_builds_its_rule():
    names = rule_names()
    assert names[0] == "ostl"
    for name in names:
        assert make_rule(name).name == name
    assert {"eprop-adaptive", "rflo", "snap-2", "decolle", "superspike"} <= set(names)


def test_unknown_name_and_wrong_type_are_refused_with_the_list():
    with pytest.raises(ValueError, match="known rules: 'ostl'"):
        snn_ostl.OSTL(TwoLayers(), rule="eprop")
    with pytest.raises(TypeError, match=r"rule name or a snn_ostl\.rules\.Rule"):
        snn_ostl.OSTL(TwoLayers(), rule=3)


def test_rule_and_engine_settings_must_agree():
    with pytest.raises(ValueError, match="rule='rflo' and variant='eprop' disagree"):
        snn_ostl.OSTL(TwoLayers(), rule="rflo", variant="eprop")
    learner = snn_ostl.OSTL(TwoLayers(), rule="rflo", variant="ostl-no-h")
    assert learner.learning_signal == "random"
    learner.detach()
    # the default rule takes the engine settings as they were always given
    learner = snn_ostl.OSTL(TwoLayers(), variant="eprop", learning_signal="direct")
    assert learner.rule.name == "eprop/direct"
    learner.detach()


@pytest.mark.parametrize(
    ("rule", "options"),
    [
        (EProp, {"feedback": "mirror"}),
        (EProp, {"feedback_decay": 1.5}),
        (SnAp, {"n": 3}),
        (DECOLLE, {"loss": "hinge"}),
        (DECOLLE, {"outputs": 0}),
        (SuperSpike, {"feedback": "broadcast"}),
        (SuperSpike, {"tau_rise": 0}),
    ],
)
def test_bad_rule_options_are_refused(rule, options):
    with pytest.raises(ValueError):
        rule(**options)


@pytest.mark.parametrize("name", ["eprop-random", "rflo", "snap-1", "decolle"])
def test_summary_names_the_rule(name):
    net = TwoLayers(recurrent=True)
    rule = DECOLLE(outputs=2) if name == "decolle" else name
    with snn_ostl.OSTL(net, rule=rule) as learner:
        _sequence(net, learner)
        first = learner.summary().splitlines()[0]
    assert f"rule={name}" in first


def test_snap_rows_say_what_they_keep():
    net = TwoLayers(recurrent=True)
    with snn_ostl.OSTL(net, rule="snap-1") as learner:
        _sequence(net, learner)
        text = learner.summary()
    assert "snap-1 eligibility (entries reached within 1 step(s))" in text


def test_adaptive_feedback_follows_the_weight_it_replaces():
    """After an optimizer step, B = B_0 + ΔW (and with decay, (1 - decay) B_0 + ΔW)."""
    for decay in (0.0, 0.1):
        torch.manual_seed(0)
        net = TwoLayers()
        learner = snn_ostl.OSTL(net, rule=EProp(feedback="adaptive", feedback_decay=decay))
        opt = torch.optim.SGD(net.parameters(), lr=0.5)
        _sequence(net, learner)
        assert net.l1.weight.grad.abs().max() > 0  # the error reached l1 through B
        start = learner.signals.matrices["l2"].clone()
        before = net.l2.weight.detach().clone()
        opt.step()
        learner.reset()
        _sequence(net, learner, steps=1)
        moved = net.l2.weight.detach() - before
        assert moved.abs().max() > 0
        torch.testing.assert_close(
            learner.signals.matrices["l2"], (1 - decay) * start + moved, rtol=0, atol=1e-15
        )
        learner.detach()


def test_checkpoint_carries_the_rule_and_refuses_another():
    torch.manual_seed(0)
    net = TwoLayers()
    learner = snn_ostl.OSTL(net, rule=DECOLLE(outputs=2, seed=4))
    _sequence(net, learner)
    saved = learner.state_dict()
    readouts = {k: v.clone() for k, v in learner.rule.readouts.items()}
    learner.detach()
    again = snn_ostl.OSTL(net, rule=DECOLLE(outputs=2, seed=99))
    again.load_state_dict(saved)
    for path, matrix in readouts.items():
        torch.testing.assert_close(again.rule.readouts[path], matrix, rtol=0, atol=0)
    again.detach()
    other = snn_ostl.OSTL(net, rule="eprop-symmetric")
    with pytest.raises(ValueError, match="rule='decolle'"):
        other.load_state_dict(saved)
    other.detach()


def test_snap_refuses_recurrence_written_in_the_forward():
    snn = pytest.importorskip("snntorch")

    class Hand(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc_in = nn.Linear(3, 4)
            self.fc_rec = nn.Linear(4, 4)
            self.lif = snn.Leaky(beta=0.9)

        def forward(self, x, spk, mem):
            return self.lif(self.fc_in(x) + self.fc_rec(spk), mem)

    net = Hand()
    with snn_ostl.OSTL(net, rule="snap-1") as learner:
        learner.reset()
        spk, mem = torch.zeros(2, 4), None
        with pytest.raises(UnsupportedModuleError, match="snap-1 masks"):
            for _ in range(3):
                spk, mem = net(torch.rand(2, 3) * 3, spk, mem)
                spk.sum().backward()


class SpikingPair(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc1 = nn.Linear(3, 4, dtype=DT)
        self.l1 = snn_ostl.SNU(4, 4, threshold=0.3, dtype=DT)
        self.l1.weight.data = torch.eye(4, dtype=DT)

    def forward(self, x, state):
        return self.l1(self.fc1(x), state)


def test_superspike_refuses_a_neuron_with_weights_inside():
    with pytest.raises(UnsupportedModuleError, match="weights live inside the neuron"):
        snn_ostl.OSTL(SpikingPair(), rule="superspike")


def _norse_pair() -> nn.Module:
    """Linear -> Norse LIFCell, called with an explicit state."""
    norse = pytest.importorskip("norse.torch")

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(3, 2, dtype=DT)
            self.lif = norse.LIFCell()

        def forward(self, x, state):
            return self.lif(self.fc(x), state)

    return Net()


def test_superspike_refuses_a_loss_it_does_not_see_and_a_second_call():
    net = _norse_pair()
    with snn_ostl.OSTL(net, rule="superspike") as learner:
        out, state = net(torch.rand(2, 3, dtype=DT), None)
        with pytest.raises(StateError, match="reached this layer through the model's graph"):
            out.sum().backward()
        out, state = net(torch.rand(2, 3, dtype=DT), state)
        learner.rule.van_rossum(out, torch.zeros_like(out)).backward()
        with pytest.raises(StateError, match="called twice for the same step"):
            learner.rule.van_rossum(out, torch.zeros_like(out))


@pytest.mark.parametrize("rule", ["snap-1", "superspike"])
def test_rules_writing_grad_themselves_refuse_several_processes(rule, monkeypatch):
    """SnAp-n and SuperSpike add terms to .grad outside the backward pass that DDP averages:
    with several ranks they refuse at the first step instead of training each rank apart."""
    import snn_ostl.hooks.distributed as distributed

    monkeypatch.setattr(distributed, "running_distributed", lambda: True)
    net = TwoLayers(recurrent=True) if rule == "snap-1" else _norse_pair()
    refused = pytest.raises(UnsupportedModuleError, match="DistributedDataParallel")
    with snn_ostl.OSTL(net, rule=rule) as learner, refused:
        if rule == "snap-1":
            _sequence(net, learner, steps=1)
        else:
            net(torch.rand(2, 3, dtype=DT), None)


def test_snap_on_snntorch_rleaky_equals_ostl_with_its_dense_recurrence():
    """snnTorch's RLeaky keeps its recurrent weight in a submodule (``recurrent.weight``);
    all-to-all, SnAp-2 reaches every unit and gives the exact traces, SnAp-1 does not."""
    snn = pytest.importorskip("snntorch")

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.fc = nn.Linear(5, 6)
            self.lif = snn.RLeaky(beta=0.9, linear_features=6)
            self.out = nn.Linear(6, 2)

        def forward(self, x, spk, mem):
            spk, mem = self.lif(self.fc(x), spk, mem)
            return self.out(spk), spk, mem

    torch.manual_seed(0)
    net = Net()
    x = torch.rand(8, 2, 5) * 2

    def grads(rule):
        net.zero_grad(set_to_none=True)
        with snn_ostl.OSTL(net, rule=rule) as learner:
            learner.reset()
            spk, mem = net.lif.init_rleaky()
            spikes = 0.0
            for t in range(8):
                out, spk, mem = net(x[t], spk, mem)
                spikes += float(spk.detach().sum())
                out.sum().backward()
        assert spikes > 0
        return {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}

    exact, snap2, snap1 = grads("ostl"), grads("snap-2"), grads("snap-1")
    for name, value in exact.items():
        torch.testing.assert_close(snap2[name], value, rtol=1e-5, atol=1e-7)
    assert not torch.allclose(snap1["lif.recurrent.weight"], exact["lif.recurrent.weight"])


def test_trace_bytes_counts_a_rules_own_traces():
    net = _norse_pair()
    with snn_ostl.OSTL(net, rule="superspike") as learner:
        out, _ = net(torch.rand(2, 3, dtype=DT), None)
        learner.rule.van_rossum(out, torch.zeros_like(out)).backward()
        assert learner.trace_bytes() == learner.rule.trace_bytes() > 0
        assert learner.summary().splitlines()[-1].startswith("total trace memory: 0.00 MiB")


@pytest.mark.parametrize("rule", ["snap-1", "snap-2"])
def test_snap_whole_sequence_backward_and_checkpoint_resume_give_the_per_step_gradient(rule):
    """SnAp reads each step's history at that step's state: one backward over the summed
    losses, and a checkpoint saved mid-sequence and loaded into a fresh learner, give the
    per-step gradients (no warning about the hooks when the state is saved)."""
    import io
    import warnings

    from rule_nets import N_IN, RecurrentSNUNet, T

    torch.manual_seed(0)
    net = RecurrentSNUNet()
    x = torch.rand(T, 2, N_IN, dtype=DT) * 2
    y = torch.rand(T, 2, 3, dtype=DT)

    def run(mode):
        net.zero_grad(set_to_none=True)
        learner = snn_ostl.OSTL(net, rule=rule)
        state, losses = None, []
        for t in range(T):
            if mode == "resume" and t == T // 2:
                buffer = io.BytesIO()
                with warnings.catch_warnings():
                    warnings.simplefilter("error")
                    torch.save({"learner": learner.state_dict(), "state": state}, buffer)
                learner.detach()
                learner = snn_ostl.OSTL(net, rule=rule)
                buffer.seek(0)
                saved = torch.load(buffer, weights_only=False)
                learner.load_state_dict(saved["learner"])
                state = saved["state"]
            out, state = net(x[t], state)
            loss = ((out - y[t]) ** 2).sum()
            if mode == "whole":
                losses.append(loss)
            else:
                loss.backward()
        if mode == "whole":
            torch.stack(losses).sum().backward()
        learner.detach()
        return {n: p.grad.clone() for n, p in net.named_parameters()}

    per_step = run("step")
    for mode in ("whole", "resume"):
        other = run(mode)
        for name, value in per_step.items():
            torch.testing.assert_close(other[name], value, rtol=1e-12, atol=1e-14)


def test_snap_terms_pass_the_parameters_own_hooks():
    """Norse's LIFRecurrentCell zeros its autapses' gradient in a hook on the recurrent
    weights: SnAp's history terms go through that hook too, so dense SnAp-2 is exact OSTL and
    SnAp-1 leaves the diagonal at zero."""
    nt = pytest.importorskip("norse.torch")

    class Net(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.rec = nt.LIFRecurrentCell(4, 6, autapses=False).double()
            self.out = nn.Linear(6, 2, dtype=DT)
            with torch.no_grad():
                self.rec.input_weights.mul_(20.0)
                self.rec.recurrent_weights.mul_(5.0)

        def forward(self, x, state):
            z, state = self.rec(x, state)
            return self.out(z), z, state

    torch.manual_seed(0)
    net = Net()
    x = torch.rand(10, 3, 4, dtype=DT)

    def grads(rule):
        net.zero_grad(set_to_none=True)
        spikes = 0.0
        with snn_ostl.OSTL(net, rule=rule):
            state = None
            for t in range(10):
                out, z, state = net(x[t], state)
                spikes += float(z.detach().sum())
                out.sum().backward()
        assert 0 < spikes < 10 * 3 * 6
        return {n: p.grad.clone() for n, p in net.named_parameters()}

    exact, snap2, snap1 = grads("ostl"), grads("snap-2"), grads("snap-1")
    for name, value in exact.items():
        torch.testing.assert_close(snap2[name], value, rtol=1e-12, atol=1e-14)
    diagonal = snap1["rec.recurrent_weights"].diagonal()
    assert torch.equal(diagonal, torch.zeros_like(diagonal))
    assert not torch.allclose(snap1["rec.recurrent_weights"], exact["rec.recurrent_weights"])
