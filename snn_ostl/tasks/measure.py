"""What a training run costs: time per step, peak memory, eligibility-trace memory.

Used by ``snn-ostl compare --rules``, which trains several methods one after the other in one
process, so each measure must belong to one method:

- **time per step**: seconds of the training loops (data batches included, evaluation not)
  divided by the time steps trained (a batch of sequences of T steps counts T).
- **peak memory**: on the CPU, how far the process's resident memory rose above its level at
  the start of the method's training, at its highest, over the training loops. Before each
  method the garbage is collected, freed heap memory is handed back to the system
  (``malloc_trim``) and the kernel's high-water mark is reset to the current resident size
  (``/proc/self/clear_refs``, Linux); the mark read after each epoch's training is the method's
  own peak. The model, the data and the learner's bookkeeping exist before it starts; what is
  counted is what training adds: the autograd graph, the eligibility traces, the optimizer's
  state and the temporaries. Where the mark cannot be reset (not Linux), the process's peak
  (``ru_maxrss``) is used, and then only growth beyond earlier methods' peaks is seen; the
  result says which. On CUDA: ``torch.cuda.max_memory_allocated`` above the allocation at the
  start (tensors only).
- **trace memory**: the largest :meth:`snn_ostl.OSTL.trace_bytes` seen at the end of a batch
  (the traces live until the next sequence starts), a rule's own traces included (SuperSpike's
  filtered eligibilities).
"""

from __future__ import annotations

import contextlib
import ctypes
import gc
import re
import resource
import sys
import time
from pathlib import Path
from typing import Any

import torch

__all__ = ["MEMORY_MEASURES", "TrainMeter", "learner_trace_bytes"]

_STATUS = Path("/proc/self/status")
_CLEAR_REFS = Path("/proc/self/clear_refs")

#: What the peak-memory number is, by the way it was measured.
MEMORY_MEASURES = {
    "rss-hwm": "peak resident memory (VmHWM, reset before each method) above the resident "
    "memory at the start of its training",
    "ru_maxrss": "growth of the process's peak resident memory (ru_maxrss) during the method's "
    "training; methods that stay under an earlier method's peak show 0",
    "cuda": "peak CUDA tensor memory (max_memory_allocated) above the allocation at the start "
    "of the method's training",
}


def _status_kib(field: str) -> int | None:
    try:
        text = _STATUS.read_text()
    except OSError:
        return None
    match = re.search(rf"^{field}:\s+(\d+)\s+kB", text, re.M)
    return int(match.group(1)) if match else None


def _reset_high_water_mark() -> bool:
    """Set the kernel's peak-RSS mark of this process to its current RSS (Linux >= 4.0)."""
    try:
        _CLEAR_REFS.write_text("5")
    except OSError:
        return False
    return _status_kib("VmHWM") is not None


def _trim_heap() -> None:
    """Hand freed heap memory back to the system, so that it counts again when reused."""
    if not sys.platform.startswith("linux"):
        return
    with contextlib.suppress(OSError, AttributeError):
        ctypes.CDLL("libc.so.6").malloc_trim(0)


def learner_trace_bytes(learner: Any) -> int:
    """Bytes of eligibility traces a learner holds now (:meth:`snn_ostl.OSTL.trace_bytes`,
    which counts a rule's own traces too); 0 without a learner."""
    return 0 if learner is None else int(learner.trace_bytes())


class TrainMeter:
    """Measures one method's training in :func:`snn_ostl.tasks.runner.fit`.

    ``fit`` calls :meth:`start_epoch` before an epoch's training loop, :meth:`batch` after
    every batch and :meth:`end_epoch` before evaluating. Read :meth:`result` at the end.

    Args:
        device: ``cpu`` or ``cuda``.
    """

    def __init__(self, device: str = "cpu") -> None:
        self.device = device
        self.seconds = 0.0
        self.steps = 0
        self.trace_bytes = 0
        self.peak_bytes = 0
        self._base: int | None = None
        self._start = 0.0
        cuda = str(device).startswith("cuda") and torch.cuda.is_available()
        self.how = "cuda" if cuda else ("rss-hwm" if _reset_high_water_mark() else "ru_maxrss")

    # ------------------------------------------------------------------ memory
    def _level(self) -> int:
        """Bytes now: resident memory, the peak so far, or CUDA tensor memory."""
        if self.how == "cuda":
            return torch.cuda.memory_allocated(self.device)
        if self.how == "rss-hwm":
            return 1024 * (_status_kib("VmRSS") or 0)
        return 1024 * resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def _peak(self) -> int:
        if self.how == "cuda":
            return torch.cuda.max_memory_allocated(self.device)
        if self.how == "rss-hwm":
            return 1024 * (_status_kib("VmHWM") or 0)
        return 1024 * resource.getrusage(resource.RUSAGE_SELF).ru_maxrss

    def _reset_peak(self) -> None:
        if self.how == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        elif self.how == "rss-hwm":
            _reset_high_water_mark()

    # ------------------------------------------------------------------ fit's calls
    def start_epoch(self) -> None:
        """Before an epoch's training loop."""
        if self._base is None:  # the first epoch: the method's starting level
            gc.collect()
            _trim_heap()
            self._base = self._level()
        self._reset_peak()
        self._start = time.perf_counter()

    def batch(self, steps: int, learner: Any) -> None:
        """After a batch of ``steps`` time steps."""
        self.steps += steps
        self.trace_bytes = max(self.trace_bytes, learner_trace_bytes(learner))

    def end_epoch(self) -> None:
        """After an epoch's training loop, before evaluating."""
        self.seconds += time.perf_counter() - self._start
        self.peak_bytes = max(self.peak_bytes, self._peak() - (self._base or 0))

    def result(self, learner_used: bool) -> dict[str, Any]:
        """``ms_per_step``, ``peak_mib``, ``trace_kib`` (None without a learner) and how."""
        return {
            "ms_per_step": 1e3 * self.seconds / max(self.steps, 1),
            "peak_mib": max(self.peak_bytes, 0) / 2**20,
            "trace_kib": self.trace_bytes / 2**10 if learner_used else None,
            "train_steps": self.steps,
            "train_seconds": self.seconds,
            "memory_measure": self.how,
        }
