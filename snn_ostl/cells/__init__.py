"""Native cells: the paper's Spiking Neural Unit (SNU), its soft variant, their surrogate, and
the leaky rate RNN of RFLO (Murray 2019)."""

from snn_ostl.cells.leaky_rnn import LeakyRNNCell, leaky_rnn_step
from snn_ostl.cells.snu import SNU, SNUState, SoftSNU, snu_step

__all__ = ["SNU", "LeakyRNNCell", "SNUState", "SoftSNU", "leaky_rnn_step", "snu_step"]
