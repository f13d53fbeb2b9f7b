"""The one number formatter per unit that the terminal tables, the HTML report and the plots share."""

from __future__ import annotations

import math

import pytest

from classbench.formatting import count, duration, fmt, md, percent, rate


@pytest.mark.parametrize(("seconds", "text"), [(0.354, "0.35 s"), (4.24, "4.2 s"), (42.4, "42 s"), (450, "7.5 min"), (9000, "2.5 h"),
                                               (None, "n/a"), (math.inf, "n/a")])
def test_duration(seconds: float | None, text: str) -> None:
    assert duration(seconds) == text


@pytest.mark.parametrize(("value", "text"), [(850, "850"), (4321, "4.3k"), (12345, "12k"), (25_557_032, "25.6M")])
def test_count(value: float, text: str) -> None:
    assert count(value) == text


@pytest.mark.parametrize(("value", "text"), [(42.46, "42.5"), (99.94, "99.9"), (1234.4, "1,234"), (100.0, "100")])
def test_rate(value: float, text: str) -> None:
    assert rate(value) == text


@pytest.mark.parametrize(("value", "text"), [(1.0, "100%"), (0.9996, "99.9%"), (0.996, "99.6%"), (0.8, "80%"),
                                             (14 / 15, "93.3%"), (0.0, "0%")])
def test_percent_never_rounds_up_to_a_perfect_score(value: float, text: str) -> None:
    assert percent(value) == text


def test_every_display_path_uses_these_formatters() -> None:
    """The bench table, the report's columns and the export lines give the same text for the same number."""
    from classbench.benchmark.render import _num
    from classbench.exporting.render import percent as export_percent

    assert _num(1234.4) == fmt(1234.4, "rate") == rate(1234.4) and _num(None) == "-"
    assert export_percent(0.9996) == fmt(0.9996, "pct") == "99.9%" and export_percent(None) == "-"
    assert fmt(9000, "sec") == duration(9000) and fmt(25_557_032, "params") == count(25_557_032)


def test_one_safe_name_for_folders_and_files() -> None:
    """compare's model sub-folders, evaluate's file tags and explain's image names share one rule."""
    from classbench.explain import _out_names
    from classbench.runs import safe_name

    assert safe_name("hf-hub:org/vit tiny") == "hf-hub_org_vit_tiny" and safe_name("resnet50.a1_in1k") == "resnet50.a1_in1k"
    assert safe_name("bateau à quai") == "bateau_à_quai"  # letters of any script stay
    assert _out_names(["a/x y.jpg", "b/x y.png"], "gradcam++") == ["x_y.gradcampp.png", "x_y-2.gradcampp.png"]


def test_markdown_cells_keep_user_text_literal_in_the_model_card_and_leaderboard(tmp_path) -> None:
    """Class and model names are folder names: a pipe must not split a table cell, a newline must not end the row,
    HTML must not render and Markdown emphasis must not apply; None is an empty cell."""
    assert md("a|b\nc") == "a\\|b c" and md("<b>x</b> & *y*") == "&lt;b&gt;x&lt;/b&gt; &amp; \\*y\\*"
    assert md(None) == "" and md(0.512) == "0.512"
    from classbench.comparison.leaderboard import MARKDOWN_COLUMNS, write_leaderboard

    row = {c: None for c in MARKDOWN_COLUMNS} | {"model": "evil|<i>net</i>", "status": "best", "heldout_macro_f1": 0.5}
    write_leaderboard(tmp_path, [row], "evil|<i>net</i> is the only model")
    lines = (tmp_path / "leaderboard.md").read_text().splitlines()
    assert lines[0] == "**Verdict:** evil\\|&lt;i&gt;net&lt;/i&gt; is the only model"
    assert lines[-1].count(" | ") == len(MARKDOWN_COLUMNS) - 1 and "<i>" not in lines[-1]


def test_one_reader_of_proc_kb_fields(tmp_path) -> None:
    """``N kB`` lines of /proc files in bytes (the cache's memory limit, bench's peak memory); None for a field
    or a file that is not there, or a value that is not a number."""
    from classbench.runs import proc_kib_field

    status = tmp_path / "status"
    status.write_text("Name:\tpython\nVmHWM:\t  204800 kB\nVmRSS:\t   1024 kB\nBad:\tlots kB\n")
    assert proc_kib_field(str(status), "VmHWM") == 204800 * 1024 and proc_kib_field(str(status), "VmRSS") == 1 << 20
    assert proc_kib_field(str(status), "VmSwap") is None and proc_kib_field(str(status), "Bad") is None
    assert proc_kib_field(str(tmp_path / "missing"), "VmHWM") is None


def test_every_timestamp_is_iso_8601_with_its_utc_offset() -> None:
    """compare.json's and export.json's "created" and the report's "generated" time share one format."""
    from datetime import datetime

    from classbench.runs import timestamp

    stamp = datetime.fromisoformat(timestamp())
    assert stamp.utcoffset() is not None and stamp.microsecond == 0
