"""Data-parallel training of a task on several processes of one machine (``train --nproc N``).

Each process holds a copy of the model wrapped in
``torch.nn.parallel.DistributedDataParallel`` (gloo, on 127.0.0.1), takes every N-th batch, and
backpropagates every step's loss under the OSTL learner attached to its copy: DDP averages each
gradient over the processes, and the learner averages the history terms it adds at a flush
(``flush_every > 1``). Every process backpropagates at every step (a zero loss where the mask
has none), so that the processes stay in step. Process 0 prints, evaluates for the report and
writes the run folder.

The same runs under ``torchrun --nproc-per-node N -m snn_ostl train ...``: a process started by
torchrun finds its rank in the environment.
"""

from __future__ import annotations

import datetime
import os
import socket
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["active", "is_main", "launch", "rank", "unwrap", "world", "wrap"]

TIMEOUT = datetime.timedelta(seconds=300)


def active() -> bool:
    """Whether this process is one of several data-parallel processes."""
    dist = torch.distributed
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    return torch.distributed.get_rank() if active() else 0


def world() -> int:
    return torch.distributed.get_world_size() if active() else 1


def is_main() -> bool:
    """Whether this process prints and writes (process 0, or the only one)."""
    return rank() == 0


def wrap(model: nn.Module) -> nn.Module:
    """``model`` in DistributedDataParallel when several processes run, else itself.

    ``broadcast_buffers=False``: snnTorch neurons keep their membranes on the module, and a
    broadcast from process 0 at every forward would overwrite each process's own.
    """
    if not active():
        return model
    return nn.parallel.DistributedDataParallel(model, broadcast_buffers=False)


def unwrap(model: nn.Module) -> nn.Module:
    """The model inside a DistributedDataParallel wrapper (or the model itself)."""
    return getattr(model, "module", model) if active() else model


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def join_from_environment() -> bool:
    """Join the process group torchrun describes in the environment, if any."""
    if active() or int(os.environ.get("WORLD_SIZE", "1")) <= 1:
        return active()
    torch.distributed.init_process_group("gloo", timeout=TIMEOUT)
    return True


def _worker(index: int, nproc: int, port: int, main: Callable[[Sequence[str]], int], argv):
    os.environ.update(
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        RANK=str(index),
        WORLD_SIZE=str(nproc),
        LOCAL_RANK=str(index),
    )
    torch.distributed.init_process_group("gloo", rank=index, world_size=nproc, timeout=TIMEOUT)
    try:
        status = main(list(argv))
    finally:
        torch.distributed.destroy_process_group()
    if status:
        raise SystemExit(status)


def launch(nproc: int, main: Callable[[Sequence[str]], int], argv: Sequence[str]) -> Any:
    """Run ``main(argv)`` in ``nproc`` processes joined in one gloo process group."""
    import torch.multiprocessing as mp

    mp.spawn(_worker, args=(nproc, _free_port(), main, list(argv)), nprocs=nproc, join=True)
    return 0
