"""Cue, long delay, recall: where truncated BPTT with a short horizon cannot learn.

A cue (one of ``classes`` channels, a few steps) opens each sequence; after ``delay`` silent
steps a recall channel asks for the cue class, and only those recall steps carry a loss. The
only way to learn the input weights and the memory (a learned per-unit decay) is to carry
credit across the delay: OSTL's eligibility traces do it exactly for this one-layer net, as
BPTT does; truncated BPTT with a horizon shorter than the delay never sees the cue.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

from snn_ostl.tasks.base import Task, TaskData, generator
from snn_ostl.tasks.objectives import Classification
from snn_ostl.tasks.training import SeqBatch

__all__ = ["DelayTask"]


class DelayTask(Task):
    """The synthetic cue / delay / recall task of :func:`snn_ostl.data.make_delay_task`."""

    name = "delay"
    summary = "synthetic cue / delay / recall (long temporal credit assignment)"
    cells: ClassVar[dict[str, tuple[str, ...]]] = {
        "native": ("ssnu", "snu"),
        "torch": ("lstm",),
        "norse": ("lsnn",),
    }
    baselines = ("bptt", "tbptt")
    defaults: ClassVar[dict[str, Any]] = {
        "epochs": 15,
        "batch_size": 32,
        "batches": 20,
        "test_batches": 4,
        "lr": 1e-2,
        "optimizer": "adam",
        "classes": 2,
        "delay": 60,
        "cue_steps": 5,
        "recall_steps": 5,
        "noise": 0.1,
        "hidden": [32],
        "horizon": 5,
        "cell_options": {
            "ssnu": {
                "decay": 0.8,
                "activation": "identity",
                "learn_decay": True,
                "decay_per_unit": True,
            },
            "snu": {"decay": 0.8, "learn_decay": True, "decay_per_unit": True},
            # adaptation over about 100 steps keeps the cue across the delay (Bellec et al.)
            "lsnn": {"tau_adapt_inv": 10.0, "beta": 0.5, "v_th": 0.5},
        },
    }
    tiny: ClassVar[dict[str, Any]] = {
        "epochs": 2,
        "batches": 3,
        "test_batches": 1,
        "batch_size": 8,
        "delay": 6,
        "noise": 0.0,
        "hidden": [8],
        "horizon": 2,
    }

    def make_objective(self) -> Classification:
        return Classification()

    def load(self, config: dict[str, Any], seed: int) -> TaskData:
        from snn_ostl.data import make_delay_task

        options = {
            "num_classes": config["classes"],
            "delay": config["delay"],
            "cue_steps": config["cue_steps"],
            "recall_steps": config["recall_steps"],
            "noise": config["noise"],
        }

        def draw(gen: Any, count: int) -> Iterator[SeqBatch]:
            for _ in range(count):
                task = make_delay_task(config["batch_size"], generator=gen, **options)
                yield SeqBatch(task.inputs, task.targets, task.mask, task.labels)

        def train(epoch: int) -> Iterator[SeqBatch]:
            return draw(generator(seed, 0, epoch), config["batches"])

        def test() -> Iterator[SeqBatch]:
            return draw(generator(seed, 1), config["test_batches"])

        steps = config["cue_steps"] + config["delay"] + config["recall_steps"]
        source = (
            f"synthetic cue/delay/recall: {config['classes']} classes, delay {config['delay']}, "
            f"{steps} steps per sequence, noise {config['noise']}"
        )
        return TaskData(
            train, test, config["batches"], config["classes"] + 1, config["classes"], source
        )
