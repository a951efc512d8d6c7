"""Shared helpers of the test suite."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).parent / "engine"))

SPIKE_RATE_RANGE = (0.02, 0.90)


def pytest_addoption(parser):
    parser.addoption(
        "--device",
        default="cpu",
        help="torch device every test builds its tensors and models on (cpu, cuda, cuda:1...). "
        "The same tests, the same tolerances: `pytest --device cuda` checks the CUDA paths.",
    )


def pytest_configure(config):
    device = torch.device(config.getoption("--device"))
    if device.type == "cuda" and not torch.cuda.is_available():
        raise pytest.UsageError("--device cuda was asked for, but torch sees no CUDA device here")
    if device.type == "cuda":
        # float32 matrix products and convolutions in full float32, as on the CPU: TF32 would
        # round them to 10 mantissa bits and no float32 tolerance of the suite would hold.
        torch.backends.cuda.matmul.allow_tf32 = False
        torch.backends.cudnn.allow_tf32 = False
    # Factory calls without a device (torch.zeros, nn.Linear...) then land on the tested device.
    torch.set_default_device(device)


def seeded(seed: int) -> torch.Generator:
    """A generator on the device the suite runs on (``--device``): a CPU generator cannot
    draw a CUDA tensor."""
    return torch.Generator(device=torch.get_default_device()).manual_seed(seed)


def assert_spiking(rates: list[float], what: str = "") -> None:
    """Neurons must actually spike, or every gradient comparison is vacuous."""
    lo, hi = SPIKE_RATE_RANGE
    for i, r in enumerate(rates):
        assert lo <= r <= hi, f"{what} layer {i}: mean spike rate {r:.3f} outside [{lo}, {hi}]"


def reset_states(model: torch.nn.Module) -> None:
    """Reset the state that modules keep on themselves (snnTorch's ``init_hidden``), module by
    module (never snnTorch's process-wide reset)."""
    from snn_ostl.adapters import load_available

    from snn_ostl.registry import adapter_for

    load_available()
    for m in model.modules():
        adapter = adapter_for(m)
        if adapter is not None:
            adapter.reset(m)


def full_bptt(model: torch.nn.Module, run) -> dict[str, torch.Tensor]:
    """Plain BPTT of the summed losses of ``run()`` from a fresh state, no learner attached."""
    reset_states(model)
    for p in model.parameters():
        p.grad = None
    torch.stack(list(run())).sum().backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    for p in model.parameters():
        p.grad = None
    return grads


@pytest.fixture(autouse=True)
def _seed():
    torch.manual_seed(0)


@pytest.fixture
def one_thread():
    """One intra-op thread for the test: on tiny tensors (per-sample Jacobians, small layers)
    a second thread only contends with the other test worker."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)
