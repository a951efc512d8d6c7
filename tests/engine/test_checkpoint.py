"""Checkpoint mid-sequence, resume in a fresh model and learner: the same gradients.

Each setting runs a sequence under a learner, saves the learner's state (and the model's
parameters and the user's own state tensors) through ``torch.save`` after step ``SPLIT``, then
continues two ways: the original objects, and a freshly built model and learner that load the
checkpoint. The gradients of the remaining steps must agree to the last few bits (a negative
control shows that a fresh learner without the checkpoint's traces does not). The settings
cover every trace form: snnTorch's fused Leaky, module-held membranes (``init_hidden``), Norse
per-synapse traces with and without ``flush_every`` windows, a convolution through
max-pooling (chain traces), a recurrent ``RLeaky`` and torch's ``LSTMCell`` (full Jacobians),
and random feedback matrices.
"""

from __future__ import annotations

import io
import subprocess
import sys
import textwrap

import pytest
import torch
from conftest import seeded
from nets import add_norse_pair
from torch import nn

pytest.importorskip("snntorch")
pytest.importorskip("norse")

import norse.torch as nt
import snntorch as snn

import snn_ostl
from snn_ostl.testing import compare

T, SPLIT, B = 8, 3, 3
F64, F32 = torch.float64, torch.float32


class Stepper(nn.Module):
    """A model stepped one frame at a time: ``step(frame, state) -> (output, state)``."""

    dtype = F64
    features = 5

    def initial(self):
        return None


class LeakyNet(Stepper):
    dtype = F32

    def __init__(self, hidden: bool = False):
        super().__init__()
        self.hidden = hidden
        self.fc1, self.fc2 = nn.Linear(5, 7), nn.Linear(7, 3)
        self.lif1 = snn.Leaky(beta=0.9, init_hidden=hidden)
        self.lif2 = snn.Leaky(beta=0.8, init_hidden=hidden, output=hidden)
        with torch.no_grad():
            self.fc1.weight.mul_(3.0)
            self.fc2.weight.mul_(3.0)

    def initial(self):
        return None if self.hidden else (self.lif1.init_leaky(), self.lif2.init_leaky())

    def step(self, frame, state):
        if self.hidden:
            _, mem = self.lif2(self.fc2(self.lif1(self.fc1(frame))))
            return mem, None
        m1, m2 = state
        s1, m1 = self.lif1(self.fc1(frame), m1)
        _, m2 = self.lif2(self.fc2(s1), m2)
        return m2, (m1, m2)


class NorseNet(Stepper):
    def __init__(self):
        super().__init__()
        add_norse_pair(self)

    def initial(self):
        return (None, None)

    def step(self, frame, state):
        s1, s2 = state
        z1, s1 = self.lif1(self.fc1(frame), s1)
        _, s2 = self.lif2(self.fc2(z1), s2)
        return s2.v, (s1, s2)


class NorseConvNet(Stepper):
    """Conv2d -> max-pooling -> LIFCell, then a Linear readout."""

    features = (1, 6, 6)

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(1, 2, 3, padding=1, dtype=F64)
        self.lif = nt.LIFCell()
        self.fc = nn.Linear(2 * 3 * 3, 3, dtype=F64)
        with torch.no_grad():
            self.conv.weight.mul_(20.0)

    def step(self, frame, state):
        z, state = self.lif(nn.functional.max_pool2d(self.conv(frame), 2), state)
        return self.fc(z.flatten(1)), state


class RLeakyNet(Stepper):
    dtype = F32

    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(5, 6)
        self.lif = snn.RLeaky(beta=0.9, linear_features=6)
        self.out = nn.Linear(6, 3)
        with torch.no_grad():
            self.fc.weight.mul_(3.0)

    def initial(self):
        return self.lif.init_rleaky()

    def step(self, frame, state):
        spk, mem = self.lif(self.fc(frame), *state)
        return self.out(mem), (spk, mem)


class LSTMNet(Stepper):
    def __init__(self):
        super().__init__()
        self.cell = nn.LSTMCell(5, 4, dtype=F64)
        self.out = nn.Linear(4, 3, dtype=F64)

    def step(self, frame, state):
        h, c = self.cell(frame, state)
        return self.out(h), (h, c)


SETTINGS = {
    "snntorch-fused": (lambda: LeakyNet(), {}),
    "snntorch-init_hidden": (lambda: LeakyNet(hidden=True), {}),
    "norse-per-synapse": (NorseNet, {}),
    "norse-windows": (NorseNet, {"flush_every": 3}),
    "norse-random-feedback": (NorseNet, {"learning_signal": "random"}),
    "norse-conv-maxpool": (NorseConvNet, {}),
    "snntorch-RLeaky": (RLeakyNet, {}),
    "torch-LSTMCell": (LSTMNet, {}),
}


def _build(name: str) -> Stepper:
    torch.manual_seed(0)
    return SETTINGS[name][0]()


def _data(net: Stepper):
    shape = net.features if isinstance(net.features, tuple) else (net.features,)
    x = torch.rand(T, B, *shape, generator=seeded(1), dtype=F64).to(net.dtype) * 2.0
    y = torch.randn(T, B, 3, generator=seeded(2), dtype=F64).to(net.dtype)
    return x, y


def _steps(net, learner, x, y, state, start, stop):
    for t in range(start, stop):
        out, state = net.step(x[t], state)
        (out - y[t]).pow(2).sum().backward()
    learner.flush()
    return state


def _grads(net):
    out = {n: p.grad.clone() for n, p in net.named_parameters() if p.grad is not None}
    net.zero_grad(set_to_none=True)
    return out


@pytest.mark.parametrize("name", list(SETTINGS))
def test_resume_from_a_checkpoint_gives_the_uninterrupted_gradient(name):
    options = SETTINGS[name][1]
    net = _build(name)
    x, y = _data(net)
    learner = snn_ostl.OSTL(net, **options)
    state = _steps(net, learner, x, y, net.initial(), 0, SPLIT)
    buffer = io.BytesIO()
    torch.save({"model": net.state_dict(), "learner": learner.state_dict(), "state": state}, buffer)
    _grads(net)  # what the first steps gave (and the windows flushed by the save)
    _steps(net, learner, x, y, state, SPLIT, T)
    uninterrupted = _grads(net)
    learner.detach()

    buffer.seek(0)
    saved = torch.load(buffer, weights_only=False)
    fresh = _build(name)
    with torch.no_grad():
        for p in fresh.parameters():
            p.mul_(0.5)  # not the saved values: load_state_dict must bring them back
    fresh.load_state_dict(saved["model"])
    resumed_learner = snn_ostl.OSTL(fresh, **options)
    resumed_learner.load_state_dict(saved["learner"])
    _steps(fresh, resumed_learner, x, y, saved["state"], SPLIT, T)
    resumed = _grads(fresh)
    resumed_learner.detach()
    assert set(resumed) == set(uninterrupted)
    errors = compare(resumed, uninterrupted)
    tol = 1e-12 if net.dtype == F64 else 1e-6
    assert max(errors.values()) <= tol, errors


def test_resume_without_the_checkpoint_differs():
    """Negative control: a fresh learner on the saved state, without its traces."""
    net = _build("norse-per-synapse")
    x, y = _data(net)
    learner = snn_ostl.OSTL(net)
    state = _steps(net, learner, x, y, net.initial(), 0, SPLIT)
    _grads(net)
    _steps(net, learner, x, y, state, SPLIT, T)
    uninterrupted = _grads(net)
    learner.detach()
    with snn_ostl.OSTL(net) as fresh_learner:
        detached = tuple(type(s)(*(t.detach() for t in s)) for s in state)
        _steps(net, fresh_learner, x, y, detached, SPLIT, T)
    assert max(compare(_grads(net), uninterrupted).values()) > 1e-3


def test_the_first_step_after_loading_must_receive_the_saved_state():
    net = _build("norse-conv-maxpool")
    x, y = _data(net)
    learner = snn_ostl.OSTL(net)
    state = _steps(net, learner, x, y, None, 0, SPLIT)
    saved = learner.state_dict()
    learner.detach()
    with snn_ostl.OSTL(net) as resumed:
        resumed.load_state_dict(saved)
        wrong = type(state)(*(t.detach() * 0.5 for t in state))
        with pytest.raises(snn_ostl.StateError, match=r"lif \(LIFCell\).*saved"):
            net.step(x[SPLIT], wrong)


def test_resume_in_another_process(tmp_path):
    """The checkpoint file is read by a new Python process, which continues the sequence."""
    net = _build("norse-per-synapse")
    x, y = _data(net)
    learner = snn_ostl.OSTL(net)
    state = _steps(net, learner, x, y, net.initial(), 0, SPLIT)
    path = tmp_path / "ckpt.pt"
    torch.save(
        {
            "model": net.state_dict(),
            "learner": learner.state_dict(),
            "state": state,
            "x": x,
            "y": y,
        },
        path,
    )
    _grads(net)
    _steps(net, learner, x, y, state, SPLIT, T)
    uninterrupted = _grads(net)
    learner.detach()
    script = textwrap.dedent(
        f"""
        import sys, torch
        sys.path.insert(0, {str(__import__("pathlib").Path(__file__).parent.parent)!r})
        sys.path.insert(0, {str(__import__("pathlib").Path(__file__).parent)!r})
        import snn_ostl
        from test_checkpoint import _build, _steps
        saved = torch.load({str(path)!r}, weights_only=False)
        net = _build("norse-per-synapse")
        net.load_state_dict(saved["model"])
        learner = snn_ostl.OSTL(net)
        learner.load_state_dict(saved["learner"])
        _steps(net, learner, saved["x"], saved["y"], saved["state"], {SPLIT}, {T})
        torch.save({{n: p.grad for n, p in net.named_parameters()}}, {str(tmp_path / "g.pt")!r})
        """
    )
    subprocess.run([sys.executable, "-c", script], check=True, timeout=120)
    resumed = torch.load(tmp_path / "g.pt")
    assert max(compare(resumed, uninterrupted).values()) <= 1e-12
