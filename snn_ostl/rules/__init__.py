"""The online-learning family on one learner: OSTL, e-prop, RFLO, SnAp-n, DECOLLE, SuperSpike.

>>> learner = snn_ostl.OSTL(model, rule="eprop-random")
>>> learner = snn_ostl.OSTL(model, rule=snn_ostl.rules.SnAp(n=2))

Every rule writes ``.grad`` for the user's own optimizer and shows in
:meth:`snn_ostl.OSTL.summary`. The theory page of the documentation says what each keeps of
the exact gradient and what it costs.
"""

from snn_ostl.rules.base import Rule, make_rule, register_rule, rule_names

from snn_ostl.rules.presets import RFLO, EProp, OSTLRule, SnAp  # isort: skip (registry order)
from snn_ostl.rules.decolle import DECOLLE  # isort: skip
from snn_ostl.rules.superspike import SuperSpike  # isort: skip

__all__ = [
    "DECOLLE",
    "RFLO",
    "EProp",
    "OSTLRule",
    "Rule",
    "SnAp",
    "SuperSpike",
    "make_rule",
    "register_rule",
    "rule_names",
]
