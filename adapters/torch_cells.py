"""Adapters of torch's recurrent cells: ``nn.RNNCell``, ``nn.LSTMCell`` and ``nn.GRUCell``.

These cells mix their units inside a step (the hidden-to-hidden weights), so they are
:class:`~snn_ostl.adapter.DenseAdapter`\\ s: the engine keeps the paper's generic OSTL trace
``e_t = J_t e_{t-1} + ∂s_t/∂θ`` with the full per-layer Jacobian ``J_t = ∂s_t/∂s_{t-1}``
([B, S*N, S*N]) and one trace of shape [B, S*N, P] per parameter. The partials are written
out (:mod:`snn_ostl.adapters._torch_gates`: no autograd, no loop over the batch) and tested
against autograd (:func:`snn_ostl.derivatives.dense_derivatives`). The state is ``(h,)`` for
``RNNCell`` and ``GRUCell`` and ``(h, c)`` for ``LSTMCell``; every parameter of the cell
(``weight_ih``, ``weight_hh`` and the biases) gets such a trace.

:meth:`step` writes each cell out with plain differentiable ops (:func:`rnn_cell`,
:func:`gru_cell`, :func:`lstm_cell`) with the trained parameters passed in. On the CPU they compute
the values of the modules' own ``torch._VF`` kernels (RNN and LSTM bit for bit, GRU to one ulp),
and unlike the fused GPU kernels they support the batched backward of the autograd reference.
(``torch.func.functional_call`` would run the module's forward hooks, the learner's included.)

Cost: one ``[S*N, S*N] x [S*N, P]`` product per sample and step and ``O(B * S*N * P)`` trace
memory: meant for cells of tens to a few hundred units, as in the paper.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch
import torch.nn.functional as F
from snn_ostl.adapters._torch_gates import gate_derivatives
from torch import Tensor, nn

from snn_ostl.adapter import DenseAdapter
from snn_ostl.errors import StateError
from snn_ostl.registry import register_adapter

__all__ = [
    "GRUCellAdapter",
    "LSTMCellAdapter",
    "RNNCellAdapter",
    "gru_cell",
    "lstm_cell",
    "rnn_cell",
]

_DT = torch.float64


def _input(args: tuple, kwargs: dict) -> Tensor:
    return args[0] if args else kwargs["input"]


def _check_batched(module: nn.Module, x: Tensor) -> None:
    if x.dim() != 2:
        raise StateError(
            f"{type(module).__name__}: OSTL needs a batch dimension, but the input has shape "
            f"{tuple(x.shape)}. Call the cell on [B, {module.input_size}] inputs (unsqueeze(0) "
            "for a single sample)."
        )


class _TorchCellAdapter(DenseAdapter):
    """What the three torch cells share: the ``hx`` argument and a zero initial state.

    ``variant="ostl-no-h"`` (RFLO's eligibility) leaves the hidden-to-hidden weights out of
    the Jacobian: the states that act only through them (``recurrent_only``: ``h`` of the RNN
    and LSTM cells) enter the step detached and their Jacobian columns are zero. The GRU's
    ``h`` also enters its update directly, so the GRU has no such variant.
    """

    framework = "torch"
    variants: tuple[str, ...] = ("ostl",)
    recurrent_only: tuple[int, ...] = ()

    def current(self, module: nn.Module, args: tuple, kwargs: dict) -> Tensor:
        return _input(args, kwargs)

    def _hx(self, args: tuple, kwargs: dict) -> Any:
        return args[1] if len(args) > 1 else kwargs.get("hx")

    def _with_hx(self, args: tuple, kwargs: dict, hx: Any) -> tuple[tuple, dict]:
        if len(args) > 1:
            return (args[0], hx, *args[2:]), kwargs
        return args, {**kwargs, "hx": hx}

    def read_state(self, module, args, kwargs):
        _check_batched(module, _input(args, kwargs))
        hx = self._hx(args, kwargs)
        if hx is None:
            return None
        return tuple(hx) if isinstance(hx, (tuple, list)) else (hx,)

    def initial_state(self, module, current):
        zeros = current.new_zeros(current.shape[0], module.hidden_size)
        return tuple(zeros.clone() for _ in self.state_names)

    def write_state(self, module, args, kwargs, state):
        return self._with_hx(args, kwargs, state[0])

    def new_state(self, module, args, kwargs, output):
        return (output,)

    def problems(self, module: nn.Module, variant: str) -> list[tuple[str, str]]:
        if variant not in self.variants:
            why = (
                "its hidden state also enters the update directly, so the hidden-to-hidden "
                "weights cannot be left out alone"
                if variant == "ostl-no-h"
                else "it has no spike state to cut"
            )
            return [
                (
                    f"variant {variant!r} is not defined for {type(module).__name__}: {why}.",
                    "use variant='ostl' (the paper's generic OSTL) for this cell"
                    + (
                        "; nn.RNNCell and nn.LSTMCell offer 'ostl-no-h' (RFLO)."
                        if variant == "ostl-no-h"
                        else "."
                    ),
                )
            ]
        return []

    @contextlib.contextmanager
    def variant_forward(self, module: nn.Module, variant: str) -> Iterator[None]:
        if variant not in self.variants:
            raise NotImplementedError(f"{type(self).__name__} does not implement {variant!r}")
        if variant != "ostl-no-h":
            yield
            return
        cut = self.recurrent_only
        original = type(module).forward

        def forward(input: Tensor, hx: Any = None) -> Any:
            if isinstance(hx, Tensor):
                hx = hx.detach()
            elif hx is not None:
                hx = tuple(h.detach() if k in cut else h for k, h in enumerate(hx))
            return original(module, input, hx)

        module.forward = forward
        try:
            yield
        finally:
            del module.forward

    def cut_jacobian(self, jacobian: Tensor, module: nn.Module, variant: str) -> Tensor:
        """Zero the columns of the states ``variant`` holds fixed (``[B, S*N, S*N]``)."""
        if variant != "ostl-no-h" or not self.recurrent_only:
            return jacobian
        n = module.hidden_size
        view = jacobian.view(jacobian.shape[0], jacobian.shape[1], len(self.state_names), n)
        for k in self.recurrent_only:
            view[:, :, k, :] = 0
        return jacobian


Weights = tuple[Tensor, Tensor, Tensor | None, Tensor | None]


def rnn_cell(x: Tensor, h: Tensor, weights: Weights, nonlinearity: str = "tanh") -> Tensor:
    """``act(W_ih x + b_ih + W_hh h + b_hh)``, as ``nn.RNNCell``."""
    w_ih, w_hh, b_ih, b_hh = weights
    pre = F.linear(x, w_ih, b_ih) + F.linear(h, w_hh, b_hh)
    return torch.tanh(pre) if nonlinearity == "tanh" else torch.relu(pre)


def gru_cell(x: Tensor, h: Tensor, weights: Weights) -> Tensor:
    """The GRU step of ``nn.GRUCell`` (gates r, z, n in PyTorch's order)."""
    w_ih, w_hh, b_ih, b_hh = weights
    i_r, i_z, i_n = F.linear(x, w_ih, b_ih).chunk(3, 1)
    h_r, h_z, h_n = F.linear(h, w_hh, b_hh).chunk(3, 1)
    reset = torch.sigmoid(h_r + i_r)
    update = torch.sigmoid(h_z + i_z)
    new = torch.tanh(i_n + h_n * reset)
    return (h - new) * update + new


def lstm_cell(x: Tensor, h: Tensor, c: Tensor, weights: Weights) -> tuple[Tensor, Tensor]:
    """The LSTM step of ``nn.LSTMCell`` (gates i, f, g, o in PyTorch's order)."""
    w_ih, w_hh, b_ih, b_hh = weights
    i, f, g, o = (F.linear(x, w_ih, b_ih) + F.linear(h, w_hh, b_hh)).chunk(4, 1)
    c_new = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
    return torch.sigmoid(o) * torch.tanh(c_new), c_new


def _p(params: dict[str, Tensor], module: nn.Module, name: str) -> Tensor | None:
    return params[name] if name in params else getattr(module, name)


def _weights(module: nn.Module, params: dict[str, Tensor]) -> tuple:
    return tuple(_p(params, module, n) for n in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"))


@register_adapter(
    nn.RNNCell,
    examples={
        "tanh": lambda: nn.RNNCell(4, 5, dtype=_DT),
        "relu, no bias": lambda: nn.RNNCell(4, 5, bias=False, nonlinearity="relu", dtype=_DT),
    },
)
class RNNCellAdapter(_TorchCellAdapter):
    """``h_t = act(W_ih x_t + b_ih + W_hh h_{t-1} + b_hh)``; state ``(h,)``."""

    state_names = ("h",)
    variants = ("ostl", "ostl-no-h")
    recurrent_only = (0,)

    def step(self, module, inputs, state, params):
        return (rnn_cell(inputs, state[0], _weights(module, params), module.nonlinearity),)

    def derivatives(self, module, inputs, state, params):
        weights = _weights(module, params)
        return gate_derivatives("rnn", inputs, state, weights, params, module.nonlinearity)


@register_adapter(
    nn.GRUCell,
    examples={
        "default": lambda: nn.GRUCell(4, 5, dtype=_DT),
        "no bias": lambda: nn.GRUCell(4, 5, bias=False, dtype=_DT),
    },
)
class GRUCellAdapter(_TorchCellAdapter):
    """The GRU cell; state ``(h,)``."""

    state_names = ("h",)

    def step(self, module, inputs, state, params):
        return (gru_cell(inputs, state[0], _weights(module, params)),)

    def derivatives(self, module, inputs, state, params):
        return gate_derivatives("gru", inputs, state, _weights(module, params), params)


@register_adapter(
    nn.LSTMCell,
    examples={
        "default": lambda: nn.LSTMCell(4, 5, dtype=_DT),
        "no bias": lambda: nn.LSTMCell(4, 5, bias=False, dtype=_DT),
    },
)
class LSTMCellAdapter(_TorchCellAdapter):
    """The LSTM cell; state ``(h, c)``, both part of the Jacobian."""

    state_names = ("h", "c")
    variants = ("ostl", "ostl-no-h")
    recurrent_only = (0,)

    def write_state(self, module, args, kwargs, state):
        return self._with_hx(args, kwargs, (state[0], state[1]))

    def new_state(self, module, args, kwargs, output):
        return (output[0], output[1])

    def step(self, module, inputs, state, params):
        return lstm_cell(inputs, state[0], state[1], _weights(module, params))

    def derivatives(self, module, inputs, state, params):
        return gate_derivatives("lstm", inputs, state, _weights(module, params), params)
