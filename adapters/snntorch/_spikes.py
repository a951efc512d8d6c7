"""snnTorch's spike function as the adapters call it, and the forward-pass patches.

Spikes in the membrane's dtype (:func:`spikes_like_input`), the surrogate slope, and e-prop's
cut of the layer's own spikes in a ``reset_delay=False`` reset (:func:`_own_reset_cut_in_time`).
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from typing import Any

import snntorch as snn
import torch
from snn_ostl.adapters.snntorch._common import SUBTRACT, _mechanism
from torch import Tensor, nn

_MISSING = object()


class _SpikeInDtype(torch.autograd.Function):
    """A snnTorch spike function evaluated in the input's dtype, gradient in full precision."""

    @staticmethod
    def forward(ctx, x: Tensor, fn: Callable[[Tensor], Tensor]) -> Tensor:  # type: ignore[override]
        with torch.enable_grad():
            z = x.detach().requires_grad_(True)
            out = fn(z)
            slope = None
            if out.requires_grad:
                (slope,) = torch.autograd.grad(out, z, torch.ones_like(out), allow_unused=True)
        ctx.has_slope = slope is not None
        ctx.save_for_backward(slope if slope is not None else x.new_zeros(()))
        return out.detach().to(x.dtype)

    @staticmethod
    def backward(ctx, grad: Tensor):  # type: ignore[override]
        (slope,) = ctx.saved_tensors
        return (grad * slope if ctx.has_slope else None), None


class _SpikesLikeInput:
    """Wraps a module's ``spike_grad`` so that spikes come out in the membrane's dtype."""

    def __init__(self, fn: Callable[[Tensor], Tensor]) -> None:
        self.fn = fn

    def __call__(self, x: Tensor) -> Tensor:
        if x.dtype == torch.float32 or not x.is_floating_point():
            return self.fn(x)
        return _SpikeInDtype.apply(x, self.fn)


def _spike(module: nn.Module, x: Tensor) -> Tensor:
    """snnTorch's spike function at ``x`` (membrane minus threshold), in x's dtype."""
    fn = module.spike_grad
    if isinstance(fn, _SpikesLikeInput):
        return fn(x)
    return _SpikesLikeInput(fn)(x)


def _slope(module: nn.Module, x: Tensor) -> Tensor:
    """The surrogate derivative of the module's spike function at ``x``, per element."""
    with torch.enable_grad():
        z = x.detach().requires_grad_(True)
        out = _spike(module, z)
        if not out.requires_grad:
            return torch.zeros_like(x)
        (g,) = torch.autograd.grad(out, z, torch.ones_like(out), allow_unused=True)
    return torch.zeros_like(x) if g is None else g


@contextlib.contextmanager
def _instance_attribute(module: nn.Module, name: str, value: Any) -> Iterator[None]:
    """Set a plain instance attribute for the duration of the context, then restore it."""
    old = module.__dict__.get(name, _MISSING)
    object.__setattr__(module, name, value)
    try:
        yield
    finally:
        if old is _MISSING:
            object.__delattr__(module, name)
        else:
            object.__setattr__(module, name, old)


@contextlib.contextmanager
def _spikes_in_dtype(module: nn.Module) -> Iterator[None]:
    fn = getattr(module, "spike_grad", None)
    if (
        fn is None
        or isinstance(fn, (nn.Module, _SpikesLikeInput))
        or "spike_grad" in getattr(module, "_modules", {})
    ):
        yield
        return
    with _instance_attribute(module, "spike_grad", _SpikesLikeInput(fn)):
        yield


@contextlib.contextmanager
def spikes_like_input(model: nn.Module) -> Iterator[nn.Module]:
    """Make every snnTorch neuron of ``model`` emit spikes in its membrane's dtype.

    snnTorch's spike functions always return float32, so a float64 model fails at the first
    layer after a neuron. The learner does this by itself while it is attached; this context
    does the same without a learner (for a BPTT reference, or for inference)::

        with spikes_like_input(model.double()):
            out = model(x.double())

    The spike values (0 or 1) and the surrogate gradients are unchanged, the latter computed
    in the membrane's precision.
    """
    with contextlib.ExitStack() as stack:
        for m in model.modules():
            if isinstance(m, snn.SpikingNeuron):
                stack.enter_context(_spikes_in_dtype(m))
        yield model


@contextlib.contextmanager
def _own_reset_cut_in_time(module: nn.Module) -> Iterator[None]:
    """Cut the path through the layer's own spikes in the reset (``reset_delay=False``), but
    only where the membrane carries it to the next step: e-prop's oracle.

    snnTorch resets ``mem_t = m_t - (q_t - r_t) θ`` (or ``- (q_t - r_t) m_t``) with
    ``q_t = spk_t / graded_spikes_factor`` right after ``fire``. When the membrane this call
    returned comes back at the next call, ``(q_t - q_t.detach()) θ`` (exactly zero) is added to
    it, which leaves every value as it is and cancels the gradient through ``q_t`` on the way to
    later steps. The same step's outputs keep every path (a loss on ``mem_t`` sees the reset's
    surrogate gradient), just as the learner's instantaneous gradient does.
    """
    fire = type(module).fire.__get__(module)
    mem_reset = type(module).mem_reset.__get__(module)
    record: dict[str, Any] = {}

    def fire_and_record(mem: Tensor) -> Tensor:
        spk = fire(mem)
        record["pending"] = (mem, spk)
        return spk

    def cut_then_reset(mem: Tensor) -> Tensor:
        last = record.pop("last", None)
        if last is not None and module.mem is last[0]:
            _, m, spk = last
            q = spk / module.graded_spikes_factor
            scale = module.threshold if _mechanism(module) == SUBTRACT else m
            module.mem = module.mem + (q - q.detach()) * scale
            mem = module.mem
        return mem_reset(mem)

    def after(mod: nn.Module, args: Any, output: Any) -> None:
        pending = record.pop("pending", None)
        if pending is not None:
            record["last"] = (module.mem, *pending)

    handle = module.register_forward_hook(after)
    try:
        with (
            _instance_attribute(module, "fire", fire_and_record),
            _instance_attribute(module, "mem_reset", cut_then_reset),
        ):
            yield
    finally:
        handle.remove()
