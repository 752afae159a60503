"""prunekit.measure.report and prunekit.measure.plots: JSON, Markdown, HTML and PNG output."""

from __future__ import annotations

import copy
import json
import stat
import threading

import pytest

from prunekit import InvalidParameterError
from prunekit.measure import (
    plot_layer_sparsity,
    plot_metric_vs_sparsity,
    plot_ratio_bars,
    plot_relative_measures,
    plot_sensitivity_curves,
    render_html,
    render_markdown,
    validate_report,
    write_report,
)

PNG = b"\x89PNG\r\n\x1a\n"


def measures(nonzero: int, metric: float | None, latency: float | None = 2.0, **extra) -> dict:
    out = {
        "params": 10_000,
        "nonzero": nonzero,
        "macs": 200_000,
        "effective_macs": 20 * nonzero,
        "bytes_dense": 40_000,
        "bytes_compressed": 4 * nonzero + 1_250,
        "latency_ms": latency,
        "latency_batch": 8 if latency is not None else None,
        "metric": metric,
        "loss": None if metric is None else 1.0 - metric,
    }
    out.update(extra)
    return out


def layers(s1: float, s2: float) -> list[dict]:
    return [
        {"name": "fc1.weight", "shape": [64, 100], "params": 6400, "nonzero": round(6400 * (1 - s1)), "sparsity": s1},
        {"name": "fc2.weight", "shape": [10, 64], "params": 640, "nonzero": round(640 * (1 - s2)), "sparsity": s2},
    ]


def make_report() -> dict:
    method = {"criterion": "magnitude", "structure": "element", "scope": "global", "mode": "reparam"}
    return {
        "title": "Tiny MLP pruning",
        "created": "2024-05-01T12:00:00+00:00",
        "model": {"name": "tiny_mlp", "params": 10_000},
        "metric": {"name": "accuracy", "higher_is_better": True},
        "dense": measures(10_000, 0.975),
        "runs": [
            {"name": "magnitude 50%", "method": method, "sparsity": 0.5, "measures": measures(5_000, 0.97, 2.02),
             "layers": layers(0.52, 0.3), "history": {"epoch_losses": [0.9, 0.5, 0.31]}},
            {"name": "magnitude 90%", "method": method, "sparsity": 0.9, "measures": measures(1_000, 0.91, 1.98),
             "layers": layers(0.92, 0.7)},
            {"name": "channel 50%",
             "method": {**method, "structure": "channel", "scope": "local", "normalize": "l2"},
             "sparsity": 0.5, "measures": measures(5_000, 0.95, 1.0), "layers": layers(0.5, 0.5),
             "history": {"epoch_losses": [], "lr": 0.01}},
        ],
        "sensitivity": {
            "baseline": 0.975,
            "curves": {
                "fc1.weight": [[0.0, 0.975], [0.5, 0.96], [0.9, 0.8]],
                "fc2.weight": [[0.0, 0.975], [0.5, 0.97], [0.9, 0.95]],
            },
        },
        "environment": {"torch": "2.13.0", "threads": 2, "platform": "Linux-x86_64"},
    }


def is_png(path) -> bool:
    data = path.read_bytes()
    return data[:8] == PNG and len(data) > 1000


# -- write_report ---------------------------------------------------------------------------


def test_write_report_writes_all_files(tmp_path):
    report = make_report()
    original = copy.deepcopy(report)
    paths = write_report(report, tmp_path / "out")
    assert report == original  # the input is not modified
    assert set(paths) == {"json", "markdown", "html", "sparsity_per_layer", "metric_vs_sparsity",
                          "relative_to_dense", "sensitivity"}
    out = tmp_path / "out"
    assert paths["json"] == out / "report.json"
    assert paths["markdown"] == out / "report.md" and paths["html"] == out / "report.html"
    for key in ("sparsity_per_layer", "metric_vs_sparsity", "relative_to_dense", "sensitivity"):
        assert paths[key] == out / "plots" / f"{key}.png"
        assert is_png(paths[key]), key
    assert json.loads(paths["json"].read_text(encoding="utf-8")) == original
    assert not [p for p in out.rglob("*.tmp")]
    for path in paths.values():
        assert stat.S_IMODE(path.stat().st_mode) == 0o644


def test_markdown_content(tmp_path):
    paths = write_report(make_report(), tmp_path)
    md = paths["markdown"].read_text(encoding="utf-8")
    assert md.startswith("# Tiny MLP pruning\n")
    assert "| dense | dense | — | 0.00% | 97.50% | — | — |" in md
    assert "| dense | 10,000 | 10,000 (100.0%) |" in md
    quality, row = [line for line in md.splitlines() if line.startswith("| magnitude 90%")]
    assert "| masks |" in quality and "91.00%" in quality and "-6.50 pp (worse)" in quality
    assert "1,000 (10.0%)" in row  # non-zeros
    assert "0.100×" in row  # effective MACs ratio
    assert "0.131×" in row  # 5,250 compressed bytes / 40,000 dense bytes
    assert "1.98" in row and "1.01×" in row  # latency and speedup
    # per-run layer tables and the fine-tuning history
    assert "## Run: magnitude 50%" in md
    assert "| fc1.weight | 64×100 | 6,400 | 3,072 | 52.00% |" in md
    assert "loss 0.9000 → 0.5000 → 0.3100" in md
    assert "normalize=l2" in md and "lr: 0.01" in md
    # plots linked by relative path, sensitivity table
    for name in ("relative_to_dense", "metric_vs_sparsity", "sparsity_per_layer", "sensitivity"):
        assert f"(plots/{name}.png)" in md
    assert "## Sensitivity analysis" in md and "| fc1.weight | 97.50% | 96.00% | 80.00% |" in md
    assert "- torch: 2.13.0" in md


def test_latency_is_stated_honestly(tmp_path):
    md = write_report(make_report(), tmp_path)["markdown"].read_text(encoding="utf-8")
    assert "batch size 8" in md and "2 CPU threads" in md and "Linux-x86\\_64" in md
    note = next(line for line in md.splitlines() if "No speedup" in line)
    assert "magnitude 50%" in note and "magnitude 90%" in note
    assert "channel 50%" not in note  # 2× faster: not listed
    assert "no dense-CPU speedup" in note
    # a masked model measured 2× faster is flagged as noise, not credited to the pruning
    fast = next(line for line in md.splitlines() if "Faster than the dense model" in line)
    assert "channel 50%" in fast and "timing noise" in fast and "magnitude" not in fast


def test_latency_settings_from_environment(tmp_path):
    report = make_report()
    report["environment"].update(latency_threads=1, latency_repeats=50, latency_warmup=10)
    md = write_report(report, tmp_path)["markdown"].read_text(encoding="utf-8")
    assert "batch size 8, 1 CPU thread," in md and "Median of 50 repeats after 10 warm-up runs." in md


def test_html_is_self_contained_and_escaped(tmp_path):
    report = make_report()
    report["runs"][0]["name"] = "<b>x</b>"
    report["title"] = "A & B <script>alert(1)</script>"
    report["runs"][1]["layers"][0]["name"] = 'fc1"><img src=x onerror=alert(1)>'
    paths = write_report(report, tmp_path)
    page = paths["html"].read_text(encoding="utf-8")
    assert "<b>x</b>" not in page and "&lt;b&gt;x&lt;/b&gt;" in page
    assert "<script>" not in page and "&lt;script&gt;" in page
    assert "onerror=alert(1)>" not in page
    assert page.startswith("<!DOCTYPE html>") and "<style>" in page
    assert 'src="plots/relative_to_dense.png"' in page
    assert "http://" not in page and "https://" not in page  # nothing fetched from elsewhere
    assert "no dense-CPU speedup" in page
    md = paths["markdown"].read_text(encoding="utf-8")
    assert "<b>x</b>" not in md and "\\<b\\>x\\</b\\>" in md


def test_optional_sections_and_missing_measures(tmp_path):
    report = make_report()
    del report["sensitivity"], report["environment"]
    del report["runs"][0]["history"]
    for m in [report["dense"], *(r["measures"] for r in report["runs"])]:
        m["latency_ms"] = m["latency_batch"] = m["metric"] = m["loss"] = None
    report["runs"][2]["layers"] = []
    paths = write_report(report, tmp_path)
    assert set(paths) == {"json", "markdown", "html", "sparsity_per_layer", "relative_to_dense"}
    md = paths["markdown"].read_text(encoding="utf-8")
    assert "Latency was not measured." in md and "it was not measured" in md
    assert "No per-layer figures" in md
    assert is_png(paths["relative_to_dense"])


def test_no_runs(tmp_path):
    report = make_report()
    report["runs"] = []
    del report["sensitivity"]
    paths = write_report(report, tmp_path)
    assert set(paths) == {"json", "markdown", "html"}


def test_lower_is_better_metric(tmp_path):
    report = make_report()
    report["metric"] = {"name": "perplexity", "higher_is_better": False}
    report["dense"]["metric"] = 20.0
    report["runs"][0]["measures"]["metric"] = 21.5
    md = write_report(report, tmp_path)["markdown"].read_text(encoding="utf-8")
    assert "+1.500 (worse)" in md and "lower is better" in md


def test_rewrite_replaces_files(tmp_path):
    write_report(make_report(), tmp_path)
    report = make_report()
    report["title"] = "Second"
    paths = write_report(report, tmp_path)
    assert json.loads(paths["json"].read_text())["title"] == "Second"


# -- validation -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "path, key",
    [
        (("title",), "title"),
        (("created",), "created"),
        (("model", "params"), "params"),
        (("metric", "higher_is_better"), "higher_is_better"),
        (("dense", "nonzero"), "nonzero"),
        (("dense", "latency_ms"), "latency_ms"),
        (("runs", 0, "measures", "effective_macs"), "effective_macs"),
        (("runs", 1, "method", "scope"), "scope"),
        (("runs", 0, "layers", 1, "shape"), "shape"),
        (("runs", 0, "sparsity"), "sparsity"),
        (("sensitivity", "curves"), "curves"),
        (("runs",), "runs"),
    ],
)
def test_missing_key_is_named(tmp_path, path, key):
    report = make_report()
    parent = report
    for part in path[:-1]:
        parent = parent[part]
    del parent[path[-1]]
    out = tmp_path / "out"
    with pytest.raises(InvalidParameterError) as info:
        write_report(report, out)
    assert info.value.param.endswith(f"[{key!r}]")
    assert key in str(info.value) and "missing" in str(info.value)
    assert not out.exists()  # nothing written


@pytest.mark.parametrize(
    "change, param",
    [
        (lambda r: r["metric"].update(name="f1"), "report['metric']['name']"),
        (lambda r: r.update(created="yesterday"), "report['created']"),
        (lambda r: r["dense"].update(nonzero=-1), "report['dense']['nonzero']"),
        (lambda r: r["dense"].update(params=True), "report['dense']['params']"),
        (lambda r: r["runs"][0]["measures"].update(metric="high"), "report['runs'][0]['measures']['metric']"),
        (lambda r: r["runs"][1].update(name="magnitude 50%"), "report['runs'][1]['name']"),
        (lambda r: r["runs"][0].update(sparsity=1.5), "report['runs'][0]['sparsity']"),
        (lambda r: r["runs"][0]["layers"][0].update(shape=[64, "x"]), "report['runs'][0]['layers'][0]['shape'][1]"),
        (lambda r: r["sensitivity"]["curves"].update(fc3=[[0.5]]), "report['sensitivity']['curves']['fc3'][0]"),
        (lambda r: r.update(runs={}), "report['runs']"),
    ],
)
def test_malformed_values_are_named(tmp_path, change, param):
    report = make_report()
    change(report)
    with pytest.raises(InvalidParameterError) as info:
        write_report(report, tmp_path / "out")
    assert info.value.param == param
    assert not (tmp_path / "out").exists()


def test_not_a_dict_and_bad_out_dir(tmp_path):
    with pytest.raises(InvalidParameterError) as info:
        validate_report([1, 2])
    assert info.value.param == "report"
    (tmp_path / "file").write_text("x")
    with pytest.raises(InvalidParameterError) as info:
        write_report(make_report(), tmp_path / "file")
    assert info.value.param == "out_dir"
    with pytest.raises(InvalidParameterError) as info:
        write_report(make_report(), 3)
    assert info.value.param == "out_dir"


def test_unserialisable_extra_value(tmp_path):
    report = make_report()
    report["runs"][0]["method"]["schedule"] = object()
    with pytest.raises(InvalidParameterError) as info:
        write_report(report, tmp_path / "out")
    assert info.value.param == "report"
    assert not (tmp_path / "out").exists()


def test_render_functions_match_written_files(tmp_path):
    report = make_report()
    assert render_markdown(report).startswith("# Tiny MLP pruning")
    assert "plots/" not in render_markdown(report)  # no plots given, none linked
    assert "<h1>Tiny MLP pruning</h1>" in render_html(report)


# -- plots ---------------------------------------------------------------------------------------


def test_plots_write_valid_pngs(tmp_path):
    report = make_report()
    runs = {r["name"]: {l["name"]: l["sparsity"] for l in r["layers"]} for r in report["runs"]}
    outputs = [
        plot_layer_sparsity(runs, tmp_path / "a.png"),
        plot_metric_vs_sparsity({"magnitude": [(0.5, 0.97), (0.9, 0.91)], "random": [(0.5, 0.9), (0.9, None)]},
                                tmp_path / "b.png", dense=0.975),
        plot_metric_vs_sparsity({"ppl": [(0.5, 30.0), (0.9, 900.0)]}, tmp_path / "b2.png", dense=20.0,
                                metric_name="perplexity", higher_is_better=False),
        plot_relative_measures(report["dense"], {r["name"]: r["measures"] for r in report["runs"]},
                               tmp_path / "c.png"),
        plot_sensitivity_curves({f"layer{i}.weight": [(0.0, 1.0), (0.5, 1.0 - 0.01 * i)] for i in range(25)},
                                tmp_path / "d.png", baseline=1.0),
        plot_ratio_bars(["params", "latency"], [0.5, None], tmp_path / "e.png", xlabel="shrunk / dense", title="t"),
    ]
    for path in outputs:
        assert is_png(path), path


def test_plots_from_threads(tmp_path):
    errors = []

    def draw(i):
        try:
            plot_layer_sparsity({f"run{i}": {"fc1.weight": 0.1 * i}}, tmp_path / f"t{i}.png")
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=draw, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert all(is_png(tmp_path / f"t{i}.png") for i in range(4))


@pytest.mark.parametrize(
    "call, param",
    [
        (lambda p: plot_layer_sparsity({}, p), "runs"),
        (lambda p: plot_layer_sparsity({"r": {"fc": 1.5}}, p), "runs['r']['fc']"),
        (lambda p: plot_layer_sparsity({"r": {"fc": 0.5}}, None), "path"),
        (lambda p: plot_metric_vs_sparsity({"m": [(0.5,)]}, p), "series['m']"),
        (lambda p: plot_metric_vs_sparsity({"m": [(0.5, 0.9)]}, p, dense="high"), "dense"),
        (lambda p: plot_relative_measures({"params": 1}, {"r": {"params": "x"}}, p), "runs['r']['params']"),
        (lambda p: plot_sensitivity_curves({"l": "abc"}, p), "curves['l']"),
    ],
)
def test_plot_bad_inputs(tmp_path, call, param):
    with pytest.raises(InvalidParameterError) as info:
        call(tmp_path / "x.png")
    assert info.value.param == param
    assert not (tmp_path / "x.png").exists()


def test_slower_runs_are_explained(tmp_path):
    report = make_report()
    report["runs"][1]["measures"]["latency_ms"] = 3.0
    md = write_report(report, tmp_path)["markdown"].read_text(encoding="utf-8")
    note = next(line for line in md.splitlines() if "Slower than the dense model" in line)
    assert "magnitude 90%" in note and "make\\_permanent" in note


def test_plot_labels_are_shown_as_written(tmp_path):
    # "$" would start matplotlib's math mode (and fail to parse); "_" would hide the legend entry
    path = plot_layer_sparsity({"cost $5 $x^": {"fc_1$": 0.5}, "_hidden": {"fc_1$": 0.2}}, tmp_path / "x.png",
                               title="$$ {")
    assert is_png(path)


def test_html_tables_are_laid_out_to_fit_1280px(tmp_path):
    import re

    from prunekit.measure.report.html import CSS

    page = write_report(make_report(), tmp_path)["html"].read_text(encoding="utf-8")
    body_width = int(re.search(r"body \{[^}]*max-width: (\d+)px", CSS).group(1))
    assert body_width <= 1232  # the page and its padding fit a 1280 px window
    assert re.search(r"\.table \{[^}]*max-width: 100%", CSS)  # no table grows past its container
    assert re.search(r"table \{[^}]*max-width: 100%", CSS)
    cells = re.search(r"th, td \{([^}]*)\}", CSS).group(1)
    assert "white-space: normal" in cells and "overflow-wrap: anywhere" in cells  # text cells wrap
    assert "nowrap" not in re.search(r"\bth \{([^}]*)\}", CSS).group(1)
    assert re.search(r"figure img \{[^}]*max-width: 100%", CSS)
    # the results come as two narrow tables: every column, latency and speedup included, in one of them
    tables = re.findall(r"<table><thead><tr>(.*?)</tr></thead>", page)
    headers = [re.findall(r"<th[^>]*>(.*?)</th>", t) for t in tables[:2]]
    assert "speedup" in headers[1] and "latency (ms)" in headers[1] and "training steps" in headers[0]
    assert all(len(h) <= 9 for h in headers)
    assert 'class="scroll"' not in page


def test_shrunk_runs_are_told_apart_from_masked_ones(tmp_path):
    report = make_report()
    shrunk = copy.deepcopy(report["runs"][2])
    shrunk["name"] = "channels shrunk"
    shrunk["method"] = {**shrunk["method"], "mode": "shrunk", "realisation": "shrunk"}
    shrunk["measures"] = {**shrunk["measures"], "params": 5_000, "nonzero": 5_000, "latency_ms": 1.0}
    shrunk["budget"] = {"pretrain_steps": 10, "finetune_steps": 5, "steps": 15}
    report["runs"].append(shrunk)
    report["dense_budget"] = {"pretrain_steps": 10, "finetune_steps": 5, "steps": 15}
    md = write_report(report, tmp_path)["markdown"].read_text(encoding="utf-8")
    note = next(line for line in md.splitlines() if "Physically shrunk" in line)
    assert "channels shrunk 2.00× the dense speed" in note
    assert "channels shrunk" not in next(line for line in md.splitlines() if "No speedup" in line)
    assert "| channels shrunk | shrunk |" in md and "Physically smaller: 5,000 parameters" in md
    assert "| channels shrunk | 5,000 | 5,000 (100.0%) |" in md
