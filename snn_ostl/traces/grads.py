"""Adding a term to a parameter's ``.grad`` outside autograd's own accumulation.

Terms the learner computes itself (flushed windows, SnAp's history, SuperSpike's update) must
land in ``.grad`` as a backward pass would put them there: through the tensor hooks registered
on the parameter first (Norse's recurrent cells zero their autapses' gradient in one), then
added to ``.grad``. No second backward pass: DDP's reducer would count it as a step of its own,
and a hook may run inside a backward pass already.
"""

from __future__ import annotations

import torch
from torch import Tensor, nn

__all__ = ["add_to_grad"]


def add_to_grad(param: nn.Parameter, term: Tensor) -> None:
    """``param.grad += hooks(term)``, in the parameter's shape and dtype."""
    term = term.reshape(param.shape).to(param.dtype)
    for hook in (getattr(param, "_backward_hooks", None) or {}).values():
        out = hook(term)
        term = term if out is None else out
    with torch.no_grad():
        if param.grad is None:
            param.grad = term.clone()
        else:
            param.grad.add_(term)
