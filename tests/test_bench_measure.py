"""Every benchmark cell runs on a tiny network (what it measures is not judged here)."""

from __future__ import annotations

import pytest

from snn_ostl.bench import NETWORKS, measure


@pytest.mark.parametrize("method", ["bptt", "ostl", "ostl/2", "detached"])
@pytest.mark.parametrize("network", list(NETWORKS))
def test_every_cell_runs(network, method):
    result = measure(network, method, steps=3, batch=2, device="cpu", sizes=[8, 6, 6, 3],
                     repeats=1)  # fmt: skip
    assert result["ms_per_step"] > 0 and result["peak_mib"] > 0
    assert result["learner"] == method.startswith("ostl")  # the floor row runs without one
