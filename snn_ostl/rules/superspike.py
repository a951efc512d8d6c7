"""SuperSpike (Zenke & Ganguli, Neural Computation 2018): a van Rossum error times filtered
surrogate eligibilities.

For a weight ``w_ij`` from presynaptic spikes ``x_j`` to a neuron ``i`` with membrane ``U_i``:

    λ_ij,t = α * [σ'(U_i) (ε * x_j)]_t        the synaptic eligibility trace
    e_i,t  = α * (S_i - S*_i)_t               the output error, van Rossum filtered
    ∂w_ij  = Σ_t e_i,t λ_ij,t                 (the gradient the optimizer descends)

``ε`` is the neuron's postsynaptic-potential kernel (its sub-threshold response; the reset is
ignored), ``σ'`` its surrogate derivative, and ``α`` the double-exponential kernel
``h_t = a_r h_{t-1} + (1 - a_r) u_t``, ``f_t = a_d f_{t-1} + (1 - a_d) h_t`` (unit area; rise
and decay time constants in steps). A hidden layer's error is fed back from the layer above,
``e^l = F_l e^{l+1}``: through the transposed weights (symmetric), a fixed random matrix, or
all ones (uniform), as in the paper's three feedback settings.

The rule runs its own hooks (no autograd through the model): ``learner.rule.van_rossum(out,
target)`` returns the step's van Rossum loss, whose ``backward()`` adds every layer's
``Σ_b e λ`` to ``.grad``.

>>> learner = snn_ostl.OSTL(net, rule="superspike")
>>> spikes = net(x_t)
>>> learner.rule.van_rossum(spikes, target_spikes_t).backward()
"""

from __future__ import annotations

import inspect
import math
import weakref
from typing import Any

import torch
from torch import Tensor, nn

from snn_ostl.adapter import ElementwiseAdapter
from snn_ostl.errors import ConfigurationError, Problem, StateError
from snn_ostl.rules.base import Rule, refuse_distributed, register_rule
from snn_ostl.traces.filtered import SpikingLayer, double_exponential_step
from snn_ostl.traces.grads import add_to_grad

__all__ = ["SuperSpike"]

FEEDBACK = ("symmetric", "random", "uniform")


@register_rule("superspike")
class SuperSpike(Rule):
    """SuperSpike: filtered error times filtered surrogate eligibility, per synapse.

    Args:
        feedback: How a hidden layer receives the error of the layer above: ``"symmetric"``
            (transposed weights), ``"random"`` (fixed random matrices) or ``"uniform"`` (ones).
        tau_rise: Rise time constant of the double-exponential kernel, in steps.
        tau_decay: Decay time constant, in steps.
        seed: Seed of the random feedback matrices.
    """

    name = "superspike"
    variant = "eprop"
    learning_signal = "superspike"
    uses_engine = False
    keeps = "σ'(U) times the PSP, both filtered; van Rossum output error fed back"

    def __init__(
        self,
        feedback: str = "symmetric",
        tau_rise: float = 5.0,
        tau_decay: float = 10.0,
        seed: int = 0,
    ) -> None:
        if feedback not in FEEDBACK:
            raise ValueError(
                f"SuperSpike(feedback={feedback!r}) is not valid; use "
                + ", ".join(repr(f) for f in FEEDBACK)
            )
        if not (tau_rise > 0 and tau_decay > 0):
            raise ValueError("SuperSpike time constants must be positive (in steps)")
        self.feedback, self.tau_rise, self.tau_decay, self.seed = (
            feedback,
            tau_rise,
            tau_decay,
            seed,
        )
        self.a_rise, self.a_decay = math.exp(-1.0 / tau_rise), math.exp(-1.0 / tau_decay)
        self.layers: dict[str, SpikingLayer] = {}
        self.matrices: dict[str, Tensor] = {}
        self._recent: dict[nn.Module, tuple[Tensor, Tensor]] = {}  # synapse -> (out, in)
        self._by_spikes: dict[int, tuple[weakref.ref, str]] = {}  # id(spikes) -> layer
        self._error: tuple[Tensor, Tensor] | None = None  # van Rossum filter of the error
        self._last_output: weakref.ref | None = None

    def describe(self) -> str:
        return (
            f"superspike (feedback={self.feedback}, tau_rise={self.tau_rise:g}, "
            f"tau_decay={self.tau_decay:g} steps)"
        )

    # ---------------------------------------------------------------- planning
    def problems(self, learner: Any, plan: Any) -> list[Problem]:
        out = []
        for path, (module, adapter) in plan.layers.items():
            why = None
            if not isinstance(adapter, ElementwiseAdapter):
                why = "its neurons mix inside the step (no per-neuron membrane)"
            elif adapter.internal_synapses(module):
                why = "its weights live inside the neuron module"
            elif any(p.requires_grad for p in adapter.neuron_parameters(module).values()):
                why = "it trains synapse weights only, and this neuron has learned parameters"
            if why:
                out.append(
                    Problem(
                        path,
                        type(module).__name__,
                        "SuperSpike needs Linear synapses feeding elementwise spiking "
                        f"neurons; {why}.",
                        "feed the neurons from an nn.Linear, freeze the neuron parameters, or "
                        "use rule='eprop-symmetric' for this model.",
                    )
                )
            else:
                self.layers[path] = SpikingLayer(path, module, adapter)
        return out

    def attach(self, learner: Any) -> list[Any]:
        super().attach(learner)
        handles = []
        for module in learner._plan.synapses.values():
            if type(module) is nn.Linear:
                handles.append(module.register_forward_hook(self._synapse_post))
        for layer in self.layers.values():
            handles.append(
                layer.module.register_forward_pre_hook(self._pre(layer), with_kwargs=True)
            )
            handles.append(layer.module.register_forward_hook(self._post(layer), with_kwargs=True))
        self._synapse_paths = {m: p for p, m in learner._plan.synapses.items()}
        return handles

    def reset(self) -> None:
        for layer in self.layers.values():
            layer.clear()
        self._recent.clear()
        self._by_spikes.clear()
        self._error = None
        self._last_output = None

    # ---------------------------------------------------------------- hooks
    def _synapse_post(self, module: nn.Module, args: tuple, output: Tensor) -> None:
        if torch.is_grad_enabled():
            self._recent[module] = (output, args[0])

    def _pre(self, layer: SpikingLayer):
        def hook(module: nn.Module, args: tuple, kwargs: dict):
            if not torch.is_grad_enabled():
                return None
            refuse_distributed(self, layer.path, type(module).__name__)
            adapter = layer.adapter
            current = adapter.current(module, args, kwargs)
            found = next(((m, x) for m, (o, x) in self._recent.items() if o is current), None)
            if found is None:
                raise ConfigurationError(
                    [
                        Problem(
                            layer.path,
                            type(module).__name__,
                            "SuperSpike needs the neuron's input current to be the output of "
                            "one nn.Linear, with no operation in between.",
                            "call the neuron on the Linear's output directly.",
                        )
                    ]
                )
            synapse, x = found
            self._recent.pop(synapse)
            self._bind(layer, synapse, x)
            prev = adapter.read_state(module, args, kwargs)
            alive = [r() for r in layer.last_new]
            if (
                prev is None
                or len(alive) != len(prev)
                or any(a is not p for a, p in zip(alive, prev))
            ):
                layer.clear()  # a state the last step did not return: a new sequence
                self._error = self._last_output = None  # the output error restarts with it
                if prev is None:
                    prev = adapter.initial_state(module, current)
            s_prev = tuple(s.detach().requires_grad_(True) for s in prev)
            a = current.detach().requires_grad_(True)
            layer.leaves = (x.detach().flatten(1), a, s_prev)
            args, kwargs = adapter.write_state(module, args, kwargs, s_prev)
            return adapter.write_input(module, args, kwargs, a)

        return hook

    @staticmethod
    def _foreign_backward(layer: SpikingLayer):
        def hook(grad: Tensor) -> None:
            raise StateError(
                f"{layer.path}: a backward pass reached this layer through the model's graph. "
                "Under SuperSpike no weight gradient flows through the model: the update comes "
                "from learner.rule.van_rossum(output_spikes, target_spikes).backward(). A loss "
                "on the model's output would leave .grad untouched; backpropagate the van "
                "Rossum loss instead (or use another rule for this loss)."
            )

        return hook

    def _post(self, layer: SpikingLayer):
        def hook(module: nn.Module, args: tuple, kwargs: dict, output: Any):
            if layer.leaves is None or not torch.is_grad_enabled():
                return None
            x, a, s_prev = layer.leaves
            layer.leaves = None
            spikes = layer.adapter.spikes(output)
            new = layer.adapter.new_state(module, args, kwargs, output)
            layer.last_new = tuple(weakref.ref(s) for s in new)
            partials = torch.autograd.grad(
                spikes,
                (a, *s_prev),
                torch.ones_like(spikes),
                retain_graph=True,
                allow_unused=True,
            )
            layer.advance(x, partials, a, self.a_rise, self.a_decay)
            # from now on, any gradient reaching the step is a loss the rule does not see
            a.register_hook(self._foreign_backward(layer))
            layer.spikes = spikes
            self._by_spikes[id(spikes)] = (weakref.ref(spikes), layer.path)
            return None

        return hook

    def _bind(self, layer: SpikingLayer, synapse: nn.Linear, x: Tensor) -> None:
        if layer.synapse is None:
            layer.synapse, layer.synapse_path = synapse, self._synapse_paths[synapse]
            hit = self._by_spikes.get(id(x))
            layer.below = hit[1] if hit is not None and hit[0]() is x else None
            self._rest_dynamics(layer, synapse)
        elif layer.synapse is not synapse:
            raise ConfigurationError(
                [
                    Problem(
                        layer.path,
                        type(layer.module).__name__,
                        f"fed by {self._synapse_paths.get(synapse)} at this step but by "
                        f"{layer.synapse_path} before.",
                        "feed each neuron from one Linear at every step.",
                    )
                ]
            )

    def _rest_dynamics(self, layer: SpikingLayer, synapse: nn.Linear) -> None:
        """The neuron's sub-threshold partials at rest: the PSP kernel ``ε`` as a filter."""
        adapter, module = layer.adapter, layer.module
        like = torch.zeros(
            1, synapse.out_features, dtype=synapse.weight.dtype, device=synapse.weight.device
        )
        params = {**adapter.neuron_parameters(module), **adapter.constant_parameters(module)}
        params = {k: v.detach() for k, v in params.items()}
        with torch.enable_grad():
            a = like.clone().requires_grad_(True)
            s = tuple(
                t.detach().clone().requires_grad_(True) for t in adapter.initial_state(module, like)
            )
            # the e-prop form of the step where the adapter has one: the reset then holds the
            # spike fixed, so a reset to another value than the leak adds nothing at rest
            takes_variant = "variant" in inspect.signature(adapter.cell).parameters
            new = (
                adapter.cell(module, a, s, params, variant="eprop")
                if takes_variant
                else adapter.cell(module, a, s, params)
            )
            decay, drive = [], []
            for out in new:
                grads = torch.autograd.grad(
                    out.sum(), (a, *s), retain_graph=True, allow_unused=True
                )
                row = [self._number(layer, g) for g in grads[1:]]
                decay.append(row)
                drive.append(self._number(layer, grads[0]))
        layer.decay, layer.drive = decay, drive

    @staticmethod
    def _number(layer: SpikingLayer, grad: Tensor | None) -> float:
        if grad is None:
            return 0.0
        flat = grad.flatten()
        if not torch.all(flat == flat[0]):
            raise ConfigurationError(
                [
                    Problem(
                        layer.path,
                        type(layer.module).__name__,
                        "SuperSpike needs one postsynaptic-potential kernel for every neuron; "
                        "this layer's decays differ between neurons.",
                        "use one decay for the whole layer, or rule='eprop-symmetric'.",
                    )
                ]
            )
        return float(flat[0])

    # ---------------------------------------------------------------- traces
    # ---------------------------------------------------------------- learning signal
    def feedback_matrix(self, upper: SpikingLayer) -> Tensor:
        """``F`` with ``e^{below} = e^{upper} @ F``: shape of the upper synapse's weight."""
        weight = upper.synapse.weight.detach()
        if self.feedback == "symmetric":
            return weight
        if self.feedback == "uniform":
            return torch.ones_like(weight)
        matrix = self.matrices.get(upper.path)
        if matrix is None:
            gen = torch.Generator().manual_seed(self.seed + len(self.matrices))
            draw = torch.rand(weight.shape, generator=gen, dtype=torch.float64)
            matrix = (draw * 2 - 1) / math.sqrt(weight.shape[1])
            self.matrices[upper.path] = matrix
        return matrix.to(dtype=weight.dtype, device=weight.device)

    def van_rossum(self, output: Tensor, target: Tensor) -> Tensor:
        """The van Rossum loss of this step, ``½ Σ_i e_i,t²`` averaged over the batch.

        Its ``backward()`` adds SuperSpike's update direction to every trained ``.grad``.

        Args:
            output: The output spikes of the model's last spiking layer, ``[B, N]``.
            target: The target spikes of this step, ``[B, N]``.
        """
        hit = self._by_spikes.get(id(output))
        if hit is None or hit[0]() is not output:
            raise ValueError(
                "SuperSpike.van_rossum(output, target): output must be the spikes a spiking "
                "layer returned at this step (the model's output layer), as returned."
            )
        top = self.layers[hit[1]]
        if self._last_output is not None and self._last_output() is output:
            raise StateError(
                "SuperSpike.van_rossum was called twice for the same step's output: the error "
                "filter advances once per step. Sum your other loss terms into one call's "
                "result, or call it once per step."
            )
        self._last_output = weakref.ref(output)
        diff = (output.detach() - target.to(output.dtype)).reshape(output.shape[0], -1)
        self._error = double_exponential_step(self._error, diff, self.a_rise, self.a_decay)
        err = self._error[1]
        value = 0.5 * (err**2).sum() / err.shape[0]
        # this step's eligibilities and feedback, kept for a backward that may come later
        chain: list[tuple[SpikingLayer, Tensor, Tensor | None, Tensor | None]] = []
        layer: SpikingLayer | None = top
        while layer is not None:
            below = self.layers[layer.below] if layer.below is not None else None
            matrix = self.feedback_matrix(layer) if below is not None else None
            chain.append((layer, layer.elig, layer.elig_bias, matrix))
            layer = below
        # the result hangs on a leaf of its own: its backward never enters the model's graph
        anchor = torch.zeros((), dtype=value.dtype, device=value.device, requires_grad=True)
        return _Deliver.apply(value, anchor, self, chain, err)

    @staticmethod
    def deliver(chain: list, err: Tensor, scale: Tensor) -> None:
        """Add ``Σ_b e^l λ^l`` to every layer's ``.grad``, from the output layer down."""
        signal = err * (scale / err.shape[0])
        for layer, elig, elig_bias, matrix in chain:
            syn = layer.synapse
            _add(syn.weight, torch.einsum("bi,bij->ij", signal, elig))
            if syn.bias is not None:
                _add(syn.bias, torch.einsum("bi,bi->i", signal, elig_bias))
            if matrix is not None:
                signal = signal @ matrix

    def summary_rows(self) -> list[dict[str, str]]:
        rows = []
        for layer in self.layers.values():
            if layer.synapse is None:
                continue
            for name, p in layer.synapse.named_parameters():
                if not p.requires_grad:
                    continue
                rows.append(
                    {
                        "module": layer.path,
                        "cell": type(layer.module).__name__,
                        "parameter": f"{layer.synapse_path}.{name}",
                        "form": "per-synapse, filtered",
                        "gradient": "superspike: filtered error x filtered σ'(U)·PSP",
                        # the layer's traces, counted once (on its weight)
                        "bytes": str(layer.trace_bytes() if name == "weight" else 0),
                    }
                )
        return rows

    def trace_bytes(self) -> int:
        return sum(layer.trace_bytes() for layer in self.layers.values())

    def state_dict(self) -> dict[str, Any]:
        return {"matrices": {k: v.clone() for k, v in self.matrices.items()}}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.matrices = {k: v.clone() for k, v in state["matrices"].items()}


def _add(param: nn.Parameter, term: Tensor) -> None:
    if param.requires_grad:  # (a frozen weight gets no update, as under autograd)
        add_to_grad(param, term)


class _Deliver(torch.autograd.Function):
    """The van Rossum loss whose backward writes SuperSpike's update into ``.grad``."""

    @staticmethod
    def forward(ctx, value, anchor, rule, chain, err):  # type: ignore[override]
        ctx.rule, ctx.chain, ctx.err = rule, chain, err
        return value.clone()

    @staticmethod
    def backward(ctx, grad):  # type: ignore[override]
        ctx.rule.deliver(ctx.chain, ctx.err, grad)
        return None, None, None, None, None
