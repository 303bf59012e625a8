"""Progress of long steps (clinalign/progress.py), one way everywhere: in a pipe, plain throttled lines
with done/total, elapsed time and ETA, not a redrawn rich bar; on a terminal, one rich display."""

from __future__ import annotations

import re

import pytest

from clinalign import progress as prog
from clinalign.progress import clock, progress


@pytest.fixture
def fake_clock(monkeypatch):
    now = [1000.0]
    monkeypatch.setattr(prog.time, "monotonic", lambda: now[0])
    return now


def test_piped_progress_prints_plain_throttled_lines(capsys, fake_clock):
    with progress("SFT step", 3, every_s=3600.0) as bar:  # pytest captures stderr: not a TTY
        for step in (1, 2, 3):
            fake_clock[0] += 20.0  # 20 s a step
            bar.update(step, stats=f"loss {1 / step:.4f}  9 tok/s")
        bar.update(total=3)  # a total change alone prints nothing
    captured = capsys.readouterr()
    assert captured.out == ""  # stdout is for results
    assert captured.err == ("SFT step 1/3  elapsed 0:00:20  ETA 0:00:40  loss 1.0000  9 tok/s\n"
                            "SFT step 3/3  elapsed 0:01:00  ETA 0:00:00  loss 0.3333  9 tok/s\n")  # first and last
    assert "\r" not in captured.err and "\x1b" not in captured.err


def test_lines_come_every_every_s_and_the_eta_counts_from_where_it_started(capsys, fake_clock):
    """A resumed run (completed=10) estimates from its own pace, not from step 0."""
    with progress("DPO step", 40, completed=10, every_s=10.0) as bar:
        for step in range(11, 41):
            fake_clock[0] += 4.0
            bar.update(step)
    lines = capsys.readouterr().err.splitlines()
    # the first update, then one at least 10 s after the last printed (every third 4 s step), and the end
    assert [int(x.split()[2].split("/")[0]) for x in lines] == [11, 14, 17, 20, 23, 26, 29, 32, 35, 38, 40]
    assert lines[0] == "DPO step 11/40  elapsed 0:00:04  ETA 0:01:56"  # 29 steps left at 4 s each
    assert lines[-1] == "DPO step 40/40  elapsed 0:02:00  ETA 0:00:00"


def test_advance_counts_units_and_unknown_eta_is_dashes(capsys, fake_clock):
    with progress("generation: prompts", 20) as bar:
        assert bar.line(fake_clock[0]) == "generation: prompts 0/20  elapsed 0:00:00  ETA -:--:--"
        fake_clock[0] += 3.0
        bar.update(advance=8)
        fake_clock[0] += 3.0
        bar.update(advance=12)
    assert capsys.readouterr().err.splitlines() == ["generation: prompts 8/20  elapsed 0:00:03  ETA 0:00:04",
                                                    "generation: prompts 20/20  elapsed 0:00:06  ETA 0:00:00"]
    assert clock(3725) == "1:02:05" and clock(float("inf")) == "-:--:--"


def test_disabled_or_another_process_prints_nothing(capsys, monkeypatch):
    with progress("DPO step", 2, enabled=False) as bar:
        bar.update(2, stats="x")
    monkeypatch.setenv("RANK", "1")  # a torchrun worker other than the first
    with progress("DPO step", 2) as bar:
        bar.update(2)
    assert capsys.readouterr() == ("", "")


def test_a_terminal_gets_one_rich_display_that_nested_progress_joins(monkeypatch):
    """rich allows one live display at a time: generation inside a training step's validation must
    add its bar to the one on screen (a second display would raise)."""
    import io

    from rich.console import Console

    shown = io.StringIO()
    monkeypatch.setattr(prog.sys.stderr, "isatty", lambda: True, raising=False)
    real = prog._rich

    def rich_into_buffer():
        p = real()
        p.live.console = Console(file=shown, force_terminal=True, width=160)
        return p

    monkeypatch.setattr(prog, "_rich", rich_into_buffer)
    with progress("SFT step", 4) as outer:
        outer.update(1, stats="loss 2.0000")
        with progress("generation: prompts", 3) as inner:
            assert inner.bar is outer.bar and len(outer.bar.tasks) == 2
            inner.update(advance=3)
        assert len(outer.bar.tasks) == 1  # the nested bar is gone once done
        outer.update(4)
    assert prog._live == []  # the display was stopped with the outer block
    text = shown.getvalue()
    assert "SFT step" in text and "4/4" in text and "ETA" in text
    assert len(re.findall(r"\d:\d\d:\d\d", text)) >= 2  # elapsed, and the time left
