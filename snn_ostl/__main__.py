"""``python -m snn_ostl``: the same as the ``snn-ostl`` command."""

from __future__ import annotations

import sys

from snn_ostl.cli import main

if __name__ == "__main__":
    sys.exit(main())
