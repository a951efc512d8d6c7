"""What a task is: its data, its model, its objective and its two configurations.

A task subclasses :class:`Task` and fills in :meth:`Task.load` and :meth:`Task.build`. Its
``defaults`` configure a real run; ``tiny`` overrides them for runs of a few seconds (the
tests, ``--tiny`` on the command line). Every random choice (the split, the shuffle, the spike
encoding, the initial weights) follows from the seed, so a run can be repeated exactly.
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
from torch import nn

from snn_ostl.tasks.models import StepNet
from snn_ostl.tasks.training import Objective, SeqBatch

__all__ = [
    "Availability",
    "Task",
    "TaskArgumentError",
    "TaskData",
    "data_folder_note",
    "generator",
    "have_module",
]


@dataclass(frozen=True)
class Availability:
    """Whether a task's data can be read on this machine.

    Attributes:
        ok: The data are there.
        where: Where the data come from (or would come from).
        how: When they are not there: what to do to get them, in words a user can act on.
    """

    ok: bool
    where: str
    how: str = ""


class TaskArgumentError(ValueError):
    """A value the user chose does not work with the task (the command line exits with 2).

    Attributes:
        option: The command-line option at fault, e.g. ``--text-file``.
    """

    def __init__(self, option: str, message: str) -> None:
        super().__init__(message)
        self.option = option


def data_folder_note() -> str:
    """Where the data folder was looked for, for "not found" messages.

    The folder of downloaded data sets is named by the environment variable ``SNN_OSTL_DATA``.
    """
    from snn_ostl.data.paths import ENV_VAR

    folder = os.environ.get(ENV_VAR, "").strip()
    return f"{ENV_VAR}={folder}" if folder else f"{ENV_VAR} is not set"


@dataclass
class TaskData:
    """A task's data, ready for the loops.

    Attributes:
        train: ``epoch -> batches``: a fresh, seeded pass over the training set.
        test: ``() -> batches``: the evaluation set, the same at every call.
        train_batches: Number of batches per epoch (for progress bars).
        inputs: Input features per step.
        outputs: Readout size.
        source: Where the data came from, in words.
    """

    train: Callable[[int], Iterator[SeqBatch]]
    test: Callable[[], Iterator[SeqBatch]]
    train_batches: int
    inputs: int
    outputs: int
    source: str


def generator(seed: int, *salt: int) -> torch.Generator:
    """A torch generator seeded from ``seed`` and optional integers (epoch, purpose)."""
    value = seed
    for s in salt:
        value = value * 1_000_003 + s + 1
    return torch.Generator().manual_seed(value % 2**63)


def shuffled(n: int, gen: torch.Generator) -> list[int]:
    """A random order of ``range(n)`` drawn from ``gen``, on the generator's own device: under
    ``torch.set_default_device("cuda")`` a CPU generator cannot draw a CUDA tensor."""
    return torch.randperm(n, generator=gen, device=gen.device).tolist()


def have_module(name: str) -> bool:
    """Whether ``name`` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


class Task:
    """Base class of the tasks.

    Class attributes:
        name: Registry name.
        summary: One line for ``snn-ostl tasks``.
        cells: Cells (see :data:`snn_ostl.tasks.models.CELLS`) by framework; the first entry of
            each list is the framework's default.
        default_framework: Framework used when none is given.
        baselines: Learners ``compare`` trains beside the OSTL variant.
        defaults: The configuration of a real run.
        tiny: Overrides of ``defaults`` for runs of a few seconds.
    """

    name: ClassVar[str] = ""
    summary: ClassVar[str] = ""
    cells: ClassVar[dict[str, tuple[str, ...]]] = {"native": ("snu",)}
    default_framework: ClassVar[str] = "native"
    baselines: ClassVar[tuple[str, ...]] = ("bptt",)
    defaults: ClassVar[dict[str, Any]] = {}
    tiny: ClassVar[dict[str, Any]] = {}

    def __init__(self) -> None:
        self.objective: Objective = self.make_objective()

    # ------------------------------------------------------------ to fill in
    def make_objective(self) -> Objective:
        """The task's loss and metrics."""
        raise NotImplementedError

    def availability(self) -> Availability:
        """Whether the data can be read here and where they come from."""
        return Availability(True, "synthetic")

    def load(self, config: dict[str, Any], seed: int) -> TaskData:
        """Load (or generate) the data.

        Raises:
            snn_ostl.data.DataUnavailableError: The data are not on this machine.
            ImportError: An optional package the data need is missing.
        """
        raise NotImplementedError

    def build(self, config: dict[str, Any], data: TaskData, cell: str) -> nn.Module:
        """The step model (called after ``torch.manual_seed(seed)``)."""
        options = dict(config.get("cell_options", {}).get(cell, {}))
        sizes = [data.inputs, *config["hidden"]]
        return StepNet(sizes, data.outputs, cell=cell, options=options)

    # ------------------------------------------------------------ shared
    def config(self, *, tiny: bool = False, **overrides: Any) -> dict[str, Any]:
        """The configuration: defaults, then the tiny overrides, then non-None ``overrides``."""
        out = dict(self.defaults)
        if tiny:
            out.update(self.tiny)
        out.update({k: v for k, v in overrides.items() if v is not None})
        return out

    @property
    def frameworks(self) -> tuple[str, ...]:
        """Frameworks the task's models can be built with."""
        return tuple(self.cells)

    def all_cells(self) -> tuple[str, ...]:
        """Every cell the task accepts."""
        return tuple(c for cells in self.cells.values() for c in cells)

    def optimizer(self, model: nn.Module, config: dict[str, Any]) -> torch.optim.Optimizer:
        """Adam or plain SGD, as the configuration says."""
        params = [p for p in model.parameters() if p.requires_grad]
        if config.get("optimizer", "adam") == "sgd":
            return torch.optim.SGD(params, lr=config["lr"])
        return torch.optim.Adam(params, lr=config["lr"])
