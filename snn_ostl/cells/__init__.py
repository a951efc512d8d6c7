"""Native cells: the paper's Spiking Neural Unit (SNU), its soft variant, their surrogate."""

from snn_ostl.cells.snu import SNU, SNUState, SoftSNU, snu_step

__all__ = ["SNU", "SNUState", "SoftSNU", "snu_step"]
