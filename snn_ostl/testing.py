"""The exact reference for OSTL gradients (the theory page's oracle), as public helpers.

    The OSTL gradient of the parameters of layer l equals the BPTT gradient of the same loss on
    the same data, computed on a graph in which every stateful layer above l has its previous
    state detached at every step.

:func:`oracle_gradients` computes that reference with plain autograd for every trained
parameter of a model; :func:`ostl_gradients` runs the learner on the same closure;
:func:`compare` reports per-parameter relative errors.

A *run* is a function that plays one whole sequence through the model from a fresh state and
yields each step's loss (a generator). Modules that keep their state on themselves are reset
before each run by the learner or by the oracle.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator

import torch
from torch import Tensor, nn

from snn_ostl.registry import adapter_for

__all__ = ["Run", "compare", "max_relative_error", "oracle_gradients", "ostl_gradients"]

#: ``run() -> per-step losses``: one sequence from a fresh state.
Run = Callable[[], Iterable[Tensor]]


@contextlib.contextmanager
def _detached_states(modules: list[nn.Module]) -> Iterator[None]:
    """Detach the previous state of ``modules`` at every step (the oracle's 'layers above')."""
    handles = []

    def pre(module, args, kwargs):
        adapter = adapter_for(module)
        prev = adapter.read_state(module, args, kwargs)
        if prev is None:
            return None
        return adapter.write_state(module, args, kwargs, tuple(s.detach() for s in prev))

    for m in modules:
        handles.append(m.register_forward_pre_hook(pre, with_kwargs=True))
    try:
        yield
    finally:
        for h in handles:
            h.remove()


def _reset_all(model: nn.Module) -> None:
    for m in model.modules():
        adapter = adapter_for(m)
        if adapter is not None:
            adapter.reset(m)


def _zero(model: nn.Module) -> None:
    for p in model.parameters():
        p.grad = None


def ostl_gradients(
    model: nn.Module, run: Run, *, per_step: bool = True, **options
) -> tuple[dict[str, Tensor], dict[str, str], dict[str, int]]:
    """Run one sequence under an attached learner and collect the gradients.

    Args:
        model: The model.
        run: Plays one sequence, yields the per-step losses.
        per_step: Call backward on every step's loss as it comes (else once on the sum).
        **options: Passed to :class:`snn_ostl.OSTL`.

    Returns:
        (gradients by parameter name, owning layer by parameter name, module call order).
    """
    from snn_ostl.learner import OSTL

    _zero(model)
    with OSTL(model, **options) as learner:
        learner.reset()
        if per_step:
            for loss in run():
                loss.backward()
        else:
            torch.stack(list(run())).sum().backward()
        owners = learner.trained_parameters()
        order = learner.execution_order()
    grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}
    _zero(model)
    return grads, owners, order


def oracle_gradients(
    model: nn.Module,
    run: Run,
    owners: dict[str, str],
    order: dict[str, int],
    *,
    variant: str = "ostl",
) -> dict[str, Tensor]:
    """The exact OSTL reference gradient of every parameter, by plain BPTT.

    Args:
        model: The model (no learner attached).
        run: Plays one sequence, yields the per-step losses.
        owners: Parameter name -> owning stateful layer (from :func:`ostl_gradients`).
        order: Module name -> first-call order (from :func:`ostl_gradients`).
        variant: The OSTL variant whose oracle to build.

    Returns:
        Gradients by parameter name.
    """
    stateful = {
        path: m for path, m in model.named_modules() if adapter_for(m) is not None and path in order
    }
    out: dict[str, Tensor] = {}
    names = [n for n, p in model.named_parameters() if p.requires_grad]

    # A parameter's position decides which stateful layers count as "above" it.
    def position(name: str) -> int:
        if name in owners:
            return order[owners[name]]
        module_path = name.rsplit(".", 1)[0] if "." in name else ""
        return order.get(module_path, -1)

    for pos in sorted({position(n) for n in names}):
        above = [m for path, m in stateful.items() if order[path] > pos]
        _zero(model)
        _reset_all(model)
        with contextlib.ExitStack() as stack:
            stack.enter_context(_detached_states(above))
            # every stateful module runs its variant's forward (gradient cuts only matter for the
            # measured layer: parameters of a layer never reach the layers below it)
            for m in stateful.values():
                stack.enter_context(adapter_for(m).variant_forward(m, variant))
            torch.stack(list(run())).sum().backward()
        params = dict(model.named_parameters())
        for n in names:
            if position(n) == pos and params[n].grad is not None:
                out[n] = params[n].grad.detach().clone()
    _zero(model)
    return out


def max_relative_error(a: Tensor, b: Tensor) -> float:
    """``max|a - b| / max(max|b|, tiny)``: one number per parameter."""
    scale = b.abs().max().clamp_min(torch.finfo(b.dtype).tiny)
    return float((a - b).abs().max() / scale)


def compare(grads: dict[str, Tensor], reference: dict[str, Tensor]) -> dict[str, float]:
    """Per-parameter relative error of ``grads`` against ``reference`` (same keys required)."""
    missing = set(reference) ^ set(grads)
    if missing:
        raise KeyError(f"gradients and reference disagree on parameters: {sorted(missing)}")
    return {n: max_relative_error(grads[n], reference[n]) for n in reference}
