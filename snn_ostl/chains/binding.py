"""A layer fed through a chain: its trace groups, checked and advanced at every step.

:class:`snn_ostl.hooks.layer.Layer` inherits these methods. A layer is bound this way when its
current is not the output of one Linear/Conv that the older forms handle (presynaptic, fused,
per-synapse Linear): a pooling, dropout, normalisation or sum sits in between, the synapse is
an embedding, a 3-d or transposed convolution, or a convolution feeds a neuron whose traces do
not factorise.
"""

from __future__ import annotations

from functools import partial

import torch
from torch import Tensor

from snn_ostl.chains import traces as CT
from snn_ostl.chains.inplace import plan as plan_inplace
from snn_ostl.chains.ops import STATIC_CHANNELS, channel_axis
from snn_ostl.chains.tangents import (
    Linearised,
    Tangent,
    channel_masks,
    synapse_tangents,
    weight_channel_axis,
)
from snn_ostl.chains.walk import Block
from snn_ostl.chains.windowed import advance_windowed, fold_for
from snn_ostl.errors import StateError
from snn_ostl.traces.groups import TraceGroup

__all__ = ["ChainLayer"]


def _probe_directions(z: Tensor, axis: int, generator: torch.Generator) -> Tensor:
    """``[O, *z]``: a random positive tangent on one channel at a time."""
    noise = torch.rand(z.shape, generator=generator, dtype=torch.float64).to(z) + 0.5
    return channel_masks(z, axis) * noise


class ChainLayer:
    """The chain-fed part of :class:`snn_ostl.hooks.layer.Layer` (no state of its own)."""

    block: Block | None = None

    def bind_chain(self, block: Block, current: Tensor) -> None:
        """Fix the trace groups of a layer fed through ``block`` (at its first step)."""
        self.bind(None, None)  # the neuron's own parameters and internal synapses
        leaves = [u.output for u in block.synapses] + list(block.params.values())
        if not leaves:  # nothing trained feeds the current (an input passed straight in)
            self._block_signature = block.signature()
            self.block = block
            block.release()
            return
        linear = Linearised(current, leaves)
        # an operation whose channel map may change from step to step: every entry its own
        # direction (exact whatever it does)
        # (a layer with recurrent weights of its own mixes neurons at every step: the same)
        dynamic = self.recurrent or any(op not in STATIC_CHANNELS for op in block.ops)
        generator = torch.Generator().manual_seed(0)
        n_shape = current.shape[1:]
        through = block.describe()
        groups: list[TraceGroup] = []
        for j, use in enumerate(block.synapses):
            module, z = use.module, use.output
            axis = channel_axis(module) % z.dim()
            channels = z.shape[axis]
            if dynamic:
                cmap = CT.ChannelMap(channels, weight_channel_axis(module), dense=True)
            else:
                probe = linear.apply(linear.index_of(z), _probe_directions(z, axis, generator))
                guess = CT.layout_guess(n_shape, channels, current.device)
                cmap = CT.channel_map(probe, weight_channel_axis(module), guess)
            prefix = f"{use.path}." if use.path else ""
            weight = module.weight
            if weight.requires_grad:
                fan = weight.numel() // channels
                width = weight.numel() if cmap.dense else fan
                role = CT.ChainRole("weight", j, cmap, width, through)
                group = self._chain_group(prefix + "weight", weight, "weight", role)
                if not cmap.dense and not self.recurrent:
                    group.fold = fold_for(block, current, self.flush_every > 1)
                groups.append(group)
            bias = getattr(module, "bias", None)
            if isinstance(bias, torch.nn.Parameter) and bias.requires_grad:
                bmap = CT.ChannelMap(channels, 0, cmap.dense, cmap.blocks, cmap.index)
                width = channels if cmap.dense else 1
                role = CT.ChainRole("bias", j, bmap, width, through)
                groups.append(self._chain_group(prefix + "bias", bias, "bias", role))
        offset = len(block.synapses)
        for i, (name, param) in enumerate(block.params.items()):
            if param.dim() == 0:
                cmap = CT.ChannelMap(1, 0, dense=True)
            elif dynamic:
                cmap = CT.ChannelMap(param.shape[0], 0, dense=True)
            else:
                directions = _probe_directions(param.detach(), 0, generator)
                probe = linear.apply(offset + i, directions)
                guess = CT.layout_guess(n_shape, param.shape[0], current.device)
                cmap = CT.channel_map(probe, 0, guess)
            width = param.numel() if cmap.dense else param[0].numel()
            role = CT.ChainRole("param", None, cmap, width, through)
            groups.append(self._chain_group(name, param, "chain", role))
        self._block_signature = block.signature()
        if not groups:
            self.block = block
            block.release()
            return
        self.groups = groups + self.groups
        self._params = [g.param for g in self.groups]
        self.all_fused = False
        self._fused_roles = {}
        self.block = block

    def _chain_group(self, name: str, param, role: str, chain: CT.ChainRole) -> TraceGroup:
        form = "full-jacobian" if chain.cmap.dense else "per-synapse"
        return TraceGroup(name, param, role, form, chain=chain)

    def _advance_mixed(self, g, d, tangent: Tangent, current: Tensor, take) -> list:
        """A block parameter of a layer with recurrent weights of its own (snnTorch ``RLeaky``
        fed through a chain): ``e^k_t = Σ_j J[k][j] e^j_{t-1} + c^k (X_t + Σ_H H e^h_{t-1})``
        with ``H`` each recurrent weight and ``h`` the state it reads (full traces)."""
        shape = (*current.shape[1:], current.shape[0], g.chain.width)
        x = tangent.full(shape, current, take)
        old = g.trace or [None] * d.num_states
        for s in self._internal():
            if not isinstance(s.source, int) or old[s.source] is None:
                continue
            weight = self.module.get_parameter(s.weight).detach().to(current.dtype)
            e = old[s.source].expand(shape).reshape(current[0].numel(), -1)  # [N, B * P]
            x = x + (weight @ e).reshape(shape)
        return CT.advance(d.state, d.current, old, Tangent(None, x), current, g.chain.width, take)

    def check_block(self, block: Block) -> None:
        """Refuse a step whose block differs from the first step's (other synapses or ops)."""
        if block.signature() == self._block_signature:
            self.block = block
            if not any(g.chain is not None for g in self.groups):
                block.release()
            return
        raise StateError(
            f"{self.path or '<root>'} ({type(self.module).__name__}): its input current came "
            f"through {self.block.describe()} from "
            f"{', '.join(u.path for u in self.block.synapses) or 'no synapse'} at the first "
            f"step, but through {block.describe()} from "
            f"{', '.join(u.path for u in block.synapses) or 'no synapse'} at this one. Compute "
            "the current the same way at every step of a sequence, or call learner.reset() "
            "before changing the model."
        )

    def advance_chain(self, step, d) -> None:
        """Advance the traces of every block parameter by one step."""
        # the tangents differentiate the step's graph, which reaches the parameters through
        # the fed-back spikes' history node too: silence it meanwhile
        with self.fed_back_muted():
            self._advance_chain(step, d)

    def _advance_chain(self, step, d) -> None:
        block = self.block
        current = step.current
        linear_cache: list[Linearised] = []

        def linear() -> Linearised:
            if not linear_cache:
                leaves = [u.output for u in block.synapses] + list(block.params.values())
                linear_cache.append(Linearised(current, leaves))
            return linear_cache[0]

        tangents: dict[tuple[int, str], Tangent] = {}
        for j, use in enumerate(block.synapses):
            parts = [g for g in self.groups if g.chain is not None and g.chain.synapse == j]
            for g in parts:
                if g.fold is not None and not self.fed_back:
                    advance_windowed(self, g, d, use, current)
            parts = [g for g in parts if g.fold is None or self.fed_back]
            if not parts:
                continue
            dense = parts[0].chain.cmap.dense
            want_bias = any(g.chain.part == "bias" for g in parts)
            take = partial(parts[0].take_shaped, like=current)
            with torch.no_grad():
                weight, bias = synapse_tangents(use, current, linear, dense, want_bias, take)
            tangents[(j, "weight")] = weight
            if bias is not None:
                tangents[(j, "bias")] = bias
        names = list(block.params)
        for g in self.groups:
            chain = g.chain
            if chain is None or (g.fold is not None and not self.fed_back):
                continue  # (a folded convolution weight went to its window above)
            if chain.part == "param":
                index = len(block.synapses) + names.index(g.name)
                directions = CT.parameter_directions(g.param, chain.cmap.dense, current.dtype)
                x = linear().apply(index, directions)
                tangent = Tangent(None, x.movedim(0, -1).movedim(0, -2))
            else:
                tangent = tangents[(chain.synapse, chain.part)]
            take = partial(g.take_shaped, like=current)
            if self.fed_back:
                g.trace = self.advance_fed_back(g, d, tangent, current, take)
                continue
            if self.recurrent:
                g.trace = self._advance_mixed(g, d, tangent, current, take)
                continue
            old = g.trace or [None] * d.num_states
            step = None
            if self.advance_in_backward:
                step = plan_inplace(d.state, d.current, old, tangent, current, chain.cmap)
            if step is not None:  # run in this step's backward (or before the next step)
                step.scratch = g.scratch
                if step.eager:  # small states are advanced already; the old list stays intact
                    g.trace = [step.eager.get(k, t) for k, t in enumerate(old)]
                g.pending = step
                continue
            tangent.materialise(take)
            # the old traces return to the pool when the backward that reads them is done
            # (Snapshots._recycle); spare buffers spare page faults on large traces
            with torch.no_grad():
                g.trace = CT.advance(d.state, d.current, old, tangent, current, chain.width, take)
        self.keep_first(d)
        self._fb_input = None
        block.release()
