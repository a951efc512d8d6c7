"""Argument handling of the snn-ostl command: errors exit 2 and name the argument."""

from __future__ import annotations

import subprocess
import sys
import types

import pytest

from snn_ostl.cli import main
from snn_ostl.tasks import TASKS


def _exit_code(argv: list[str]) -> int:
    with pytest.raises(SystemExit) as info:
        main(argv)
    return info.value.code


@pytest.mark.parametrize(
    ("argv", "named", "allowed"),
    [
        (["train", "--task", "nope"], "--task", "digits"),
        (["train", "--task", "digits", "--learner", "sgd"], "--learner", "tbptt"),
        (["train", "--task", "digits", "--framework", "jax"], "--framework", "snntorch"),
        (["train", "--task", "digits", "--update", "every:0"], "--update", "every:K"),
        (["train", "--task", "digits", "--update", "often"], "--update", "sequence"),
        (["train", "--task", "digits", "--horizon", "0"], "--horizon", "positive"),
        (["train", "--task", "digits", "--hidden", "12,x"], "--hidden", "256,256"),
        (["train", "--task", "digits", "--device", "tpu"], "--device", "cuda"),
        (["train", "--task", "jsb", "--framework", "snntorch"], "--framework", "native"),
        (["train", "--task", "jsb", "--model", "lstm"], "--framework", "native"),
        (
            ["train", "--task", "digits", "--framework", "native", "--model", "leaky"],
            "--model",
            "snu",
        ),
        (["compare", "--task", "digits", "--learner", "bptt"], "--learner", "eprop"),
        (["compare", "--task", "digits", "--baselines", "rtrl"], "--baselines", "tbptt"),
        (["demo", "--framework", "jax"], "--framework", "snntorch"),
        (["train", "--task", "digits", "--loss-on", "last"], "--loss-on", "speech"),
        (["train", "--task", "speech", "--loss-on", "first"], "--loss-on", "last"),
        (["train", "--task", "digits", "--flush-every", "0"], "--flush-every", "positive"),
        (
            ["train", "--task", "digits", "--learner", "bptt", "--flush-every", "4"],
            "--flush-every",
            "ostl",
        ),
        (["frobnicate"], "invalid choice", "demo"),
    ],
)
def test_bad_arguments_exit_2_naming_the_argument(argv, named, allowed, capsys):
    assert _exit_code(argv) == 2
    err = capsys.readouterr().err
    assert named in err and allowed in err, err


def test_train_needs_a_task(capsys):
    assert _exit_code(["train"]) == 2
    assert "--task" in capsys.readouterr().err


def test_no_command_prints_help(capsys):
    assert main([]) == 2
    assert "demo" in capsys.readouterr().out


def test_tasks_lists_every_task_with_its_data_source(capsys):
    assert main(["tasks"]) == 0
    out = " ".join(capsys.readouterr().out.split())  # long lines are wrapped
    for name, task in TASKS.items():
        assert name in out
        assert " ".join(task.availability().where.split()) in out
    assert "available here" in out


def test_bench_dispatches_to_the_bench_module(monkeypatch):
    seen = []
    fake = types.ModuleType("snn_ostl.bench")
    fake.main = lambda argv: seen.append(argv) or 0
    monkeypatch.setitem(sys.modules, "snn_ostl.bench", fake)
    assert main(["bench", "--steps", "20", "--quick"]) == 0
    assert seen == [["--steps", "20", "--quick"]]


def test_bench_without_the_module_fails_cleanly(monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "snn_ostl.bench", None)
    assert main(["bench"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.startswith("snn-ostl: error:") and "snn_ostl.bench" in err
    assert len(err.splitlines()) == 1


def test_python_dash_m_runs_the_same_command():
    done = subprocess.run(
        [sys.executable, "-m", "snn_ostl", "train", "--task", "digits", "--update", "x"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2
    assert "--update" in done.stderr
