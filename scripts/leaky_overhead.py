"""How close can any OSTL learner get to BPTT on the benchmark's snnTorch Leaky net?

``python scripts/leaky_overhead.py [--steps 20,200] [--rounds 8]``

The target for factorised layers is OSTL time per step <= 1.0x BPTT. This script measures
the lowest cost an OSTL learner could have on the benchmark network (784-256-256-10, snnTorch
``Leaky``, batch 128) by writing one by hand for exactly this network, with none of the
library's generality: no adapter, no validation, no state checks, no learning-signal options.
It keeps only what the fused presynaptic form needs per step (docs/theory.rst):

- the filtered input ``x̃_t = β x̃_{t-1} + x_t`` of each hidden Linear, saved for the Linear's
  weight gradient in place of ``x_t`` (``torch.autograd.graph.saved_tensors_hooks``);
- the bias's filtered input ``f_t = β f_{t-1} + 1``: the bias enters the Linear as
  ``lerp(b.detach(), b, f_t)``, the same values with a gradient scaled by ``f_t``;
- the membrane detached before each step.

Before timing, the script checks that this hand-written learner gives the library learner's
gradients on one sequence (so the figure below is the cost of a correct OSTL). Then it times,
interleaved in one process (best of ``--rounds``): BPTT (one backward per sequence), the floor
(a backward per step, the state detached, no learner), the hand-written learner and
``snn_ostl.OSTL``. Ratios are against BPTT of the same run.
"""

from __future__ import annotations

import argparse
import itertools
import time

import snntorch as snn
import torch
from torch import nn

import snn_ostl
from snn_ostl.bench.nets import build

SIZES = (784, 256, 256, 10)
BATCH = 128
FRAMES = 32  # input frames drawn once and cycled, as in snn-ostl bench


class HandWritten:
    """Fused presynaptic OSTL for ``Sequential(Linear, Leaky, Linear, Leaky, Linear)`` only."""

    def __init__(self, model: nn.Sequential, scale_bias: bool = True) -> None:
        # scale_bias=False leaves the bias's f_t out (a wrong gradient: the check must see it)
        pairs = [(a, b) for a, b in itertools.pairwise(model) if isinstance(b, snn.Leaky)]
        self.handles = []
        self.synapses = []
        for linear, neuron in pairs:
            state = {"beta": float(neuron.beta), "x": None, "f": 1.0}
            self.synapses.append(state)
            self.handles += [
                linear.register_forward_pre_hook(self._pre(state, scale_bias)),
                linear.register_forward_hook(self._post(state)),
                neuron.register_forward_pre_hook(self._detach),
            ]

    @staticmethod
    def _pre(state, scale_bias: bool):
        def hook(linear: nn.Linear, args):
            x = args[0].detach()
            previous = state["x"]
            filtered = x if previous is None else torch.add(x, previous, alpha=state["beta"])
            state["x"] = filtered
            state["f"] = 1.0 if previous is None else state["beta"] * state["f"] + 1.0

            def pack(t):
                same = t.data_ptr() == x.data_ptr() and t.shape == x.shape
                return filtered if same and t.stride() == x.stride() else t

            state["saving"] = torch.autograd.graph.saved_tensors_hooks(pack, lambda t: t)
            state["saving"].__enter__()
            bias = state["bias"] = linear.bias
            scale = state["f"] if scale_bias else 1.0
            linear._parameters["bias"] = torch.lerp(bias.detach(), bias, scale)

        return hook

    @staticmethod
    def _post(state):
        def hook(linear: nn.Linear, args, output):
            linear._parameters["bias"] = state.pop("bias")
            state.pop("saving").__exit__(None, None, None)

        return hook

    @staticmethod
    def _detach(neuron: snn.Leaky, args):
        if isinstance(neuron.mem, torch.Tensor) and neuron.mem.grad_fn is not None:
            neuron.mem = neuron.mem.detach()

    def reset(self) -> None:
        for state in self.synapses:
            state["x"], state["f"] = None, 1.0


def _loops(steps: int, scale_bias: bool = True):
    """One timed loop per method, each on its own copy of the network."""
    gen = torch.Generator().manual_seed(1)
    frames = torch.bernoulli(torch.full((FRAMES, BATCH, SIZES[0]), 0.2), generator=gen)
    targets = torch.randint(0, SIZES[-1], (steps, BATCH), generator=gen)
    loss_fn = nn.CrossEntropyLoss()

    def make(method: str):
        model, step, reset, detach = build("snntorch-leaky", SIZES)
        learner = None
        if method == "hand-written OSTL":
            learner = HandWritten(model, scale_bias)
        elif method == "snn_ostl.OSTL":
            learner = snn_ostl.OSTL(model)

        def run(n: int) -> float:
            if learner is not None:
                learner.reset()
            reset(model)
            total = 0.0
            start = time.perf_counter()
            for t in range(n):
                if method == "floor":
                    detach(model, None)
                out, _ = step(model, frames[t % FRAMES], None)
                loss = loss_fn(out, targets[t])
                if method == "bptt":
                    total = total + loss
                else:
                    loss.backward()
            if method == "bptt":
                total.backward()
            return time.perf_counter() - start

        return run, model

    return {m: make(m) for m in ("bptt", "floor", "hand-written OSTL", "snn_ostl.OSTL")}


def check_gradients(steps: int = 20, scale_bias: bool = True) -> tuple[float, float]:
    """Largest relative difference between the hand-written learner's gradients and the
    library's over one sequence, and the fraction of hidden neurons (per sample) that spiked."""
    loops = _loops(steps, scale_bias)
    fired: dict[nn.Module, torch.Tensor] = {}

    def record(neuron: nn.Module, args, spikes: torch.Tensor) -> None:
        seen = spikes.detach() > 0
        fired[neuron] = seen | fired[neuron] if neuron in fired else seen

    grads = {}
    for method in ("hand-written OSTL", "snn_ostl.OSTL"):
        run, model = loops[method]
        if method == "hand-written OSTL":
            for neuron in (m for m in model if isinstance(m, snn.Leaky)):
                neuron.register_forward_hook(record)
        model.zero_grad(set_to_none=True)
        run(steps)
        grads[method] = [p.grad.clone() for p in model.parameters()]
    worst = 0.0
    for a, b in zip(*grads.values()):
        worst = max(worst, ((a - b).norm() / b.norm()).item())
    spiked = torch.cat([f.flatten() for f in fired.values()]).float().mean().item()
    return worst, spiked


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--steps", default="20,200", help="sequence lengths T, comma-separated")
    p.add_argument("--rounds", type=int, default=8, help="timed runs per method (best kept)")
    args = p.parse_args()
    error, spiked = check_gradients()
    print(f"hand-written vs snn_ostl.OSTL gradients, largest relative difference: {error:.1e}")
    print(f"hidden neurons that spiked in that sequence: {spiked:.0%}")
    if error > 1e-5:
        raise SystemExit("the hand-written learner does not match the library: timings void")
    print(f"{'T':>6}  {'method':<18} {'ms/step':>8} {'/ BPTT':>7}")
    for steps in map(int, args.steps.split(",")):
        loops = _loops(steps)
        for run, _ in loops.values():
            run(min(steps, 10))  # warm-up
        best = dict.fromkeys(loops, float("inf"))
        for _ in range(args.rounds):
            for method, (run, model) in loops.items():
                model.zero_grad(set_to_none=True)
                best[method] = min(best[method], run(steps))
        for method, seconds in best.items():
            ratio = seconds / best["bptt"]
            print(f"{steps:>6}  {method:<18} {1e3 * seconds / steps:8.3f} {ratio:7.3f}")


if __name__ == "__main__":
    main()
