"""What a new user meets: help text, error messages, missing data, honest update schedules."""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys

import pytest
import torch

from snn_ostl import cli
from snn_ostl.cli import build_parser, main
from snn_ostl.tasks import TASKS
from snn_ostl.tasks.commands import same_schedule, tasks_table, update_moments
from snn_ostl.tasks.runner import RunSpec, build_model
from snn_ostl.tasks.training import Method, train_batch

COMMANDS = ("demo", "train", "compare", "tasks")


def _subparsers() -> dict[str, argparse.ArgumentParser]:
    parser = build_parser()
    action = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return {name: action.choices[name] for name in COMMANDS}


def _options():
    for name, sub in _subparsers().items():
        for action in sub._actions:
            if action.option_strings and action.dest != "help":
                yield name, sub, action


@pytest.mark.parametrize(("command", "option"), [(c, a.dest) for c, _, a in _options()])
def test_every_option_has_help_that_states_its_default(command, option):
    sub = _subparsers()[command]
    action = next(a for a in sub._actions if a.dest == option)
    assert action.help and action.help != argparse.SUPPRESS, f"{command} {option}: no help"
    shown = sub._get_formatter()._get_help_string(action) % {"default": action.default}
    # a flag is off unless given; a required option has no default
    if not isinstance(action, argparse._StoreTrueAction) and not action.required:
        assert "default" in shown, f"{command} --{option}: {shown!r} names no default"
    if action.default not in (None, False):
        assert str(action.default) in shown, shown
    assert "`" not in shown, f"markup in the help of {command} --{option}: {shown!r}"


def test_help_pages_show_defaults_and_no_markup(capsys):
    for command in COMMANDS:
        with pytest.raises(SystemExit) as info:
            main([command, "--help"])
        assert info.value.code == 0
        out = capsys.readouterr().out
        assert "`" not in out, out
        if command == "train":
            assert "(default: sequence)" in out and "(default: the task's)" in out


def test_bench_help_has_no_markup():
    done = subprocess.run(
        [sys.executable, "-m", "snn_ostl", "bench", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    assert "snn-ostl bench" in done.stdout and "`" not in done.stdout
    assert "(default: cpu)" in done.stdout


def test_demo_help_states_no_stale_duration(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    out = capsys.readouterr().out
    assert "2 minutes" not in out and "demo" in out


@pytest.fixture
def a_file(tmp_path):
    path = tmp_path / "a-file"
    path.write_text("not a folder")
    return path


def _mistakes(tmp_path, a_file) -> list[tuple[list[str], str]]:
    binary = tmp_path / "binary.txt"
    binary.write_bytes(b"\xff\xfe\x00\x81")
    empty = tmp_path / "empty.txt"
    empty.write_text("  \n")
    digits = ["train", "--task", "digits", "--tiny", "--quiet"]
    text = ["train", "--task", "text", "--tiny", "--quiet"]
    return [
        ([*digits, "--lr", "-1"], "--lr"),
        ([*digits, "--lr", "0"], "--lr"),
        ([*digits, "--lr", "nan"], "--lr"),
        ([*digits, "--lr", "inf"], "--lr"),
        ([*text, "--text-file", "/nonexistent.txt"], "--text-file"),
        ([*text, "--text-file", str(tmp_path)], "--text-file"),
        ([*text, "--text-file", str(binary)], "--text-file"),
        ([*text, "--text-file", str(empty)], "--text-file"),
        ([*digits, "--text-file", str(a_file)], "--text-file"),
        ([*text, "--batch-size", "100000"], "--batch-size"),
        ([*digits, "--hidden", "0"], "--hidden"),
        ([*digits, "--hidden", "abc"], "--hidden"),
        ([*digits, "--update", "every:0"], "--update"),
        ([*digits, "--max-batches", "0"], "--max-batches"),
        ([*digits, "--seed", "-1"], "--seed"),
        ([*digits, "--out", str(a_file)], "--out"),
        ([*digits, "--out", str(a_file / "run")], "--out"),
        (["compare", "--task", "digits", "--tiny", "--out", str(a_file)], "--out"),
        (["demo", "--tiny", "--out", str(a_file)], "--out"),
        ([*digits, "--no-such-option"], "--no-such-option"),
    ]


def test_user_mistakes_exit_2_with_a_message_and_no_traceback(tmp_path, a_file, capsys):
    for argv, named in _mistakes(tmp_path, a_file):
        with pytest.raises(SystemExit) as info:
            main(argv)
        err = capsys.readouterr().err
        assert info.value.code == 2, (argv, err)
        assert "Traceback" not in err and named in err, (argv, err)
        assert err.strip().splitlines()[-1].startswith(f"snn-ostl {argv[0]}: error:"), err
        assert not (tmp_path / "run").exists()


@pytest.mark.parametrize(
    "extra",
    [["--lr", "-1"], ["--text-file", "/nonexistent.txt"], ["--out", "A_FILE"]],
)
def test_user_mistakes_from_the_shell(extra, a_file):
    extra = [str(a_file) if e == "A_FILE" else e for e in extra]
    done = subprocess.run(
        [sys.executable, "-m", "snn_ostl", "train", "--task", "text", "--tiny", *extra],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr and extra[0] in done.stderr
    assert done.stderr.startswith("usage: snn-ostl train")


@pytest.mark.parametrize(
    "argv",
    [
        ["train", "--task", "jsb", "--framework", "snntorch"],
        ["train", "--task", "digits", "--framework", "native", "--model", "leaky"],
        ["compare", "--task", "digits", "--loss-on", "last"],
        ["train", "--task", "digits", "--learner", "bptt", "--flush-every", "3"],
        ["train", "--task", "digits", "--learner", "bptt", "--learning-signal", "random"],
        ["train", "--task", "digits", "--nproc", "2", "--learner", "bptt"],
        ["train", "--task", "digits", "--unknown"],
        ["demo", "--epochs", "0"],
    ],
)
def test_errors_show_the_usage_of_the_command(argv, capsys):
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith(f"usage: snn-ostl {argv[0]} "), err
    assert f"snn-ostl {argv[0]}: error: argument" in err or "unrecognized" in err


def _flat(text: str) -> str:
    return " ".join(text.split())


def test_tasks_says_how_to_get_missing_data(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SNN_OSTL_DATA", str(tmp_path / "nothing-here"))
    monkeypatch.setattr("snn_ostl.tasks.jsb.have_module", lambda name: False)
    assert main(["tasks"]) == 0
    out = _flat(capsys.readouterr().out)
    missing = {n: t.availability() for n, t in TASKS.items() if not t.availability().ok}
    assert {"speech", "jsb"} <= set(missing)
    for name, avail in missing.items():
        assert avail.how, name
        assert _flat(avail.how) in out and "to get them:" in out
    speech, jsb = missing["speech"].how, missing["jsb"].how
    assert "free-spoken-digit-dataset" in speech and "SNN_OSTL_DATA=DIR" in speech
    assert "DIR/fsdd/recordings" in speech
    assert "pip install music21" in jsb and "jsb-chorales-quarter.json" in jsb
    assert "shared" not in out.lower() and "developer" not in out.lower()


def test_data_folder_named_by_the_environment_variable(tmp_path, monkeypatch):
    recordings = tmp_path / "fsdd" / "recordings"
    recordings.mkdir(parents=True)
    (recordings / "0_someone_0.wav").write_bytes(b"")
    monkeypatch.setenv("SNN_OSTL_DATA", str(tmp_path))
    avail = TASKS["speech"].availability()
    assert avail.ok and str(recordings) in avail.where


def test_tasks_table_wraps_and_lists_defaults():
    table = tasks_table(TASKS, width=80)
    assert all(len(line) <= 80 for line in table.splitlines() if "://" not in line)
    assert "defaults: 20 epoch(s); batch 32; Adam lr 0.003" in _flat(table)


@pytest.mark.parametrize("task", ["speech", "jsb"])
def test_missing_data_message_says_how_to_get_them(task, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("SNN_OSTL_DATA", str(tmp_path / "nothing-here"))
    monkeypatch.setattr("snn_ostl.tasks.jsb.have_module", lambda name: False)
    code = main(["train", "--task", task, "--tiny", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err.strip()
    assert code == 1 and len(err.splitlines()) == 1
    assert "To get them:" in err and "SNN_OSTL_DATA=DIR" in err
    assert "shared" not in err.lower() and "developer" not in err.lower()


# ---------------------------------------------------------------- update schedules


@pytest.mark.parametrize(
    ("method", "short"),
    [
        (Method("ostl", update_every=1), "every step"),
        (Method("ostl", update_every=4), "every 4 steps"),
        (Method("ostl"), "per sequence"),
        (Method("bptt", update_every=1), "per sequence"),
        (Method("bptt", update_every=4), "per sequence"),
        (Method("tbptt", horizon=3, update_every=1), "every 3 steps, at window ends"),
        (Method("tbptt", horizon=3, update_every=4), "every 6 steps, at window ends"),
        (Method("tbptt", horizon=3), "per sequence"),
    ],
)
def test_update_moments_say_what_the_loop_does(method, short):
    assert update_moments(method, short=True) == short
    if method.learner == "bptt" and method.update_every:
        assert "cannot update sooner" in update_moments(method)


class _Counting(torch.optim.SGD):
    steps = 0

    def step(self, closure=None):
        type(self).steps += 1
        return super().step(closure)


@pytest.mark.parametrize(
    ("method", "per_batch"),
    [
        (Method("ostl", update_every=1), 16),
        (Method("ostl", update_every=5), 4),  # steps 5, 10, 15 and the end
        (Method("bptt", update_every=1), 1),
        (Method("tbptt", horizon=3, update_every=1), 6),  # window ends 3..15, then the end
        (Method("tbptt", horizon=3, update_every=4), 3),  # every 6 steps, then the end
        (Method("ostl"), 1),
    ],
)
def test_update_moments_match_the_training_loop(method, per_batch):
    """The words of update_moments() count the optimizer steps train_batch really takes."""
    task = TASKS["digits"]  # a loss at every step
    spec = RunSpec(task, task.config(tiny=True, steps=16), "snu", verbose=False)
    data = task.load(spec.config, 0)
    batch = next(iter(data.train(0)))
    assert batch.x.shape[0] == 16
    model = build_model(spec, data)
    _Counting.steps = 0
    optimizer = _Counting(model.parameters(), lr=0.01)
    learner = method.attach(model)
    try:
        train_batch(model, batch, task.objective, method, optimizer, learner)
    finally:
        if learner is not None:
            learner.detach()
    assert _Counting.steps == per_batch
    period = {"every step": 1, "per sequence": 16}.get(update_moments(method, short=True))
    if period is not None:
        assert per_batch == math.ceil(16 / period)


def test_same_schedule():
    assert same_schedule(Method("ostl"), Method("bptt", update_every=1))
    assert not same_schedule(Method("ostl", update_every=1), Method("bptt", update_every=1))


def test_compare_with_step_updates_keeps_the_gap_like_for_like(tmp_path, capsys):
    out = tmp_path / "run"
    argv = ["compare", "--task", "digits", "--framework", "native", "--tiny", "--quiet"]
    assert main([*argv, "--update", "step", "--out", str(out)]) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    assert list(metrics["histories"]) == ["ostl@step", "ostl@sequence", "bptt"]
    assert metrics["gap"]["ostl"] == "ostl@sequence" and metrics["gap"]["same_schedule"]
    other = metrics["schedule_gap"]
    assert other["ostl"] == "ostl@step" and not other["same_schedule"]
    assert "once per sequence" in metrics["updates"]["bptt"]
    assert "every time step" in metrics["updates"]["ostl@step"]
    line = capsys.readouterr().out.strip().splitlines()
    assert len(line) == 1
    assert "(same schedule)" in line[0] and "from the update schedule" in line[0]
    assert "bptt" in line[0] and "(updates per sequence)" in line[0]


def test_compare_verbose_says_when_bptt_updates(tmp_path, capsys):
    argv = ["compare", "--task", "delay", "--tiny", "--baselines", "bptt", "--update", "step"]
    assert main([*argv, "--out", str(tmp_path / "run")]) == 0
    out = capsys.readouterr().out
    assert "training bptt: weights updated once per sequence" in out
    assert "bptt (update: step)" not in out


def test_demo_names_its_files_and_trains_online(tmp_path, capsys, monkeypatch):
    monkeypatch.setattr(cli, "DEMO_EPOCHS", 1)
    out = tmp_path / "demo"
    assert main(["demo", "--framework", "native", "--tiny", "--quiet", "--out", str(out)]) == 0
    text = capsys.readouterr().out
    for name in ("curves.png", "gradients.png", "metrics.json"):
        assert str(out / name) in text and (out / name).stat().st_size > 0
    assert "ostl@step" in text and "ostl@sequence" in text and "bptt" in text
    assert "the same gradient" in text and "after every time step" in text
    metrics = json.loads((out / "metrics.json").read_text())
    assert set(metrics["histories"]) == {"ostl@step", "ostl@sequence", "bptt"}
