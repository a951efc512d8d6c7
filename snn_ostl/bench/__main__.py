"""``python -m snn_ostl.bench``: the benchmark (the child processes run this way too)."""

from snn_ostl.bench.run import main

raise SystemExit(main())
