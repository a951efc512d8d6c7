"""``snn-ostl bench``: OSTL against BPTT, time per step and peak memory, in one run.

For each network and T one child process times every method in turn (BPTT, OSTL, the floor),
each on its own copy of the network, alternating the runs so that a slow spell of a shared
machine hits all methods alike; the table prints their ratios. Each (network, method, T) cell
then runs once more in a fresh child process of its own, so that its peak resident memory
(``ru_maxrss``, what the operating system saw) belongs to it alone. The networks are in
:mod:`snn_ostl.bench.nets`.

Each network has its own sequence lengths and batch (:mod:`snn_ostl.bench.nets`: T = 20, 200,
2000 at batch 128 for the MLPs, T = 25, 100 for the conv nets at batch 128 and 16); ``--steps``
and ``--batch`` set them for every network, ``--sizes`` sets the MLPs' layers (the conv nets keep
their 28 x 28 architectures).

``--check`` runs a small configuration (the conv nets at a tiny size only) and fails when a cell
fails or the ratios regress past generous bounds: a regression check on ratios, never on
absolute times.

Per-synapse networks are also timed with ``OSTL(flush_every=W)`` (``--flush-every``,
comma-separated, 16 by default: a window that is full by T = 20, so that the memory column
compares full windows), where their history terms reach ``.grad`` every W steps and before each
optimizer step (:mod:`snn_ostl.traces.window`). A floor row (``--no-floor`` leaves it out) times the
same loop without a learner, the state detached between steps: what a per-step backward costs by
itself, whatever computes it.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import resource
import subprocess
import sys
import time

from snn_ostl.bench.nets import (
    CONV,
    CONV_SIZES,
    DEFAULT_BATCH,
    DEFAULT_STEPS,
    NETWORKS,
    PER_SYNAPSE,
    TINY_CONV_SIZES,
    build,
    describe,
    input_shape,
)
from snn_ostl.bench.table import FLOOR, Cell, check, render, targets

__all__ = ["FRAMES", "main", "measure", "measure_times"]

#: Input frames drawn once per process and cycled through: drawing a [128, 784] Bernoulli frame
#: takes 0.7 ms here, 40 % of a BPTT step, which would dilute every ratio if timed. A fixed
#: count keeps the memory they take the same at every T.
FRAMES = 32


def _loop(network: str, method: str, steps: int, batch: int, device: str, sizes):
    """One method's timed loop on its own model: ``(run(n) -> seconds, model, learner)``."""
    import torch
    from torch import nn

    import snn_ostl

    model, step, reset, detach = build(network, tuple(sizes))
    model.to(device)
    gen = torch.Generator().manual_seed(1)  # every method sees the same frames and targets
    shape = (FRAMES, batch, *input_shape(network, tuple(sizes)))
    rate = torch.full(shape, 0.2, device=gen.device)
    frames = torch.bernoulli(rate, generator=gen).to(device)
    targets = torch.randint(0, sizes[-1], (steps, batch), generator=gen, device=gen.device)
    targets = targets.to(device)
    loss_fn = nn.CrossEntropyLoss()

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
            out, state = step(model, frames[t % FRAMES], state)
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
            out, state = step(model, frames[t % FRAMES], state)
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
            out, state = step(model, frames[t % FRAMES], detach(model, state))
            loss_fn(out, targets[t]).backward()
        sync()
        return time.perf_counter() - start

    runs = {"bptt": run_bptt, FLOOR: run_detached}
    run = run_ostl if method.startswith("ostl") else runs[method]
    return run, model, learner


def _peak_mib(device: str) -> float:
    import torch

    if device.startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def measure(
    network: str, method: str, steps: int, batch: int, device: str, sizes, repeats: int = 1
) -> dict:
    """Run one cell alone in this process: ms per step (best of ``repeats``) and peak memory.

    The benchmark calls it in a fresh child process per cell, for the memory column: the peak
    resident memory (``ru_maxrss``) then belongs to this one method and T.
    """
    import torch

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    run, model, learner = _loop(network, method, steps, batch, device, sizes)
    run(min(steps, 10))  # warm-up: allocator, thread pools, lazy init
    elapsed = float("inf")
    for _ in range(repeats):
        model.zero_grad(set_to_none=True)
        gc.collect()  # each run starts from a collected heap (as timeit's runs do)
        elapsed = min(elapsed, run(steps))
    if learner is not None:
        learner.detach()
    return {
        "ms_per_step": 1e3 * elapsed / steps,
        "peak_mib": _peak_mib(device),
        "learner": learner is not None,
    }


def measure_times(
    network: str, methods: list[str], steps: int, batch: int, device: str, sizes, repeats: int
) -> dict[str, float]:
    """Time every method of one network and T in turn, ``repeats`` times: ms per step, best run.

    Each method runs on its own copy of the network (same weights, frames and targets) with its
    own learner; the runs alternate between methods, so that a slow spell of a shared machine
    lands on all of them alike and the ratios stay fair.
    """
    import torch

    torch.set_num_threads(max(1, os.cpu_count() or 1))
    loops = {m: _loop(network, m, steps, batch, device, sizes) for m in methods}
    for run, _, _ in loops.values():
        run(min(steps, 10))  # warm-up: allocator, thread pools, lazy init
    best = dict.fromkeys(methods, float("inf"))
    for _ in range(repeats):
        for method, (run, model, _) in loops.items():
            model.zero_grad(set_to_none=True)
            gc.collect()  # not the previous method's garbage: each run starts collected
            best[method] = min(best[method], run(steps))
    for _, _, learner in loops.values():
        if learner is not None:
            learner.detach()
    return {m: 1e3 * t / steps for m, t in best.items()}


def _child(args: list[str], timeout: float) -> tuple[dict | None, str]:
    """Run ``snn-ostl bench --child ...`` in a fresh process: (its JSON result, why not)."""
    cmd = [sys.executable, "-m", "snn_ostl.bench", "--child", *args]
    try:
        out = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        return None, f"skipped: over {timeout:.0f}s"
    if out.returncode != 0:
        lines = out.stderr.strip().splitlines() or [f"exit status {out.returncode}"]
        # the exception's own line: the table keeps one line per cell
        reason = "out of memory" if out.returncode in (-9, 137) else lines[-1][:200]
        return None, f"failed: {reason}"
    return json.loads(out.stdout.strip().splitlines()[-1]), ""


def _measure_network(network, methods, steps, batch, device, sizes, rounds, timeout, progress):
    """The cells of one network and T: times from one child that alternates the methods,
    peak memory from one child per method."""
    common = [str(steps), str(batch), device, ",".join(map(str, sizes))]
    repeats = (3 if steps <= 500 else 1) * rounds
    times, why = _child(["times", network, ",".join(methods), *common, str(repeats)],
                        timeout * len(methods))  # fmt: skip
    progress.update()
    cells = []
    for method in methods:
        peak, note = _child(["memory", network, method, *common, "1"], timeout)
        progress.update()
        ms = times.get(method) if times else None
        cells.append(Cell(network, method, steps, ms, peak and peak["peak_mib"], why or note))
    return cells


def _parse(argv):
    p = argparse.ArgumentParser(
        prog="snn-ostl bench",
        description="OSTL against BPTT: time per step and peak memory of each network, in one "
        "run; the table prints their ratios.",
    )
    p.add_argument("--networks", default=None,
                   help=f"comma-separated, from: {', '.join(NETWORKS)} (default: all)")  # fmt: skip
    p.add_argument("--steps", default=None,
                   help="sequence lengths T, comma-separated, for every network (default: "
                        "each network's own: 20,200,2000 for the MLPs, 25,100 for the conv "
                        "nets)")  # fmt: skip
    p.add_argument("--batch", type=int, default=None,
                   help="batch size for every network (default: each network's own: 128, "
                        "16 for norse-convnet)")  # fmt: skip
    p.add_argument("--sizes", default="784,256,256,10",
                   help="layer sizes of the MLP networks; the conv networks ignore it (28x28 "
                        "input, their frameworks' layers) (default: 784,256,256,10)")  # fmt: skip
    p.add_argument("--device", default="cpu", help="cpu or cuda (default: cpu)")
    p.add_argument("--timeout", type=float, default=900,
                   help="seconds per method and T before skipping (default: 900)")  # fmt: skip
    p.add_argument("--bptt-max-steps", type=int, default=2000,
                   help="skip BPTT above this T, as it stores the whole sequence (default: "
                        "2000)")  # fmt: skip
    p.add_argument("--rounds", type=int, default=1,
                   help="time each method this many times more (3 runs per round up to T=500, "
                        "1 above); keep the best (default: 1)")  # fmt: skip
    p.add_argument("--flush-every", default="16",
                   help="also time per-synapse nets with flush_every=N (comma-separated "
                        "values; 1: no) (default: 16)")  # fmt: skip
    p.add_argument("--no-floor", dest="floor", action="store_false",
                   help="leave out the reference row without a learner")  # fmt: skip
    p.add_argument("--out", default=None,
                   help="also write the table (bench.txt) and bench.json to this folder "
                        "(default: print only)")  # fmt: skip
    p.add_argument(
        "--check",
        action="store_true",
        help="small regression check on ratios; exits 1 when a bound is exceeded",
    )
    p.add_argument("--child", nargs=8, help=argparse.SUPPRESS)
    return p.parse_args(argv)


#: ``bench --check``: the networks it runs unless ``--networks`` says otherwise, T, and each
#: network's batch and sizes. The conv nets run at :data:`TINY_CONV_SIZES`, never at full size;
#: the tiny CSNN adds about 13 s to the check, Norse's ConvNet4 would add 24 s more (it runs with
#: ``--check --networks norse-convnet``).
CHECK_NETWORKS = ("snntorch-leaky", "norse-lif", "native-snu", "snntorch-csnn")
CHECK_STEPS = (10, 100)
CHECK_BATCH = {"snntorch-leaky": 32, "norse-lif": 32, "native-snu": 32, "snntorch-csnn": 8,
               "norse-convnet": 8}  # fmt: skip
CHECK_SIZES = (196, 64, 64, 10)


def _configs(args, networks: list[str]) -> dict[str, tuple[list[int], int, list[int]]]:
    """Each network's T list, batch and sizes, from its defaults and the options."""
    out = {}
    for n in networks:
        if args.check:
            sizes = TINY_CONV_SIZES[n] if n in CONV else CHECK_SIZES
            out[n] = (list(CHECK_STEPS), CHECK_BATCH[n], list(sizes))
            continue
        steps = [int(s) for s in args.steps.split(",")] if args.steps else DEFAULT_STEPS[n]
        sizes = CONV_SIZES[n] if n in CONV else [int(s) for s in args.sizes.split(",")]
        out[n] = (list(steps), args.batch or DEFAULT_BATCH[n], list(sizes))
    return out


def _header(configs, device: str, cpu: str) -> str:
    """One line when every network runs at the same batch and sizes, else one per network."""
    where = f"device {device}, {os.cpu_count()} cores, {cpu}"
    shapes = {(n in CONV, b, tuple(z)) for n, (_, b, z) in configs.items()}
    if len(shapes) == 1:
        n, (_, batch, sizes) = next(iter(configs.items()))
        return f"snn-ostl bench: batch {batch}, {describe(n, tuple(sizes))}, {where}"
    lines = [f"snn-ostl bench: {where}"]
    for n, (_, batch, sizes) in configs.items():
        lines.append(f"  {n}: batch {batch}, {describe(n, tuple(sizes))}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    """Entry point of ``snn-ostl bench``."""
    args = _parse(argv)
    if args.child:
        kind, network, methods, steps, batch, device, sizes, repeats = args.child
        shape = (int(steps), int(batch), device, [int(s) for s in sizes.split(",")], int(repeats))
        if kind == "times":
            result = measure_times(network, methods.split(","), *shape)
        else:
            result = measure(network, methods, *shape)
        print(json.dumps(result))
        return 0
    if args.networks is None:
        networks = list(CHECK_NETWORKS if args.check else NETWORKS)
    else:
        networks = [n for n in args.networks.split(",") if n]
    for n in networks:
        if n not in NETWORKS:
            print(f"snn-ostl bench: --networks: unknown {n!r}; choose from {', '.join(NETWORKS)}")
            return 2
    flush_every = [int(w) for w in args.flush_every.split(",") if w]
    configs = _configs(args, networks)
    from tqdm import tqdm

    def methods(network: str) -> tuple[str, ...]:
        # flush_every changes nothing for factorised traces: time it where traces are per-synapse
        out = ("bptt", "ostl")
        if network in PER_SYNAPSE:
            out += tuple(f"ostl/{w}" for w in flush_every if w > 1)
        return out if args.check or not args.floor else (*out, FLOOR)

    jobs = [(n, t) for n in networks for t in configs[n][0]]
    cells: list[Cell] = []
    progress = tqdm(total=sum(1 + len(methods(n)) for n, _ in jobs), desc="bench",
                    unit="process", file=sys.stderr)  # fmt: skip
    for network, steps in jobs:
        _, batch, sizes = configs[network]
        wanted = list(methods(network))
        if steps > args.bptt_max_steps:
            wanted.remove("bptt")
            cells.append(Cell(network, "bptt", steps, None, None, "BPTT skipped (memory)"))
            progress.update()
        cells += _measure_network(network, wanted, steps, batch, args.device, sizes,
                                  args.rounds, args.timeout, progress)  # fmt: skip
    progress.close()
    table = render(cells)
    import platform

    cpu = platform.processor() or platform.machine()
    device = args.device
    if device.startswith("cuda"):
        import torch

        # the memory column is then the GPU's peak allocation, not the process's RSS
        device += f" ({torch.cuda.get_device_name(device)}, peak MiB = max_memory_allocated)"
    head = _header(configs, device, cpu)
    summary = "" if args.check else targets(cells)
    print(head)
    print(table)
    if summary:
        print("\ntargets:\n" + summary)
    if args.out:
        os.makedirs(args.out, exist_ok=True)
        with open(os.path.join(args.out, "bench.txt"), "w") as f:
            f.write(head + "\n" + table + "\n" + (f"\ntargets:\n{summary}\n" if summary else ""))
        with open(os.path.join(args.out, "bench.json"), "w") as f:
            json.dump([c.__dict__ for c in cells], f, indent=1)
    if args.check:
        return check(cells)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
