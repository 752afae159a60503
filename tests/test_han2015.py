"""The Han et al. 2015 benchmark script: its quick path on synthetic data (no shared data needed),
the layout of its JSON, compressions that agree with the masks, and resuming from its cache."""

from __future__ import annotations

import importlib
import json
import sys
from pathlib import Path

import pytest
import torch

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture(scope="module")
def scripts():
    sys.path.insert(0, str(BENCHMARKS))
    try:
        yield importlib.import_module("han2015"), importlib.import_module("_han_protocol")
    finally:
        sys.path.remove(str(BENCHMARKS))


@pytest.fixture(scope="module")
def quick_run(scripts, tmp_path_factory):
    han, _protocol = scripts
    out = tmp_path_factory.mktemp("han")
    argv = ["--quick", "--synthetic", "--seeds", "0", "1", "--cache", str(out / "cache"),
            "--json", str(out / "result.json"), "--plot", str(out / "plot.png")]
    threads = torch.get_num_threads()
    try:
        assert han.main(argv) == 0
    finally:
        torch.set_num_threads(threads)
    return out, argv, json.loads((out / "result.json").read_text())


def test_json_has_the_layout_of_the_protocol(quick_run) -> None:
    out, _argv, payload = quick_run
    for name in ("lenet_300_100", "lenet5"):
        entry = payload[name]
        assert set(entry) == {"dense_error", "points"}
        assert len(entry["dense_error"]) == 2 and all(0 <= e <= 100 for e in entry["dense_error"])
        assert [set(p) for p in entry["points"]] == [{"compression", "errors"}] * 2
        assert [round(p["compression"]) for p in entry["points"]] == [2, 12]
        assert all(len(p["errors"]) == 2 and all(isinstance(e, float) for e in p["errors"]) for p in entry["points"])
    assert payload["machine"]["cores"] >= 1 and payload["machine"]["cpu"]
    assert payload["commit"] is not None and payload["date"].endswith("UTC")
    assert payload["complete"] is True and payload["missing"] == []
    assert payload["protocol"]["schedule"] == "table2"
    assert (out / "plot.png").stat().st_size > 0


def test_compression_is_what_the_masks_say(scripts, quick_run) -> None:
    _han, protocol = scripts
    out, _argv, payload = quick_run
    for name in ("lenet_300_100", "lenet5"):
        layers = list(protocol.PAPER[name]["table2_density"])
        for point_index, point in enumerate(payload[name]["points"], start=1):
            for seed in (0, 1):
                (path,) = (out / "cache" / name / f"seed{seed}").glob(f"{point_index:02d}-*.pt")
                model = protocol.load_model(path, name)
                modules = dict(model.named_modules())
                kept = sum(int(modules[n].weight_mask.sum()) for n in layers)
                total = sum(modules[n].weight.numel() for n in layers)
                nonzero = sum(int(modules[n].weight.count_nonzero()) for n in layers)
                assert point["compression"] == pytest.approx(total / kept, abs=1e-4)
                assert nonzero <= kept  # pruned weights stayed zero through the retraining


def test_a_second_run_resumes_from_the_cache(scripts, quick_run, monkeypatch) -> None:
    han, _protocol = scripts
    out, argv, first = quick_run

    def no_training(*args, **kwargs):
        raise AssertionError("a cached stage was trained again")

    monkeypatch.setattr(sys.modules["_han_protocol"], "run_stage", no_training)
    threads = torch.get_num_threads()
    try:
        assert han.main(argv) == 0
    finally:
        torch.set_num_threads(threads)
    again = json.loads((out / "result.json").read_text())
    for name in ("lenet_300_100", "lenet5"):
        assert again[name] == first[name]


def test_table2_rates_scale_along_the_curve(scripts) -> None:
    _han, protocol = scripts
    sizes = {"fc1": 784 * 300, "fc2": 300 * 100, "fc3": 100 * 10}
    table2 = protocol.PAPER["lenet_300_100"]["table2_density"]
    for compression in (2.0, 12.0, 50.0):
        densities, exponent = protocol.table2_densities(sizes, table2, compression)
        kept = sum(sizes[n] * d for n, d in densities.items())
        assert sum(sizes.values()) / kept == pytest.approx(compression, rel=1e-9)
        assert densities["fc1"] < densities["fc2"] < densities["fc3"]  # the paper's order of sensitivity
    _densities, exponent = protocol.table2_densities(sizes, table2, 12.0)
    assert exponent == pytest.approx(1.0, abs=0.02)  # Table 2 is the 12× point itself


def test_each_worker_gets_its_own_seed_and_the_shared_cache(scripts) -> None:
    han, _protocol = scripts
    argv = ["--quick", "--seeds", "0", "1", "2", "--jobs", "3", "--models", "lenet5", "--jobs=2", "--synthetic"]
    assert han.worker_argv(argv, 1, "/c") == ["--quick", "--models", "lenet5", "--synthetic", "--seeds", "1",
                                              "--jobs", "1", "--no-report", "--cache", "/c"]
    assert han.parse_args(han.worker_argv(argv, 2, "/c")).seeds == [2]
