"""Per-synapse history terms added to ``.grad`` every few steps instead of every step (exact).

With ``OSTL(model, flush_every=W)`` a per-synapse weight no longer contracts and advances its
``[N, B, I]`` trace at every step, which costs one read and one write of the largest tensor OSTL
keeps. The window keeps the trace of an older step, the base ``e_b``, plus the small factors of
each later step (:class:`snn_ostl.traces.per_synapse.PerSynapseStep`:
``e_τ = A_τ e_{τ-1} + U_τ`` with ``A_τ`` per neuron and ``U_τ = Σ coef ⊗ vec``), and each step's
backward only records its state gradient ``L_{τ}`` (the ``ĝ`` that step τ+1's backward contracts
with ``e_τ``).

A flush adds ``Σ_τ L_τ · e_τ`` to ``.grad`` without forming any ``e_τ``. With the adjoint
``λ_τ = L_τ + A_{τ+1}ᵀ λ_{τ+1}`` (a backward sweep over per-neuron factors, ``[N, B]``)::

    Σ_{τ=b..l} L_τ · e_τ = λ_b · e_b + Σ_{τ=b+1..l} λ_τ · U_τ

The first term is one pass over the base; the second is one matrix product over all the
window's (coefficient, input) pairs. The base then moves forward to step m in the same pass:
``e_m = P(m, b) e_b + Σ_τ P(m, τ) U_τ`` with ``P`` the product of the ``A`` (per neuron) and
the sum a batched matrix product. Per step that is ``2/W`` passes over the trace instead of two:
exact up to the order of floating-point sums, never an approximation.

Until a flush the per-synapse weights' ``.grad`` lacks their latest history terms. The learner
flushes every ``W`` steps, before every ``optimizer.step()`` (a global optimizer hook), on
``learner.flush()``, ``learner.reset()`` and ``learner.detach()``. Shape letters are defined in
:mod:`snn_ostl.derivatives`; traces are neuron-major ``[N, B, I]``.
"""

from __future__ import annotations

import weakref
from collections.abc import Sequence

import torch
from torch import Tensor, nn

from snn_ostl.derivatives import Partial
from snn_ostl.errors import StateError
from snn_ostl.traces.grads import add_to_grad
from snn_ostl.traces.per_synapse import PerSynapseStep

__all__ = ["PLACEHOLDER", "Window", "WindowRef", "contract_base"]

Pairs = list[tuple[Partial, Tensor]]  # (coefficient [B, N] or a number, input [B, I])

#: Stands in the layer's trace list for the per-synapse traces a window keeps: the next step's
#: plan only asks whether such a trace exists (:func:`snn_ostl.traces.per_synapse.plan`).
PLACEHOLDER = torch.empty(0)


class WindowRef:
    """What one step's backward holds: the window and which trace ``e_τ`` it contracts."""

    __slots__ = ("__weakref__", "index", "ran", "traces", "window")

    def __init__(self, window: Window, index: int, traces: list) -> None:
        self.window, self.index, self.traces = window, index, traces
        #: Set by the first backward through the step; its trace is then no longer held back.
        self.ran = False


def _nbytes(t: Partial) -> int:
    return t.numel() * t.element_size() if isinstance(t, Tensor) else 0


def _plan_bytes(plan: PerSynapseStep) -> int:
    total = sum(_nbytes(s) for row in plan.rows.values() for _, s in row)
    return total + sum(_nbytes(c) + _nbytes(v) for p in plan.broadcast.values() for c, v in p)


def _mul(a: Partial, b: Partial) -> Partial:
    if isinstance(b, (int, float)) and b == 1:
        return a
    return a * b


def _add(a: Partial, b: Partial) -> Partial:
    return b if a is None else a + b


class _Columns:
    """The distinct input vectors of one flush, stacked once as ``[M, B, I]``.

    The gradient's pairs and the advance's pairs share most inputs (every step's input and
    filtered inputs), so both matrix products read the same stack. Coefficients are stacked the
    same way, ``[M, B, N]``: contiguous copies, and both products take them as they are (the
    batched one through transposed views that BLAS reads without a copy).
    """

    def __init__(self, pairs: Pairs) -> None:
        vecs: dict[int, Tensor] = {}
        for _, v in pairs:
            vecs.setdefault(id(v), v)
        self.column = {key: i for i, key in enumerate(vecs)}
        self.inputs = torch.stack(list(vecs.values())) if vecs else None

    def coefs(self, pairs: Pairs, batch: int, neurons: int) -> Tensor:
        """Each pair's coefficient in its input's column (summed when several): ``[M, B, N]``."""
        assert self.inputs is not None
        cols: list[Partial] = [None] * self.inputs.shape[0]
        for c, v in pairs:
            j = self.column[id(v)]
            cols[j] = _add(cols[j], c)
        like = self.inputs
        return torch.stack(
            [
                c.expand(batch, neurons)
                if isinstance(c, Tensor)
                else like.new_full((batch, neurons), c or 0.0)
                for c in cols
            ]
        )


def contract_base(lam: Tensor, base: Tensor, per_sample: bool) -> Tensor:
    """``Σ_b λ[b, n] e[b, n, i]`` -> ``[N, I]`` for a ``[B, N]`` λ and a ``[B, N, I]`` trace.

    Args:
        lam: The adjoint at the base step.
        base: The base trace.
        per_sample: One sample at a time (the CPU's choice: each ``[N, I]`` slice is read once,
            while in cache, and nothing of the trace's size is allocated); otherwise one einsum
            (a GPU's choice: one kernel).
    """
    if not per_sample:
        return torch.einsum("bn,bni->ni", lam, base)
    out = torch.zeros_like(base[0])
    for b in range(base.shape[0]):
        out.addcmul_(base[b], lam[b, :, None])
    return out


class Window:
    """The per-synapse trace of one weight, kept as a base step plus the factors of later steps.

    The window starts at the zero trace before a sequence's first step; the base is allocated
    by the first flush that moves it. Layout: batch-major ``[B, N, I]``, factors ``[B, N]``.

    Args:
        param: The weight; a flush adds to its ``.grad``.
        states: The per-synapse state indices.
        presynaptic: The states kept as filtered inputs ``[B, I]``.
        every: Flush once the base may move this many steps.
        where: Module path, for error messages.
        spares: Buffers the base may reuse (the group's pool); a closed window whose base no
            backward can reach any more gives it back here, for the next sequence.
    """

    def __init__(
        self,
        param: nn.Parameter,
        states: Sequence[int],
        presynaptic: frozenset,
        every: int,
        where: str,
        spares: list[Tensor] | None = None,
    ) -> None:
        self.param, self.states, self.presynaptic = param, tuple(states), presynaptic
        self.spares = spares if spares is not None else []
        self.every, self.where = every, where
        self.base: dict[int, Tensor] | None = None  # None: the zero trace
        self.index = 0  # step of the base trace
        self.plans: list[PerSynapseStep] = []  # plans[i] advances step index+i to index+i+1
        self.slots: dict[int, dict[int, Tensor]] = {}  # step τ -> state -> L_τ [B, N]
        #: Step τ -> the traces its backward contracts (presynaptic states' inputs ``[B, I]``).
        self.inputs: dict[int, list] = {}
        self.closed = False
        #: The base went to :attr:`spares` at :meth:`close`: no backward may reach it again.
        self.released = False
        self._refs: weakref.WeakSet[WindowRef] = weakref.WeakSet()
        self._bytes = 0
        self._zero: Tensor | None = None
        #: ``.grad`` as the last backward pass left it (identity, version): a flush checks that
        #: nobody read-modified it since, as clipping or zeroing before the flush would.
        self._seen: tuple[int, int] | None = None
        self._watch = param.register_post_accumulate_grad_hook(self._note_grad)

    def _grad_now(self) -> tuple[int, int] | None:
        """``.grad`` as it is: (identity, version), or None."""
        grad = self.param.grad
        return None if grad is None else (id(grad), grad._version)

    def _note_grad(self, param: Tensor) -> None:
        """After each accumulation into ``.grad``: one accumulation since the last one seen
        adds 1 to the version of the same tensor; anything else changed ``.grad`` while terms
        were waiting (zero_grad, clipping, an update) and the next flush is refused."""
        seen, self._seen = self._seen, self._grad_now()
        if seen is None or not self._waiting or self.reduce is not None:
            self._waiting = bool(self.slots)
            return
        if self._seen != (seen[0], seen[1] + 1):  # not exactly one accumulation
            self._tampered = True
        self._waiting = bool(self.slots)

    def check_grad(self) -> None:
        """Refuse to add terms to a ``.grad`` the user changed after the last backward pass."""
        if self.reduce is not None or self._seen is None or self.closed:
            # DDP writes its average into .grad after the backward itself; a closed window
            # flushes from inside a later backward, while .grad is being accumulated
            return
        now = self._grad_now()
        if not self._tampered and now is not None and now == self._seen:
            return
        how = "set to None or replaced" if now is None or now[0] != self._seen[0] else "changed"
        self.spoiled = True  # the sequence's gradient is lost: close() lets it go quietly
        if self.on_refused is not None:  # the learner checks (and marks) its other windows
            self.on_refused()
        raise StateError(
            f"{self.where}: the .grad of {self.name} was {how} after the last backward pass "
            "(gradient clipping, zero_grad, a manual update) while the learner still held "
            f"history terms for it (flush_every={self.every}); they belong to that gradient. "
            "Call learner.flush() after the backward pass and before touching .grad (optimizer."
            "step() flushes by itself)."
        )

    # ------------------------------------------------------------------ bookkeeping
    @property
    def latest(self) -> int:
        """Step of the newest trace."""
        return self.index + len(self.plans)

    @property
    def nbytes(self) -> int:
        """Memory of the factors and gradients waiting for a flush (not the base)."""
        return self._bytes

    @property
    def base_bytes(self) -> int:
        """Memory of the base trace."""
        return sum(map(_nbytes, self.base.values())) if self.base else 0

    def push(self, plan: PerSynapseStep) -> None:
        """Add the next step's factors (planned with ``batch_major=True``)."""
        self.plans.append(plan)
        self._bytes += _plan_bytes(plan)

    def ref(self, traces: list) -> WindowRef:
        """A handle on the newest trace for the next step's backward."""
        ref = WindowRef(self, self.latest, traces)
        self._refs.add(ref)
        return ref

    def needed(self) -> int:
        """The oldest step whose trace a backward that has not run yet may still contract."""
        waiting = [r.index for r in self._refs if not r.ran]
        return min([self.latest, *waiting])

    def due(self) -> bool:
        """Whether the base may move ``every`` steps forward."""
        return self.needed() - self.index >= self.every

    def add(self, ref: WindowRef, grads: dict[int, Tensor]) -> None:
        """Record the state gradients ``L_τ`` (``[B, N]`` per state) of ``ref``'s step."""
        if ref.index < self.index or self.released:
            past = (
                "its sequence was already ended by learner.reset() or detach(), which gave "
                "the per-synapse traces to the next sequence"
                if self.released
                else f"the per-synapse traces were already flushed up to step {self.index}"
            )
            raise StateError(
                f"{self.where}: a backward pass reached step {ref.index} of the sequence, but "
                f"{past} (OSTL(..., flush_every=...)). Backpropagate each step before the next "
                "flush (before optimizer.step(), learner.flush() or learner.reset()), or use "
                "flush_every=1."
            )
        ref.ran = True
        self.inputs[ref.index] = ref.traces
        slot = self.slots.setdefault(ref.index, {})
        if self.fold is not None:
            grads = {k: self.fold.grads(g) for k, g in grads.items()}
        for k, g in grads.items():
            g = g.reshape(g.shape[0], -1)
            self._bytes += _nbytes(g)
            slot[k] = g if k not in slot else slot[k] + g
        if self.closed:  # the learner was reset or detached: nobody else will flush
            self.flush(self.index)

    def settle(self) -> None:
        """Flush for a reader of ``.grad`` (``learner.flush()``, ``optimizer.step()``).

        Every recorded term reaches ``.grad``. The base moves only once half a window has
        passed: at the end of a sequence (an optimizer step, then ``reset()``) moving it would
        be wasted work, while a flush at every step still keeps the products small.
        """
        target = self.needed()
        self.flush(target if target - self.index >= max(1, self.every // 2) else self.index)

    def close(self) -> None:
        """Flush the recorded terms (the base stays: the sequence ends); later backward passes
        flush themselves.

        When no backward is waiting, the base is handed to :attr:`spares`: a new sequence then
        skips a fresh allocation of the largest tensor (on a CPU, page faults for every byte of
        it), and a second backward through one of this sequence's steps is refused.
        """
        if self.spoiled:
            self.slots.clear()
        self.flush(self.index)
        self.closed = True
        self._watch.remove()
        if self.base is not None and all(r.ran for r in self._refs):
            self.spares[:] = list(self.base.values())
            self.base = None
            self.released = True

    # ------------------------------------------------------------------ the maths
    def _adjoint(self) -> tuple[dict[int, Tensor], Pairs]:
        """``λ_b`` per state, and the pairs of every other term, merged per input vector.

        The other terms are ``λ_τ · U_τ`` for ``τ > b`` and the presynaptic states' own
        contractions ``L^k_τ · x̄^k_τ``; they often share the input (Norse's current trace is
        both), so their coefficients are summed before the one matrix product.
        """
        lam: dict[int, Tensor] = {}
        merged: dict[int, list] = {}  # id(input) -> [coefficient, input]

        def pair(coef: Partial, vec: Tensor) -> None:
            slot = merged.setdefault(id(vec), [None, vec])
            slot[0] = _add(slot[0], coef)

        for step in range(self.latest, self.index - 1, -1):
            for k, g in self.slots.get(step, {}).items():
                if k in self.presynaptic:
                    vec = self.inputs[step][k]
                    if vec is not None:  # None: the synapse does not reach this state
                        pair(g, vec)
                else:
                    lam[k] = _add(lam.get(k), g)
            if step == self.index or not lam:
                continue
            plan = self.plans[step - self.index - 1]
            for k, lk in lam.items():
                for c, v in plan.broadcast[k]:
                    pair(_mul(lk, c), v)
            new: dict[int, Tensor] = {}
            for k, lk in lam.items():
                for j, scale in plan.rows[k]:
                    new[j] = _add(new.get(j), _mul(lk, scale))
            lam = new
        return lam, [(c, v) for c, v in merged.values()]

    def _propagator(self, target: int) -> tuple[dict[tuple[int, int], Partial], dict[int, Pairs]]:
        """``P(target, b)`` per (m, k) and, per state m, the pairs of ``Σ_τ P(target, τ) U_τ``."""
        prop: dict[tuple[int, int], Partial] = {(m, m): 1.0 for m in self.states}
        pairs: dict[int, Pairs] = {m: [] for m in self.states}
        for step in range(target, self.index, -1):
            plan = self.plans[step - self.index - 1]
            for (m, k), q in prop.items():
                pairs[m] += [(_mul(q, c), v) for c, v in plan.broadcast[k]]
            new: dict[tuple[int, int], Partial] = {}
            for (m, k), q in prop.items():
                for j, scale in plan.rows[k]:
                    new[(m, j)] = _add(new.get((m, j)), _mul(q, scale))
            prop = new
        return prop, pairs

    def flush(self, target: int) -> None:
        """Add every recorded history term to ``.grad`` and move the base to step ``target``."""
        if not self.index <= target <= self.latest:
            raise ValueError(f"flush target {target} outside [{self.index}, {self.latest}]")
        if not self.slots and target == self.index:
            return
        with torch.no_grad():
            lam, grad_pairs = self._adjoint() if self.slots else ({}, [])
            prop, moves = self._propagator(target) if target > self.index else ({}, {})
            columns = _Columns([*grad_pairs, *(p for pairs in moves.values() for p in pairs)])
            if self.slots:
                self.check_grad()
            grad = self._gradient(lam, grad_pairs, columns) if self.slots else None
            if target > self.index:
                self._advance(prop, moves, columns)
            if grad is not None:
                self._accumulate(grad)
                self._seen = self._grad_now()
                self._waiting = self._tampered = False
        self.slots.clear()
        self.inputs = {s: v for s, v in self.inputs.items() if s >= target}
        del self.plans[: target - self.index]
        self.index = target
        self._bytes = sum(map(_plan_bytes, self.plans))

    @property
    def _shape(self) -> tuple[int, int, int]:
        plan = self.plans[0] if self.plans else None
        if plan is not None:
            return plan.shape[1], plan.shape[0], plan.shape[2]
        batch, neurons, width = next(iter(self.base.values())).shape
        return batch, neurons, width

    def _gradient(self, lam: dict[int, Tensor], pairs: Pairs, columns: _Columns) -> Tensor | None:
        """``Σ_τ L_τ · e_τ`` over the window, as ``[N, I]``, from :meth:`_adjoint`'s output."""
        batch, neurons, width = self._shape
        grad = None
        if pairs:
            coefs = columns.coefs(pairs, batch, neurons)  # [M, B, N]
            grad = coefs.reshape(-1, neurons).t() @ columns.inputs.reshape(-1, width)
        if self.base is None:  # the zero trace
            return grad
        for k, lk in lam.items():  # λ_b · e_b
            base = self.base[k]
            part = contract_base(lk, base, per_sample=base.device.type == "cpu")
            grad = part if grad is None else grad + part
        return grad

    def _advance(self, prop, pairs: dict[int, Pairs], columns: _Columns) -> None:
        """``e_target = P(target, b) e_b + Σ_τ P(target, τ) U_τ``, from :meth:`_propagator`."""
        batch, neurons, _ = self._shape
        base = self.base
        new: dict[int, Tensor | None] = {}
        if base is None:
            new = dict.fromkeys(self.states)
        elif any(m != k for m, k in prop):  # a state reads another's old trace: new tensors
            for m in self.states:
                terms = [
                    base[k] * (q[..., None] if isinstance(q, Tensor) else q)
                    for (mm, k), q in prop.items()
                    if mm == m
                ]
                new[m] = torch.stack(terms).sum(0) if terms else None
        else:
            for m in self.states:
                q = prop.get((m, m))
                if q is None:
                    base[m].zero_()
                elif isinstance(q, Tensor):
                    base[m].mul_(q[..., None])
                elif q != 1.0:
                    base[m].mul_(q)
            new = dict(base)
        for m in self.states:
            if pairs[m]:
                # per sample: [N, M] @ [M, I]
                coefs = columns.coefs(pairs[m], batch, neurons).permute(1, 2, 0)
                inputs = columns.inputs.permute(1, 0, 2)
                if new[m] is None:
                    spare = self._spare(coefs.shape[:2] + inputs.shape[2:], inputs)
                    new[m] = torch.bmm(coefs, inputs, out=spare)
                else:
                    new[m].baddbmm_(coefs, inputs)
            elif new[m] is None:
                like = self.plans[0].like
                shape = (batch, neurons, like.shape[1])
                spare = self._spare(shape, like)
                new[m] = spare.zero_() if spare is not None else like.new_zeros(shape)
        self.base = new

    def _spare(self, shape, like: Tensor) -> Tensor | None:
        """A spare buffer of this shape, dtype and device, if there is one."""
        for i, t in enumerate(self.spares):
            if (t.shape, t.dtype, t.device) == (torch.Size(shape), like.dtype, like.device):
                return self.spares.pop(i)
        return None

    #: Averages a flushed term across ranks (distributed data parallel), or None.
    reduce = None
    #: The weight's qualified name, for messages.
    name = "its synapse weight"
    #: A flush was refused because .grad was changed under it (see check_grad).
    spoiled = False
    #: Called at a refusal: checks the learner's other windows at once.
    on_refused = None
    #: Folds a convolution's state gradients ``[B, O, *P]`` to ``[B * P, O]`` (or None).
    fold = None
    #: Terms were waiting when ``.grad`` was last seen; it was changed between two backward
    #: passes while they waited.
    _waiting = False
    _tampered = False

    def _accumulate(self, grad: Tensor) -> None:
        grad = grad.reshape(self.param.shape).to(self.param.dtype)
        if self.reduce is not None or not self.param.requires_grad:
            # averaged over ranks, or a weight frozen since these steps ran (their terms
            # still belong to .grad, as with flush_every=1 they would be there already)
            self._accumulate_reduced(grad if self.reduce is None else self.reduce(grad))
            return
        # Through autograd, like every other gradient: the parameter's hooks see it (Norse's
        # recurrent cells zero their autapses' gradient in one) before it lands in .grad. A
        # scalar root (∂(θ·G)/∂θ = G exactly): an explicit grad_tensors argument would make
        # torch import its symbolic-shape checker (sympy), 35 MB, on first use.
        with torch.enable_grad():
            (self.param * grad).sum().backward()

    def _accumulate_reduced(self, grad: Tensor) -> None:
        """Add an averaged term to ``.grad`` through the parameter's hooks, without a backward
        pass (which DDP's reducer would count as a step of its own)."""
        add_to_grad(self.param, grad)

    def zero(self) -> Tensor:
        """What a step's backward returns for the weight: zeros, since hooks expect a tensor."""
        if self._zero is None:
            self._zero = self.param.detach().new_zeros(()).expand(self.param.shape)
        return self._zero
