"""The counterfactual flow-matching model: masking, the anchor's isolation, solvers, sampling,
save/load, exact resume, the step sampler and the CLI. Tiny models on tiny stores."""

from __future__ import annotations

import inspect
import math
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import whatsreal
from whatsreal.cli.main import main
from whatsreal.errors import ConfigError
from whatsreal.models.counterfactual import CounterfactualModel, build_counterfactual_model
from whatsreal.models.flow import SOLVERS, integrate, sample_t
from whatsreal.pairing import build_pairing
from whatsreal.sampling import StepBatchSampler
from whatsreal.store import ObservationStore
from whatsreal.train.counterfactual import (
    CounterfactualTrainConfig,
    cosine_lambda,
    fit_counterfactual,
)

from .conftest import write_image_store

SHAPES = {"image": (2, 16, 16), "series": (1, 24)}


def _model(modality: str, **kw) -> CounterfactualModel:
    c, size = SHAPES[modality][0], SHAPES[modality][-1]
    torch.manual_seed(0)
    model = build_counterfactual_model("tiny", modality, c, size, **kw).eval()
    with torch.no_grad():  # give the zero-initialised parts (output conv, null token) values
        for p in model.parameters():
            p.add_(0.01 * torch.randn_like(p))
    return model


def _batch(modality: str, b: int = 3, vp: int = 1, vi: int = 2, seed: int = 0) -> dict:
    g = torch.Generator().manual_seed(seed)
    shape = SHAPES[modality]
    return {
        "anchor": torch.randn(b, *shape, generator=g),
        "physics": torch.randn(b, vp, *shape, generator=g),
        "physics_mask": torch.ones(b, vp, dtype=torch.bool),
        "instrument_views": torch.randn(b, vi, *shape, generator=g),
        "instrument_mask": torch.ones(b, vi, dtype=torch.bool),
    }


def _pad(batch: dict, extra_p: int, extra_i: int) -> dict:
    """Append padded slots holding garbage (not zeros) with mask False."""
    out = dict(batch)
    for key, mkey, extra in (
        ("physics", "physics_mask", extra_p),
        ("instrument_views", "instrument_mask", extra_i),
    ):
        v, m = batch[key], batch[mkey]
        junk = 100 * torch.randn(v.shape[0], extra, *v.shape[2:])
        out[key] = torch.cat([v, junk], dim=1)
        out[mkey] = torch.cat([m, torch.zeros(v.shape[0], extra, dtype=torch.bool)], dim=1)
    return out


def _velocity(model: CounterfactualModel, batch: dict, x: torch.Tensor, t: torch.Tensor):
    cond, mask, _ = model.condition(
        batch["physics"], batch["physics_mask"], batch["instrument_views"], batch["instrument_mask"]
    )
    return model.velocity(x, t, cond, mask)


@pytest.mark.parametrize("modality", ["image", "series"])
def test_padded_masked_slots_do_not_change_the_decoder_output(modality, one_thread):
    model = _model(modality)
    batch = _batch(modality)
    x = torch.randn_like(batch["anchor"])
    t = torch.tensor([0.1, 0.5, 0.9])
    with torch.no_grad():
        ref = _velocity(model, batch, x, t)
        padded = _velocity(model, _pad(batch, 2, 3), x, t)
        # The same check must fail if a slot is real: unmasking junk changes the output.
        unmasked = _pad(batch, 0, 3)
        unmasked["instrument_mask"][:] = True
        changed = _velocity(model, unmasked, x, t)
    torch.testing.assert_close(padded, ref, rtol=1e-5, atol=1e-5)
    assert (changed - ref).abs().max() > 1e-4


@pytest.mark.parametrize("modality", ["image", "series"])
def test_zero_instrument_views_are_accepted(modality, one_thread):
    model = _model(modality)
    batch = _batch(modality, vi=0)
    out = model.counterfactual(batch["physics"], batch["instrument_views"], n_samples=2, nfe=2)
    assert out.shape == (3, 2, *SHAPES[modality]) and torch.isfinite(out).all()


@pytest.mark.parametrize("hybrid", [0.0, 1.0])
def test_anchor_never_reaches_the_conditioning(hybrid, one_thread):
    # By construction: condition() has no anchor argument ...
    params = inspect.signature(CounterfactualModel.condition).parameters
    assert "anchor" not in params and set(params) == {
        "self",
        "physics_views",
        "physics_mask",
        "instrument_views",
        "instrument_mask",
        "physics_rows",  # store rows of the views, used only to encode each view once
        "instrument_rows",
    }
    # ... and in pure counterfactual mode no encoder ever receives the anchor.
    model = _model("image", hybrid_weight=hybrid).train()
    batch = _batch("image", b=4)
    seen: list[torch.Tensor] = []
    hooks = [
        enc.register_forward_hook(lambda m, inp, out: seen.append(inp[0].detach()))
        for enc in (model.physics_encoder, model.instrument_encoder)
    ]
    cond_inputs = {}
    original = model.condition

    def spy(*args):
        cond_inputs["n_calls"] = cond_inputs.get("n_calls", 0) + 1
        out = original(*args)
        cond_inputs["tokens"] = out[0].detach().clone()
        return out

    model.condition = spy  # type: ignore[method-assign]
    model.loss(batch)
    for h in hooks:
        h.remove()
    anchor = model.normalize(batch["anchor"])
    hits = sum(int(torch.isclose(x[:, None], anchor[None]).flatten(2).all(-1).any()) for x in seen)
    assert hits == (2 if hybrid else 0)  # hybrid: the two InfoNCE terms only
    # Changing the anchor leaves the conditioning untouched.
    altered = dict(batch, anchor=batch["anchor"] + 5.0)
    tokens = cond_inputs["tokens"]
    model.loss(altered)
    torch.testing.assert_close(cond_inputs["tokens"], tokens)


def test_sampling_is_deterministic_under_a_seed(one_thread):
    model = _model("image")
    b = _batch("image")
    a1 = model.counterfactual(b["physics"], b["instrument_views"], n_samples=3, nfe=4, seed=7)
    a2 = model.counterfactual(b["physics"], b["instrument_views"], n_samples=3, nfe=4, seed=7)
    a3 = model.counterfactual(b["physics"], b["instrument_views"], n_samples=3, nfe=4, seed=8)
    torch.testing.assert_close(a1, a2, rtol=0, atol=0)
    assert (a1 - a3).abs().max() > 1e-3


def test_one_step_posterior_mean_is_exact_for_the_optimal_velocity(one_thread):
    # A Gaussian posterior N(mu, s^2) per pixel in model space and its exact velocity field
    # for x_t = (1 - t) x0 + t x1: v = mu + (t s^2 - (1 - t)) (x_t - t mu) / var(x_t).
    model = _model("image")
    b = _batch("image", b=4)
    mu = 0.3 * torch.randn(4, *SHAPES["image"], generator=torch.Generator().manual_seed(1))
    s2 = 0.5**2

    def exact(x, t, cond, cmask):
        n = x.shape[0] // mu.shape[0]
        m = mu.repeat_interleave(n, dim=0)
        tt = t.view(-1, 1, 1, 1).to(x.dtype)
        a, c = 1 - tt, tt
        return m + (c * s2 - a) * (x - c * m) / (a**2 + c**2 * s2)

    model.velocity = exact
    args = (b["physics"], b["instrument_views"])
    one = model.normalize(model.posterior_mean(*args, n_draws=3, seed=2))
    torch.testing.assert_close(one, mu, rtol=0, atol=1e-5)  # no sampling noise at all
    x = model.normalize(model.counterfactual(*args, n_samples=8, nfe=40, seed=2))
    assert x.std(1).mean() == pytest.approx(0.5, rel=0.1)  # the samples have the posterior
    err = (x.mean(1) - mu).pow(2).mean().sqrt()  # ... and their mean its noise: s / sqrt(8)
    assert err == pytest.approx(0.5 / math.sqrt(8), rel=0.25)
    with pytest.raises(ConfigError, match="n_draws"):
        model.posterior_mean(*args, n_draws=0)


@pytest.mark.parametrize("solver", SOLVERS)
def test_solvers_integrate_an_analytic_field(solver):
    # dx/dt = -2 t x  =>  x(1) = x(0) * exp(-1); and dx/dt = cos(2 pi t) => x(1) = x(0).
    x0 = torch.linspace(-2, 2, 11, dtype=torch.float64)[:, None]
    tol = {"euler": 3e-3, "heun": 5e-3, "midpoint": 5e-3, "dopri5": 1e-5}[solver]
    nfe = {"euler": 250, "heun": 20, "midpoint": 20, "dopri5": 0}[solver]
    x1, used = integrate(
        lambda x, t: -2 * t[:, None] * x, x0, solver, nfe=nfe or 1, rtol=1e-7, atol=1e-9
    )
    torch.testing.assert_close(x1, x0 * math.exp(-1), rtol=tol, atol=tol)
    if solver != "dopri5":
        assert used <= nfe
        # Convergence order: doubling the evaluations cuts the error by 2 (Euler) or 4.
        err = [
            (integrate(lambda x, t: -2 * t[:, None] * x, x0, solver, n)[0] - x0 * math.exp(-1))
            .abs()
            .max()
            for n in (nfe, 2 * nfe)
        ]
        order = 1 if solver == "euler" else 2
        assert float(err[0] / err[1]) == pytest.approx(2**order, rel=0.15)
    x1, _ = integrate(
        lambda x, t: torch.cos(2 * math.pi * t)[:, None].expand_as(x),
        x0,
        solver,
        nfe=nfe or 1,
        rtol=1e-7,
        atol=1e-9,
    )
    torch.testing.assert_close(x1, x0, rtol=5 * tol, atol=5 * tol)


def test_t_sampling_schemes():
    g = torch.Generator().manual_seed(0)
    u = sample_t(20_000, "uniform", g)
    ln = sample_t(20_000, "logit_normal", g)
    assert 0 <= u.min() and u.max() <= 1 and abs(u.mean() - 0.5) < 0.01
    assert abs(ln.mean() - 0.5) < 0.01 and ln.std() < u.std()  # concentrated in the middle
    with pytest.raises(ValueError, match="t_sampling"):
        sample_t(3, "cubic")


def test_cosine_schedule_runs_over_steps():
    assert cosine_lambda(0, 100, 10, 0.0) == pytest.approx(0.1)
    assert cosine_lambda(10, 100, 10, 0.0) == pytest.approx(1.0)
    assert cosine_lambda(100, 100, 10, 0.1) == pytest.approx(0.1)
    assert cosine_lambda(55, 100, 10, 0.0) == pytest.approx(0.5)


@pytest.mark.parametrize("modality", ["image", "series"])
def test_from_pretrained_restores_identical_outputs(modality, tmp_path, one_thread):
    model = _model(modality, hybrid_weight=0.5, type_embedding=True)
    model.save_pretrained(tmp_path / "m")
    loaded = whatsreal.load(tmp_path / "m")
    assert type(loaded) is CounterfactualModel and loaded.config == model.config
    b = _batch(modality)
    for a, c in zip(model.embed(b["anchor"]), loaded.embed(b["anchor"]), strict=True):
        torch.testing.assert_close(a, c, rtol=0, atol=0)
    s1 = model.counterfactual(b["physics"], b["instrument_views"], n_samples=2, nfe=4)
    s2 = loaded.counterfactual(b["physics"], b["instrument_views"], n_samples=2, nfe=4)
    torch.testing.assert_close(s1, s2, rtol=0, atol=0)


def test_step_sampler_is_a_function_of_the_step_and_shards_by_rank():
    full = StepBatchSampler(50, 8, seed=3)
    it = iter(full)
    first = [next(it) for _ in range(12)]
    resumed = iter(StepBatchSampler(50, 8, seed=3, start_step=7))
    assert [next(resumed) for _ in range(5)] == first[7:]
    # 6 steps per epoch: epoch 1 indices are offset by 50 and cover distinct items.
    assert all(i < 50 for b in first[:6] for i in b)
    assert all(i >= 50 for b in first[6:] for i in b)
    assert len({i for b in first[:6] for i in b}) == 48
    r0, r1 = StepBatchSampler(50, 4, 3, 0, 0, 2), StepBatchSampler(50, 4, 3, 0, 1, 2)
    a, b = r0.batch(2), r1.batch(2)
    assert len(a) == len(b) == 4 and not set(a) & set(b)
    with pytest.raises(ValueError, match="batch"):
        StepBatchSampler(5, 8)


@pytest.fixture
def paired_store(tmp_path):
    path = write_image_store(tmp_path / "cf.store", n_sources=80, shape=(2, 16, 16))
    build_pairing(ObservationStore(path))
    return path


class _Losses:
    """Callback collecting each training step's loss."""

    def __init__(self):
        import lightning as L

        outer = self

        class Cb(L.Callback):
            def on_train_batch_end(self, trainer, module, outputs, batch, batch_idx):
                outer.values.append(float(outputs["loss"]))
                outer.rows.append(batch["anchor_row"].tolist())

        self.values: list[float] = []
        self.rows: list[list[int]] = []
        self.callback = Cb()


def _cfg(**kw) -> CounterfactualTrainConfig:
    base = dict(
        preset="tiny",
        batch_size=8,
        max_steps=6,
        val_every=3,
        val_batches=1,
        ckpt_every=3,
        progress=False,
        val=0.1,
        test=0.1,
        lr=1e-3,
    )
    base.update(kw)
    return CounterfactualTrainConfig(**base)


@pytest.mark.slow
def test_resumed_run_gives_the_same_next_losses(paired_store, tmp_path, one_thread):
    straight = _Losses()
    fit_counterfactual(paired_store, tmp_path / "a", _cfg(), callbacks=[straight.callback])
    import lightning as L

    class StopAt3(L.Callback):  # a run killed after 3 of its 6 steps
        def on_train_batch_end(self, trainer, *args):
            if trainer.global_step >= 3:
                trainer.should_stop = True

    first = _Losses()
    fit_counterfactual(paired_store, tmp_path / "b", _cfg(), callbacks=[first.callback, StopAt3()])
    second = _Losses()
    fit_counterfactual(paired_store, tmp_path / "b", _cfg(), callbacks=[second.callback])
    assert len(straight.values) == 6 and len(first.values) == 3 and len(second.values) == 3
    np.testing.assert_allclose(first.values + second.values, straight.values, rtol=1e-5)
    assert first.rows + second.rows == straight.rows  # the same batches, in the same order
    # Not a vacuous comparison: the losses move from step to step.
    assert np.ptp(straight.values) > 1e-4
    a = whatsreal.load(tmp_path / "a" / "model")
    b = whatsreal.load(tmp_path / "b" / "model")
    for pa, pb in zip(a.parameters(), b.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, rtol=1e-5, atol=1e-6)


@pytest.mark.slow
def test_cli_train_then_counterfactual(paired_store, tmp_path, one_thread, capsys):
    cfg = tmp_path / "cfg.yaml"
    cfg.write_text(
        f"model: counterfactual\nstore: {paired_store}\nout: {tmp_path / 'run'}\n"
        "train:\n  preset: tiny\n  batch_size: 8\n  max_steps: 20\n  val_every: 10\n"
        "  progress: false\n  val: 0.1\n  test: 0.1\n"
    )
    assert (
        main(
            [
                "train",
                "--config",
                str(cfg),
                "--train.max_steps",
                "4",
                "--train.model_overrides.hybrid_weight",
                "0.5",
            ]
        )
        == 0
    )
    saved = (tmp_path / "run" / "config.yaml").read_text()
    assert "max_steps: 4" in saved and "hybrid_weight: 0.5" in saved
    out = tmp_path / "cf.h5"
    cf = [
        "counterfactual",
        "--model",
        str(tmp_path / "run" / "model"),
        "--store",
        str(paired_store),
    ]
    assert (
        main(
            [
                *cf,
                "--to",
                "hsc",
                "--n-samples",
                "3",
                "--nfe",
                "4",
                "--limit",
                "5",
                "--out",
                str(out),
                "--fits",
                str(tmp_path / "fits"),
                "--quiet",
            ]
        )
        == 0
    )
    with h5py.File(out) as h5:
        assert h5["samples"].shape == (5, 3, 2, 16, 16)
        np.testing.assert_allclose(h5["mean"][:], h5["samples"][:].mean(1), rtol=1e-5)
        ctx = h5["instrument_rows"][:]
        assert (ctx[:, 0] >= 0).all()  # every source got at least one sky neighbour
        store = ObservationStore(paired_store)
        assert (store.instrument[ctx[ctx >= 0]] == store.instrument_code("hsc")).all()
        assert h5.attrs["to"] == "hsc"
    from astropy.io import fits

    files = sorted((tmp_path / "fits").glob("*.fits"))
    assert len(files) == 5
    with fits.open(files[0]) as hdul:
        assert hdul[0].data.shape == (2, 16, 16) and hdul["SAMPLES"].data.shape == (3, 2, 16, 16)
    # Boundary errors name the offending thing.
    assert (
        main(
            [
                *cf,
                "--to",
                "euclid",
                "--quiet",
            ]
        )
        == 2
    )
    assert "euclid" in capsys.readouterr().err
    assert main(["train", "--config", str(cfg), "--train.bogus", "1"]) == 2
    assert "bogus" in capsys.readouterr().err


@pytest.mark.parametrize("path", sorted(Path(__file__).parents[1].glob("configs/*.yaml")))
def test_shipped_configs_resolve(path):
    from whatsreal.train.runs import resolve_run_config

    full = resolve_run_config(path, ["train.max_steps=7"])
    assert full["train"]["max_steps"] == 7 and full["store"] and full["out"]
    build = CounterfactualTrainConfig(**full["train"])  # every key is a real field
    assert build.preset in ("cpu", "paper", "tiny")


def test_bf16_mixed_precision_trains_with_gradient_clipping(paired_store, tmp_path, one_thread):
    """Mixed precision (the GPU default) must not meet Lightning's refusal of a fused
    optimizer under gradient clipping: the optimizer is fused in full precision only."""
    cfg = _cfg(precision="bf16-mixed", max_steps=2, val_every=2, ckpt_every=2, grad_clip=1.0)
    model = fit_counterfactual(paired_store, tmp_path / "bf16", cfg)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert (tmp_path / "bf16" / "model").is_dir()


@pytest.mark.parametrize("fraction", [0.0, 0.5])
def test_t_zero_fraction_holds_that_share_of_draws_at_t0(fraction):
    """t_zero_fraction: that share of the flow-matching draws sits at t = 0 exactly (the
    posterior-mean path), the rest stay uniform; 0 is seed 000's uniform t."""
    torch.manual_seed(0)
    model = build_counterfactual_model(
        "tiny", "series", 1, 24, n_draws=200, t_zero_fraction=fraction
    )
    seen: list[torch.Tensor] = []
    velocity = model.velocity

    def spy(x, t, cond, mask):
        seen.append(t.detach().clone())
        return velocity(x, t, cond, mask)

    model.velocity = spy
    model.loss(_batch("series", b=4), torch.Generator().manual_seed(1))
    t = torch.cat(seen)
    assert t.numel() == 800 and (t >= 0).all() and (t < 1).all()
    zero = (t == 0).float().mean().item()
    assert zero == pytest.approx(fraction, abs=0.06)
    assert t[t > 0].mean().item() == pytest.approx(0.5, abs=0.05)  # the rest uniform
    with pytest.raises(ConfigError, match="t_zero_fraction"):
        build_counterfactual_model("tiny", "series", 1, 24, t_zero_fraction=1.0)
