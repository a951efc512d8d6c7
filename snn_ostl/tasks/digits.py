"""Rate-coded digit images: scikit-learn's 8x8 digits (the demo) and, in mnist.py, real MNIST.

Each image becomes ``steps`` frames of Bernoulli spikes (a fresh, seeded draw every epoch; a
fixed draw for the test set). The readout is trained with cross-entropy at every step and the
class is read from the readout summed over time.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, ClassVar

import torch
from torch import Tensor

from snn_ostl.tasks.base import Availability, Task, TaskData, generator, have_module
from snn_ostl.tasks.objectives import Classification
from snn_ostl.tasks.training import SeqBatch

__all__ = ["DigitsTask", "ImageTask"]


def _image_batches(
    x: Tensor, y: Tensor, *, steps: int, batch_size: int, gain: float, gen: torch.Generator,
    shuffle: bool,
) -> Iterator[SeqBatch]:  # fmt: skip
    n, device = len(y), y.device
    order = torch.randperm(n, generator=gen, device=gen.device) if shuffle else torch.arange(n)
    order = order.to(device)
    for start in range(0, len(y), batch_size):
        idx = order[start : start + batch_size]
        labels = y[idx]
        spikes = rate_code_images(x[idx], steps, gen, gain)
        target = labels.unsqueeze(0).expand(steps, -1).contiguous()
        mask = torch.ones(steps, len(idx), dtype=torch.bool, device=spikes.device)
        yield SeqBatch(spikes, target, mask, labels)


def rate_code_images(x: Tensor, steps: int, gen: torch.Generator, gain: float) -> Tensor:
    """Bernoulli spikes ``[steps, B, F]`` with probability ``gain * intensity``."""
    from snn_ostl.data import rate_code

    return rate_code(x, steps, generator=gen, gain=gain)


class ImageTask(Task):
    """A rate-coded image classification task; subclasses say where the images come from."""

    cells: ClassVar[dict[str, tuple[str, ...]]] = {
        "snntorch": ("leaky",),
        "native": ("snu", "ssnu"),
        "norse": ("lif",),
    }
    default_framework = "snntorch"
    module = ""  # the package the images ship in
    package = ""  # its name on PyPI

    def make_objective(self) -> Classification:
        return Classification()

    def availability(self) -> Availability:
        ok = have_module(self.module)
        where = f"embedded in the pip package {self.package} (no download)"
        if ok:
            return Availability(True, where)
        return Availability(False, f"{where}; not installed", f"pip install {self.package}")

    def read(self, seed: int) -> Any:
        """The :class:`~snn_ostl.data.ImageSplit`."""
        raise NotImplementedError

    def load(self, config: dict[str, Any], seed: int) -> TaskData:
        split = self.read(seed)
        x_train, y_train = split.x_train, split.y_train
        x_test, y_test = split.x_test, split.y_test
        if config.get("train_size"):
            x_train, y_train = x_train[: config["train_size"]], y_train[: config["train_size"]]
        if config.get("test_size"):
            x_test, y_test = x_test[: config["test_size"]], y_test[: config["test_size"]]
        options = {
            "steps": config["steps"],
            "batch_size": config["batch_size"],
            "gain": config.get("gain", 1.0),
        }

        def train(epoch: int) -> Iterator[SeqBatch]:
            gen = generator(seed, 0, epoch)
            return _image_batches(x_train, y_train, gen=gen, shuffle=True, **options)

        def test() -> Iterator[SeqBatch]:
            gen = generator(seed, 1)
            return _image_batches(x_test, y_test, gen=gen, shuffle=False, **options)

        batches = -(-len(y_train) // config["batch_size"])
        source = f"{split.source}; {len(y_train)} train / {len(y_test)} test images used"
        return TaskData(train, test, batches, x_train.shape[1], split.num_classes, source)


class DigitsTask(ImageTask):
    """scikit-learn's 1,797 real 8x8 digits, rate-coded: the demo task."""

    name = "digits"
    summary = "8x8 digits (1,797 real images), rate-coded spikes, 10 classes"
    module = "sklearn"
    package = "scikit-learn"
    defaults: ClassVar[dict[str, Any]] = {
        "epochs": 20,
        "batch_size": 32,
        "lr": 3e-3,
        "optimizer": "adam",
        "steps": 25,
        "gain": 1.0,
        "hidden": [128],
        "horizon": 5,
        "cell_options": {
            "snu": {"decay": 0.8, "threshold": 1.0},
            "ssnu": {"decay": 0.8, "threshold": 1.0},
            "leaky": {"beta": 0.95},
            "lif": {},
        },
    }
    tiny: ClassVar[dict[str, Any]] = {
        "epochs": 2,
        "train_size": 96,
        "test_size": 48,
        "steps": 6,
        "hidden": [16],
    }

    def read(self, seed: int) -> Any:
        from snn_ostl.data import load_digits

        return load_digits(seed=seed)
