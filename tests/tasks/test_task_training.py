"""The shared training loops: schedules, truncation, and OSTL's update equal to BPTT's."""

from __future__ import annotations

import pytest
import torch

from snn_ostl.cells.snu import SNUState
from snn_ostl.tasks import TASKS
from snn_ostl.tasks.runner import RunSpec, build_model
from snn_ostl.tasks.training import Method, detach_tree, parse_update, train_batch


@pytest.mark.parametrize(("text", "every"), [("step", 1), ("every:4", 4), ("sequence", None)])
def test_parse_update(text, every):
    assert parse_update(text) == every


@pytest.mark.parametrize("text", ["every:0", "every:", "every:x", "steps", ""])
def test_parse_update_rejects(text):
    with pytest.raises(ValueError, match="update schedule"):
        parse_update(text)


def test_detach_tree_keeps_structure():
    x = torch.ones(2, requires_grad=True) * 2
    state = [SNUState(x, x), None, (x, [x])]
    out = detach_tree(state)
    assert isinstance(out[0], SNUState) and out[1] is None
    assert not out[0].s.requires_grad and not out[2][1][0].requires_grad


def _one_batch(method: Method, task: str = "delay", cell: str = "ssnu") -> dict[str, torch.Tensor]:
    spec = RunSpec(TASKS[task], TASKS[task].config(tiny=True), cell, verbose=False)
    data = spec.task.load(spec.config, 0)
    model = build_model(spec, data)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    learner = method.attach(model)
    try:
        batch = next(iter(data.train(0)))
        loss = train_batch(model, batch, spec.task.objective, method, optimizer, learner)
    finally:
        if learner is not None:
            learner.detach()
    assert loss > 0
    return {n: p.detach().clone() for n, p in model.named_parameters()}


@pytest.mark.parametrize("cell", ["ssnu", "lsnn"])
def test_deferred_ostl_update_equals_bptt_update(cell):
    """One stateful layer: the update after one sequence is BPTT's (Norse's adaptive LSNN
    neurons included)."""
    if cell == "lsnn":
        pytest.importorskip("norse")
    ostl = _one_batch(Method("ostl"), cell=cell)
    bptt = _one_batch(Method("bptt"), cell=cell)
    for name in bptt:
        torch.testing.assert_close(ostl[name], bptt[name], rtol=1e-5, atol=1e-6)


def test_tbptt_with_a_long_horizon_is_bptt():
    bptt = _one_batch(Method("bptt"))
    long = _one_batch(Method("tbptt", horizon=1000))
    short = _one_batch(Method("tbptt", horizon=2))
    for name in bptt:
        torch.testing.assert_close(long[name], bptt[name])
    assert any(not torch.allclose(short[n], bptt[n]) for n in bptt)


def test_step_updates_differ_from_one_update():
    once = _one_batch(Method("ostl"))
    every = _one_batch(Method("ostl", update_every=1))
    assert any(not torch.allclose(once[n], every[n]) for n in once)


def test_every_task_has_a_tiny_configuration():
    for task in TASKS.values():
        tiny = task.config(tiny=True)
        assert tiny["epochs"] <= 2 and set(task.tiny) <= set(tiny)
        assert task.default_framework in task.cells
        assert task.objective.main_metric


def test_constrain_keeps_learned_decays_in_the_unit_interval():
    from snn_ostl.tasks.models import StepNet

    net = StepNet([3, 4], 2, cell="ssnu", options={"learn_decay": True, "decay_per_unit": True})
    with torch.no_grad():
        net.neurons[0].decay.copy_(torch.tensor([1.5, -0.2, 0.5, 1.0]))
    net.constrain()
    assert net.neurons[0].decay.tolist() == [1.0, 0.0, 0.5, 1.0]
