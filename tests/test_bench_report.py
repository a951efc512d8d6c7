"""The benchmark's table, target lines and regression check on made-up cells (no timing)."""

from __future__ import annotations

from snn_ostl.bench_table import Cell, check, render, targets


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
    assert "norse-lif (every step): time <= 3.0x BPTT met at T=2000, not at T=20" in text
    assert "norse-lif (flush_every=32): time <= 3.0x BPTT met at T=20, T=2000" in text
    assert "memory at T=2000 <= 1.1x T=20 not met (1.250)" in text
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
    assert lines == ["norse-lif: time <= 3.0x BPTT met at T=2000, not at T=20; "
                     "memory at T=2000 <= 1.1x T=20 met (1.010)"]  # fmt: skip
    floor_slow = [Cell(c.network, c.method, {20: 10, 2000: 100}[c.steps], c.ms_per_step,
                       c.peak_mib) for c in cells]  # fmt: skip
    floor_slow = [c for c in floor_slow if c.method != "ostl"]
    floor_slow += _cells((3.0, 3.0), (1.0, 1.0), steps=(10, 100))[1::2]
    assert check(floor_slow) == 0  # the floor row's 25x is no regression of OSTL


def test_targets_say_where_they_are_met():
    text = targets(_cells((7.0, 9.0), (2.0, 6.0)))
    assert "time <= 3.0x BPTT met at T=2000, not at T=20" in text
    assert "memory at T=2000 <= 1.1x T=20 met (1.010)" in text
    assert "not met (T=20, T=2000)" in targets(_cells((9.0, 30.0), (2.0, 6.0)))
    assert "memory at T=2000 <= 1.1x T=20 not met (1.500)" in targets(
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
