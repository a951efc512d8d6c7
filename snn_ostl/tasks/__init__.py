"""The tasks of the command line: the OSTL paper's experiments on data that work offline.

``TASKS`` maps a name to a :class:`~snn_ostl.tasks.base.Task`; each has a real configuration
and a ``tiny`` one that runs in seconds. Importing this package imports neither the data
packages nor snnTorch or Norse: a task loads them when it runs.
"""

from __future__ import annotations

from snn_ostl.tasks.base import Availability, Task, TaskData
from snn_ostl.tasks.delay import DelayTask
from snn_ostl.tasks.digits import DigitsTask
from snn_ostl.tasks.jsb import JSBTask
from snn_ostl.tasks.mnist import MnistTask
from snn_ostl.tasks.speech import SpeechTask
from snn_ostl.tasks.text import TextTask

__all__ = ["TASKS", "Availability", "Task", "TaskData", "get_task"]

#: Every task, by name, in the order ``snn-ostl tasks`` lists them.
TASKS: dict[str, Task] = {
    task.name: task
    for task in (DigitsTask(), MnistTask(), JSBTask(), TextTask(), SpeechTask(), DelayTask())
}


def get_task(name: str) -> Task:
    """The task called ``name``.

    Raises:
        KeyError: No such task (the message lists the known ones).
    """
    try:
        return TASKS[name]
    except KeyError:
        raise KeyError(f"unknown task {name!r}; known tasks: {', '.join(TASKS)}") from None
