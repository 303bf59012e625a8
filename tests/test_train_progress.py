"""Training progress when stdout is a pipe: plain periodic lines, not a redrawn rich bar."""

from __future__ import annotations

from clinalign.train.loop import _LineProgress, _progress


def test_piped_progress_prints_plain_throttled_lines(capsys):
    with _progress(True) as bar:  # pytest captures stdout: not a TTY
        assert isinstance(bar, _LineProgress)
        bar.every_s = 3600.0
        task = bar.add_task("SFT", total=3, completed=0, stats="")
        for step in (1, 2, 3):
            bar.update(task, completed=step, stats=f"loss {1 / step:.4f}  9 tok/s")
        bar.update(task, total=3)  # a total change alone prints nothing
    out = capsys.readouterr().out
    assert out == "SFT step 1/3  loss 1.0000  9 tok/s\nSFT step 3/3  loss 0.3333  9 tok/s\n"  # first and last
    assert "\r" not in out and "\x1b" not in out


def test_disabled_progress_prints_nothing(capsys):
    with _progress(False) as bar:
        bar.update(bar.add_task("DPO", total=2, completed=0, stats=""), completed=2, stats="x")
    assert capsys.readouterr().out == ""
