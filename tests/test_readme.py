"""The README's quickstart runs exactly as written."""

from __future__ import annotations

import re
from pathlib import Path

README = Path(__file__).resolve().parents[1] / "README.md"


def test_readme_quickstart_runs(capsys):
    text = README.read_text()
    block = re.search(r"<!-- quickstart.*?-->\s*```python\n(.*?)```", text, re.S)
    assert block, "README lost its quickstart block"
    code = block.group(1)
    assert len(code.strip().splitlines()) <= 13
    exec(compile(code, str(README), "exec"), {})
    out = capsys.readouterr().out
    assert "presynaptic" in out  # snnTorch Leaky with defaults gets presynaptic traces
