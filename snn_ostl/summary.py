"""The learner's summary table: which parameter is trained how, and what its traces cost."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from snn_ostl.learner import OSTL

__all__ = ["render_summary", "summary_rows"]

_EXACTNESS = {
    "presynaptic": "eligibility (exact)",
    "per-synapse": "eligibility (exact)",
    "elementwise": "eligibility (exact)",
    "full-jacobian": "eligibility (exact)",
}


def _mib(num_bytes: int) -> str:
    return f"{num_bytes / 2**20:.2f} MiB" if num_bytes else "-"


def summary_rows(learner: OSTL) -> list[dict[str, str]]:
    """One row per trained parameter or module, as plain strings.

    Keys: ``module``, ``cell``, ``parameter``, ``form``, ``gradient``, ``memory``.
    """
    rows: list[dict[str, str]] = []
    owned: set[int] = set()
    rule = learner.rule
    if not rule.uses_engine:  # the rule keeps its own traces (SuperSpike)
        for row in rule.summary_rows():
            owned.add(id(learner.model.get_parameter(row["parameter"])))
            rows.append({**row, "memory": _mib(int(row.pop("bytes")))})
    label = learner.variant if rule.name in (learner.variant, "rule") else rule.name
    for path, layer in learner.layers.items() if rule.uses_engine else ():
        cell = type(layer.module).__name__
        if not layer.bound:
            rows.append(
                {
                    "module": path,
                    "cell": cell,
                    "parameter": "(not run yet)",
                    "form": "chosen at the first step",
                    "gradient": f"{label} eligibility",
                    "memory": "-",
                }
            )
            continue
        approx = "; ".join(layer.adapter.approximations(layer.module))
        for g in layer.groups:
            owned.add(id(g.param))
            kind = f"{label} eligibility"
            if learner.variant == "ostl":
                kind = _EXACTNESS[g.form]
                mask = getattr(rule, "n", None)
                if g.form == "full-jacobian" and mask is not None:
                    kind = f"{label} eligibility (entries reached within {mask} step(s))"
            if g.fused:
                kind += ", fused into the synapse's backward"
            if g.chain is not None and g.chain.through != "none":
                kind += f", through {g.chain.through}"
            if g.presynaptic and g.form == "per-synapse":
                states = ", ".join(layer.adapter.state_names[k] for k in sorted(g.presynaptic))
                kind += f", presynaptic for {states}"
            windowed = g.form == "per-synapse" and g.chain is None and g.role == "weight"
            if windowed and learner.flush_every > 1:
                every = learner.flush_every
                kind += f", added to .grad every {every} steps and before optimizer.step()"
            if g.folded and layer.derived:
                names = layer.adapter.state_names
                dropped = ", ".join(
                    f"{names[k]} = f({names[m]})" for k, (m, _) in sorted(layer.derived.items())
                )
                kind += f", derived state left out ({dropped})"
            if approx:
                kind += f" [approximation: {approx}]"
            rows.append(
                {
                    "module": path,
                    "cell": cell,
                    "parameter": g.name,
                    "form": g.form,
                    "gradient": kind,
                    "memory": _mib(g.trace_bytes()),
                }
            )
    order = learner.execution_order()
    layer_order = [order[p] for p in learner.layers if p in order]
    for name, param in learner.model.named_parameters():
        if id(param) in owned or not param.requires_grad:
            continue
        module_path = name.rsplit(".", 1)[0] if "." in name else ""
        reason = learner._plan.instantaneous.get(module_path)
        if reason is None:
            pos = order.get(module_path)
            if pos is None or not layer_order:
                reason = "instantaneous gradient"
            elif pos > max(layer_order):
                reason = "instantaneous gradient (exact: above every stateful layer)"
            else:
                reason = "instantaneous gradient (approximation: a stateful layer is above it)"
        rows.append(
            {
                "module": module_path,
                "cell": "-",
                "parameter": name,
                "form": "none",
                "gradient": reason,
                "memory": "-",
            }
        )
    return rows


def render_summary(learner: OSTL) -> str:
    """The rows of :func:`summary_rows` as an aligned text table."""
    rows = summary_rows(learner)
    rule = learner.rule
    head = {
        "module": "module",
        "cell": "cell",
        "parameter": "parameter",
        "form": "trace form",
        "gradient": "gradient",
        "memory": "trace memory",
    }
    cols = list(head)
    widths = {
        c: max(len(head[c]), *(len(r[c]) for r in rows)) if rows else len(head[c]) for c in cols
    }
    line = "  ".join(head[c].ljust(widths[c]) for c in cols)
    out = [
        f"OSTL learner: rule={rule.describe()}, variant={learner.variant}, "
        f"learning_signal={learner.learning_signal}",
        line,
        "-" * len(line),
    ]
    out += ["  ".join(r[c].ljust(widths[c]) for c in cols) for r in rows]
    total = learner.trace_bytes()
    out.append(f"total trace memory: {_mib(total)}")
    per_synapse = any(
        g.form == "per-synapse" and g.chain is None
        for layer in learner.layers.values()
        for g in layer.groups
    )
    if per_synapse and learner.flush_every == 1:
        out.append(
            "tip: per-synapse traces are read and rewritten at every step; when the optimizer "
            "steps once per sequence (or every few steps), OSTL(model, flush_every=16) adds the "
            "same history terms every 16 steps in matrix products, several times faster."
        )
    return "\n".join(out)
