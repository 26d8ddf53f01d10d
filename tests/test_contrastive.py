"""Tests for the Conformer encoder, multi-positive InfoNCE and seed-001 contrastive models."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch

from whatsreal.models.conformer import ConformerEncoder
from whatsreal.models.contrastive import (
    CONTRASTIVE_PRESETS,
    ContrastiveDualModel,
    SingleLatentModel,
    build_contrastive_model,
    load_pretrained,
    masked_mse,
    multi_positive_info_nce,
)
from whatsreal.simulate.lightcurves import LightCurveSimConfig, simulate_lightcurves

pytestmark = pytest.mark.usefixtures("one_thread")


def _brute_force_info_nce(z: torch.Tensor, labels: torch.Tensor, tau: float) -> float:
    """Eq. 7 anchor by anchor with Python floats; anchors without a positive are skipped."""
    vecs = [[float(v) for v in row] for row in z]
    norms = [math.sqrt(sum(v * v for v in row)) for row in vecs]
    unit = [[v / n for v in row] for row, n in zip(vecs, norms, strict=True)]
    labs = [int(v) for v in labels]
    losses = []
    for a in range(len(unit)):
        pos, neg = 0.0, 0.0
        n_pos = 0
        for b in range(len(unit)):
            if b == a:
                continue
            e = math.exp(sum(x * y for x, y in zip(unit[a], unit[b], strict=True)) / tau)
            if labs[b] == labs[a]:
                pos += e
                n_pos += 1
            else:
                neg += e
        if n_pos:
            losses.append(-math.log(pos / (pos + neg)))
    return sum(losses) / len(losses) if losses else 0.0


@pytest.mark.parametrize("seed", range(5))
def test_info_nce_matches_brute_force(seed: int) -> None:
    """Vectorised loss equals the double loop, including anchors that have no positive."""
    gen = torch.Generator().manual_seed(seed)
    batch = 12
    z = torch.randn(batch, 6, generator=gen, dtype=torch.float64)
    labels = torch.randint(0, 5, (batch,), generator=gen)
    labels[0] = 99  # a singleton anchor: no positive in the batch
    tau = [0.07, 0.1, 0.5, 1.0, 2.0][seed]
    got = multi_positive_info_nce(z, labels, tau)
    assert got.item() == pytest.approx(_brute_force_info_nce(z, labels, tau), rel=1e-5)


def test_info_nce_no_positive_returns_zero_with_grad() -> None:
    """All-distinct labels give 0 that can still be back-propagated."""
    z = torch.randn(6, 4, requires_grad=True)
    loss = multi_positive_info_nce(z, torch.arange(6), 0.1)
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert z.grad is not None and torch.all(z.grad == 0)


def test_info_nce_stable_at_small_tau() -> None:
    """Tiny temperatures do not overflow (logsumexp), and gradients stay finite."""
    z = torch.randn(16, 8, requires_grad=True)
    labels = torch.arange(16) % 4
    loss = multi_positive_info_nce(z, labels, 1e-3)
    loss.backward()
    assert torch.isfinite(loss) and torch.isfinite(z.grad).all()


def test_info_nce_lower_when_positives_coincide() -> None:
    """Embeddings shared within a label beat the same embeddings shuffled across labels."""
    gen = torch.Generator().manual_seed(0)
    labels = torch.arange(24) % 6
    centers = torch.randn(6, 16, generator=gen)
    aligned = centers[labels] + 0.01 * torch.randn(24, 16, generator=gen)
    shuffled = aligned[torch.randperm(24, generator=gen)]
    good = multi_positive_info_nce(aligned, labels, 0.1)
    bad = multi_positive_info_nce(shuffled, labels, 0.1)
    assert good.item() < bad.item() - 1.0


def test_info_nce_rejects_bad_input() -> None:
    """Shape and temperature errors are reported at the boundary."""
    with pytest.raises(ValueError, match="labels"):
        multi_positive_info_nce(torch.randn(4, 3), torch.arange(5), 0.1)
    with pytest.raises(ValueError, match="tau"):
        multi_positive_info_nce(torch.randn(4, 3), torch.arange(4), 0.0)


def _tiny_encoder(in_channels: int = 2) -> ConformerEncoder:
    torch.manual_seed(0)
    return ConformerEncoder(
        in_channels, width=16, depth=2, heads=2, ff_dim=32, latent_dim=5, conv_kernel=5
    ).eval()


@pytest.mark.parametrize("length", [1, 9, 50, 100])
def test_encoder_shapes(length: int) -> None:
    """Any series length gives (B, latent) latents and (B, T, width) tokens."""
    enc = _tiny_encoder()
    x = torch.randn(3, 2, length)
    with torch.no_grad():
        assert enc(x).shape == (3, 5)
        assert enc.tokens(x).shape == (3, length, 16)
    rebuilt = ConformerEncoder(**enc.config)
    assert sum(p.numel() for p in rebuilt.parameters()) == sum(p.numel() for p in enc.parameters())


def test_encoder_padding_does_not_change_output() -> None:
    """Right-padding with garbage (even NaN) under a mask leaves each pooled latent unchanged."""
    enc = _tiny_encoder()
    lengths = [40, 23, 31]
    series = [torch.randn(1, 2, n) for n in lengths]
    padded = torch.full((3, 2, 47), float("nan"))
    mask = torch.zeros(3, 47, dtype=torch.bool)
    for i, (s, n) in enumerate(zip(series, lengths, strict=True)):
        padded[i, :, :n] = s[0]
        padded[i, :, n:] = 1e3 * torch.randn(2, 47 - n) if i else float("nan")
        mask[i, :n] = True
    with torch.no_grad():
        batched = enc(padded, mask)
        tokens = enc.tokens(padded, mask)
        for i, s in enumerate(series):
            torch.testing.assert_close(batched[i], enc(s)[0], atol=1e-5, rtol=1e-5)
    assert torch.all(tokens[~mask] == 0)
    assert torch.isfinite(batched).all()


def test_encoder_mask_hides_values_in_gaps() -> None:
    """Values at masked samples inside the series do not reach the output."""
    enc = _tiny_encoder()
    x = torch.randn(2, 2, 30)
    mask = torch.ones(2, 30, dtype=torch.bool)
    mask[:, 10:14] = False
    y = x.clone()
    y[:, :, 10:14] = 50.0
    with torch.no_grad():
        torch.testing.assert_close(enc(x, mask), enc(y, mask))
        assert not torch.allclose(enc(x), enc(y))


def test_encoder_rejects_bad_input() -> None:
    """Wrong channel count or an all-invalid series is a clear error."""
    enc = _tiny_encoder()
    with pytest.raises(ValueError, match="shape"):
        enc(torch.randn(2, 3, 10))
    with pytest.raises(ValueError, match="at least one valid"):
        enc(torch.randn(2, 2, 10), torch.zeros(2, 10, dtype=torch.bool))


def test_presets_and_builder() -> None:
    """The paper preset is App. B; unknown presets/options raise a ValueError that lists choices."""
    paper = CONTRASTIVE_PRESETS["paper"]
    assert (paper["depth"], paper["width"], paper["heads"], paper["ff_dim"]) == (4, 64, 4, 128)
    assert paper["latent_dim"] == 20
    assert (paper["recon_weight"], paper["phys_weight"], paper["inst_weight"]) == (1.0, 1.0, 1.0)
    model = build_contrastive_model("paper", in_channels=1, length=100)
    assert isinstance(model, ContrastiveDualModel)
    assert model.encoder_phys.config["depth"] == 4 and len(model.encoder_phys.blocks) == 4
    single = build_contrastive_model("tiny", 1, 20, single_latent=True, latent_dim=3)
    assert isinstance(single, SingleLatentModel) and single.config["latent_dim"] == 3
    with pytest.raises(ValueError, match="paper"):
        build_contrastive_model("huge", 1, 100)
    with pytest.raises(ValueError, match="accepted options"):
        build_contrastive_model("tiny", 1, 100, widht=3)
    with pytest.raises(ValueError, match="inst_weight"):
        build_contrastive_model("tiny", 1, 100, single_latent=True, inst_weight=2.0)


def test_dual_model_outputs_and_untied_encoders() -> None:
    """Forward shapes; the physics loss only trains the physics branch."""
    torch.manual_seed(0)
    model = build_contrastive_model("tiny", in_channels=2, length=24)
    x = torch.randn(8, 2, 24)
    out = model(x)
    assert out["z_phys"].shape == (8, 8) and out["z_inst"].shape == (8, 8)
    assert out["recon"].shape == (8, 2, 24)
    z_phys, z_inst = model.embed(x)
    torch.testing.assert_close(z_phys, out["z_phys"])
    assert not torch.allclose(z_phys, z_inst)
    losses = model.loss(x, source=torch.arange(8) % 4, instrument=torch.arange(8) // 4)
    assert set(losses) == {"total", "recon", "phys", "inst"}
    losses["phys"].backward()
    assert all(p.grad is None for p in model.encoder_inst.parameters())
    assert any(
        p.grad is not None and p.grad.abs().sum() > 0 for p in model.encoder_phys.parameters()
    )


def test_masked_mse_ignores_invalid_samples() -> None:
    """Reconstruction error is averaged over valid samples only."""
    pred = torch.zeros(2, 1, 4)
    target = torch.tensor([[[1.0, 1.0, 100.0, 100.0]], [[2.0, 2.0, 2.0, 2.0]]])
    mask = torch.tensor([[True, True, False, False], [True, True, True, True]])
    assert masked_mse(pred, target, mask).item() == pytest.approx((2 * 1 + 4 * 4) / 6)


@pytest.mark.parametrize("single_latent", [False, True])
def test_save_and_load_round_trip(tmp_path, single_latent: bool) -> None:
    """from_pretrained rebuilds the model from config.json + weights with identical outputs."""
    torch.manual_seed(0)
    model = build_contrastive_model("tiny", 1, 30, single_latent=single_latent).eval()
    model.save_pretrained(tmp_path / "m")
    meta = json.loads((tmp_path / "m" / "config.json").read_text())
    assert meta["class"] == type(model).__name__ and meta["config"] == model.config
    assert not [p.name for p in (tmp_path / "m").iterdir() if p.name.endswith(".tmp")]
    loaded = type(model).from_pretrained(tmp_path / "m")
    assert type(loaded) is type(model) and not loaded.training
    x = torch.randn(4, 1, 30)
    with torch.no_grad():
        a, b = model(x), loaded(x)
    for key in a:
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0)
    assert type(load_pretrained(tmp_path / "m")) is type(model)
    other = SingleLatentModel if not single_latent else ContrastiveDualModel
    with pytest.raises(TypeError):
        other.from_pretrained(tmp_path / "m")


@pytest.mark.parametrize("single_latent", [False, True])
def test_few_adam_steps_reduce_loss(single_latent: bool) -> None:
    """30 Adam steps of the tiny model on one simulated batch lower the total loss."""
    torch.manual_seed(0)
    data = simulate_lightcurves(
        LightCurveSimConfig(n_lightcurves=32, n_stars=8, n_instruments=4, length=40), seed=0
    )
    x = torch.from_numpy(data.flux)
    source = torch.from_numpy(data.star_id)
    instrument = torch.from_numpy(data.instrument_id)
    model = build_contrastive_model("tiny", 1, 40, single_latent=single_latent)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    history = []
    for _ in range(30):
        loss = model.loss(x, source, instrument)["total"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        history.append(loss.item())
    assert np.isfinite(history).all()
    assert np.mean(history[-3:]) < np.mean(history[:3]) - 0.15


def test_group_agreement_loss_known_answers():
    from whatsreal.models.contrastive import group_agreement_loss

    torch.manual_seed(0)
    z = torch.randn(4, 3)
    same = torch.cat([z, z])  # each source seen identically by two instruments
    labels = torch.tensor([0, 1, 2, 3, 0, 1, 2, 3])
    assert float(group_agreement_loss(same, labels)) == pytest.approx(0.0, abs=1e-7)
    # unrelated rows: the distance to the group mean is half the pair spread, ~1/2 of the total
    big = torch.randn(20000, 3)
    pairs = torch.arange(10000).repeat(2)
    assert float(group_agreement_loss(big, pairs)) == pytest.approx(0.5, abs=0.02)
    # scale-free, and singletons contribute nothing
    assert float(group_agreement_loss(10 * big, pairs)) == pytest.approx(
        float(group_agreement_loss(big, pairs)), rel=1e-5
    )
    assert float(group_agreement_loss(z, torch.arange(4))) == 0.0


def test_dual_model_agreement_term_is_in_the_objective():
    from whatsreal.models.contrastive import build_contrastive_model

    torch.manual_seed(0)
    model = build_contrastive_model("tiny", 1, 32, agreement_weight=0.5)
    x = torch.randn(8, 1, 32)
    out = model.loss(x, torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]), torch.arange(8) % 2)
    assert "agree" in out and float(out["agree"]) > 0
    expect = out["recon"] + out["phys"] + out["inst"] + 0.5 * out["agree"]
    torch.testing.assert_close(out["total"], expect)


def test_dual_model_without_projection_heads_contrasts_the_latents_themselves():
    """projection_head 'none': the star InfoNCE term is the InfoNCE of z_star itself."""
    from whatsreal.errors import ConfigError
    from whatsreal.models.contrastive import build_contrastive_model, multi_positive_info_nce

    torch.manual_seed(0)
    model = build_contrastive_model("tiny", 1, 32, projection_head="none").eval()
    x = torch.randn(8, 1, 32)
    source, instrument = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]), torch.arange(8) % 2
    with torch.no_grad():
        out = model.loss(x, source, instrument)
        z_phys, _ = model.embed(x)
        want = multi_positive_info_nce(z_phys, source, model.tau)
    assert float(out["phys"]) == pytest.approx(float(want), rel=1e-5)
    assert isinstance(model.head_inst, torch.nn.Identity)
    linear = build_contrastive_model("tiny", 1, 32, projection_head="linear")
    assert isinstance(linear.head_phys, torch.nn.Linear)
    with pytest.raises(ConfigError, match="projection_head must be one of"):
        build_contrastive_model("tiny", 1, 32, projection_head="deep")


def test_dual_model_instrument_encoder_can_be_smaller_than_the_star_encoder(tmp_path):
    """inst_width/inst_depth size only the instrument encoder; the model saves and reloads."""
    from whatsreal.errors import ConfigError

    torch.manual_seed(0)
    full = build_contrastive_model("cpu", 1, 32)
    small = build_contrastive_model("cpu", 1, 32, inst_width=16, inst_depth=1)
    n = lambda m: sum(p.numel() for p in m.parameters())  # noqa: E731
    assert n(small.encoder_phys) == n(full.encoder_phys)
    assert n(small.encoder_inst) < n(full.encoder_inst) / 3
    assert small.encoder_inst.config["width"] == 16 and small.encoder_inst.config["depth"] == 1
    assert small.encoder_inst.config["ff_dim"] == 32  # the preset's 64 scaled by 16 / 32
    x = torch.randn(6, 1, 32)
    out = small.loss(x, torch.tensor([0, 0, 1, 1, 2, 2]), torch.arange(6) % 2)
    assert torch.isfinite(out["total"])
    small.eval().save_pretrained(tmp_path / "m")
    back = load_pretrained(tmp_path / "m").eval()
    with torch.no_grad():
        torch.testing.assert_close(back.embed(x)[1], small.embed(x)[1])
    with pytest.raises(ConfigError, match="inst_width"):
        build_contrastive_model("cpu", 1, 32, inst_width=15)  # heads 2 do not divide it


def test_instrument_calibration_nll_matches_brute_force_and_skips_own_source():
    """The per-anchor sums equal the double loop over same-instrument, other-source rows,
    with masked samples left out; an anchor with no such partner is skipped."""
    from whatsreal.models.contrastive import instrument_calibration_nll

    gen = torch.Generator().manual_seed(0)
    b, c, t = 12, 2, 7
    x = torch.randn(b, c, t, generator=gen, dtype=torch.float64)
    mu = torch.randn(b, c, t, generator=gen, dtype=torch.float64)
    sigma = torch.rand(b, c, t, generator=gen, dtype=torch.float64) + 0.5
    source = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3, 4, 4, 5, 6])
    instrument = torch.tensor([0, 1, 0, 1, 0, 1, 0, 1, 2, 2, 2, 3])  # row 11: alone
    mask = torch.rand(b, t, generator=gen) > 0.2
    want = []
    for i in range(b):
        num = den = 0.0
        for j in range(b):
            if instrument[i] == instrument[j] and source[i] != source[j]:
                for ci in range(c):
                    for ti in range(t):
                        if mask[j, ti]:
                            r = float(x[j, ci, ti] - mu[i, ci, ti]) / float(sigma[i, ci, ti])
                            num += 0.5 * r * r + math.log(float(sigma[i, ci, ti]))
                            den += 1
        if den:
            want.append(num / den)
    got = instrument_calibration_nll(mu, sigma, x, source, instrument, mask)
    assert float(got) == pytest.approx(sum(want) / len(want), rel=1e-6)
    # the anchor's own source never scores its model: rows 8 and 9 (one source, one
    # instrument) have no partner between them
    rows = slice(8, 10)
    alone = instrument_calibration_nll(
        mu[rows], sigma[rows], x[rows], source[rows], instrument[rows]
    )
    assert float(alone) == 0.0


def test_instrument_calibration_nll_is_minimised_by_the_instruments_mean_and_spread():
    """Known answer: over many sources seen through one drift, the NLL is lowest for the
    partners' mean curve and spread, not for a curve shifted or a spread scaled."""
    from whatsreal.models.contrastive import instrument_calibration_nll

    gen = torch.Generator().manual_seed(1)
    n, t = 400, 16
    drift = torch.linspace(-0.5, 0.5, t)
    x = (drift + 0.3 * torch.randn(n, 1, t, generator=gen)).double()
    source, instrument = torch.arange(n), torch.zeros(n, dtype=torch.long)
    mean = x.mean(dim=0, keepdim=True).expand_as(x)
    spread = x.std(dim=0, keepdim=True).expand_as(x)

    def nll(m, s):
        return float(instrument_calibration_nll(m, s, x, source, instrument))

    best = nll(mean, spread)
    assert best < nll(mean + 0.1, spread) and best < nll(mean, 1.3 * spread)
    assert best < nll(mean, 0.7 * spread) and best < nll(torch.zeros_like(x), spread)


def test_self_calibrated_model_divides_out_its_instrument_model(tmp_path):
    """calibration_weight > 0: the physics encoder reads (x - mu) / sigma from the instrument
    latent's model, the NLL is in the objective, the physics loss sends no gradient into the
    instrument model, and the model round-trips; a wrong length is refused in one line."""
    from whatsreal.errors import ConfigError

    torch.manual_seed(0)
    model = build_contrastive_model("tiny", 1, 32, calibration_weight=0.5)
    assert model.self_calibrated
    x = torch.randn(8, 1, 32)
    source, instrument = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]), torch.arange(8) % 2
    out = model.loss(x, source, instrument)
    expect = out["recon"] + out["phys"] + out["inst"] + 0.5 * out["calib"]
    torch.testing.assert_close(out["total"], expect)
    model.eval()
    with torch.no_grad():
        z_phys, z_inst = model.embed(x)
        mu, sigma = model.calibration(z_inst)
        want = model.encoder_phys((x - mu) / sigma)
    torch.testing.assert_close(z_phys, want)
    assert bool((sigma > 0).all())
    # the physics objective cannot bend the instrument model
    model.train()
    model.zero_grad()
    model(x)["z_phys"].sum().backward()
    assert all(
        p.grad is None or float(p.grad.abs().sum()) == 0 for p in model.calibrator.parameters()
    )
    assert all(
        p.grad is None or float(p.grad.abs().sum()) == 0 for p in model.encoder_inst.parameters()
    )
    model.eval().save_pretrained(tmp_path / "m")
    back = load_pretrained(tmp_path / "m").eval()
    with torch.no_grad():
        torch.testing.assert_close(back.embed(x)[0], z_phys)
    with pytest.raises(ValueError, match="training length 32"):
        model.embed(torch.randn(2, 1, 40))
    plain = build_contrastive_model("tiny", 1, 32)
    with pytest.raises(ConfigError, match="calibration_weight"):
        plain.calibration(torch.zeros(1, 8))
    with pytest.raises(ConfigError, match="calibration_weight must be >= 0"):
        build_contrastive_model("tiny", 1, 32, calibration_weight=-1.0)


def test_masked_periodogram_known_answers():
    """A sinusoid's power peaks at its frequency whatever its phase; masked samples are left
    out (a gap does not change the peak), and a constant series has no power."""
    from whatsreal.models.conformer import masked_periodogram

    t = torch.arange(100, dtype=torch.float32)
    freqs = torch.arange(1, 97) / 192.0
    f0 = float(freqs[23])
    x = torch.stack([torch.sin(2 * math.pi * f0 * t + ph) for ph in (0.0, 1.0, 2.5)])[:, None]
    power = masked_periodogram(x, freqs)
    assert power.shape == (3, 1, 96)
    assert (power.argmax(dim=-1) == 23).all()
    torch.testing.assert_close(power[0], power[1], atol=0.05 * float(power.max()), rtol=0)
    mask = torch.ones(3, 100, dtype=torch.bool)
    mask[:, 30:45] = False
    gapped = x.clone()
    gapped[:, :, 30:45] = 1e6  # garbage in the gap must not leak
    assert (masked_periodogram(gapped, freqs, mask).argmax(dim=-1) == 23).all()
    assert float(masked_periodogram(torch.full((1, 1, 100), 3.0), freqs).max()) < 1e-6


def test_spectral_branch_in_both_models_and_round_trip(tmp_path):
    """``spectral``: the star (or single) encoder concatenates the periodogram branch; the
    instrument encoder has none; masked padding leaves the latent unchanged; models reload."""
    torch.manual_seed(0)
    dual = build_contrastive_model("tiny", 1, 40, spectral=True).eval()
    single = build_contrastive_model("tiny", 1, 40, single_latent=True, spectral=True).eval()
    assert dual.encoder_phys.spectral is not None and dual.encoder_inst.spectral is None
    assert single.encoder.spectral is not None
    x = torch.randn(4, 1, 40)
    padded = torch.cat([x, torch.randn(4, 1, 10)], dim=-1)
    mask = torch.zeros(4, 50, dtype=torch.bool)
    mask[:, :40] = True
    with torch.no_grad():
        torch.testing.assert_close(
            dual.encoder_phys(padded, mask), dual.encoder_phys(x), atol=1e-5, rtol=1e-4
        )
    for name, model in (("dual", dual), ("single", single)):
        model.save_pretrained(tmp_path / name)
        back = load_pretrained(tmp_path / name).eval()
        with torch.no_grad():
            a, b = back.embed(x), model.embed(x)
        a, b = (a[0], b[0]) if isinstance(a, tuple) else (a, b)
        torch.testing.assert_close(a, b)


@pytest.mark.parametrize("single_latent", [False, True])
def test_spectrum_term_asks_the_latent_for_the_log_periodogram(single_latent):
    """``spectrum_weight``: a head on the star (or single) latent predicts the standardised
    log periodogram of what that encoder read (the calibrated series for a self-calibrated
    model); the term is in the objective and a head that predicts it exactly scores 0."""
    from whatsreal.models.conformer import masked_periodogram

    torch.manual_seed(0)
    over = {"spectrum_weight": 0.5}
    if not single_latent:
        over["calibration_weight"] = 1.0
    model = build_contrastive_model("tiny", 1, 32, single_latent=single_latent, **over)
    x = torch.randn(8, 1, 32)
    source, instrument = torch.tensor([0, 0, 1, 1, 2, 2, 3, 3]), torch.arange(8) % 2
    out = model.loss(x, source, instrument)
    rest = sum(v for k, v in out.items() if k not in ("total", "spectrum"))
    torch.testing.assert_close(out["total"], rest + 0.5 * out["spectrum"])
    head = model.spectrum_head
    seen = model(x)["x_phys"] if not single_latent else x
    power = torch.log(masked_periodogram(seen, head.freqs) + 1e-4).flatten(1)
    want = (power - power.mean(0)) / power.std(0)

    class Exact(torch.nn.Module):
        def forward(self, z):
            return want

    head.net = Exact()
    z = model(x)["z" if single_latent else "z_phys"]
    assert float(head.loss(z, seen)) == pytest.approx(0.0, abs=1e-8)


def test_mlp_instrument_encoder_reads_fixed_times_and_is_cheap(tmp_path):
    """``inst_encoder="mlp"``: the instrument encoder is an MLP over the series' samples and
    mask, a fraction of the Conformer's size; masked samples do not reach it; a series of
    another length is refused in one line; the model trains a step and reloads."""
    from whatsreal.errors import ConfigError
    from whatsreal.models.contrastive import SeriesMLP

    torch.manual_seed(0)
    model = build_contrastive_model("cpu", 1, 40, inst_encoder="mlp", calibration_weight=1.0)
    conf = build_contrastive_model("cpu", 1, 40)
    assert isinstance(model.encoder_inst, SeriesMLP)
    x = torch.randn(6, 1, 40)
    from torch.utils.flop_counter import FlopCounterMode

    def flops(encoder):
        with FlopCounterMode(display=False) as counter, torch.no_grad():
            encoder(x)
        return counter.get_total_flops()

    assert flops(model.encoder_inst) < flops(conf.encoder_inst) / 10
    out = model.loss(x, torch.tensor([0, 0, 1, 1, 2, 2]), torch.arange(6) % 2)
    out["total"].backward()
    assert torch.isfinite(out["total"])
    model.eval()
    mask = torch.ones(6, 40, dtype=torch.bool)
    mask[:, 30:] = False
    garbage = x.clone()
    garbage[:, :, 30:] = 1e6
    with torch.no_grad():
        torch.testing.assert_close(model.encoder_inst(x, mask), model.encoder_inst(garbage, mask))
    with pytest.raises(ValueError, match="training length"):
        model.encoder_inst(torch.randn(2, 1, 50))
    model.save_pretrained(tmp_path / "m")
    back = load_pretrained(tmp_path / "m").eval()
    with torch.no_grad():
        torch.testing.assert_close(back.embed(x)[1], model.embed(x)[1])
    with pytest.raises(ConfigError, match="inst_encoder must be one of"):
        build_contrastive_model("tiny", 1, 40, inst_encoder="cnn")
