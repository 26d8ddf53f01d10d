"""The galaxy track end to end (issue 11, item 6): `whatsreal demo --track galaxies`."""

from __future__ import annotations

import json

import yaml

from whatsreal.cli.main import main
from whatsreal.pipelines.galaxies import KEPT_LEVERS, galaxy_track_config


def test_galaxy_demo_tiny_end_to_end(tmp_path, capsys):
    out = tmp_path / "demo"
    assert main(["demo", "--track", "galaxies", "--preset", "tiny", "--out", str(out)]) == 0
    g = out / "galaxies"
    for name in ("config.yaml", "results.json", "report.html", "galaxies.store"):
        assert (g / name).exists(), name
    results = json.loads((g / "results.json").read_text())
    # staged: the encoders alone, then the whole model from them, for the preset's steps
    assert results["track"]["encoder_steps"] == 3 and results["track"]["decoder_steps"] == 2
    assert results["steps"] == 2
    full = yaml.safe_load((g / "counterfactual" / "config.yaml").read_text())
    assert full["train"]["init_from"] == str(g / "encoders" / "model")
    enc = yaml.safe_load((g / "encoders" / "config.yaml").read_text())
    assert enc["train"]["model_overrides"]["fm_weight"] == 0.0
    assert full["train"]["model_overrides"] == KEPT_LEVERS  # the kept levers, decoder on
    assert set(results["counterfactual"]) == {"hsc", "legacy"}
    assert 0 <= results["retrieval"]["top1"] <= 1
    page = (out / "report.html").read_text()
    assert ">Galaxies</h2>" in page and "data:image/png;base64," in page
    assert "<h1>" in page and page.count("<h1>") == 1  # the track's own title demoted
    printed = capsys.readouterr().out
    assert "retrieval (physics latent" in printed and f"report: {out / 'report.html'}" in printed
    # the track folder is not itself a training run; the error names the one to evaluate
    assert main(["evaluate", "--run", str(g), "--quiet"]) == 2
    assert "evaluate that folder" in capsys.readouterr().err


def test_galaxy_track_config_and_the_yaml_configs_agree(tmp_path):
    import pytest

    from whatsreal.errors import ConfigError

    for name, extra in (
        ("counterfactual_galaxies.yaml", {}),
        ("counterfactual_galaxies_encoders.yaml", {"fm_weight": 0.0}),
    ):
        cfg = yaml.safe_load(open(f"configs/{name}"))
        assert cfg["train"]["model_overrides"] == {**extra, **KEPT_LEVERS}, name
    paper = galaxy_track_config("paper")
    assert (paper.n_sources, paper.encoder_steps, paper.decoder_steps) == (20_000, 581, 226)
    assert galaxy_track_config("tiny", train={"lr": 0.01}).train.preset == "tiny"
    with pytest.raises(ConfigError, match="unknown galaxy demo preset 'huge'"):
        galaxy_track_config("huge")
    with pytest.raises(ConfigError, match="encoder_steps"):
        galaxy_track_config("demo", encoder_steps=0)
    with pytest.raises(ConfigError, match="two survey presets"):
        galaxy_track_config("demo", surveys=("hsc",))
