"""JSB chorales, polyphonic music prediction: the OSTL paper's music task.

At each quarter-note step the model sees the 88 keys that sound and predicts the keys of the
next step. The paper's model: 88 inputs -> 150 recurrent sSNU (decay 0.4, g = identity, output
``sigmoid(s - threshold)`` with the threshold starting at 1.0) -> 88 sigmoid outputs (here a
Linear layer whose sigmoid lives in the loss), binary cross-entropy summed over keys and steps,
plain SGD with lr 5e-4 on one sequence at a time, sequences in file order. Test metric: negative
log-likelihood per time step. With one stateful layer, OSTL's gradient is BPTT's.

Exact OSTL carries the recurrent layer's full Jacobian (traces of size n x n x (n + inputs)), so
an epoch is far slower than with BPTT on a CPU; ``--learner ostl-no-h`` drops the recurrent
weights from the Jacobian and is much cheaper.

Data: the standard benchmark file ``$SNN_OSTL_DATA/jsb/jsb-chorales-quarter.json`` when it is
there, else music21's bundled Bach chorales (``pip install music21``; a seeded split that is not
the benchmark's). ``snn-ostl tasks`` says how to get either (:data:`HOW_TO_GET`).
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any, ClassVar

import torch
from torch import Tensor

from snn_ostl.tasks.base import (
    Availability,
    Task,
    TaskData,
    data_folder_note,
    generator,
    have_module,
    shuffled,
)
from snn_ostl.tasks.objectives import MultiLabel
from snn_ostl.tasks.training import SeqBatch

__all__ = ["HOW_TO_GET", "JSBTask"]

#: What a user does to get the chorales: either source will do.
HOW_TO_GET = (
    "pip install music21 (the task then reads music21's bundled Bach chorales, about 400, "
    "split 60/20/20 with the seed; parsing them takes about a minute), or, for the standard "
    "229/76/77 benchmark split that published results use, download jsb-chorales-quarter.json "
    "from https://github.com/czhuang/JSB-Chorales-dataset to DIR/jsb/jsb-chorales-quarter.json "
    "(DIR: any folder of yours) and export SNN_OSTL_DATA=DIR"
)


def _music_batches(rolls: list[Tensor], batch_size: int, order: list[int]) -> Iterator[SeqBatch]:
    from snn_ostl.data import pad_time_major

    for start in range(0, len(order), batch_size):
        chosen = [rolls[i] for i in order[start : start + batch_size]]
        padded, lengths = pad_time_major(chosen)
        steps = padded.shape[0] - 1
        mask = torch.arange(steps, device=lengths.device).unsqueeze(1) < (lengths - 1).unsqueeze(0)
        yield SeqBatch(padded[:-1], padded[1:], mask)


class JSBTask(Task):
    """88-key piano rolls of Bach chorales; predict the next step's keys."""

    name = "jsb"
    summary = "JSB chorales (polyphonic music), 88-150 recurrent sSNU-88, NLL per step"
    cells: ClassVar[dict[str, tuple[str, ...]]] = {"native": ("ssnu", "snu")}
    defaults: ClassVar[dict[str, Any]] = {
        "epochs": 1,
        "batch_size": 1,
        "lr": 5e-4,
        "optimizer": "sgd",
        "hidden": [150],
        "shuffle": False,
        "horizon": 10,
        "cell_options": {
            "ssnu": {
                "recurrent": True,
                "decay": 0.4,
                "activation": "identity",
                "threshold": 1.0,
            },
            "snu": {"recurrent": True, "decay": 0.4, "threshold": 1.0},
        },
    }
    tiny: ClassVar[dict[str, Any]] = {
        "epochs": 1,
        "hidden": [12],
        "train_size": 3,
        "test_size": 2,
        "max_steps": 12,
    }

    def make_objective(self) -> MultiLabel:
        return MultiLabel()

    def availability(self) -> Availability:
        from snn_ostl.data.paths import shared_path

        path = shared_path("jsb", "jsb-chorales-quarter.json")
        if path is not None:
            return Availability(True, f"standard 229/76/77 benchmark split from {path}")
        if have_module("music21"):
            return Availability(
                True,
                "music21's bundled Bach chorales, split with the seed (not the standard "
                f"benchmark split: no jsb/jsb-chorales-quarter.json, {data_folder_note()})",
            )
        where = (
            "neither the benchmark file jsb/jsb-chorales-quarter.json "
            f"({data_folder_note()}) nor the pip package music21 is here"
        )
        return Availability(False, where, HOW_TO_GET)

    def load(self, config: dict[str, Any], seed: int) -> TaskData:
        from snn_ostl.data import DataUnavailableError, load_jsb

        avail = self.availability()
        if not avail.ok:
            raise DataUnavailableError(f"task jsb: {avail.where}. To get them: {avail.how}")
        with warnings.catch_warnings():
            # The loader warns, naming the folders it searched, when it falls back to music21;
            # the run's header and metrics.json already carry the source, which says so.
            warnings.filterwarnings("ignore", message="JSB benchmark file not found")
            split = load_jsb(seed=seed)
        train, test = list(split.train), list(getattr(split, config.get("eval_split", "test")))
        if config.get("train_size"):
            train = train[: config["train_size"]]
        if config.get("test_size"):
            test = test[: config["test_size"]]
        if config.get("max_steps"):
            train = [r[: config["max_steps"] + 1] for r in train]
            test = [r[: config["max_steps"] + 1] for r in test]
        size = config["batch_size"]

        def train_batches(epoch: int) -> Iterator[SeqBatch]:
            order = list(range(len(train)))
            if config.get("shuffle"):
                order = shuffled(len(train), generator(seed, 0, epoch))
            return _music_batches(train, size, order)

        def test_batches() -> Iterator[SeqBatch]:
            return _music_batches(test, 16, list(range(len(test))))

        steps = sum(r.shape[0] - 1 for r in train)
        source = f"{split.source}; {len(train)} train sequences ({steps} steps), {len(test)} test"
        return TaskData(train_batches, test_batches, -(-len(train) // size), 88, 88, source)
