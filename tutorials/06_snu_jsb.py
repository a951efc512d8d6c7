"""
The paper's SNU and sSNU on polyphonic piano rolls
==================================================

This tutorial trains the OSTL paper's music model, one recurrent layer of spiking neural units
read out by 88 sigmoid units, to predict the next step of a piano roll, both by OSTL and by BPTT,
and shows that the two learning curves coincide, as they must with a single stateful layer.

The paper's task is the JSB chorales: at each quarter-note step the model sees the 88 piano keys
that sound and predicts the keys of the next step. Its model is one recurrent layer of soft
spiking neural units (sSNU, decay 0.4, identity activation); the tutorial trains a small version
of it on a few short sequences, then does the same with the spiking SNU.

Which data are used, and the first line of the output says which:

- the **JSB chorales** (the standard benchmark split) when :func:`snn_ostl.data.load_jsb` finds
  them on this machine;
- otherwise, and that is the case after a plain ``pip install``, **synthetic piano rolls** made
  below: four voices moving through the chords of a major key, in the same 88-key format as the
  chorales but not Bach's music. Numbers from them say nothing about the JSB benchmark; the
  comparison of OSTL with BPTT, the point of this tutorial, holds on any data.
"""

# %%
import matplotlib.pyplot as plt
import torch
from torch import nn

import snn_ostl
from snn_ostl.data import DataUnavailableError, load_jsb

torch.manual_seed(0)
SEQUENCES, LENGTH = 8, 32  # a few short sequences keep the run short

# %%
# The synthetic rolls
# -------------------
#
# Each roll holds four voices (bass, tenor, alto, soprano) that sound the triads of a major key
# with a random tonic, one chord for one or two steps, the next chord drawn from those that
# usually follow it. Like the chorales, the next step is partly predictable from the past.

MAJOR = [0, 2, 4, 5, 7, 9, 11]  # semitones of the major scale above the tonic
# scale degree (0 = I, 1 = ii, 3 = IV, 4 = V, 5 = vi) -> the degrees that may follow it
NEXT = {0: [3, 4, 5, 1], 1: [4], 3: [4, 0, 1], 4: [0, 5], 5: [3, 1]}


def synthetic_roll(steps, generator):
    """``[steps, 88]`` roll of a four-voice chord progression in a random major key."""

    def pick(options):
        return options[int(torch.randint(len(options), (1,), generator=generator))]

    tonic = pick(range(48, 60))  # MIDI C3..B3
    roll = torch.zeros(steps, 88)
    degree, t = 0, 0
    while t < steps:
        root, third, fifth = (
            tonic + MAJOR[(degree + k) % 7] + 12 * ((degree + k) // 7) for k in (0, 2, 4)
        )
        hold = pick([1, 2])
        for note in (root - 12, third, fifth, root + 12):  # bass, tenor, alto, soprano
            roll[t : t + hold, note - 21] = 1.0  # key 0 is MIDI note 21 (A0)
        t += hold
        degree = pick(NEXT[degree])
    return roll


# %%
# The data
# --------
#
# ``load_jsb(allow_fallback=False)`` returns the benchmark split or raises
# :class:`~snn_ostl.data.DataUnavailableError`. (With the fallback allowed it would instead build
# JSB-like rolls from music21's Bach corpus, ``pip install music21``, which takes about a minute
# to parse: too slow for a tutorial.)

try:
    chorales = load_jsb(allow_fallback=False)
except DataUnavailableError:
    chorales = None
if chorales is not None:
    train = [roll[:LENGTH] for roll in chorales.train[:SEQUENCES]]
    DATA = "JSB chorales"
    detail = (
        f"JSB chorales, standard benchmark split: the first {len(train)} of its "
        f"{len(chorales.train)} training chorales"
    )
else:
    generator = torch.Generator().manual_seed(0)
    train = [synthetic_roll(LENGTH, generator) for _ in range(SEQUENCES)]
    DATA = "synthetic piano rolls"
    detail = (
        f"{len(train)} SYNTHETIC rolls (four-voice chord progressions, not Bach); "
        "the JSB chorales were not found on this machine"
    )
print(f"data: {detail}; {max(len(r) for r in train)} steps each at most")

# %%
# The model
# ---------
#
# 88 keys -> a recurrent layer of (s)SNUs -> 88 logits, whose sigmoid is each key's probability
# at the next step. The readout is stateless, so the network has one stateful layer and OSTL
# equals BPTT.


class ChoraleNet(nn.Module):
    def __init__(self, cell_type, hidden: int = 24):
        super().__init__()
        self.cell = cell_type(88, hidden, recurrent=True, decay=0.4, activation="identity")
        self.readout = nn.Linear(hidden, 88)

    def forward(self, keys, state):
        y, state = self.cell(keys, state)
        return self.readout(y), state


def sequence_losses(model, roll):
    """Binary cross-entropy of each next step, summed over keys (one loss per step)."""
    state = None
    for t in range(len(roll) - 1):
        logits, state = model(roll[t : t + 1], state)
        yield nn.functional.binary_cross_entropy_with_logits(
            logits, roll[t + 1 : t + 2], reduction="sum"
        )


def train_model(cell_type, online: bool, epochs: int = 3):
    torch.manual_seed(1)
    model = ChoraleNet(cell_type)
    optimizer = torch.optim.SGD(model.parameters(), lr=5e-3)
    learner = snn_ostl.OSTL(model) if online else None
    curve = []
    for _ in range(epochs):
        total, steps = 0.0, 0
        for roll in train:
            if online:
                learner.reset()
                for loss in sequence_losses(model, roll):
                    loss.backward()  # forward in time: memory does not grow with the sequence
                    total, steps = total + loss.item(), steps + 1
            else:
                losses = list(sequence_losses(model, roll))
                torch.stack(losses).sum().backward()  # BPTT: the whole sequence at once
                total, steps = total + sum(x.item() for x in losses), steps + len(losses)
            optimizer.step()  # deferred update: one step per sequence, as in the paper
            optimizer.zero_grad()
        curve.append(total / steps)
    if learner is not None:
        learner.detach()
    return curve


# %%
# Training
# --------
#
# Train each network by OSTL and by BPTT from the same initial weights. The number reported is
# the training negative log-likelihood per step (the loss summed over keys), the paper's metric.

curves = {}
for name, cell_type in (("sSNU", snn_ostl.SoftSNU), ("SNU", snn_ostl.SNU)):
    curves[name, "OSTL"] = train_model(cell_type, online=True)
    curves[name, "BPTT"] = train_model(cell_type, online=False)
    gap = max(abs(a - b) for a, b in zip(curves[name, "OSTL"], curves[name, "BPTT"]))
    print(
        f"{name}: NLL per step by epoch, OSTL", ", ".join(f"{v:.3f}" for v in curves[name, "OSTL"])
    )
    print(
        f"{name}: NLL per step by epoch, BPTT", ", ".join(f"{v:.3f}" for v in curves[name, "BPTT"])
    )
    print(f"{name}: largest OSTL - BPTT difference over the curve: {gap:.2e}")
    assert gap < 1e-3 * max(curves[name, "BPTT"]), "one stateful layer: OSTL must equal BPTT"

# %%
fig, axes = plt.subplots(1, 2, figsize=(8, 3.2), sharey=True)
for ax, name in zip(axes, ("sSNU", "SNU")):
    epochs = range(1, len(curves[name, "BPTT"]) + 1)
    ax.plot(epochs, curves[name, "BPTT"], "o-", label="BPTT", linewidth=3, alpha=0.5)
    ax.plot(epochs, curves[name, "OSTL"], "x--", label="OSTL")
    ax.set(title=name, xlabel="epoch", xticks=epochs)
axes[0].set_ylabel("training NLL per step")
axes[0].legend()
fig.suptitle(f"data: {DATA}", fontsize="medium")
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
# The curves coincide up to float32 rounding: the learning rule is the same, only the order
# of the computation differs (forward in time, one backward per step). The command
# ``snn-ostl train --task jsb`` trains the paper's full-size model (150 sSNUs) on the chorales;
# it needs the JSB data or music21.
