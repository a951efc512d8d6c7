"""Sphinx extension: the supported-modules and refusals tables, read from the adapter registry.

Nothing here is kept by hand. At ``config-inited`` the extension loads every adapter whose
framework is installed (:func:`snn_ostl.adapters.load_available`), takes a snapshot of
:func:`snn_ostl.registry.registered`, and probes each registered example configuration: the
example is attached to :class:`snn_ostl.OSTL` (behind an ``nn.Linear`` synapse when the module
takes its current from outside), run for one step under every variant the adapter offers, and
the trace form the learner chose for each parameter is read back from ``learner.layers``.

The snapshot is taken before sphinx-gallery runs the tutorials, so a module registered inside
a tutorial (the "write your own adapter" one does that) never shows up in the table.

Directives:

- ``.. supported-modules::`` one row per (registered module, example configuration).
- ``.. refused-modules::`` module types the learner refuses on purpose, with reason and fix.
- ``.. known-modules::`` the synapse and stateless module types the learner recognises.

The row functions are plain Python so ``tests/test_docs.py`` can check them without Sphinx.
"""

from __future__ import annotations

import importlib
import itertools
import warnings
from collections.abc import Callable, Iterable
from typing import Any

import torch
from docutils import nodes
from docutils.statemachine import StringList
from torch import nn

__all__ = [
    "known_rows",
    "load_registry",
    "public_name",
    "refusal_rows",
    "render_known",
    "render_refusals",
    "render_supported",
    "setup",
    "supported_rows",
    "trace_forms",
]

#: Keys of each row of :func:`supported_rows`, in order.
SUPPORTED_COLUMNS = ("module", "framework", "states", "variants", "example", "forms")
#: Columns of the rendered supported-modules table: one module's configurations are grouped,
#: its name, state tensors and variants written once in the first row of the group.
_SUPPORTED_HEADERS = (
    "Module",
    "Example configuration",
    "Trace form per parameter (every variant, unless one is named)",
)
#: CSS classes of the generated tables (docs/_static/snn_ostl.css): full width, wrapping text.
_TABLE_CLASS = "ostl-registry"


# ----------------------------------------------------------------------------- registry
def load_registry() -> list[Any]:
    """Load every available adapter (importing installed frameworks) and list the registry."""
    from snn_ostl.adapters import load_available

    from snn_ostl.registry import registered

    load_available(import_frameworks=True)
    return registered()


def public_name(cls: type) -> str:
    """The shortest importable dotted name of ``cls`` (``snntorch.Leaky``, not the file path)."""
    parts = cls.__module__.split(".")
    for depth in range(1, len(parts) + 1):
        prefix = ".".join(parts[:depth])
        try:
            module = importlib.import_module(prefix)
        except ImportError:
            continue
        if getattr(module, cls.__qualname__, None) is cls:
            return f"{prefix}.{cls.__qualname__}"
    return f"{cls.__module__}.{cls.__qualname__}"


def _float_dtype(module: nn.Module) -> torch.dtype:
    for t in itertools.chain(module.parameters(), module.buffers()):
        if t.is_floating_point():
            return t.dtype
    return torch.get_default_dtype()


def _takes_input_directly(module: nn.Module, adapter: Any) -> bool:
    """True when the module's weights sit inside it (SNU, torch RNN cells)."""
    from snn_ostl.adapter import DenseAdapter, ElementwiseAdapter

    if isinstance(adapter, DenseAdapter):
        return True
    return isinstance(adapter, ElementwiseAdapter) and bool(adapter.internal_synapses(module))


def _input_width(module: nn.Module, adapter: Any) -> int:
    """Input features of a module with internal weights."""
    for name in ("in_features", "input_size"):
        value = getattr(module, name, None)
        if isinstance(value, int):
            return value
    for syn in getattr(adapter, "internal_synapses", lambda m: [])(module):
        if syn.source == "input":
            return int(getattr(module, syn.weight).shape[1])
    raise ValueError(f"cannot tell the input width of {type(module).__name__}")


def _neuron_count(module: nn.Module) -> int:
    """A neuron count that fits per-neuron parameters of the module, if it has any."""
    sizes = {
        t.shape[-1] for t in itertools.chain(module.parameters(), module.buffers()) if t.dim() == 1
    }
    return next(iter(sizes)) if len(sizes) == 1 else 5


def _label(name: str, synapse_prefix: str | None, module_prefix: str) -> str:
    if synapse_prefix is not None and name.startswith(synapse_prefix):
        return "Linear." + name[len(synapse_prefix) :]
    if name.startswith(module_prefix):
        return name[len(module_prefix) :]
    return name


def _forms_by_running(entry: Any, factory: Callable[[], nn.Module], variant: str) -> list:
    """Attach the learner to the example, run one step, read the forms it chose."""
    import snn_ostl

    module = factory()
    dtype = _float_dtype(module)
    direct = _takes_input_directly(module, entry.adapter)
    if direct:
        model = nn.Sequential(module)
        x = torch.rand(2, _input_width(module, entry.adapter), dtype=dtype)
        synapse_prefix, module_prefix = None, "0."
    else:
        model = nn.Sequential(nn.Linear(3, _neuron_count(module), dtype=dtype), module)
        x = torch.rand(2, 3, dtype=dtype)
        synapse_prefix, module_prefix = "0.", "1."
    with snn_ostl.OSTL(model, variant=variant) as learner:
        learner.reset()
        with torch.enable_grad():
            model(x)
        return [
            (_label(g.name, synapse_prefix, module_prefix), g.form)
            for layer in learner.layers.values()
            for g in layer.groups
        ]


def _forms_by_binding(entry: Any, factory: Callable[[], nn.Module], variant: str) -> list:
    """The same choice made without running: what the learner decides at the first step."""
    from snn_ostl.hooks.layer import Layer

    module = factory()
    layer = Layer("neuron", module, entry.adapter, variant)
    if _takes_input_directly(module, entry.adapter):
        layer.bind(None, None)
        synapse_prefix = None
    else:
        layer.bind("synapse", nn.Linear(3, 5, dtype=_float_dtype(module)))
        synapse_prefix = "synapse."
    return [(_label(g.name, synapse_prefix, "neuron."), g.form) for g in layer.groups]


def trace_forms(
    entry: Any, factory: Callable[[], nn.Module], variant: str
) -> dict[str, list[str]] | str:
    """How the learner stores each parameter's eligibility for this example and variant.

    Returns:
        ``{form: [parameter labels]}`` in the order the learner lists its parameters (labels
        such as ``"Linear.weight"`` for the synapse in front of the module, ``"threshold"`` for
        the module's own), or a string starting with ``"refused: "`` when the adapter refuses
        this configuration.

    Raises:
        RuntimeError: Neither running the example nor binding its layer worked.
    """
    from snn_ostl.errors import UnsupportedModuleError

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        problems = entry.adapter.problems(factory(), variant)
        if problems:
            return "refused: " + " ".join(why for why, _ in problems)
        try:
            pairs = _forms_by_running(entry, factory, variant)
        except UnsupportedModuleError as exc:
            return "refused: " + " ".join(p.why for p in exc.problems)
        except Exception as run_error:  # the probe's guess of the input shape may not fit
            try:
                pairs = _forms_by_binding(entry, factory, variant)
            except Exception as bind_error:
                raise RuntimeError(
                    f"{public_name(entry.module_type)}: the trace forms of an example could not "
                    f"be found (running it: {run_error!r}; binding it: {bind_error!r})"
                ) from bind_error
    grouped: dict[str, list[str]] = {}
    for label, form in pairs:
        grouped.setdefault(form, []).append(label)
    return grouped


def supported_rows(entries: Iterable[Any] | None = None) -> list[dict[str, Any]]:
    """One row per (registered module type, example configuration).

    Args:
        entries: Registry entries; by default :func:`load_registry`.

    Returns:
        Dicts with the keys of :data:`SUPPORTED_COLUMNS` plus ``entry`` (the registry entry)
        and ``spike_states``. ``states``, ``spike_states`` and ``variants`` are lists of names;
        ``forms`` is a list of ``(variant, trace_forms(...))`` pairs. A module registered
        without examples gets one row whose example is ``"-"`` and whose ``forms`` is empty.
    """
    entries = load_registry() if entries is None else list(entries)
    rows = []
    for entry in entries:
        adapter = entry.adapter
        names = list(adapter.state_names)
        base = {
            "entry": entry,
            "module": public_name(entry.module_type),
            "framework": getattr(adapter, "framework", "?"),
            "states": names,
            "spike_states": [names[k] for k in getattr(adapter, "spike_states", ())],
            "variants": list(adapter.variants),
        }
        if entry.subclasses:
            base["module"] += " (and subclasses)"
        if not entry.examples:
            rows.append({**base, "example": "-", "forms": []})
            continue
        for name, factory in entry.examples:
            forms = [(v, trace_forms(entry, factory, v)) for v in adapter.variants]
            rows.append({**base, "example": name, "forms": forms})
    return rows


def refusal_rows() -> list[dict[str, str]]:
    """Module types refused on purpose: registered refusals and whole-sequence torch modules."""
    from snn_ostl import registry

    validate = importlib.import_module("snn_ostl.validate")  # the package re-exports a function
    load_registry()
    rows = [
        {"module": public_name(cls), "why": why, "fix": fix}
        for cls, (why, fix) in registry.refusals().items()
    ]
    for cls, cell in validate.WHOLE_SEQUENCE.items():
        rows.append(
            {
                "module": public_name(cls),
                "why": "it runs the whole sequence in one call, so there is no step at which to "
                "carry eligibility traces forward.",
                "fix": f"use {cell} and call it once per time step.",
            }
        )
    return rows


def known_rows() -> list[dict[str, str]]:
    """The module types the learner knows besides the registered stateful ones."""
    from snn_ostl.validate import CHAIN_MODULES, STATELESS, SYNAPSES

    return [
        {
            "role": "synapses (feed a stateful layer's current, directly or through a chain)",
            "modules": ", ".join(public_name(c) for c in SYNAPSES),
        },
        {
            "role": "normalisations (their parameters belong to the layer whose chain they sit in)",
            "modules": ", ".join(public_name(c) for c in CHAIN_MODULES),
        },
        {
            "role": "stateless (no state of their own; the learner lets them through)",
            "modules": ", ".join(public_name(c) for c in STATELESS),
        },
    ]


# ----------------------------------------------------------------------------- rendering
def _text(value: str) -> str:
    """Escape free text for reStructuredText."""
    out = value.replace("\\", "\\\\")
    for char in "*`_|[]":
        out = out.replace(char, "\\" + char)
    return " ".join(out.split())


def _literal_list(text: str) -> str:
    return ", ".join(f"``{part.strip()}``" for part in text.split(",") if part.strip())


def _list_table(
    headers: list[str],
    rows: list[list[list[str]]],
    widths: str = "auto",
    classes: str = _TABLE_CLASS,
) -> list[str]:
    """A list-table; each cell is a list of lines (already valid RST), ``[]`` for an empty one."""
    lines = [".. list-table::", "   :header-rows: 1", f"   :widths: {widths}"]
    if classes:
        lines.append(f"   :class: {classes}")
    lines.append("")
    for row in [[[h] for h in headers], *rows]:
        for k, cell in enumerate(row):
            lead = "   * - " if k == 0 else "     - "
            lines.append(lead + (cell[0] if cell else ""))
            lines.extend(("       " + line) if line else "" for line in cell[1:])
    lines.append("")
    return lines


def _forms_text(forms: dict[str, list[str]] | str) -> str:
    if isinstance(forms, str):
        return _text(forms)
    if not forms:
        return "no trained parameters"
    return "; ".join(
        f"*{form}*: {', '.join(f'``{label}``' for label in labels)}"
        for form, labels in forms.items()
    )


def _forms_cell(forms: list[tuple[str, Any]]) -> list[str]:
    """The forms of one example: once when every variant agrees, else per group of variants."""
    if not forms:
        return ["(no example registered)"]
    groups: dict[str, tuple[list[str], Any]] = {}
    for variant, f in forms:
        groups.setdefault(repr(f), ([], f))[0].append(variant)
    if len(groups) == 1:
        return [_forms_text(forms[0][1])]
    return [
        "- " + ", ".join(f"**{v}**" for v in variants) + ": " + _forms_text(f)
        for variants, f in groups.values()
    ]


def _states_cell(row: dict[str, Any]) -> str:
    text = ", ".join(f"``{name}``" for name in row["states"])
    if row["spike_states"]:
        text += " (spikes: " + ", ".join(f"``{n}``" for n in row["spike_states"]) + ")"
    return text


def _module_cell(row: dict[str, Any]) -> list[str]:
    """Name, state tensors and variants of a module, one paragraph each."""
    state = "state" if len(row["states"]) == 1 else "states"
    return [
        f"``{row['module']}``",
        "",
        f"{state}: {_states_cell(row)}",
        "",
        "variants: " + _text(", ".join(row["variants"])),
    ]


def render_supported(rows: list[dict[str, Any]]) -> list[str]:
    """The supported-modules table as RST lines: one row per example, grouped by module.

    The module cell is filled in the first row of each module's group and left empty in the
    rows that follow, so the name of a module with twelve examples is read once.
    """
    if not rows:
        return ["No adapter is registered."]
    body = []
    previous = None
    for row in rows:
        first = row["entry"] is not previous
        previous = row["entry"]
        body.append(
            [
                _module_cell(row) if first else [],
                [_text(row["example"])],
                _forms_cell(row["forms"]),
            ]
        )
    return _list_table(list(_SUPPORTED_HEADERS), body, "auto", f"{_TABLE_CLASS} ostl-supported")


def render_refusals(rows: list[dict[str, str]]) -> list[str]:
    """The refusals table as RST lines."""
    if not rows:
        return ["No module type is refused by name."]
    body = [[[f"``{r['module']}``"], [_text(r["why"])], [_text(r["fix"])]] for r in rows]
    return _list_table(["Module", "Why it is refused", "What to do"], body)


def render_known(rows: list[dict[str, str]]) -> list[str]:
    """The known synapse and stateless module types as RST lines."""
    body = [[[_text(r["role"])], [_literal_list(r["modules"])]] for r in rows]
    return _list_table(["Role", "Module types"], body)


# ----------------------------------------------------------------------------- Sphinx glue
_SNAPSHOT: dict[str, Any] = {}


def _take_snapshot(app: Any, config: Any) -> None:
    """Read the registry before sphinx-gallery runs tutorials that register their own modules."""
    _SNAPSHOT["supported"] = supported_rows()
    _SNAPSHOT["refusals"] = refusal_rows()
    _SNAPSHOT["known"] = known_rows()


def _directive(key: str, render: Callable[[Any], list[str]]) -> type:
    from sphinx.util.docutils import SphinxDirective

    class _TableDirective(SphinxDirective):
        has_content = False

        def run(self) -> list[nodes.Node]:
            lines = render(_SNAPSHOT[key])
            container = nodes.container()
            source = f"<generated {key} table>"
            self.state.nested_parse(StringList(lines, source=source), 0, container)
            return container.children

    _TableDirective.__name__ = f"{key.title()}Table"
    return _TableDirective


def setup(app: Any) -> dict[str, Any]:
    app.connect("config-inited", _take_snapshot)
    app.add_directive("supported-modules", _directive("supported", render_supported))
    app.add_directive("refused-modules", _directive("refusals", render_refusals))
    app.add_directive("known-modules", _directive("known", render_known))
    return {"version": "0.1", "parallel_read_safe": True, "parallel_write_safe": True}
