"""OSTL gradients against the autograd oracle (float64, native cells).

Every case runs the learner with a per-step backward and compares each parameter with the
oracle; one-stateful-layer cases are also compared with full BPTT, and every case checks that the
neurons spike. Negative controls make sure the comparison can fail.
"""

from __future__ import annotations

import pytest
import torch
from conftest import assert_spiking, full_bptt
from hypothesis import given, settings
from hypothesis import strategies as st
from nets import StackNet, data, mean_rates, stack_runner
from torch import nn

from snn_ostl.testing import compare, oracle_gradients, ostl_gradients

TOL = 1e-10

# (id, sizes, cell options, variant)
CASES = [
    ("snu-ff", [8, 6], {}, "ostl"),
    ("snu-recurrent", [8, 6], {"recurrent": True}, "ostl"),
    ("ssnu-recurrent", [8, 6], {"recurrent": True, "soft": True}, "ostl"),
    ("snu-identity-g", [8, 6], {"activation": "identity", "recurrent": True}, "ostl"),
    ("snu-learn-decay-bias", [8, 6], {"learn_decay": True, "bias": True}, "ostl"),
    ("snu-deep-2", [8, 6, 5], {}, "ostl"),
    ("snu-deep-3-recurrent", [8, 6, 5, 4], {"recurrent": True, "learn_decay": True}, "ostl"),
    ("ssnu-deep-2", [8, 6, 5], {"soft": True, "decay_per_unit": True, "learn_decay": True}, "ostl"),
    ("no-h-deep-2", [8, 6, 5], {"recurrent": True}, "ostl-no-h"),
    ("eprop-deep-2", [8, 6, 5], {"recurrent": True, "learn_decay": True, "bias": True}, "eprop"),
    ("eprop-ff", [8, 6], {"learn_decay": True}, "eprop"),
]


def _run_case(sizes, options, variant, per_step=True, steps=12):
    net = StackNet(sizes, **options)
    x, target = data(steps=steps, features=sizes[0])
    rates: list = []
    run = stack_runner(net, x, target, rates)
    grads, owners, order = ostl_gradients(net, run, variant=variant, per_step=per_step)
    spike_rates = mean_rates(rates)
    reference = oracle_gradients(net, run, owners, order, variant=variant)
    return net, run, grads, reference, spike_rates


@pytest.mark.parametrize(
    ("sizes", "options", "variant"), [c[1:] for c in CASES], ids=[c[0] for c in CASES]
)
def test_ostl_equals_oracle(sizes, options, variant):
    net, _run, grads, reference, rates = _run_case(sizes, options, variant)
    if not options.get("soft"):
        assert_spiking(rates, variant)
    errors = compare(grads, reference)
    assert set(grads) == {n for n, p in net.named_parameters()}
    assert max(errors.values()) <= TOL, errors


@pytest.mark.parametrize(
    ("sizes", "options"),
    [([8, 6], {}), ([8, 6], {"recurrent": True}), ([8, 6], {"recurrent": True, "soft": True})],
    ids=["snu-ff", "snu-recurrent", "ssnu-recurrent"],
)
def test_single_layer_equals_full_bptt(sizes, options):
    """One stateful layer with stateless layers before and after: OSTL is BPTT."""
    front = nn.Sequential(nn.Unflatten(1, (2, 4)), nn.Flatten(), nn.ReLU())
    net = StackNet(sizes, front=front, **options)
    x, target = data(features=sizes[0])
    rates: list = []
    run = stack_runner(net, x, target, rates)
    grads, _, _ = ostl_gradients(net, run)
    if not options.get("soft"):
        assert_spiking(mean_rates(rates))
    errors = compare(grads, full_bptt(net, run))
    assert max(errors.values()) <= TOL, errors


@pytest.mark.parametrize("variant", ["ostl", "ostl-no-h", "eprop"])
def test_negative_control_lower_layer_differs_from_full_bptt(variant):
    """The residual term OSTL drops is real: lower layers of a deep net differ from BPTT."""
    net, run, grads, _reference, rates = _run_case([8, 6, 5], {"recurrent": True}, variant)
    assert_spiking(rates)
    full = full_bptt(net, run)
    lower = compare({"w": grads["cells.0.weight"]}, {"w": full["cells.0.weight"]})["w"]
    assert lower > 1e-3, "the lower layer should differ from full BPTT"
    # ...while the top layer and the readout are exact for the plain variant
    if variant == "ostl":
        top = compare({"w": grads["cells.1.weight"]}, {"w": full["cells.1.weight"]})["w"]
        assert top <= TOL


def test_variants_differ_from_each_other():
    """ostl-no-h and eprop are different learning rules, not aliases of ostl."""
    results = {
        v: _run_case([8, 6], {"recurrent": True}, v)[2] for v in ("ostl", "ostl-no-h", "eprop")
    }
    w = {v: g["cells.0.weight"] for v, g in results.items()}
    assert not torch.allclose(w["ostl"], w["ostl-no-h"])
    assert not torch.allclose(w["ostl"], w["eprop"])
    assert not torch.allclose(w["ostl-no-h"], w["eprop"])


def test_feature_extractor_below_gets_instantaneous_gradient():
    """A Linear below a stateful layer (not its synapse) gets the oracle's instantaneous rule."""
    front = nn.Sequential(nn.Linear(8, 8, dtype=torch.float64), nn.ReLU())
    net = StackNet([8, 6], front=front)
    x, target = data()
    run = stack_runner(net, x, target)
    grads, owners, order = ostl_gradients(net, run, instantaneous_below=True)
    reference = oracle_gradients(net, run, owners, order)
    errors = compare(grads, reference)
    assert max(errors.values()) <= TOL
    full = full_bptt(net, run)
    assert compare({"w": grads["front.0.weight"]}, {"w": full["front.0.weight"]})["w"] > 1e-3


@pytest.mark.parametrize("variant", ["ostl", "eprop"])
def test_whole_sequence_backward_equals_per_step(variant):
    """One backward on the summed loss gives the same gradients as a backward per step."""
    net = StackNet([8, 6, 5], recurrent=True)
    x, target = data()
    run = stack_runner(net, x, target)
    per_step, _, _ = ostl_gradients(net, run, variant=variant, per_step=True)
    whole, _, _ = ostl_gradients(net, run, variant=variant, per_step=False)
    assert max(compare(whole, per_step).values()) <= TOL


@settings(max_examples=12, deadline=None)
@given(
    steps=st.integers(1, 9),
    batch=st.integers(1, 4),
    hidden=st.integers(1, 7),
    decay=st.floats(0.0, 1.0),
    recurrent=st.booleans(),
    soft=st.booleans(),
)
def test_property_single_layer_equals_bptt(steps, batch, hidden, decay, recurrent, soft):
    net = StackNet([5, hidden], recurrent=recurrent, soft=soft, decay=decay)
    x, target = data(steps=steps, batch=batch, features=5)
    run = stack_runner(net, x, target)
    grads, _, _ = ostl_gradients(net, run)
    full = full_bptt(net, run)
    errors = compare(grads, full)
    assert max(errors.values()) <= TOL, errors
