"""Spoken digits (Free Spoken Digit Dataset), the stand-in for the paper's TIMIT task.

No pip package ships these recordings (CC BY-SA 4.0, Jakobovski and contributors): the task
reads ``$SNN_OSTL_DATA/fsdd/recordings/*.wav`` and ``snn-ostl tasks`` says how to get them
(:data:`HOW_TO_GET`); without them the task stops with that message. Log-mel frames (every
``stride``-th 10 ms frame) drive two recurrent sSNU layers (or ``nn.LSTMCell``\\ s) and a
Linear readout; cross-entropy counts at every frame of the utterance (or only the last,
``loss_on="last"``), the class is read from the readout summed over the counted frames.
``compare`` trains OSTL beside BPTT and truncated BPTT with a short horizon.
"""

from __future__ import annotations

import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import torch

from snn_ostl.tasks.base import (
    Availability,
    Task,
    TaskData,
    data_folder_note,
    generator,
    shuffled,
)
from snn_ostl.tasks.objectives import IGNORE, Classification
from snn_ostl.tasks.training import SeqBatch

__all__ = ["HOW_TO_GET", "SpeechTask"]

#: What a user does to get the recordings (any folder DIR will do).
HOW_TO_GET = (
    "git clone --depth 1 https://github.com/Jakobovski/free-spoken-digit-dataset DIR/fsdd "
    "(DIR: any folder of yours; or copy that repository's recordings/ folder to "
    "DIR/fsdd/recordings), then export SNN_OSTL_DATA=DIR; the task reads the wav files "
    "DIR/fsdd/recordings/{digit}_{speaker}_{index}.wav"
)

_CACHE: dict[tuple, Any] = {}
_NAME = re.compile(r"^(\d)_([A-Za-z0-9-]+)_(\d+)\.wav$")


def _subset_folder(source: Path, target: Path, subset: dict[str, int]) -> None:
    """Copy a small, fixed selection of recordings (for tiny runs) into ``target``."""
    files = sorted(p for p in source.glob("*.wav") if _NAME.match(p.name))
    speakers = sorted({_NAME.match(p.name).group(2) for p in files})[: subset["speakers"]]
    wanted_test = range(subset["test_per_digit"])
    wanted_train = range(5, 5 + subset["train_per_digit"])
    for path in files:
        _, speaker, index = _NAME.match(path.name).groups()
        if speaker in speakers and (int(index) in wanted_test or int(index) in wanted_train):
            shutil.copy(path, target / path.name)


def _load(config: dict[str, Any]) -> Any:
    from snn_ostl.data import load_fsdd
    from snn_ostl.data.paths import shared_path

    subset = config.get("subset")
    folder = shared_path("fsdd", "recordings")
    key = (
        str(folder),
        config["n_mels"],
        config["max_frames"],
        tuple(sorted((subset or {}).items())),
    )
    if key not in _CACHE:
        options = {"n_mels": config["n_mels"], "max_frames": config["max_frames"]}
        if subset and folder is not None:
            with tempfile.TemporaryDirectory() as tmp:
                _subset_folder(folder, Path(tmp), subset)
                _CACHE[key] = load_fsdd(tmp, **options)
        else:
            _CACHE[key] = load_fsdd(**options)
    return _CACHE[key]


def _batches(
    part: Any, order: list[int], batch_size: int, stride: int, last_only: bool
) -> Iterator[SeqBatch]:
    for start in range(0, len(order), batch_size):
        idx = torch.tensor(order[start : start + batch_size], device=part.labels.device)
        lengths = (part.lengths[idx] + stride - 1) // stride
        x = part.x[::stride, idx][: int(lengths.max())]
        steps = torch.arange(x.shape[0], device=x.device).unsqueeze(1)
        mask = steps == (lengths - 1) if last_only else steps < lengths
        labels = part.labels[idx]
        target = torch.where(
            mask, labels.unsqueeze(0), torch.full_like(mask, IGNORE, dtype=torch.int64)
        )
        yield SeqBatch(x, target, mask, labels)


class SpeechTask(Task):
    """Spoken digit classification from log-mel frames with two recurrent layers."""

    name = "speech"
    summary = "spoken digits (FSDD, 3,000 recordings), 2 recurrent sSNU layers, 10 classes"
    cells: ClassVar[dict[str, tuple[str, ...]]] = {
        "native": ("ssnu", "snu"),
        "torch": ("lstm",),
        "norse": ("lsnn",),
    }
    baselines = ("bptt", "tbptt")
    defaults: ClassVar[dict[str, Any]] = {
        "epochs": 5,
        "batch_size": 32,
        "lr": 1e-2,
        "optimizer": "adam",
        "hidden": [32, 32],
        "n_mels": 40,
        "max_frames": 80,
        "stride": 2,
        "loss_on": "all",
        "horizon": 4,
        "cell_options": {
            "ssnu": {"recurrent": True, "decay": 0.8, "activation": "identity"},
            "snu": {"recurrent": True, "decay": 0.8},
        },
    }
    tiny: ClassVar[dict[str, Any]] = {
        "epochs": 1,
        "batch_size": 16,
        "hidden": [8, 8],
        "max_frames": 24,
        "stride": 3,
        "horizon": 3,
        "subset": {"speakers": 1, "test_per_digit": 1, "train_per_digit": 2},
    }

    def make_objective(self) -> Classification:
        return Classification()

    def availability(self) -> Availability:
        from snn_ostl.data.paths import shared_path

        folder = shared_path("fsdd", "recordings")
        if folder is not None and any(_NAME.match(p.name) for p in folder.glob("*.wav")):
            return Availability(True, f"Free Spoken Digit Dataset recordings in {folder}")
        where = (
            "Free Spoken Digit Dataset recordings (no pip package ships them): not found "
            f"({data_folder_note()})"
        )
        return Availability(False, where, HOW_TO_GET)

    def load(self, config: dict[str, Any], seed: int) -> TaskData:
        from snn_ostl.data import DataUnavailableError

        avail = self.availability()
        if not avail.ok:
            raise DataUnavailableError(f"task speech: {avail.where}. To get them: {avail.how}")
        split = _load(config)
        size, stride = config["batch_size"], config["stride"]
        last = config.get("loss_on", "all") == "last"
        n_train, n_test = len(split.train.labels), len(split.test.labels)

        def train(epoch: int) -> Iterator[SeqBatch]:
            order = shuffled(n_train, generator(seed, 0, epoch))
            return _batches(split.train, order, size, stride, last)

        def test() -> Iterator[SeqBatch]:
            return _batches(split.test, list(range(n_test)), 100, stride, last)

        source = (
            f"{split.source}; one frame in {stride}, loss on {config.get('loss_on', 'all')} frames"
        )
        return TaskData(train, test, -(-n_train // size), split.num_features, 10, source)
