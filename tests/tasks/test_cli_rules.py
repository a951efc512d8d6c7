"""`snn-ostl compare --rules`: several learning rules and the baselines, one table, one figure."""

from __future__ import annotations

import csv
import json
import math

import docutils.core
import pytest
import torch

from snn_ostl.cli import main
from snn_ostl.tasks.report import rules_markdown, rules_rst, rules_text
from snn_ostl.tasks.training import SeqBatch, masked_local_mse, target_spikes


def _rules(tmp_path, *extra: str, task: str = "delay", name: str = "run") -> dict:
    out = tmp_path / name
    argv = ["compare", "--task", task, "--tiny", "--out", str(out), "--quiet", *extra]
    assert main(argv) == 0
    metrics = json.loads((out / "metrics.json").read_text())
    metrics["dir"] = out
    return metrics


def _finite(value) -> bool:
    return isinstance(value, (int, float)) and math.isfinite(value)


def test_table_has_a_row_per_method_with_numbers(tmp_path, capsys):
    metrics = _rules(
        tmp_path, "--rules", "ostl", "eprop-random", "superspike", "rflo", "--baselines", "bptt"
    )
    out = metrics["dir"]
    rows = {row["method"]: row for row in metrics["rules_table"]}
    assert list(rows) == ["ostl", "eprop-random", "superspike", "rflo", "bptt"]
    for name, row in rows.items():
        assert row["status"] == "ok", (name, row.get("reason"))
        for key in ("final", "ms_per_step", "peak_mib"):
            assert _finite(row[key]), (name, key, row[key])
        assert row["ms_per_step"] > 0 and row["peak_mib"] >= 0
        assert 0.0 <= row["final"] <= 1.0
    for name in ("ostl", "eprop-random", "superspike", "rflo"):
        assert rows[name]["trace_kib"] > 0, name  # every online rule holds traces
    assert rows["bptt"]["trace_kib"] is None
    # the rules that need their own model say which one they trained
    assert "spiking output" in rows["superspike"]["model"]
    assert "LeakyRNNCell" in rows["rflo"]["model"]
    assert rows["ostl"]["model"] == rows["bptt"]["model"]
    assert metrics["seed"] == 0 and "CPU" in metrics["machine"]
    assert metrics["command_line"].startswith("snn-ostl compare --task delay")
    # the files: figure, CSV, Markdown and RST tables, curves
    assert (out / "rules.png").stat().st_size > 5000
    assert (out / "curves.png").stat().st_size > 1000
    with (out / "rules.csv").open() as handle:
        lines = list(csv.DictReader(handle))
    assert [line["method"] for line in lines] == list(rows)
    assert all(float(line["ms_per_step"]) > 0 for line in lines)
    markdown = (out / "rules.md").read_text()
    assert metrics["command_line"] in markdown and "seed: 0" in markdown
    assert markdown.count("\n| ") == len(rows) + 1  # the header row, then one per method
    printed = capsys.readouterr().out
    for name in rows:
        assert f"\n{name} " in printed
    assert "rules.png" in printed


def test_a_rule_the_model_cannot_use_is_a_row_with_its_reason(tmp_path, capsys):
    # the delay task's model has one stateful layer: DECOLLE has no layer below the top one
    metrics = _rules(tmp_path, "--rules", "decolle", "snap-1", "--baselines", "bptt")
    rows = {row["method"]: row for row in metrics["rules_table"]}
    assert rows["decolle"]["status"] == "n/a"
    assert "single stateful layer" in rows["decolle"]["reason"]
    assert "\n" not in rows["decolle"]["reason"]
    assert rows["decolle"]["final"] is None
    assert rows["snap-1"]["status"] == "ok" and rows["bptt"]["status"] == "ok"
    assert "decolle" not in metrics["final"]
    printed = capsys.readouterr().out
    decolle = next(line for line in printed.splitlines() if line.startswith("decolle"))
    assert "n/a" in decolle and "single stateful layer" in decolle
    with (metrics["dir"] / "rules.csv").open() as handle:
        line = next(row for row in csv.DictReader(handle) if row["method"] == "decolle")
    assert line["status"] == "n/a" and line["reason"] and line["ms_per_step"] == ""
    assert (metrics["dir"] / "rules.png").stat().st_size > 5000


def test_an_unsupported_module_gives_the_first_problem_as_reason(tmp_path):
    # an LSTM cell's input weights live inside its step: no random feedback matrix fits
    metrics = _rules(
        tmp_path, "--model", "lstm", "--rules", "eprop-random", "ostl", "--baselines", "bptt"
    )
    rows = {row["method"]: row for row in metrics["rules_table"]}
    assert rows["eprop-random"]["status"] == "n/a"
    assert "LSTMCell" in rows["eprop-random"]["reason"]
    assert rows["ostl"]["status"] == "ok"


def test_decolle_trains_a_two_layer_model(tmp_path):
    metrics = _rules(tmp_path, "--hidden", "8,8", "--rules", "decolle", "--baselines", "bptt")
    row = metrics["rules_table"][0]
    assert row["method"] == "decolle" and row["status"] == "ok", row.get("reason")
    assert "3-8-8" in row["model"] and row["trace_kib"] > 0


def test_same_seed_same_metrics(tmp_path):
    args = ("--rules", "ostl", "eprop-random", "--baselines", "bptt")
    first = _rules(tmp_path, *args, name="a")
    second = _rules(tmp_path, *args, name="b")
    assert first["final"] == second["final"]
    assert first["histories"].keys() == second["histories"].keys()
    for name, history in first["histories"].items():
        other = second["histories"][name]
        assert history["train_loss"] == other["train_loss"], name
        assert history["accuracy"] == other["accuracy"], name


def test_without_rules_compare_is_unchanged(tmp_path):
    metrics = _rules(tmp_path, "--baselines", "bptt")
    assert "gradient_agreement" in metrics and "rules_table" not in metrics
    assert set(metrics["histories"]) == {"ostl", "bptt"}
    assert not (metrics["dir"] / "rules.png").exists()


@pytest.mark.parametrize(
    ("extra", "words"),
    [
        (["--rules", "nope"], ["argument --rules", "invalid choice: 'nope'", "eprop-random"]),
        (["--rules", "ostl", "--learner", "eprop"], ["argument --learner", "--rules"]),
        (
            ["--rules", "ostl", "--learning-signal", "random"],
            ["argument --learning-signal", "its own learning signal"],
        ),
        (["--rules"], ["argument --rules", "expected at least one argument"]),
    ],
)
def test_user_errors_exit_2_with_a_message(tmp_path, capsys, extra, words):
    argv = ["compare", "--task", "delay", "--tiny", "--out", str(tmp_path / "r"), *extra]
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    err = capsys.readouterr().err
    for word in words:
        assert word in err, err
    assert "Traceback" not in err
    assert not (tmp_path / "r").exists()


def test_help_lists_the_rules_and_the_default(capsys):
    with pytest.raises(SystemExit) as info:
        main(["compare", "--help"])
    assert info.value.code == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "--rules RULE [RULE ...]" in text
    assert "superspike" in text and "rflo" in text and "(default: none:" in text


# ---------------------------------------------------------------- pieces, without training
def _delay_batch() -> SeqBatch:
    steps, size = 6, 3
    mask = torch.zeros(steps, size, dtype=torch.bool)
    mask[3:] = True
    labels = torch.tensor([0, 1, 1])
    target = torch.full((steps, size), -100, dtype=torch.int64)
    target[3:] = labels
    return SeqBatch(torch.zeros(steps, size, 2), target, mask, labels)


def test_target_spikes_every_other_step_of_the_window_on_the_class_neuron():
    batch = _delay_batch()
    spikes = torch.stack([target_spikes(batch, t, 2) for t in range(6)])
    assert spikes[:3].sum() == 0  # no target: no spike
    assert spikes[3].tolist() == [[1, 0], [0, 1], [0, 1]]
    assert spikes[4].sum() == 0
    assert torch.equal(spikes[5], spikes[3])


def test_local_loss_counts_only_the_steps_with_a_target():
    readout = torch.tensor([[1.0, 0.0], [0.0, 0.0], [3.0, 3.0]])
    target = torch.tensor([0, -100, 1])
    # sequence 0 matches its class; sequence 1 has no target; sequence 2: (9 + 4) / 2
    assert masked_local_mse(readout, target).item() == pytest.approx(6.5)
    assert masked_local_mse(readout, torch.full((3,), -100)).item() == 0.0


def test_table_renderings_hold_every_row():
    rows = [
        {"method": "ostl", "status": "ok", "model": "3-8 sSNU -> Linear(2)", "final": 0.75,
         "updates": "per sequence", "ms_per_step": 0.5, "peak_mib": 1.25, "trace_kib": 2.0},
        {"method": "bptt", "status": "ok", "model": "3-8 sSNU -> Linear(2)", "final": 0.5,
         "updates": "per sequence", "ms_per_step": 0.2, "peak_mib": 3.0, "trace_kib": None},
        {"method": "decolle", "status": "n/a", "model": "3-8 sSNU -> Linear(2)", "final": None,
         "updates": "per sequence", "reason": "the model has a single stateful layer"},
    ]  # fmt: skip
    text = rules_text(rows, "accuracy")
    assert "75.0" in text and "—" in text and "n/a" in text and "single stateful" in text
    markdown = rules_markdown(rows, "accuracy", ["# delay"])
    assert markdown.startswith("# delay") and markdown.count("\n| ") == 4
    rst = rules_rst(rows, "accuracy", "delay, seed 0", name="rules-delay")
    doctree = docutils.core.publish_doctree(
        rst, settings_overrides={"halt_level": 2, "report_level": 2, "warning_stream": False}
    )
    assert doctree.astext().count("n/a") >= 4
