"""`prunekit lottery` ends with a summary table and writes report.json, report.md and report.html
with the accuracy-against-sparsity plot; progress reaches its totals."""

from __future__ import annotations

import contextlib
import io
import json
import re

import pytest

from prunekit.cli import main


@pytest.fixture(scope="module")
def lottery(tmp_path_factory):
    """One tiny run (two levels, a reinit control, rewinding to k=2 of T=6), its stdout and stderr
    captured at a fixed width (they are not terminals: rich reads COLUMNS)."""
    out = tmp_path_factory.mktemp("lottery") / "lt"
    argv = ["lottery", "lenet_300_100", "--data", "mnist_embedded", "--out", str(out), "--levels", "2",
            "--steps", "6", "--eval-every", "6", "--batch-size", "50", "--control", "reinit", "--reset", "rewind",
            "--rewind-step", "2"]
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("COLUMNS", "200")
        stdout, stderr = io.StringIO(), io.StringIO()
        with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
            assert main(argv) == 0
    return {"out": out, "argv": argv, "stdout": stdout.getvalue(), "stderr": stderr.getvalue(),
            "report": json.loads((out / "report.json").read_text())}


def test_lottery_report_json_holds_every_level_and_control(lottery):
    out, report = lottery["out"], lottery["report"]
    assert report["kind"] == "lottery" and report["controls"] == ["reinit"]
    assert report["config"]["reset"] == "rewind" and report["config"]["rewind_step"] == 2
    assert [lv["level"] for lv in report["levels"]] == [0, 1, 2]
    sparsities = [lv["sparsity"] for lv in report["levels"]]
    assert sparsities[0] == 0 and 0.15 < sparsities[1] < 0.25 and 0.3 < sparsities[2] < 0.4
    for lv in report["levels"]:
        metrics = json.loads((out / f"level_{lv['level']:03d}" / "metrics.json").read_text())
        assert lv["accuracy"] == metrics["accuracy"] and lv["sparsity"] == 1 - metrics["remaining"]
        control = json.loads((out / f"level_{lv['level']:03d}" / "reinit" / "metrics.json").read_text()) \
            if lv["level"] else None
        assert lv["controls"] == ({} if control is None else {"reinit": {
            k: control[k] for k in ("accuracy", "early_stop_accuracy", "remaining", "seconds")}})


def test_lottery_markdown_and_html_show_the_levels_and_the_plot(lottery):
    out, report = lottery["out"], lottery["report"]
    plot = report["plots"]["accuracy_vs_sparsity"]
    assert (out / plot).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    markdown = (out / "report.md").read_text()
    page = (out / "report.html").read_text()
    assert f"]({plot})" in markdown and f'src="{plot}"' in page
    for level in report["levels"]:  # each level's sparsity and accuracy, as the tables show them
        for text in (f"{100 * level['sparsity']:.2f}%", f"{100 * level['accuracy']:.2f}%"):
            assert f"| {text} |" in markdown and f'<td class="num">{text}</td>' in page
        if level["level"]:
            reinit = f"{100 * level['controls']['reinit']['accuracy']:.2f}%"
            assert f"| {reinit} |" in markdown and f'<td class="num">{reinit}</td>' in page
    assert "reinit accuracy" in markdown and "reinit accuracy" in page
    assert "rewound to the weights θ\\_k" in markdown and "k = 2" in page
    assert not list(out.glob("*.tmp*")) and not list(out.glob("plots/*.tmp*"))


def test_lottery_prints_a_summary_table_of_the_levels(lottery):
    text, report = lottery["stdout"], lottery["report"]
    rows = [line.split() for line in text.splitlines() if re.match(r"\s*\d+\s+\d+\.\d\d%", line)]
    assert [r[0] for r in rows] == ["0", "1", "2"]
    for row, level in zip(rows, report["levels"]):
        assert row[2] == f"{100 * level['sparsity']:.2f}%" and row[3] == f"{100 * level['accuracy']:.2f}%"
        assert row[6] == (f"{100 * level['controls']['reinit']['accuracy']:.2f}%" if level["level"] else "-")
    assert "(reset rewind k=2)" in text and "reinit" in text
    assert f"wrote html: {lottery['out'] / 'report.html'}" in " ".join(text.split())


def test_lottery_progress_reaches_its_totals(lottery):
    err = lottery["stderr"]
    # written to a file, the bars appear once, in their final state: three levels of three, and the
    # last training (level 2's reinit control) at its 4 steps (from k=2 to T=6)
    assert re.search(r"lottery: done .* 3/3 .*accuracy \d+\.\d\d%", err)
    assert re.search(r"\n  training: level 2 reinit .* 4/4 .*loss \d", err)
    assert "level   2 reinit" in err  # a line per finished training, above the bars


def test_a_resumed_lottery_run_reports_every_level_again(lottery, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    assert main(lottery["argv"]) == 0
    assert "(0 trained, 5 reused)" in capsys.readouterr().out
    again = json.loads((lottery["out"] / "report.json").read_text())
    assert again["levels"] == lottery["report"]["levels"]


def test_lottery_instability_is_measured_reported_and_reused(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")
    out = tmp_path / "lt"
    argv = ["lottery", "lenet_300_100", "--data", "mnist_embedded", "--out", str(out), "--levels", "1",
            "--steps", "4", "--eval-every", "4", "--batch-size", "50", "--reset", "rewind", "--rewind-step", "1",
            "--instability"]
    assert main(argv) == 0
    captured = capsys.readouterr()
    report = json.loads((out / "report.json").read_text())
    stored = json.loads((out / "instability" / "instability_001_0_1.json").read_text())
    [row] = report["instability"]
    assert row["level"] == 1 and row["instability"] == stored["instability"] and row["start_iteration"] == 1
    assert row["sparsity"] == report["levels"][1]["sparsity"]
    assert (out / report["plots"]["instability"]).is_file()
    points = f"{100 * stored['instability']:.2f}"
    assert f"| {points} |" in (out / "report.md").read_text()  # in the levels table and the instability table
    assert re.search(r"\n\s*1\s.*\s" + re.escape(points) + r"\s", captured.out)  # the summary table's column
    assert re.search(r"instability: level 1 .* 1/1", captured.err)
    written = (out / "instability" / "instability_001_0_1.json").stat().st_mtime_ns
    assert main(argv) == 0  # resumed: the stored result is reused, not measured again
    assert (out / "instability" / "instability_001_0_1.json").stat().st_mtime_ns == written
    assert "(0 trained, 2 reused)" in capsys.readouterr().out
