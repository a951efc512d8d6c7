"""
The paper's SNU and sSNU on JSB chorales
========================================

The OSTL paper's music task predicts the next chord of a Bach chorale: 88 piano keys in, 88 key
probabilities out. Its model is one recurrent layer of soft spiking neural units (sSNU, decay
0.4, identity activation) read out by 88 sigmoid units. With a single stateful layer, OSTL's
gradient *is* BPTT's, so the two learning curves must lie on top of each other. This tutorial
trains a small version on a few chorales both ways and checks exactly that, then does the same
with the spiking SNU.

The data: the standard JSB split when the developers' data folder is present, otherwise
music21's Bach chorales if installed, otherwise a few random piano rolls (said below), so that
the tutorial always runs.
"""

# %%
import matplotlib.pyplot as plt
import torch
from torch import nn

import snn_ostl
from snn_ostl.data import DataUnavailableError, load_jsb

torch.manual_seed(0)
try:
    data = load_jsb()
    train, source = data.train[:8], data.source
except (DataUnavailableError, ImportError):
    train = [(torch.rand(24, 88) < 0.05).float() for _ in range(8)]
    source = "random piano rolls (no JSB data on this machine)"
train = [roll[:32] for roll in train]  # short sequences keep the build fast
print(f"data: {source}; {len(train)} sequences of up to {max(len(r) for r in train)} steps")

# %%
# The model: 88 -> recurrent sSNU -> 88 sigmoid outputs. The readout is stateless, so the
# network has one stateful layer and OSTL equals BPTT.


class ChoraleNet(nn.Module):
    def __init__(self, cell_type, hidden: int = 24):
        super().__init__()
        self.cell = cell_type(88, hidden, recurrent=True, decay=0.4, activation="identity")
        self.readout = nn.Linear(hidden, 88)

    def forward(self, keys, state):
        y, state = self.cell(keys, state)
        return self.readout(y), state


def sequence_losses(model, roll):
    """Binary cross-entropy of each next chord, summed over keys (one loss per step)."""
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
# Train the sSNU network by OSTL and by BPTT from the same initial weights.

curves = {}
for name, cell_type in (("sSNU", snn_ostl.SoftSNU), ("SNU", snn_ostl.SNU)):
    curves[name, "OSTL"] = train_model(cell_type, online=True)
    curves[name, "BPTT"] = train_model(cell_type, online=False)
    gap = max(abs(a - b) for a, b in zip(curves[name, "OSTL"], curves[name, "BPTT"]))
    print(f"{name}: NLL per step by epoch, OSTL {curves[name, 'OSTL']}")
    print(f"{name}: largest OSTL - BPTT difference over the curve: {gap:.2e}")
    assert gap < 1e-3 * max(curves[name, "BPTT"]), "one stateful layer: OSTL must equal BPTT"

# %%
fig, axes = plt.subplots(1, 2, figsize=(8, 3), sharey=True)
for ax, name in zip(axes, ("sSNU", "SNU")):
    ax.plot(curves[name, "BPTT"], "o-", label="BPTT", linewidth=3, alpha=0.5)
    ax.plot(curves[name, "OSTL"], "x--", label="OSTL")
    ax.set_title(name)
    ax.set_xlabel("epoch")
axes[0].set_ylabel("training NLL per step")
axes[0].legend()
fig.tight_layout()

# %%
# The curves coincide up to float32 rounding: the learning rule is the same, only the order
# of the computation differs (forward in time, one backward per step). The command
# ``snn-ostl train --task jsb`` runs the full-size model on the benchmark split.
