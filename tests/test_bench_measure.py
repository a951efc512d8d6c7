"""The benchmark's measuring: every cell runs on a tiny network, methods are timed in turn, and
the command assembles one timing child and one memory child per method (nothing judged here)."""

from __future__ import annotations

import json

import pytest
import torch

from snn_ostl import bench
from snn_ostl.bench import NETWORKS, measure, measure_times

METHODS = ["bptt", "ostl", "ostl/2", "detached"]
# on the device the suite runs on (pytest --device): the bench's CUDA paths under `--device cuda`
TINY = {"batch": 2, "device": str(torch.get_default_device()), "sizes": [8, 6, 6, 3]}


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("network", list(NETWORKS))
def test_every_cell_runs(network, method):
    result = measure(network, method, steps=3, repeats=1, **TINY)
    assert result["ms_per_step"] > 0 and result["peak_mib"] > 0
    assert result["learner"] == method.startswith("ostl")  # the floor row runs without one


@pytest.mark.parametrize("network", list(NETWORKS))
def test_every_method_is_timed_on_its_own_copy(network):
    times = measure_times(network, METHODS, steps=3, repeats=2, **TINY)
    assert list(times) == METHODS and all(t > 0 for t in times.values())


def test_methods_alternate_and_keep_their_best_run(monkeypatch):
    calls: list[tuple[str, int]] = []
    durations = {"bptt": iter([0.5, 0.2, 0.4]), "ostl": iter([0.9, 0.6, 0.3])}

    class FakeModel:
        def zero_grad(self, set_to_none=True):
            pass

    def fake_loop(network, method, steps, batch, device, sizes):
        def run(n):
            calls.append((method, n))
            return 0.0 if n < steps else next(durations[method])

        return run, FakeModel(), None

    monkeypatch.setattr(bench, "_loop", fake_loop)
    times = measure_times("norse-lif", ["bptt", "ostl"], steps=100, repeats=3, **TINY)
    # a short warm-up each, then the runs alternate: a slow spell hits both methods alike
    assert calls == [("bptt", 10), ("ostl", 10)] + [("bptt", 100), ("ostl", 100)] * 3
    assert times == pytest.approx({"bptt": 2.0, "ostl": 3.0})  # ms per step of the best run


def test_command_times_once_per_network_and_t_and_measures_memory_per_cell(
    monkeypatch, tmp_path, capsys
):
    launched: list[list[str]] = []

    def fake_child(args, timeout):
        launched.append(args)
        kind, _, methods, steps = args[:4]
        if kind == "times":
            return {m: (2.0 if m == "bptt" else 3.0) for m in methods.split(",")}, ""
        return {"ms_per_step": 99.0, "peak_mib": 100.0 + int(steps) / 10}, ""

    monkeypatch.setattr(bench, "_child", fake_child)
    code = bench.main(["--networks", "norse-lif", "--steps", "20,200", "--bptt-max-steps", "100",
                       "--out", str(tmp_path)])  # fmt: skip
    assert code == 0
    kinds = [(a[0], a[2], a[3]) for a in launched]
    assert kinds == [
        ("times", "bptt,ostl,ostl/16,detached", "20"),
        ("memory", "bptt", "20"),
        ("memory", "ostl", "20"),
        ("memory", "ostl/16", "20"),
        ("memory", "detached", "20"),
        ("times", "ostl,ostl/16,detached", "200"),  # BPTT above --bptt-max-steps: not run
        ("memory", "ostl", "200"),
        ("memory", "ostl/16", "200"),
        ("memory", "detached", "200"),
    ]
    written = json.loads((tmp_path / "bench.json").read_text())
    cells = {(c["method"], c["steps"]): c for c in written}
    assert cells["ostl", 20]["ms_per_step"] == 3.0  # the time comes from the timing child
    assert cells["ostl", 200]["peak_mib"] == 120.0  # the memory from the cell's own child
    assert cells["bptt", 200]["note"] == "BPTT skipped (memory)"
    assert "1.50" in capsys.readouterr().out  # OSTL/BPTT at T=20
