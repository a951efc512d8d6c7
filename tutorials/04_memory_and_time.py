"""
Memory and time against sequence length
=======================================

This tutorial measures how the memory and the time per step of training grow with the sequence
length, for BPTT and for OSTL, and shows how to read the size of the learner's traces.

BPTT keeps what every step saved for the backward pass until the sequence ends, so its memory
grows with the sequence length ``T``. OSTL runs a backward pass at every step; what a step saved
is freed right away and the only thing carried from step to step is the eligibility traces, whose
size does not depend on ``T``.

This tutorial measures both on a small two-layer spiking network: the bytes autograd saves for
backward (counted with :func:`torch.autograd.graph.saved_tensors_hooks`), the memory of the traces
(:meth:`OSTL.trace_bytes <snn_ostl.OSTL.trace_bytes>`), and the time per step. The numbers are
measured when the tutorial runs, on whatever machine runs it; they show the trend, not a
benchmark (see the benchmarks page for that).
"""

import time

import matplotlib.pyplot as plt
import torch
from torch import nn

import snn_ostl

torch.manual_seed(0)
BATCH, INPUTS, HIDDEN, CLASSES = 16, 64, 128, 10
LENGTHS = [25, 50, 100, 200]

# %%
# The network: two feed-forward SNU layers and a Linear readout.


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.layer1 = snn_ostl.SNU(INPUTS, HIDDEN, threshold=0.5)
        self.layer2 = snn_ostl.SNU(HIDDEN, HIDDEN, threshold=0.5)
        self.readout = nn.Linear(HIDDEN, CLASSES)

    def forward(self, x, state=None):
        s1, s2 = state if state is not None else (None, None)
        y, s1 = self.layer1(x, s1)
        y, s2 = self.layer2(y, s2)
        return self.readout(y), (s1, s2)


net = Net()
loss_fn = nn.CrossEntropyLoss()

# %%
# Counting what autograd saves
# ----------------------------
#
# Every operation that needs one of its inputs or outputs for the backward pass hands that
# tensor to the *pack* hook of :func:`~torch.autograd.graph.saved_tensors_hooks`. We add up the
# bytes of the tensors handed over since the last backward pass (a tensor saved twice counts
# once) and keep the largest total: that is the activation memory the method needs at its peak.


class SavedBytes:
    def __init__(self):
        self.peak = 0
        self._window = {}

    def pack(self, tensor):
        key = (tensor.data_ptr(), tensor.shape, tensor.dtype)
        self._window[key] = tensor.numel() * tensor.element_size()
        self.peak = max(self.peak, sum(self._window.values()))
        return tensor

    def backward_done(self):
        self._window.clear()

    def hooks(self):
        return torch.autograd.graph.saved_tensors_hooks(self.pack, lambda tensor: tensor)


def make_data(length):
    inputs = (torch.rand(length, BATCH, INPUTS) < 0.2).float()
    labels = torch.randint(CLASSES, (BATCH,))
    return inputs, labels


# %%
# One sequence each way
# ---------------------
#
# BPTT: run the whole sequence, sum the per-step losses, one backward pass at the end.
# OSTL: the same loop with a learner attached and a backward pass at every step.


def bptt(inputs, labels, counter):
    state, total = None, 0.0
    with counter.hooks():
        for x in inputs:
            out, state = net(x, state)
            total = total + loss_fn(out, labels)
        total.backward()
    counter.backward_done()


def ostl(inputs, labels, counter, learner):
    learner.reset()
    state = None
    with counter.hooks():
        for x in inputs:
            out, state = net(x, state)
            loss_fn(out, labels).backward()
            counter.backward_done()


def measure(method, length, repeats=2):
    """Peak saved bytes and the best time per step over a few repeats."""
    inputs, labels = make_data(length)
    best, counter = float("inf"), SavedBytes()
    for _ in range(repeats):
        start = time.perf_counter()
        method(inputs, labels, counter)
        best = min(best, (time.perf_counter() - start) / length)
        net.zero_grad(set_to_none=True)
    return counter.peak, best


# %%
# Measure BPTT first, then attach the learner and measure OSTL. A short warm-up run comes first
# so that one-off costs do not land on the first length.

measure(bptt, 10, repeats=1)
results = {"BPTT": [measure(bptt, T) for T in LENGTHS]}

learner = snn_ostl.OSTL(net)


def ostl_run(inputs, labels, counter):
    ostl(inputs, labels, counter, learner)


measure(ostl_run, 10, repeats=1)
results["OSTL"] = [measure(ostl_run, T) for T in LENGTHS]
trace_bytes = learner.trace_bytes()  # what the traces hold after the last sequence's last step
print(learner.summary())
learner.detach()

# %%
# The results as a table. OSTL's activation memory is one step's worth whatever ``T`` is; its
# traces (here per-synapse, because the SNU's reset passes through its own spikes) are a fixed
# cost on top.

MIB = 2**20
print(
    f"{'T':>5s} {'BPTT saved':>12s} {'OSTL saved':>12s} {'BPTT ms/step':>13s} {'OSTL ms/step':>13s}"
)
for T, (b_mem, b_time), (o_mem, o_time) in zip(LENGTHS, results["BPTT"], results["OSTL"]):
    print(
        f"{T:5d} {b_mem / MIB:9.2f} MiB {o_mem / MIB:9.2f} MiB "
        f"{b_time * 1e3:13.2f} {o_time * 1e3:13.2f}"
    )
print(f"OSTL eligibility traces: {trace_bytes / MIB:.2f} MiB, the same for every T")

# %%
# The same as plots.

fig, (ax_mem, ax_time) = plt.subplots(1, 2, figsize=(9, 3.8))
for name, marker in [("BPTT", "o"), ("OSTL", "s")]:
    ax_mem.plot(LENGTHS, [m / MIB for m, _ in results[name]], marker=marker, label=f"{name}, saved")
    ax_time.plot(LENGTHS, [t * 1e3 for _, t in results[name]], marker=marker, label=name)
ax_mem.plot(
    LENGTHS,
    [(results["OSTL"][k][0] + trace_bytes) / MIB for k in range(len(LENGTHS))],
    ls="--",
    label="OSTL, saved + traces",
)
ax_mem.set(xlabel="sequence length T", ylabel="MiB at the peak", title="memory")
ax_time.set(xlabel="sequence length T", ylabel="ms per step", title="time", ylim=(0, None))
ax_mem.legend()
ax_time.legend()
fig.tight_layout()

# sphinx_gallery_start_ignore
# Run as a script, the tutorial saves its figures as PNG files in the current folder (the
# documentation build, which defines no ``__file__``, collects the figures itself).
if "__file__" in globals():
    from pathlib import Path

    for number in plt.get_fignums():
        path = Path(f"tutorial_{Path(__file__).stem}_{number}.png")
        plt.figure(number).savefig(path, dpi=100)
        print(f"figure saved to {path.resolve()}")
# sphinx_gallery_end_ignore

# %%
# BPTT's memory grows in proportion to ``T``; OSTL's stays flat. Per step, OSTL pays for a
# backward pass at every step and for updating and contracting the traces. The SNU's traces are
# per-synapse (one number per weight and state), the expensive kind; neurons whose traces
# factorise, such as snnTorch's ``Leaky`` with its default reset, only filter their inputs. The
# benchmarks page has the measured ratios for both kinds.
