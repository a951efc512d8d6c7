"""The benchmark's networks.

The paper's 784-256-256-10 MNIST net built three ways: snnTorch ``Leaky`` (factorised, fused
presynaptic traces), Norse ``LIFCell`` (per-synapse traces: Norse's reset is a differentiable
gate) and the native SNU. Two convolutional nets on 28 x 28 images: snnTorch's tutorial CSNN
(max-pooling between each convolution and its ``Leaky``: per-neuron traces of the filter's
fan-in) and Norse's ``ConvNet4`` (``LIFCell`` behind each convolution: per-synapse traces of the
filter's fan-in). Kept apart from :mod:`snn_ostl.bench`, which times them.

Each network has its own ``sizes``: the MLPs take the layer sizes (``--sizes``); the conv nets
take ``(side, channels of conv1, channels of conv2, [hidden,] classes)``, 28 x 28 MNIST-sized by
default (:data:`CONV_SIZES`), smaller only in ``bench --check`` and the tests
(:data:`TINY_CONV_SIZES`).
"""

from __future__ import annotations

import itertools

__all__ = [
    "CONV",
    "CONV_SIZES",
    "DEFAULT_BATCH",
    "DEFAULT_STEPS",
    "NETWORKS",
    "PER_SYNAPSE",
    "TINY_CONV_SIZES",
    "build",
    "describe",
    "input_shape",
]

NETWORKS = {
    "snntorch-leaky": "snnTorch Leaky (presynaptic, fused)",
    "norse-lif": "Norse LIFCell (per-synapse)",
    "native-snu": "snn_ostl SNU (per-synapse)",
    "snntorch-csnn": "snnTorch tutorial CSNN, Conv-MaxPool-Leaky (per-neuron, through pooling)",
    "norse-convnet": "Norse ConvNet4, Conv-LIFCell-MaxPool (per-synapse)",
}

#: The networks whose weights have per-synapse traces (where ``flush_every`` matters).
PER_SYNAPSE = ("norse-lif", "native-snu", "norse-convnet")

#: The convolutional networks: 28 x 28 input, their own sizes (``--sizes`` is for the MLPs).
CONV = ("snntorch-csnn", "norse-convnet")

#: ``(side, conv1 channels, conv2 channels, [hidden,] classes)``: MNIST-sized, the frameworks'
#: own architectures (a 28 x 28 image leaves 64 x 4 x 4 = 1024 features after the second pooling).
CONV_SIZES = {"snntorch-csnn": (28, 12, 64, 10), "norse-convnet": (28, 32, 64, 1024, 10)}

#: The same architectures on 16 x 16 images with a few channels, for ``bench --check`` and the
#: tests: every layer and chain of the full net, a thousandth of its work.
TINY_CONV_SIZES = {"snntorch-csnn": (16, 2, 4, 10), "norse-convnet": (16, 2, 4, 16, 10)}

#: Sequence lengths T per network when ``--steps`` is not given.
DEFAULT_STEPS = {
    "snntorch-leaky": (20, 200, 2000),
    "norse-lif": (20, 200, 2000),
    "native-snu": (20, 200, 2000),
    "snntorch-csnn": (25, 100),
    "norse-convnet": (25, 100),
}

#: Batch size per network when ``--batch`` is not given (Norse's ConvNet4 at batch 16: its
#: per-synapse traces take 300 MiB there, 2.4 GiB at 128).
DEFAULT_BATCH = {
    "snntorch-leaky": 128,
    "norse-lif": 128,
    "native-snu": 128,
    "snntorch-csnn": 128,
    "norse-convnet": 16,
}


def _features(sizes: tuple[int, ...]) -> int:
    """Flattened features after conv(5) -> pool(2) -> conv(5) -> pool(2) on a side x side image."""
    side = ((sizes[0] - 4) // 2 - 4) // 2
    if side < 1:
        raise ValueError(f"image side {sizes[0]} is too small for two 5x5 convolutions")
    return sizes[2] * side * side


def input_shape(network: str, sizes: tuple[int, ...]) -> tuple[int, ...]:
    """One sample's input: ``(features,)`` for the MLPs, ``(1, side, side)`` for the conv nets."""
    return (1, sizes[0], sizes[0]) if network in CONV else (sizes[0],)


def describe(network: str, sizes: tuple[int, ...]) -> str:
    """The network's layers, for the benchmark's header."""
    if network == "snntorch-csnn":
        side, c1, c2, classes = sizes
        return (f"1x{side}x{side} input, Conv2d(1,{c1},5)-MaxPool2d(2)-Leaky-Conv2d({c1},{c2},5)"
                f"-MaxPool2d(2)-Leaky-Linear({_features(sizes)},{classes})-Leaky")  # fmt: skip
    if network == "norse-convnet":
        side, c1, c2, hidden, classes = sizes
        return (f"1x{side}x{side} input, Conv2d(1,{c1},5)-x10-LIFCell-MaxPool2d(2)-Conv2d({c1},"
                f"{c2},5)-x10-LIFCell-MaxPool2d(2)-Linear({_features(sizes)},{hidden})-LIFCell-"
                f"Linear({hidden},{classes})-LICell")  # fmt: skip
    return "sizes " + "-".join(map(str, sizes))


def _detached(model, state):
    """A state of nested tuples, lists and NamedTuples, cut from the graph of earlier steps."""
    import torch

    if isinstance(state, torch.Tensor):
        return state.detach()
    if isinstance(state, tuple) and hasattr(state, "_fields"):
        return type(state)(*(_detached(model, s) for s in state))
    if isinstance(state, (tuple, list)):
        return type(state)(_detached(model, s) for s in state)
    return state


def _leaky_functions(snn):
    """``reset`` and ``detach`` for a ``Sequential`` of snnTorch layers with hidden state."""

    def reset(m):
        for layer in m:
            if isinstance(layer, snn.Leaky):
                layer.reset_mem()

    def detach(m, state):
        for layer in m:  # this instance's state only (not snnTorch's class-wide detach)
            if isinstance(layer, snn.Leaky):
                layer.mem = layer.mem.detach()
        return state

    return reset, detach


def _norse_convnet(sizes: tuple[int, ...]):
    """Norse's ``ConvNet4`` (``norse.torch.models.conv``) stepped one frame at a time: the same
    layers, parameters and ``10 *`` on the second convolution's output, with ``Linear`` +
    ``LICell`` for its ``LILinearCell`` readout (the same dynamics), ``ReLU`` on spikes left out
    (spikes are 0 or 1)."""
    import norse.torch as norse
    import torch
    from norse.torch.functional.lif import LIFParameters
    from torch import nn
    from torch.nn import functional as F

    _, c1, c2, hidden, classes = sizes

    class ConvNet(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(1, c1, 5, 1)
            self.conv2 = nn.Conv2d(c1, c2, 5, 1)
            self.fc1 = nn.Linear(_features(sizes), hidden)
            self.out = nn.Linear(hidden, classes)
            conv = LIFParameters(alpha=torch.tensor(100.0), v_th=torch.as_tensor(0.7))
            self.lif0 = norse.LIFCell(p=conv)
            self.lif1 = norse.LIFCell(p=conv)
            self.lif2 = norse.LIFCell(p=LIFParameters(alpha=torch.tensor(100.0)))
            self.li = norse.LICell()

        def forward(self, x, state):
            s0, s1, s2, so = state or (None, None, None, None)
            z, s0 = self.lif0(self.conv1(x), s0)
            z = F.max_pool2d(z, 2, 2)
            z, s1 = self.lif1(10 * self.conv2(z), s1)
            z = F.max_pool2d(z, 2, 2).flatten(1)
            z, s2 = self.lif2(self.fc1(z), s2)
            v, so = self.li(self.out(z), so)
            return v, (s0, s1, s2, so)

    return ConvNet()


def build(network: str, sizes: tuple[int, ...]):
    """Model, ``step(model, x_t, state) -> (output, state)``, ``reset(model)`` and
    ``detach(model, state) -> state`` (cuts the previous steps off, for the floor row)."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    layers: list[nn.Module] = []
    if network == "snntorch-leaky":
        import snntorch as snn

        for a, b in itertools.pairwise(sizes[:-1]):
            layers += [nn.Linear(a, b), snn.Leaky(beta=0.9, init_hidden=True)]
        layers.append(nn.Linear(sizes[-2], sizes[-1]))
        model = nn.Sequential(*layers)
        reset, detach = _leaky_functions(snn)
        return model, (lambda m, x, state: (m(x), None)), reset, detach
    if network == "snntorch-csnn":
        # snnTorch's tutorial 6 network as the tutorial writes it, with beta 0.9 in place of its
        # 0.5: on this rate-coded input the second and third Leaky stay silent at 0.5 (0.4 %, 0 %
        # and 0 % spikes per step), at 0.9 they fire 11 %, 13 % and 1.3 % of the time
        import snntorch as snn
        from snntorch import surrogate

        _, c1, c2, classes = sizes
        spike_grad = surrogate.fast_sigmoid(slope=25)
        beta = 0.9
        model = nn.Sequential(
            nn.Conv2d(1, c1, 5),
            nn.MaxPool2d(2),
            snn.Leaky(beta=beta, spike_grad=spike_grad, init_hidden=True),
            nn.Conv2d(c1, c2, 5),
            nn.MaxPool2d(2),
            snn.Leaky(beta=beta, spike_grad=spike_grad, init_hidden=True),
            nn.Flatten(),
            nn.Linear(_features(sizes), classes),
            snn.Leaky(beta=beta, spike_grad=spike_grad, init_hidden=True, output=True),
        )
        reset, detach = _leaky_functions(snn)
        # the loss is taken on the output spikes, as the tutorial's ce_rate_loss does
        return model, (lambda m, x, state: (m(x)[0], None)), reset, detach
    if network == "norse-lif":
        import norse.torch as norse

        for a, b in itertools.pairwise(sizes[:-1]):
            layers += [nn.Linear(a, b), norse.LIFCell()]
        layers.append(nn.Linear(sizes[-2], sizes[-1]))
        model = norse.SequentialState(*layers)
        return model, (lambda m, x, state: m(x, state)), (lambda m: None), _detached
    if network == "norse-convnet":
        model = _norse_convnet(sizes)
        return model, (lambda m, x, state: m(x, state)), (lambda m: None), _detached
    if network == "native-snu":
        import snn_ostl

        class SNUNet(nn.Module):
            def __init__(self):
                super().__init__()
                self.cells = nn.ModuleList(
                    snn_ostl.SNU(a, b, threshold=0.5) for a, b in itertools.pairwise(sizes[:-1])
                )
                self.readout = nn.Linear(sizes[-2], sizes[-1])

            def forward(self, x, states):
                states = states or [None] * len(self.cells)
                new = []
                for cell, s in zip(self.cells, states):
                    x, s = cell(x, s)
                    new.append(s)
                return self.readout(x), new

        return SNUNet(), (lambda m, x, state: m(x, state)), (lambda m: None), _detached
    raise ValueError(f"unknown network {network!r}; choose from {', '.join(NETWORKS)}")
