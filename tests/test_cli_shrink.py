"""``prunekit prune ... --shrink``: physical channel removal from the command line, the saved
model loads back with the printed line, and the table shows what the files and counts say."""

from __future__ import annotations

import json
import os

import pytest
import torch

import prunekit
from prunekit.cli import main


def _text(captured: str) -> str:
    return " ".join(captured.split())  # rich wraps at the terminal's width


def _run(tmp_path, capsys, *argv):
    out = tmp_path / "shrunk"
    code = main(["prune", *argv, "--structure", "channel", "--shrink", "--out", str(out),
                 "--latency-repeats", "2", "--latency-warmup", "0"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    return out, json.loads((out / "report.json").read_text()), _text(captured.out)


def test_shrink_lenet5_saves_a_smaller_model_that_loads_back(tmp_path, capsys):
    out, report, text = _run(tmp_path, capsys, "lenet5", "--sparsity", "0.5")
    path = out / "model.safetensors"
    # the printed one-liner is real Python and gives the shrunk model
    line = report["load"]
    assert line in text and line == f"prunekit.load_shrunk(prunekit.create_model('lenet5'), {str(path)!r})"
    loaded = eval(line, {"prunekit": prunekit}).eval()
    torch.manual_seed(0)  # the command builds the model after seeding with --seed (0)
    expected = prunekit.create_model("lenet5")
    example = torch.randn(3, 1, 28, 28)
    prunekit.structural_prune(expected, example[:1], sparsity=0.5, criterion="magnitude")
    with torch.no_grad():
        assert torch.equal(loaded(example), expected.eval()(example))
    # the figures are those of the files and models
    assert report["shrunk"]["params"] == prunekit.measure.count_parameters(loaded).params
    assert report["shrunk"]["bytes"] == os.path.getsize(path)
    assert report["dense"]["params"] == prunekit.measure.count_parameters(prunekit.create_model("lenet5")).params
    assert report["shrunk"]["params"] < 0.6 * report["dense"]["params"]
    assert report["input_shape"] == [1, 1, 28, 28]
    for key in ("params", "macs", "bytes"):
        assert f"{report['dense'][key]:,}" in text and f"{report['shrunk'][key]:,}" in text
    assert f"{report['speedup']:.2f}×" in text
    assert report["speedup"] == pytest.approx(report["dense"]["latency_ms"] / report["shrunk"]["latency_ms"])


def test_shrink_resnet20_to_a_macs_target_with_weights(tmp_path, capsys):
    torch.manual_seed(1)
    weights = tmp_path / "dense.safetensors"
    dense = prunekit.create_model("resnet20")
    prunekit.save_sparse(dense, weights)
    out, report, _ = _run(tmp_path, capsys, "resnet20", "--weights", str(weights), "--macs-target", "0.5",
                          "--round-to", "4")
    assert report["shrunk"]["macs"] <= 0.5 * report["dense"]["macs"]
    assert report["shrunk"]["macs"] >= 0.4 * report["dense"]["macs"]
    assert report["structural_prune"]["macs_ratio"] <= 0.5
    channels = report["structural_prune"]["channels_after"]
    assert all(c % 4 == 0 for c in channels.values())
    loaded = prunekit.load_shrunk(prunekit.create_model("resnet20"), out / "model.safetensors").eval()
    # the dense weights were loaded before shrinking: the kept channels hold them
    kept_first = loaded.conv1.weight
    assert any(torch.equal(kept_first[0], dense.conv1.weight[i]) for i in range(dense.conv1.weight.shape[0]))


@pytest.mark.parametrize("argv, message", [
    (["lenet5", "--sparsity", "0.5", "--structure", "element"], "--structure: expected channel, head or neuron with --shrink"),
    (["lenet5", "--structure", "channel"], ("--sparsity: expected exactly one of --sparsity, --macs-target and "
                                           "--latency-target with --shrink, got None.")),
    (["lenet5", "--structure", "channel", "--sparsity", "0.5", "--macs-target", "0.5"],
     "got '--sparsity 0.5 --macs-target 0.5'"),
    (["lenet5", "--structure", "channel", "--sparsity", "1.0"], "--sparsity: expected a fraction in [0, 1)"),
    (["lenet5", "--structure", "channel", "--sparsity", "0.5", "--criterion", "taylor"],
     "--criterion: expected a group criterion that needs no data on the command line"),
    (["lenet5", "--structure", "channel", "--sparsity", "0.5", "--criterion", "l3"],
     "--criterion: expected a registered group criterion name"),
    (["lenet5", "--structure", "channel", "--sparsity", "0.5", "--mode", "inplace"],
     "--mode: expected no --mode with --shrink"),
    (["lenet5", "--structure", "channel", "--macs-target", "0.5", "--round-to", "0"],
     "--round-to: expected an int >= 1, got 0."),
    (["lenet5", "--structure", "channel", "--macs-target", "0.01", "--max-layer-ratio", "0.2"],
     "--macs-target: expected a target reachable within the caps"),
    (["lenet5", "--structure", "channel", "--sparsity", "0.5", "--input-shape", "1,3,32,32"],
     "--input-shape: expected an input shape lenet5 accepts, got '1,3,32,32'"),
])
def test_shrink_errors_name_the_option_and_write_nothing(tmp_path, capsys, argv, message):
    out = tmp_path / "out"
    assert main(["prune", *argv, "--shrink", "--out", str(out)]) == 2
    err = _text(capsys.readouterr().err)
    assert "prunekit prune: error: " in err and message in err
    assert not (out / "model.safetensors").exists()


def test_shrink_options_without_shrink_are_refused(tmp_path, capsys):
    assert main(["prune", "lenet5", "--sparsity", "0.5", "--macs-target", "0.5", "--out", str(tmp_path / "o")]) == 2
    assert "--macs-target: expected no --macs-target without --shrink" in _text(capsys.readouterr().err)
    assert not (tmp_path / "o").exists()


def test_shrink_requires_out(capsys):
    assert main(["prune", "lenet5", "--structure", "channel", "--sparsity", "0.5", "--shrink"]) == 2
    assert "--out: expected a folder for the shrunk model with --shrink" in _text(capsys.readouterr().err)


def _modelled_ms(spec):
    """A deterministic layer latency (ms) proportional to the layer's multiply-accumulates."""
    k = spec.kernel[0] * spec.kernel[1]
    return 1e-6 * spec.in_ch * spec.out_ch * k * spec.hw[0] * spec.hw[1] / spec.groups + 1e-3


def test_shrink_latency_target_uses_the_latency_allocation(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("COLUMNS", "400")
    table = prunekit.surgery.api.LatencyTable
    monkeypatch.setattr(prunekit.surgery.api, "LatencyTable", lambda **kw: table(timer=_modelled_ms, **kw))
    _out, report, text = _run(tmp_path, capsys, "lenet5", "--latency-target", "0.6")
    assert report["structural_prune"]["scope"] == "latency"  # --allocation latency is implied
    before, after = report["structural_prune"]["latency_model_ms"]
    assert after <= 0.6 * before
    measured = report["shrunk"]["latency_ms"] / report["dense"]["latency_ms"]
    # a measured ratio above the target is said, never passed over
    assert ("above --latency-target 0.6" in text) == (measured > 0.6)


class _NormalisedHidden(torch.nn.Module):
    """Its only hidden channels are normalised by a LayerNorm: exact structural pruning finds nothing."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.fc1, self.norm, self.fc2 = torch.nn.Linear(8, 16), torch.nn.LayerNorm(16), torch.nn.Linear(16, 4)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(torch.relu(self.norm(self.fc1(x))))


@pytest.fixture
def normalised_zoo_model(monkeypatch):
    from prunekit.zoo import registry

    monkeypatch.setattr(registry.MODELS, "_entries", dict(registry.MODELS._entries))
    monkeypatch.setattr(registry, "_INPUTS", dict(registry._INPUTS))
    prunekit.zoo.register_model("normalised_hidden", _NormalisedHidden, input_shape=(8,))
    return "normalised_hidden"


def test_shrink_names_approximate_and_the_flag_prunes_normalised_channels(tmp_path, capsys, normalised_zoo_model):
    base = ["prune", normalised_zoo_model, "--shrink", "--structure", "channel", "--sparsity", "0.5"]
    assert main([*base, "--out", str(tmp_path / "exact")]) == 2
    err = " ".join(capsys.readouterr().err.split())
    assert "no dependency group was found" in err and "Fix: --approximate also prunes 1 group(s)" in err
    assert not (tmp_path / "exact" / "model.safetensors").exists()
    # the fix as worded works: half of the normalised channels go, the LayerNorm with them
    assert main([*base, "--approximate", "--out", str(tmp_path / "approx")]) == 0
    capsys.readouterr()
    model = prunekit.load_shrunk(_NormalisedHidden(), tmp_path / "approx" / "model.safetensors")
    assert model.fc1.out_features == 8 and model.norm.normalized_shape == (8,) and model.fc2.in_features == 8
    assert json.loads((tmp_path / "approx" / "report.json").read_text())["structural_prune"]["macs_ratio"] == 0.5


def test_approximate_is_refused_for_heads_and_neurons(tmp_path, capsys):
    assert main(["prune", "gpt_tiny", "--shrink", "--structure", "neuron", "--sparsity", "0.5", "--approximate",
                 "--out", str(tmp_path / "n")]) == 2
    assert "--approximate" in " ".join(capsys.readouterr().err.split())
