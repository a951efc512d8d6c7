"""The benchmark's measuring: every cell runs on a tiny network, methods are timed in turn, and
the command assembles one timing child and one memory child per method (nothing judged here)."""

from __future__ import annotations

import json

import pytest
import torch

from snn_ostl.bench import run as bench
from snn_ostl.bench.nets import CONV, CONV_SIZES, TINY_CONV_SIZES, build, describe
from snn_ostl.bench.run import NETWORKS, measure, measure_times

METHODS = ["bptt", "ostl", "ostl/2", "detached"]
# on the device the suite runs on (pytest --device): the bench's CUDA paths under `--device cuda`
DEVICE = str(torch.get_default_device())
TINY = {"batch": 2, "device": DEVICE, "sizes": [8, 6, 6, 3]}


def _tiny(network: str) -> dict:
    """The network at a tiny size: a small MLP, or the conv net on 16 x 16 with a few channels."""
    return {**TINY, "sizes": list(TINY_CONV_SIZES[network])} if network in CONV else TINY


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.parametrize("network", list(NETWORKS))
def test_every_cell_runs(network, method):
    result = measure(network, method, steps=3, repeats=1, **_tiny(network))
    assert result["ms_per_step"] > 0 and result["peak_mib"] > 0
    assert result["learner"] == method.startswith("ostl")  # the floor row runs without one


@pytest.mark.parametrize("network", list(NETWORKS))
def test_every_method_is_timed_on_its_own_copy(network):
    times = measure_times(network, METHODS, steps=3, repeats=2, **_tiny(network))
    assert list(times) == METHODS and all(t > 0 for t in times.values())


@pytest.mark.parametrize("network", CONV)
def test_conv_nets_at_full_size_are_the_frameworks_architectures(network):
    """The benchmarked 28 x 28 nets: 64 x 4 x 4 = 1024 features reach the first Linear, and two
    steps of OSTL run at batch 1 (what the full benchmark times, at its smallest)."""
    import snn_ostl

    model, step, reset, _ = build(network, CONV_SIZES[network])
    linear = [m for m in model.modules() if isinstance(m, torch.nn.Linear)]
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    channels = {"snntorch-csnn": [(1, 12), (12, 64)], "norse-convnet": [(1, 32), (32, 64)]}
    assert [(c.in_channels, c.out_channels) for c in convs] == channels[network]
    assert linear[0].in_features == 1024 and linear[-1].out_features == 10
    assert "1x28x28 input" in describe(network, CONV_SIZES[network])
    model.to(DEVICE)
    frames = torch.bernoulli(torch.full((2, 1, 1, 28, 28), 0.2, device=DEVICE))
    with snn_ostl.OSTL(model) as learner:
        learner.reset()
        reset(model)
        state = None
        for x in frames:
            out, state = step(model, x, state)
            torch.nn.functional.cross_entropy(out, torch.tensor([3], device=DEVICE)).backward()
        learner.flush()
    assert out.shape == (1, 10)
    assert all(p.grad is not None for p in model.parameters())


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


def _launches(monkeypatch, argv: list[str]) -> list[list[str]]:
    """The child processes ``bench.main(argv)`` would start (their results made up)."""
    launched: list[list[str]] = []

    def fake_child(args, timeout):
        launched.append(args)
        kind, _, methods = args[:3]
        if kind == "times":
            return {m: (2.0 if m == "bptt" else 3.0) for m in methods.split(",")}, ""
        return {"ms_per_step": 99.0, "peak_mib": 100.0}, ""

    monkeypatch.setattr(bench, "_child", fake_child)
    assert bench.main(argv) == 0
    return launched


def test_each_network_has_its_own_steps_batch_and_sizes(monkeypatch, capsys):
    nets = "snntorch-leaky,snntorch-csnn,norse-convnet"
    launched = _launches(monkeypatch, ["--networks", nets, "--no-floor", "--sizes", "8,6,3"])
    # (network, methods, T, batch, sizes) of each timing child
    times = [(a[1], a[2], a[3], a[4], a[6]) for a in launched if a[0] == "times"]
    assert times == [
        ("snntorch-leaky", "bptt,ostl", "20", "128", "8,6,3"),
        ("snntorch-leaky", "bptt,ostl", "200", "128", "8,6,3"),
        ("snntorch-leaky", "bptt,ostl", "2000", "128", "8,6,3"),
        ("snntorch-csnn", "bptt,ostl", "25", "128", "28,12,64,10"),  # --sizes: the MLPs only
        ("snntorch-csnn", "bptt,ostl", "100", "128", "28,12,64,10"),
        ("norse-convnet", "bptt,ostl,ostl/16", "25", "16", "28,32,64,1024,10"),
        ("norse-convnet", "bptt,ostl,ostl/16", "100", "16", "28,32,64,1024,10"),
    ]
    out = capsys.readouterr().out
    assert "  snntorch-leaky: batch 128, sizes 8-6-3\n" in out
    assert "  norse-convnet: batch 16, 1x28x28 input, Conv2d(1,32,5)-x10-LIFCell" in out
    assert "\ntargets:\nsnntorch-leaky: time <= 1.0x BPTT not met at T=20 (1.50x, 1.50 times" in out
    assert "SPEC" not in out


def test_steps_and_batch_options_set_every_network(monkeypatch):
    argv = ["--networks", "snntorch-csnn,norse-lif", "--steps", "5", "--batch", "4"]
    launched = _launches(monkeypatch, argv)
    times = [(a[1], a[3], a[4]) for a in launched if a[0] == "times"]
    assert times == [("snntorch-csnn", "5", "4"), ("norse-lif", "5", "4")]


def test_check_runs_the_conv_nets_at_a_tiny_size_only(monkeypatch):
    launched = _launches(monkeypatch, ["--check"])
    times = {(a[1], a[3], a[4], a[6]) for a in launched if a[0] == "times"}
    assert {n for n, *_ in times} == set(bench.CHECK_NETWORKS)
    assert ("snntorch-csnn", "100", "8", "16,2,4,10") in times  # never 28 x 28
    assert ("norse-lif", "100", "32", "196,64,64,10") in times
    launched = _launches(monkeypatch, ["--check", "--networks", "norse-convnet"])
    assert {a[6] for a in launched} == {"16,2,4,16,10"}
