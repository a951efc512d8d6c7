"""The benchmark's table, target lines and regression check on made-up cells (no timing)."""

from __future__ import annotations

from snn_ostl.bench.table import Cell, check, render, targets


def _cells(ostl_ms, bptt_ms, mib=(100.0, 101.0), network="norse-lif", steps=(20, 2000)):
    out = []
    for t, o, b, m in zip(steps, ostl_ms, bptt_ms, mib):
        out += [Cell(network, "bptt", t, b, 500.0), Cell(network, "ostl", t, o, m)]
    return out


def test_table_has_ratios_and_memory_growth():
    text = render(_cells((6.0, 9.0), (2.0, 6.0), mib=(100.0, 105.0)))
    rows = [line.split() for line in text.splitlines()[2:]]
    assert rows[0][:8] == ["norse-lif", "20", "OSTL", "every", "step", "2.00", "6.00", "3.00"]
    assert rows[1][7] == "1.50" and rows[1][10] == "1.050"


def test_flush_rows_have_their_own_ratios_and_target_lines():
    cells = _cells((7.0, 9.0), (2.0, 6.0))
    cells += [
        Cell("norse-lif", "ostl/32", 20, 4.0, 120.0),
        Cell("norse-lif", "ostl/32", 2000, 5.0, 150.0),
    ]
    rows = [line.split() for line in render(cells).splitlines()[2:]]
    assert [r[3] for r in rows] == ["every", "every", "flush_every=32", "flush_every=32"]
    assert rows[2][4:7] == ["2.00", "4.00", "2.00"] and rows[3][9] == "1.250"
    text = targets(cells)
    assert ("norse-lif (every step): time <= 3.0x BPTT met at T=2000, not at T=20 (3.50x, "
            "1.17 times the limit); memory") in text  # fmt: skip
    assert "norse-lif (flush_every=32): time <= 3.0x BPTT met at T=20, T=2000;" in text
    assert "memory at T=2000 <= 1.1x T=20 not met (1.250, 1.14 times the limit)" in text
    assert check([*_cells((3.0, 3.0), (1.0, 1.0), steps=(10, 100)),
                   Cell("norse-lif", "ostl/32", 10, 3.0, 100.0),
                   Cell("norse-lif", "ostl/32", 100, 30.0, 100.0)]) == 1  # fmt: skip


def test_floor_rows_are_shown_but_not_judged():
    cells = _cells((7.0, 9.0), (2.0, 6.0))
    cells += [
        Cell("norse-lif", "detached", 20, 2.5, 100.0),
        Cell("norse-lif", "detached", 2000, 50.0, 100.0),
    ]
    text = render(cells)
    rows = [line.split() for line in text.splitlines()[2 : 4 + 2]]
    assert rows[2][2:5] == ["no", "learner", "(floor)"] and rows[2][7] == "1.25"
    assert "no learner (floor): the same loop" in text
    lines = targets(cells).splitlines()
    assert lines == ["norse-lif: time <= 3.0x BPTT met at T=2000, not at T=20 (3.50x, 1.17 "
                     "times the limit); memory at T=2000 <= 1.1x T=20 met (1.010)"]  # fmt: skip
    floor_slow = [Cell(c.network, c.method, {20: 10, 2000: 100}[c.steps], c.ms_per_step,
                       c.peak_mib) for c in cells]  # fmt: skip
    floor_slow = [c for c in floor_slow if c.method != "ostl"]
    floor_slow += _cells((3.0, 3.0), (1.0, 1.0), steps=(10, 100))[1::2]
    assert check(floor_slow) == 0  # the floor row's 25x is no regression of OSTL


def test_targets_say_where_they_are_met():
    text = targets(_cells((7.0, 9.0), (2.0, 6.0)))
    assert "time <= 3.0x BPTT met at T=2000, not at T=20 (3.50x, 1.17 times the limit)" in text
    assert "memory at T=2000 <= 1.1x T=20 met (1.010)" in text
    # a missed target says by how much: the ratio, and the ratio over the limit
    assert ("time <= 3.0x BPTT not met at T=20 (4.50x, 1.50 times the limit), T=2000 (5.00x, "
            "1.67 times the limit)") in targets(_cells((9.0, 30.0), (2.0, 6.0)))  # fmt: skip
    assert "memory at T=2000 <= 1.1x T=20 not met (1.500, 1.36 times the limit)" in targets(
        _cells((1.0, 1.0), (2.0, 2.0), mib=(100.0, 150.0))
    )


def test_check_fails_on_a_ratio_or_memory_regression(capsys):
    ok = _cells((3.0, 3.0), (1.0, 1.0), steps=(10, 100))
    assert check(ok) == 0
    slow = _cells((3.0, 30.0), (1.0, 1.0), steps=(10, 100))
    assert check(slow) == 1
    growing = _cells((3.0, 3.0), (1.0, 1.0), mib=(100.0, 200.0), steps=(10, 100))
    assert check(growing) == 1
    out = capsys.readouterr().out
    assert "time ratio 30.00 > 7.0" in out and "memory grew 2.00x" in out


def _conv_cells() -> list[Cell]:
    """The conv nets at their default T = 25 and 100, Norse's with flush_every=16 and a floor."""
    cells = []
    for t, bptt, csnn, conv, flushed, mib in [(25, 10.0, 25.0, 60.0, 28.0, 800.0),
                                               (100, 12.0, 20.0, 66.0, 30.0, 805.0)]:  # fmt: skip
        cells += [
            Cell("snntorch-csnn", "bptt", t, bptt, 2 * mib * t / 25),
            Cell("snntorch-csnn", "ostl", t, csnn, mib),
            Cell("snntorch-csnn", "detached", t, bptt, 300.0),
            Cell("norse-convnet", "bptt", t, bptt, 2 * mib * t / 25),
            Cell("norse-convnet", "ostl", t, conv, mib),
            Cell("norse-convnet", "ostl/16", t, flushed, mib + 40),
            Cell("norse-convnet", "detached", t, bptt, 300.0),
        ]
    return cells


def test_conv_nets_are_tabled_and_judged_against_their_own_targets():
    rows = [line.split() for line in render(_conv_cells()).splitlines()[2:-1]]
    assert [(r[0], r[1], r[3]) for r in rows] == [
        ("snntorch-csnn", "25", "every"), ("snntorch-csnn", "100", "every"),
        ("snntorch-csnn", "25", "learner"), ("snntorch-csnn", "100", "learner"),
        ("norse-convnet", "25", "every"), ("norse-convnet", "100", "every"),
        ("norse-convnet", "25", "flush_every=16"), ("norse-convnet", "100", "flush_every=16"),
        ("norse-convnet", "25", "learner"), ("norse-convnet", "100", "learner"),
    ]  # fmt: skip
    assert rows[0][5:8] == ["10.00", "25.00", "2.50"] and rows[1][10] == "1.006"
    lines = targets(_conv_cells()).splitlines()
    assert lines == [
        "snntorch-csnn: time <= 2.0x BPTT met at T=100, not at T=25 (2.50x, 1.25 times the "
        "limit); memory at T=100 <= 1.1x T=25 met (1.006)",
        "norse-convnet (every step): time <= 3.0x BPTT not met at T=25 (6.00x, 2.00 times the "
        "limit), T=100 (5.50x, 1.83 times the limit); memory at T=100 <= 1.1x T=25 met (1.006)",
        "norse-convnet (flush_every=16): time <= 3.0x BPTT met at T=25, T=100; memory at T=100 "
        "<= 1.1x T=25 met (1.006)",
    ]


def test_check_fails_when_a_cell_failed(capsys):
    ok = _cells((3.0, 3.0), (1.0, 1.0), steps=(10, 100), network="snntorch-csnn")
    assert check(ok) == 0
    failed = [*ok[:3], Cell("snntorch-csnn", "ostl", 100, None, None, "failed: RuntimeError: x")]
    assert check(failed) == 1
    assert "snntorch-csnn (OSTL every step, T=100): failed: RuntimeError: x" in (
        capsys.readouterr().out
    )
    skipped = [*ok[:3], Cell("snntorch-csnn", "ostl", 100, None, None, "skipped: over 900s")]
    assert check(skipped) == 1
    bptt_skipped = [*ok[1:], Cell("snntorch-csnn", "bptt", 10, None, None, "BPTT skipped (memory)")]
    assert check(bptt_skipped) == 0  # left out on purpose: no failure
