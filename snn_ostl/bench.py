"""``snn-ostl bench``: OSTL against BPTT, time per step and peak memory, in one run.

Every (network, method, T) cell runs in a fresh child process so that its peak resident memory
(``ru_maxrss``, what the operating system saw) belongs to it alone; the table prints ratios
against BPTT measured in the same run. The networks are the paper's 784-256-256-10 MNIST net
built three ways: snnTorch ``Leaky`` (factorised, fused presynaptic traces), Norse ``LIFCell``
(per-synapse traces: Norse's reset is a differentiable gate) and the native SNU.

``--check`` runs a small configuration and fails when the ratios regress past generous
bounds: a regression check on ratios, never on absolute times. Per-synapse networks are also
timed with ``OSTL(flush_every=W)`` (``--flush-every``, comma-separated, 16 by default: a window
that is full by T = 20, so that the memory column compares full windows), where their history
terms reach ``.grad`` every W steps and before each optimizer step (:mod:`snn_ostl.window`).
A floor row (``--no-floor`` leaves it out) times the same loop without a learner, the state
detached between steps: what a per-step backward costs by itself, whatever computes it.
"""

from __future__ import annotations

import argparse
import itertools
import json
import os
import resource
import subprocess
import sys
import time

from snn_ostl.bench_table import FLOOR, Cell, best_of_rounds, check, render, targets

__all__ = ["NETWORKS", "main", "measure"]

NETWORKS = {
    "snntorch-leaky": "snnTorch Leaky (presynaptic, fused)",
    "norse-lif": "Norse LIFCell (per-synapse)",
    "native-snu": "snn_ostl SNU (per-synapse)",
}


#: The networks whose weights have per-synapse traces (where ``flush_every`` matters).
PER_SYNAPSE = ("norse-lif", "native-snu")


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


def _build(network: str, sizes: tuple[int, ...]):
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

        def step(m, x, state):
            return m(x), None

        def reset(m):
            for layer in m:
                if isinstance(layer, snn.Leaky):
                    layer.reset_mem()

        def detach(m, state):
            for layer in m:  # this instance's state only (not snnTorch's class-wide detach)
                if isinstance(layer, snn.Leaky):
                    layer.mem = layer.mem.detach()
            return state

        return model, step, reset, detach
    if network == "norse-lif":
        import norse.torch as norse

        for a, b in itertools.pairwise(sizes[:-1]):
            layers += [nn.Linear(a, b), norse.LIFCell()]
        layers.append(nn.Linear(sizes[-2], sizes[-1]))
        model = norse.SequentialState(*layers)
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


def measure(
    network: str, method: str, steps: int, batch: int, device: str, sizes, repeats: int = 3
) -> dict:
    """Run one cell in this process; returns ms per step (best of ``repeats``) and peak memory."""
    import torch
    from torch import nn

    import snn_ostl

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    model, step, reset, detach = _build(network, tuple(sizes))
    model.to(device)
    gen = torch.Generator().manual_seed(1)
    rate = torch.full((batch, sizes[0]), 0.2)
    targets = torch.randint(0, sizes[-1], (steps, batch), generator=gen).to(device)
    loss_fn = nn.CrossEntropyLoss()

    def inputs(t: int):
        return torch.bernoulli(rate, generator=gen).to(device)

    def sync():
        if device.startswith("cuda"):
            torch.cuda.synchronize()

    # "ostl/32": per-synapse history terms flushed into .grad every 32 steps
    flush_every = int(method.partition("/")[2] or 1)

    # One learner for every run, reset before each sequence, as in a training loop.
    learner = snn_ostl.OSTL(model, flush_every=flush_every) if method.startswith("ostl") else None

    def run_ostl(n: int) -> float:
        learner.reset()
        reset(model)
        state = None
        sync()
        start = time.perf_counter()
        for t in range(n):
            out, state = step(model, inputs(t), state)
            loss_fn(out, targets[t]).backward()
        learner.flush()  # timed: .grad is complete here
        sync()
        return time.perf_counter() - start

    def run_bptt(n: int) -> float:
        reset(model)
        state, total = None, 0.0
        sync()
        start = time.perf_counter()
        for t in range(n):
            out, state = step(model, inputs(t), state)
            total = total + loss_fn(out, targets[t])
        total.backward()
        sync()
        return time.perf_counter() - start

    def run_detached(n: int) -> float:
        reset(model)
        state = None
        sync()
        start = time.perf_counter()
        for t in range(n):
            out, state = step(model, inputs(t), detach(model, state))
            loss_fn(out, targets[t]).backward()
        sync()
        return time.perf_counter() - start

    runs = {"bptt": run_bptt, FLOOR: run_detached}
    run = run_ostl if method.startswith("ostl") else runs[method]
    run(min(steps, 10))  # warm-up: allocator, thread pools, lazy init
    # The best of a few runs: the least disturbed by whatever else the machine does.
    elapsed = float("inf")
    for _ in range(repeats):
        model.zero_grad(set_to_none=True)
        elapsed = min(elapsed, run(steps))
    if learner is not None:
        learner.detach()
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    if device.startswith("cuda"):
        peak = torch.cuda.max_memory_allocated() / 2**20
    return {"ms_per_step": 1e3 * elapsed / steps, "peak_mib": peak, "learner": learner is not None}


def _child(network, method, steps, batch, device, sizes, timeout) -> Cell:
    repeats = 3 if steps <= 500 else 1
    cmd = [sys.executable, "-m", "snn_ostl.bench", "--child", network, method, str(steps),
           str(batch), device, ",".join(map(str, sizes)), str(repeats)]  # fmt: skip
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return Cell(network, method, steps, None, None, f"skipped: over {timeout}s")
    if out.returncode != 0:
        reason = "out of memory" if out.returncode in (-9, 137) else out.stderr.strip()[-200:]
        return Cell(network, method, steps, None, None, f"failed: {reason}")
    data = json.loads(out.stdout.strip().splitlines()[-1])
    return Cell(network, method, steps, data["ms_per_step"], data["peak_mib"])


def _parse(argv):
    p = argparse.ArgumentParser(prog="snn-ostl bench", description=__doc__.split("\n\n")[0])
    p.add_argument("--networks", default=",".join(NETWORKS),
                   help=f"comma-separated, from: {', '.join(NETWORKS)}")  # fmt: skip
    p.add_argument("--steps", default="20,200,2000", help="sequence lengths T, comma-separated")
    p.add_argument("--batch", type=int, default=128)
    p.add_argument("--sizes", default="784,256,256,10", help="layer sizes")
    p.add_argument("--device", default="cpu")
    p.add_argument("--timeout", type=float, default=900, help="seconds per cell before skipping")
    p.add_argument("--bptt-max-steps", type=int, default=2000,
                   help="skip BPTT above this T (it stores the whole sequence)")  # fmt: skip
    p.add_argument("--rounds", type=int, default=1,
                   help="run every cell this many times in turn; keep the best time")  # fmt: skip
    p.add_argument("--flush-every", default="16",
                   help="also time per-synapse nets with flush_every=N (comma-separated "
                        "values; 1: no)")  # fmt: skip
    p.add_argument("--no-floor", dest="floor", action="store_false",
                   help="leave out the reference row without a learner")  # fmt: skip
    p.add_argument("--out", default=None, help="write the table and a JSON file here")
    p.add_argument(
        "--check",
        action="store_true",
        help="small regression check on ratios; exits 1 when a bound is exceeded",
    )
    p.add_argument("--child", nargs=7, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``snn-ostl bench``."""
    args = _parse(argv)
    if args.child:
        network, method, steps, batch, device, sizes, repeats = args.child
        result = measure(network, method, int(steps), int(batch), device,
                         [int(s) for s in sizes.split(",")], int(repeats))  # fmt: skip
        print(json.dumps(result))
        return 0
    networks = [n for n in args.networks.split(",") if n]
    for n in networks:
        if n not in NETWORKS:
            print(f"snn-ostl bench: --networks: unknown {n!r}; choose from {', '.join(NETWORKS)}")
            return 2
    steps_list = [int(s) for s in args.steps.split(",")]
    flush_every = [int(w) for w in args.flush_every.split(",") if w]
    sizes = [int(s) for s in args.sizes.split(",")]
    batch = args.batch
    if args.check:
        steps_list, batch, sizes = [10, 100], 32, [196, 64, 64, 10]
    from tqdm import tqdm

    def methods(network: str) -> tuple[str, ...]:
        # flush_every changes nothing for factorised traces: time it where traces are per-synapse
        out = ("bptt", "ostl")
        if network in PER_SYNAPSE:
            out += tuple(f"ostl/{w}" for w in flush_every if w > 1)
        return out if args.check or not args.floor else (*out, FLOOR)

    jobs = [(n, m, t) for n in networks for t in steps_list for m in methods(n)]
    measured: list[Cell] = []
    rounds = [job for _ in range(args.rounds) for job in jobs]
    for network, method, steps in tqdm(rounds, desc="bench", unit="cell", file=sys.stderr):
        if method == "bptt" and steps > args.bptt_max_steps:
            measured.append(Cell(network, method, steps, None, None, "BPTT skipped (memory)"))
            continue
        measured.append(_child(network, method, steps, batch, args.device, sizes, args.timeout))
    cells = best_of_rounds(measured)
    table = render(cells)
    import platform

    cpu = platform.processor() or platform.machine()
    head = (
        f"snn-ostl bench: batch {batch}, sizes {'-'.join(map(str, sizes))}, device "
        f"{args.device}, {os.cpu_count()} cores, {cpu}"
    )
    summary = "" if args.check else targets(cells)
    print(head)
    print(table)
    if summary:
        print("\ntargets (SPEC §6):\n" + summary)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "bench.txt"), "w") as f:
            f.write(head + "\n" + table + "\n" + (f"\n{summary}\n" if summary else ""))
        with open(os.path.join(args.out, "bench.json"), "w") as f:
            json.dump([c.__dict__ for c in cells], f, indent=1)
    if args.check:
        return check(cells)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
