"""Bad input gets a clear error: what, where (module path), why, how to fix."""

from __future__ import annotations

import pytest
import torch
from nets import StackNet, data
from torch import nn

import snn_ostl
from snn_ostl.errors import Problem


class Weird(nn.Module):
    """A parameterised module the learner knows nothing about."""

    def __init__(self):
        super().__init__()
        self.gain = nn.Parameter(torch.ones(8, dtype=torch.float64))

    def forward(self, x):
        return x * self.gain


def test_unsupported_modules_are_all_listed():
    net = nn.Sequential(Weird(), nn.LSTM(8, 4), snn_ostl.SNU(8, 4, dtype=torch.float64))
    with pytest.raises(snn_ostl.UnsupportedModuleError) as info:
        snn_ostl.OSTL(net)
    err = info.value
    assert isinstance(err, ValueError)
    paths = {p.path for p in err.problems}
    assert paths == {"0", "1"}
    text = str(err)
    assert "0 (Weird)" in text and "1 (LSTM)" in text
    assert "LSTMCell" in text and "strict=False" in text and "snn_ostl.SNU" in text
    assert not snn_ostl.is_attached(net)


def test_validate_returns_problems_without_raising():
    problems = snn_ostl.validate(nn.Sequential(Weird()))
    assert problems and isinstance(problems[0], Problem) and problems[0].path == "0"
    assert snn_ostl.validate(StackNet([8, 6])) == []


def test_strict_false_trains_unknown_module_instantaneously_and_says_so():
    net = nn.Sequential(Weird(), snn_ostl.SNU(8, 4, dtype=torch.float64))
    with snn_ostl.OSTL(net, strict=False) as learner:
        y, _ = net(torch.rand(2, 8, dtype=torch.float64))
        y.sum().backward()
        text = learner.summary()
    assert "0.gain" in text and "unknown module (strict=False)" in text
    assert net[0].gain.grad is not None


@pytest.mark.parametrize(("option", "value"), [("variant", "bptt"), ("learning_signal", "hebb")])
def test_bad_options_name_the_allowed_values(option, value):
    with pytest.raises(ValueError, match=rf"{option}={value!r}.*allowed values"):
        snn_ostl.OSTL(StackNet([8, 6]), **{option: value})


def test_a_constant_state_of_a_new_batch_starts_a_new_sequence():
    """A hand-made zero state is a constant: BPTT's gradient stops there, and so do the
    traces (no learner.reset() needed, no error for the new batch size)."""
    net = StackNet([8, 6])
    x3, x5 = torch.rand(3, 8, dtype=torch.float64), torch.rand(5, 8, dtype=torch.float64)

    def second_step_grads(first: bool, state_of):
        net.zero_grad(set_to_none=True)
        with snn_ostl.OSTL(net):
            if first:
                out, _ = net(x3, [None])
                out.sum().backward()
                net.zero_grad(set_to_none=True)
            out, _ = net(x5, [state_of(x5)])
            out.sum().backward()
        return [p.grad.clone() for p in net.parameters()]

    zero = second_step_grads(True, lambda x: net.cells[0].initial_state(x))
    fresh = second_step_grads(False, lambda x: None)
    for a, b in zip(zero, fresh):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_none_state_starts_a_new_sequence():
    """A module starting from None gets fresh traces, even without learner.reset()."""
    net = StackNet([8, 6], recurrent=True)
    x, target = data(steps=6)

    def grads_of_second_sequence(call_reset: bool):
        for p in net.parameters():
            p.grad = None
        with snn_ostl.OSTL(net) as learner:
            for seq in range(2):
                if call_reset:
                    learner.reset()
                if seq == 1:
                    for p in net.parameters():
                        p.grad = None
                states = [None]
                for t in range(6):
                    out, states = net(x[t] * (1 + seq), states)
                    ((out - target[t]) ** 2).sum().backward()
        return [p.grad.clone() for p in net.parameters()]

    for a, b in zip(grads_of_second_sequence(True), grads_of_second_sequence(False)):
        torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_reset_allows_a_new_batch():
    net = StackNet([8, 6])
    with snn_ostl.OSTL(net) as learner:
        net(torch.rand(3, 8, dtype=torch.float64), [None])
        learner.reset()
        net(torch.rand(5, 8, dtype=torch.float64), [None])


def test_wrong_state_shape_names_the_module():
    cell = snn_ostl.SNU(8, 6, dtype=torch.float64)
    x = torch.rand(3, 8, dtype=torch.float64)
    with snn_ostl.OSTL(cell):
        _, state = cell(x)
        bad = snn_ostl.SNUState(state.s[:, :4], state.y[:, :4])
        with pytest.raises(snn_ostl.StateError, match=r"<root> \(SNU\).*shape"):
            cell(x, bad)


def test_dtype_change_mid_sequence_names_the_module():
    net = StackNet([8, 6])
    x, _ = data()
    with snn_ostl.OSTL(net):
        _, states = net(x[0], [None])
        net.float()
        with pytest.raises(snn_ostl.StateError, match=r"cells\.0.*float32.*float64"):
            net(x[1].float(), [snn_ostl.SNUState(*(s.float() for s in states[0]))])


def test_device_mismatch_names_the_module():
    """A trace on one device and an input on another (meta stands in for a second device)."""
    net = StackNet([8, 6])
    x, _ = data()
    with snn_ostl.OSTL(net) as learner:
        _, states = net(x[0], [None])
        layer = learner.layers["cells.0"]
        layer.device = torch.device("meta")
        with pytest.raises(snn_ostl.StateError, match=r"cells\.0.*meta"):
            net(x[1], states)


def test_synapse_feeding_two_layers_is_refused():
    from toy_cells import ToyLeaky

    class Shared(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 4, dtype=torch.float64)
            self.a, self.b = ToyLeaky(), ToyLeaky()

        def forward(self, x):
            return self.a(self.fc(x))[0] + self.b(self.fc(x))[0]

    with (
        snn_ostl.OSTL(Shared()) as learner,
        pytest.raises(snn_ostl.StateError, match="fc feeds both"),
    ):
        learner.model(torch.rand(2, 4, dtype=torch.float64))


def test_subclass_of_an_adapted_cell_is_refused_not_skipped():
    class MySNU(snn_ostl.SNU):
        pass

    problems = snn_ostl.validate(nn.Sequential(MySNU(4, 3)))
    assert len(problems) == 1 and problems[0].path == "0"
    assert "subclasses SNU" in problems[0].why and "register_adapter" in problems[0].fix


def test_linear_below_a_cell_with_own_weights_is_refused_at_the_first_step():
    """Its exact eligibility is not kept: strict mode refuses it before any gradient."""
    net = StackNet([8, 6], front=nn.Sequential(nn.Linear(8, 8, dtype=torch.float64)))
    with snn_ostl.OSTL(net), pytest.raises(snn_ostl.UnsupportedModuleError) as info:
        net(torch.rand(2, 8, dtype=torch.float64), [None])
    text = str(info.value)
    assert "front.0 (Linear): it runs before the stateful layer cells.0" in text
    assert "instantaneous_below=True" in text


def test_linear_below_a_cell_with_own_weights_warns_when_allowed():
    """The opt-in approximation warns once, pointing at the user's line (not torch's)."""
    net = StackNet([8, 6], front=nn.Sequential(nn.Linear(8, 8, dtype=torch.float64)))
    with (
        snn_ostl.OSTL(net, instantaneous_below=True),
        pytest.warns(UserWarning, match=r"front\.0 runs before.*cells\.0") as record,
    ):
        net(torch.rand(2, 8, dtype=torch.float64), [None])
    # the model's own forward, where it calls the layer (tests/engine/nets.py here)
    assert record[0].filename.endswith("nets.py")


def test_a_frozen_linear_below_is_not_refused():
    net = StackNet([8, 6], front=nn.Sequential(nn.Linear(8, 8, dtype=torch.float64)))
    net.front.requires_grad_(False)
    with snn_ostl.OSTL(net):
        net(torch.rand(2, 8, dtype=torch.float64), [None])
