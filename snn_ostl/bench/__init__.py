"""The speed and memory benchmark: networks (:mod:`~snn_ostl.bench.nets`), measurement in child
processes (:mod:`~snn_ostl.bench.run`) and the table with its targets
(:mod:`~snn_ostl.bench.table`). ``snn-ostl bench`` and ``python -m snn_ostl.bench`` run it."""

from snn_ostl.bench.run import main

__all__ = ["main"]
