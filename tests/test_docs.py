"""The documentation's generated parts: the registry tables and the README quickstart.

The supported-modules and refusals tables of the docs are produced by ``docs/_ext/ostl_registry.py``
from the adapter registry at build time; these tests run the same generator without Sphinx.

The README quickstart is the fenced ``python`` block marked as such, either by an HTML comment
on the line before the fence or by the fence's info string::

    <!-- quickstart -->
    ```python
    ...
    ```

    ```python quickstart
    ...
    ```
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

import docutils.core
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "docs" / "_ext"))

import ostl_registry  # noqa: E402

README = ROOT / "README.md"
_FENCE = re.compile(r"^```python(?P<info>[^\n]*)\n(?P<code>.*?)^```\s*$", re.S | re.M)
_MARKER = re.compile(r"<!--\s*quickstart\s*-->\s*$")


def _assert_valid_rst(lines: list[str]) -> None:
    """Parse with plain docutils; any warning or error raises."""
    docutils.core.publish_doctree(
        "\n".join(lines),
        settings_overrides={"halt_level": 2, "report_level": 2, "warning_stream": False},
    )


@pytest.fixture(scope="module")
def registry_rows():
    entries = ostl_registry.load_registry()
    return entries, ostl_registry.supported_rows(entries)


def test_supported_table_has_a_row_for_every_registered_adapter(registry_rows):
    entries, rows = registry_rows
    assert entries, "the registry is empty: not even the native adapters registered"
    for entry in entries:
        mine = [row for row in rows if row["entry"] is entry]
        assert len(mine) == max(len(entry.examples), 1), entry.module_type
        assert [row["example"] for row in mine] == ([name for name, _ in entry.examples] or ["-"])
        for row in mine:
            if entry.examples:
                # one probe per variant the adapter offers
                assert [v for v, _ in row["forms"]] == list(entry.adapter.variants)
    lines = ostl_registry.render_supported(rows)
    body_rows = [line for line in lines if line.startswith("   * - ")]
    assert len(body_rows) == len(rows) + 1  # plus the header row
    _assert_valid_rst(lines)


def test_native_examples_report_their_trace_forms(registry_rows):
    from snn_ostl import SNU

    _, rows = registry_rows
    snu_rows = [row for row in rows if row["entry"].module_type is SNU]
    assert snu_rows
    for row in snu_rows:
        for variant, forms in row["forms"]:
            assert isinstance(forms, dict), (row["example"], variant, forms)
            labels = [label for group in forms.values() for label in group]
            assert "weight" in labels
            assert set(forms) <= {"presynaptic", "per-synapse", "elementwise", "full-jacobian"}


def test_refusal_and_known_module_tables_render():
    refusals = ostl_registry.refusal_rows()
    assert any(row["module"] == "torch.nn.LSTM" for row in refusals)
    assert all(row["why"] and row["fix"] for row in refusals)
    _assert_valid_rst(ostl_registry.render_refusals(refusals))
    known = ostl_registry.known_rows()
    assert "torch.nn.Linear" in known[0]["modules"]
    _assert_valid_rst(ostl_registry.render_known(known))
