"""Issue 5's training levers: sky-clustered batches with de-duplicated encoding, the
contrastive warm start and the instrument adversary on the physics latent."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch

from whatsreal.errors import ConfigError, StoreValidationError
from whatsreal.models.counterfactual import build_counterfactual_model
from whatsreal.pairing import build_pairing
from whatsreal.sampling import StepBatchSampler, ViewDataset, collate_views
from whatsreal.sampling.views import morton_code
from whatsreal.store import ObservationStore
from whatsreal.train.counterfactual import (
    CounterfactualTrainConfig,
    build_for_store,
    warm_start,
)

from .conftest import write_image_store


@pytest.fixture
def sky_store(tmp_path):
    path = write_image_store(tmp_path / "sky.store", n_sources=400, shape=(2, 16, 16))
    build_pairing(ObservationStore(path))
    return ObservationStore(path)


def _separation(ra, dec):
    """Mean pairwise distance (deg, flat-sky) of a set of positions."""
    x = np.stack([ra * np.cos(np.deg2rad(dec)), dec], 1)
    d = np.sqrt(((x[:, None] - x[None]) ** 2).sum(-1))
    return d[np.triu_indices(len(x), 1)].mean()


def test_morton_code_keeps_neighbours_close():
    rng = np.random.default_rng(0)
    ra, dec = rng.uniform(10, 11, 4096), rng.uniform(-1, 0, 4096)
    order = np.argsort(morton_code(ra, dec))
    runs = order.reshape(-1, 32)
    runs_sep = np.median([_separation(ra[r], dec[r]) for r in runs])
    random_sep = np.median(
        [_separation(ra[r], dec[r]) for r in rng.permutation(4096).reshape(-1, 32)]
    )
    assert runs_sep < random_sep / 4
    # RA wrapping through 0 must not split a compact field in two.
    ra_wrap = (ra - 10.5) % 360
    order_w = np.argsort(morton_code(ra_wrap, dec))
    sep_w = np.median([_separation(ra[r], dec[r]) for r in order_w.reshape(-1, 32)])
    assert sep_w < random_sep / 4


def test_sky_batches_are_compact_deterministic_and_cover_each_epoch(sky_store):
    views = ViewDataset(sky_store, "train", n_instrument=5)
    order = views.sky_order()
    n, bs = len(views), 16
    sampler = StepBatchSampler(n, bs, seed=1, order=order)
    steps = sampler.steps_per_epoch
    epoch0 = [sampler.batch(s) for s in range(steps)]
    flat = [i for b in epoch0 for i in b]
    assert len(set(flat)) == len(flat) == steps * bs  # no repeats within an epoch
    # The same batches after a "resume", and a different tiling next epoch.
    again = StepBatchSampler(n, bs, seed=1, order=order, start_step=3)
    assert next(iter(again)) == epoch0[3]
    assert sampler.batch(steps) != [i + n for i in epoch0[0]]

    # Anchors of a sky batch share instrument views; random batches hardly do.
    def shared_fraction(batch):
        draws = [views.draw(i % n, i // n) for i in batch]
        rows = np.concatenate([d["instrument_rows"] for d in draws])
        rows = rows[rows >= 0]
        return 1 - np.unique(rows).size / rows.size

    sky = np.mean([shared_fraction(b) for b in epoch0])
    rand = StepBatchSampler(n, bs, seed=1)
    random = np.mean([shared_fraction(rand.batch(s)) for s in range(steps)])
    assert sky > 0.3 and sky > 3 * random
    with pytest.raises(ValueError, match="permutation"):
        StepBatchSampler(n, bs, order=order[:-1])


def test_sky_order_needs_positions(tmp_path):
    path = write_image_store(tmp_path / "nopos.store", n_sources=40, positions=False)
    with pytest.raises(StoreValidationError, match="batching='random'"):
        ViewDataset(path, "train").sky_order()


def test_deduplicated_encoding_matches_and_encodes_each_row_once(sky_store, one_thread):
    views = ViewDataset(sky_store, "train", n_instrument=5)
    order = views.sky_order()
    batch = collate_views(views.__getitems__(order[:12].tolist()))
    torch.manual_seed(0)
    model = build_counterfactual_model("tiny", "image", 2, 16).eval()
    seen = []
    model.instrument_encoder.register_forward_hook(lambda m, i, o: seen.append(i[0].shape[0]))
    args = (
        batch["physics"],
        batch["physics_mask"],
        batch["instrument_views"],
        batch["instrument_mask"],
    )
    plain, mask, _ = model.condition(*args)
    dedup, mask2, _ = model.condition(*args, batch["physics_rows"], batch["instrument_rows"])
    torch.testing.assert_close(dedup, plain, rtol=1e-5, atol=1e-6)
    assert torch.equal(mask, mask2)
    rows = batch["instrument_rows"][batch["instrument_mask"]]
    assert seen == [rows.numel(), rows.unique().numel()] and seen[1] < seen[0]


def test_warm_start_copies_the_encoders_only(tmp_path, one_thread):
    torch.manual_seed(0)
    source = build_counterfactual_model("tiny", "image", 2, 16, hybrid_weight=1.0, fm_weight=0.0)
    source.save_pretrained(tmp_path / "contrastive")
    torch.manual_seed(1)
    target = build_counterfactual_model("tiny", "image", 2, 16, hybrid_weight=1.0)
    decoder_before = {k: v.clone() for k, v in target.decoder.state_dict().items()}
    copied = warm_start(target, tmp_path / "contrastive")
    assert any(k.startswith("physics_head.") for k in copied)
    for name in ("physics_encoder", "instrument_encoder", "physics_head"):
        for a, b in zip(
            getattr(source, name).state_dict().values(),
            getattr(target, name).state_dict().values(),
            strict=True,
        ):
            assert torch.equal(a, b)
    for k, v in target.decoder.state_dict().items():
        assert torch.equal(v, decoder_before[k])
    wide = build_counterfactual_model("tiny", "image", 2, 16, token_dim=12)
    with pytest.raises(ConfigError, match="token_dim"):
        warm_start(wide, tmp_path / "contrastive")
    with pytest.raises(FileNotFoundError, match="init_from"):
        warm_start(target, tmp_path / "nowhere")


def test_init_from_in_the_training_config(sky_store, tmp_path, one_thread):
    torch.manual_seed(0)
    cfg = CounterfactualTrainConfig(preset="tiny", model_overrides={"hybrid_weight": 1.0})
    first = build_for_store(sky_store, cfg)
    first.save_pretrained(tmp_path / "m")
    torch.manual_seed(5)
    second = build_for_store(sky_store, replace(cfg, init_from=str(tmp_path / "m")))
    p1 = dict(first.physics_encoder.named_parameters())
    for k, v in second.physics_encoder.named_parameters():
        assert torch.equal(v, p1[k])


def test_adversary_reverses_its_gradient_into_the_physics_encoder(sky_store, one_thread):
    views = ViewDataset(sky_store, "train", n_instrument=2)
    batch = collate_views(views.__getitems__(list(range(8))))
    torch.manual_seed(0)
    model = build_counterfactual_model(
        "tiny", "image", 2, 16, adversary_weight=1.0, n_instruments=2, fm_weight=1.0
    ).train()
    losses = model.loss(batch, torch.Generator().manual_seed(0))
    assert set(losses) >= {"fm", "adv", "total"} and losses["adv"] > 0
    # d(adv)/d(head) descends the classification loss; the encoder gets the negated gradient
    # of that same loss, so it ascends it.
    model.zero_grad()
    losses["adv"].backward()
    g_reversed = [p.grad.clone() for p in model.physics_encoder.parameters() if p.grad is not None]
    head_grad = [p.grad.clone() for p in model.adversary.parameters()]
    model.zero_grad()
    mask = batch["physics_mask"].bool()
    z = model._encode_views(model.physics_encoder, batch["physics"], mask)[mask].flatten(1)
    plain = torch.nn.functional.cross_entropy(model.adversary(z), batch["physics_instrument"][mask])
    plain.backward()
    g_plain = [p.grad for p in model.physics_encoder.parameters() if p.grad is not None]
    assert len(g_plain) == len(g_reversed) > 0
    for a, b in zip(g_reversed, g_plain, strict=True):
        torch.testing.assert_close(a, -b, rtol=1e-4, atol=1e-6)
    for a, p in zip(head_grad, model.adversary.parameters(), strict=True):
        torch.testing.assert_close(a, p.grad, rtol=1e-4, atol=1e-6)
    assert any(g.abs().sum() > 0 for g in g_plain)
    with pytest.raises(ConfigError, match="n_instruments"):
        build_counterfactual_model("tiny", "image", 2, 16, adversary_weight=1.0)


@pytest.mark.slow
def test_training_with_every_lever_on(sky_store, tmp_path, one_thread):
    from whatsreal.train.counterfactual import fit_counterfactual

    base = dict(preset="tiny", batch_size=8, max_steps=2, val_every=2, val_batches=1)
    base.update(ckpt_every=2, progress=False, lr=1e-3)
    warm = fit_counterfactual(
        sky_store,
        tmp_path / "warm",
        CounterfactualTrainConfig(**base, model_overrides={"hybrid_weight": 1.0, "fm_weight": 0}),
    )
    cfg = CounterfactualTrainConfig(
        **base,
        batching="sky",
        init_from=str(tmp_path / "warm" / "model"),
        model_overrides={"hybrid_weight": 1.0, "adversary_weight": 0.5},
    )
    model = fit_counterfactual(sky_store, tmp_path / "all", cfg)
    assert model.adversary_weight == 0.5 and model.config["n_instruments"] == 2
    log = (tmp_path / "all" / "logs" / "metrics.csv").read_text()
    assert "val/adv" in log  # train metrics are logged every 10 steps
    # The run started from the warm encoders and moved away from them.
    moved = [
        not torch.equal(a, b)
        for a, b in zip(
            warm.physics_encoder.parameters(), model.physics_encoder.parameters(), strict=True
        )
    ]
    assert any(moved)
    with pytest.raises(ConfigError, match="batching"):
        fit_counterfactual(
            sky_store, tmp_path / "bad", CounterfactualTrainConfig(**base, batching="nearby")
        )
