"""Loss functions and metrics of the tasks, one step at a time.

Each objective gives the loss of one time step (summed over the batch) for the training loops
of :mod:`snn_ostl.tasks.training` and turns whole sequences of outputs into metrics. The loss of a
batch
is the sum of its step losses divided by :meth:`scale`, so a per-step backward and one backward
over the sequence produce the same gradient.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from snn_ostl.tasks.training import SeqBatch

__all__ = ["Classification", "MultiLabel", "NextToken"]

IGNORE = -100


def _add(totals: dict[str, float], **values: float) -> None:
    for key, value in values.items():
        totals[key] = totals.get(key, 0.0) + float(value)


class Classification:
    """Cross-entropy on the readout at every masked step; the class is read from the summed
    readout over those steps.

    The loss of a batch is the mean over its loss terms (masked steps times sequences).
    """

    main_metric = "accuracy"
    higher_is_better = True

    def step_loss(self, output: Tensor, batch: SeqBatch, t: int) -> Tensor:
        """Summed cross-entropy of step ``t`` (unmasked sequences ignored)."""
        return F.cross_entropy(output, batch.target[t], ignore_index=IGNORE, reduction="sum")

    def scale(self, batch: SeqBatch) -> float:
        """Number of loss terms in the batch."""
        return max(float(batch.mask.sum()), 1.0)

    def accumulate(self, totals: dict[str, float], outputs: Tensor, batch: SeqBatch) -> None:
        """Add correct predictions and summed cross-entropy of ``outputs`` [T, B, K]."""
        mask = batch.mask.to(outputs.dtype)
        summed = (outputs * mask.unsqueeze(-1)).sum(0)
        correct = (summed.argmax(-1) == batch.labels).sum()
        flat = outputs.reshape(-1, outputs.shape[-1])
        loss = F.cross_entropy(flat, batch.target.reshape(-1), ignore_index=IGNORE, reduction="sum")
        _add(totals, correct=correct, count=batch.labels.numel(), loss=loss, terms=mask.sum())

    def summarise(self, totals: dict[str, float]) -> dict[str, float]:
        """Accuracy (fraction) and mean cross-entropy per loss term."""
        return {
            "accuracy": totals["correct"] / max(totals["count"], 1.0),
            "loss": totals["loss"] / max(totals["terms"], 1.0),
        }


class MultiLabel:
    """Binary cross-entropy over independent outputs (piano keys), summed over keys and steps.

    Args:
        mean: Divide the batch loss by its number of steps (else a plain sum, the paper's JSB
            setting).
    """

    main_metric = "nll_per_step"
    higher_is_better = False

    def __init__(self, *, mean: bool = False) -> None:
        self.mean = mean

    def _terms(self, output: Tensor, target: Tensor) -> Tensor:
        return F.binary_cross_entropy_with_logits(output, target, reduction="none").sum(-1)

    def step_loss(self, output: Tensor, batch: SeqBatch, t: int) -> Tensor:
        """Binary cross-entropy of step ``t``, summed over keys and masked sequences."""
        return (self._terms(output, batch.target[t]) * batch.mask[t].to(output.dtype)).sum()

    def scale(self, batch: SeqBatch) -> float:
        """1 for a plain sum, else the number of masked steps."""
        return max(float(batch.mask.sum()), 1.0) if self.mean else 1.0

    def accumulate(self, totals: dict[str, float], outputs: Tensor, batch: SeqBatch) -> None:
        """Add the summed negative log-likelihood and the number of steps."""
        mask = batch.mask.to(outputs.dtype)
        nll = (self._terms(outputs, batch.target) * mask).sum()
        _add(totals, nll=nll, steps=mask.sum())

    def summarise(self, totals: dict[str, float]) -> dict[str, float]:
        """Negative log-likelihood per time step (nats, summed over keys)."""
        return {"nll_per_step": totals["nll"] / max(totals["steps"], 1.0)}


class NextToken:
    """Next-character prediction: cross-entropy at every step, reported in bits per character."""

    main_metric = "bpc"
    higher_is_better = False

    def step_loss(self, output: Tensor, batch: SeqBatch, t: int) -> Tensor:
        """Summed cross-entropy of step ``t``."""
        return F.cross_entropy(output, batch.target[t], reduction="sum")

    def scale(self, batch: SeqBatch) -> float:
        """Number of predicted characters."""
        return max(float(batch.mask.sum()), 1.0)

    def accumulate(self, totals: dict[str, float], outputs: Tensor, batch: SeqBatch) -> None:
        """Add the summed cross-entropy and the number of characters."""
        flat = outputs.reshape(-1, outputs.shape[-1])
        loss = F.cross_entropy(flat, batch.target.reshape(-1), reduction="none")
        mask = batch.mask.reshape(-1).to(loss.dtype)
        _add(totals, loss=(loss * mask).sum(), chars=mask.sum())

    def summarise(self, totals: dict[str, float]) -> dict[str, float]:
        """Cross-entropy in nats and in bits per character."""
        nats = totals["loss"] / max(totals["chars"], 1.0)
        return {"bpc": nats / math.log(2.0), "loss": nats}


def one_hot_steps(ids: Tensor, size: int) -> Tensor:
    """``int64 [T, B]`` symbols -> ``float32 [T, B, size]`` one-hot inputs."""
    return F.one_hot(ids, size).to(torch.float32)
