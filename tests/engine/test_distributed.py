"""Distributed data parallel on two CPU processes (gloo on 127.0.0.1, bounded in time).

Every rank must end with the mean over ranks of the exact OSTL gradient of its own data (the
oracle of :mod:`snn_ostl.testing`, computed in each process for every rank's data), with any
``flush_every``, per-step backward passes, and accumulation under ``DDP.no_sync()``. snnTorch
neurons that keep their membrane as a module attribute run with ``broadcast_buffers=False``.
Without DDP, several ranks and ``flush_every > 1`` are refused.
"""

from __future__ import annotations

import copy
import os
import socket
import sys
from pathlib import Path

import pytest
import torch
import torch.multiprocessing as mp
from torch import nn

pytest.importorskip("norse")
pytest.importorskip("snntorch")

T, B, WORLD = 8, 4, 2
TOL = {torch.float64: 1e-10, torch.float32: 1e-4}
TIMEOUT_S = 120


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _model(kind: str) -> nn.Module:
    import norse.torch as nt
    import snntorch as snn

    class NorseStep(nn.Module):
        dtype = torch.float64

        def __init__(self):
            super().__init__()
            self.fc1 = nn.Linear(5, 7, dtype=torch.float64)
            self.fc2 = nn.Linear(7, 3, dtype=torch.float64)
            self.lif1, self.lif2 = nt.LIFCell(), nt.LIFCell()
            with torch.no_grad():
                self.fc1.weight.mul_(12.0)
                self.fc2.weight.mul_(12.0)

        def forward(self, frame, state):
            s1, s2 = state
            z1, s1 = self.lif1(self.fc1(frame), s1)
            _, s2 = self.lif2(self.fc2(z1), s2)
            return s2.v, (s1, s2)

    class SnnTorchStep(nn.Module):
        """snnTorch's init_hidden style: the membranes live on the neurons."""

        dtype = torch.float32

        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Linear(5, 7), nn.Linear(7, 3)
            self.lif1 = snn.Leaky(beta=0.9, init_hidden=True)
            self.lif2 = snn.Leaky(beta=0.8, init_hidden=True, output=True)
            with torch.no_grad():
                self.fc1.weight.mul_(3.0)
                self.fc2.weight.mul_(3.0)

        def forward(self, frame, state):
            _, mem = self.lif2(self.fc2(self.lif1(self.fc1(frame))))
            return mem, state

    torch.manual_seed(0)
    return NorseStep() if kind == "norse" else SnnTorchStep()


def _data(rank: int, dtype: torch.dtype):
    g = torch.Generator().manual_seed(100 + rank)
    x = torch.rand(T, B, 5, generator=g, dtype=torch.float64).to(dtype) * 2.0
    y = torch.randn(T, B, 3, generator=g, dtype=torch.float64).to(dtype)
    return x, y


def _losses(model, x, y):
    state = (None, None)
    for t, (frame, target) in enumerate(zip(x, y)):
        out, state = model(frame, state)
        yield t, (out - target).pow(2).sum()


def _scenario(rank: int, kind: str, flush_every: int, accumulate: bool) -> float:
    import snn_ostl
    from snn_ostl.testing import compare, oracle_gradients, ostl_gradients

    net = _model(kind)
    plain = copy.deepcopy(net)
    ddp = nn.parallel.DistributedDataParallel(net, broadcast_buffers=False)
    optimizer = torch.optim.SGD(ddp.parameters(), lr=0.0)
    x, y = _data(rank, net.dtype)
    with snn_ostl.OSTL(ddp, flush_every=flush_every) as learner:
        learner.reset()
        for t, loss in _losses(ddp, x, y):
            if accumulate and t < T - 1:  # accumulate locally, synchronise at the last step
                with ddp.no_sync():
                    loss.backward()
            else:
                loss.backward()
        optimizer.step()  # flushes the windows first
    grads = {n.removeprefix("module."): p.grad for n, p in ddp.named_parameters()}
    references = []
    for r in range(WORLD):
        xr, yr = _data(r, net.dtype)

        def run(xr=xr, yr=yr):
            return (loss for _, loss in _losses(plain, xr, yr))

        _, owners, order = ostl_gradients(plain, run)
        references.append(oracle_gradients(plain, run, owners, order))
    mean = {n: sum(ref[n] for ref in references) / WORLD for n in references[0]}
    return max(compare(grads, mean).values())


def _refused_without_ddp() -> str:
    import snn_ostl

    net = _model("norse")
    x, y = _data(0, net.dtype)
    try:
        with snn_ostl.OSTL(net, flush_every=3):
            for _, loss in _losses(net, x, y):
                loss.backward()
    except snn_ostl.ConfigurationError as err:
        return str(err)
    return ""


SCENARIOS = [
    ("norse", 1, False),
    ("norse", 3, False),
    ("norse", 3, True),
    ("snntorch", 1, False),
    ("snntorch", 4, True),
]


def _worker(rank: int, port: int, out) -> None:
    import torch.distributed as dist

    sys.path.insert(0, str(Path(__file__).parent))
    os.environ["MASTER_ADDR"], os.environ["MASTER_PORT"] = "127.0.0.1", str(port)
    dist.init_process_group("gloo", rank=rank, world_size=WORLD)
    try:
        torch.set_num_threads(1)
        results = {s: _scenario(rank, *s) for s in SCENARIOS}
        results["refused"] = _refused_without_ddp()
        out.put((rank, results))
    except BaseException as err:  # reported, not swallowed: the parent fails with it
        out.put((rank, repr(err)))
        raise
    finally:
        dist.destroy_process_group()


@pytest.fixture(scope="module")
def ranks() -> dict[int, dict]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    port = _free_port()
    procs = [ctx.Process(target=_worker, args=(r, port, queue)) for r in range(WORLD)]
    for p in procs:
        p.start()
    found = {}
    try:
        for _ in range(WORLD):
            rank, results = queue.get(timeout=TIMEOUT_S)
            found[rank] = results
    finally:
        for p in procs:
            p.join(timeout=10)
            if p.is_alive():
                p.kill()
    for rank, results in found.items():
        assert isinstance(results, dict), f"rank {rank} failed: {results}"
    return found


@pytest.mark.parametrize(
    "scenario",
    SCENARIOS,
    ids=[f"{k}-flush{f}-{'no_sync' if a else 'sync'}" for k, f, a in SCENARIOS],
)
def test_every_rank_gets_the_mean_exact_gradient(ranks, scenario):
    kind = scenario[0]
    tol = TOL[torch.float64 if kind == "norse" else torch.float32]
    for rank in range(WORLD):
        assert ranks[rank][scenario] <= tol, (rank, ranks[rank][scenario])


def test_several_ranks_without_ddp_and_windows_are_refused(ranks):
    message = ranks[0]["refused"]
    assert "DistributedDataParallel" in message and "flush_every=1" in message, message
