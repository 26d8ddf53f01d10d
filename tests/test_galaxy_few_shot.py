"""Galaxy few-shot curves (`evaluate.galaxies.few_shot_latents`) against a known answer: a
"physics latent" that is the galaxy's total i-band flux predicts mag_i; noise does not."""

from __future__ import annotations

import pytest
import torch

from tests.conftest import simulated_galaxy_store
from whatsreal.errors import ConfigError
from whatsreal.evaluate.galaxies import evaluation_pairs, few_shot_latents
from whatsreal.evaluate.probes import ProbeSettings
from whatsreal.sampling import SplitSpec


class FluxAndNoise(torch.nn.Module):
    """Physics: log total flux per band (4 numbers); instrument: noise of the same size."""

    def __init__(self) -> None:
        super().__init__()
        self.anchor = torch.nn.Parameter(torch.zeros(1))  # embed_array reads the device

    def embed(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        total = x.clamp_min(0).sum(dim=(-2, -1)).clamp_min(1e-3).log10()
        g = torch.Generator().manual_seed(int(x.shape[0]))
        return total, torch.randn(total.shape, generator=g)


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    return simulated_galaxy_store(tmp_path_factory, "fewshot", n=300, seed=5)


def test_few_shot_curves_know_a_good_latent_from_noise(store, one_thread):
    tr, te = evaluation_pairs(store, SplitSpec(val=0.1, test=0.3), "hsc", "legacy", 60, 200)
    few = few_shot_latents(
        FluxAndNoise(),
        store,
        tr,
        te,
        params=("mag_i",),
        sizes=(10, 100, 5000),
        seeds=3,
        settings=ProbeSettings(steps=150),
    )
    phys, inst = few["mag_i"]["physics"], few["mag_i"]["instrument"]
    assert [c["n_labels"] for c in phys] == [10, 100]  # 5000 exceeds the pool: left out
    assert all(len(c["r2_all"]) == 3 for c in phys)
    assert phys[-1]["r2_mean"] > 0.8  # log flux is magnitude, up to the sky noise
    assert inst[-1]["r2_mean"] < 0.2  # noise predicts nothing
    assert phys[-1]["r2_mean"] >= phys[0]["r2_mean"] - 0.05  # more labels do not hurt


def test_few_shot_refuses_a_property_the_galaxies_do_not_have(store):
    tr, te = evaluation_pairs(store, SplitSpec(val=0.1, test=0.3), "hsc", "legacy", 10, 20)
    with pytest.raises(ConfigError, match="psf_fwhm"):
        few_shot_latents(FluxAndNoise(), store, tr, te, params=("psf_fwhm",))
