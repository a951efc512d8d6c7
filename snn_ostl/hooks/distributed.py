"""Distributed data parallel: the history terms a flush adds outside the backward pass.

Under ``torch.nn.parallel.DistributedDataParallel`` every gradient computed in a backward pass
is averaged across ranks by DDP itself, the OSTL history terms included (they are returned by
autograd nodes). With ``flush_every > 1`` the per-synapse history terms of a window reach
``.grad`` later, in a flush outside DDP's backward; DDP never sees them. The learner averages
those terms itself (one all-reduce per flushed weight) and adds them to ``.grad`` directly,
through the parameter's own gradient hooks, never through a second backward that DDP's reducer
would take for a step of its own.

The learner finds the DDP module in the call stack of its first step, so attaching before or
after wrapping both work.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor, nn

from snn_ostl.errors import ConfigurationError, Problem

__all__ = ["average_across_ranks", "find_ddp", "running_distributed"]


def running_distributed() -> bool:
    """Whether a process group of more than one rank is initialised."""
    dist = torch.distributed
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def find_ddp(model: nn.Module) -> Any:
    """The ``DistributedDataParallel`` module whose forward is running ``model``, or None."""
    ddp_type = torch.nn.parallel.DistributedDataParallel
    if isinstance(model, ddp_type):
        return model
    frame = sys._getframe(1)
    while frame is not None:
        owner = frame.f_locals.get("self")
        if isinstance(owner, ddp_type):
            return owner
        frame = frame.f_back
    return None


def average_across_ranks(ddp: Any) -> Callable[[Tensor], Tensor]:
    """A function that averages a gradient term over the ranks of ``ddp``'s process group."""
    group = getattr(ddp, "process_group", None)
    world = torch.distributed.get_world_size(group)

    def average(term: Tensor) -> Tensor:
        term = term.contiguous()
        torch.distributed.all_reduce(term, group=group)
        return term.div_(world)

    return average


def refuse_without_ddp(path: str, module: nn.Module) -> ConfigurationError:
    return ConfigurationError(
        [
            Problem(
                path,
                type(module).__name__,
                "torch.distributed is initialised with several ranks, but the model does not "
                "run inside DistributedDataParallel: the history terms that flush_every > 1 "
                "adds at each flush could not be averaged with the other ranks' gradients.",
                "wrap the model in torch.nn.parallel.DistributedDataParallel (before or after "
                "attaching the learner), or use flush_every=1, whose terms are part of each "
                "backward pass.",
            )
        ]
    )
