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


def test_memory_negatives_only_add_to_the_denominator():
    from whatsreal.models.contrastive import multi_positive_info_nce

    torch.manual_seed(0)
    z = torch.randn(6, 4)
    labels = torch.tensor([0, 0, 1, 1, 2, 2])
    plain = multi_positive_info_nce(z, labels, 0.5)
    memory = torch.randn(5, 4)
    none_allowed = torch.zeros(6, 5, dtype=torch.bool)
    torch.testing.assert_close(
        multi_positive_info_nce(z, labels, 0.5, None, memory, none_allowed), plain
    )
    with_memory = multi_positive_info_nce(z, labels, 0.5, None, memory)
    assert with_memory > plain
    # known answer for one anchor pair: logsumexp(others + memory) - logsumexp(positives)
    zn, mn = torch.nn.functional.normalize(z, dim=1), torch.nn.functional.normalize(memory, dim=1)
    sim = zn @ zn.T / 0.5
    expect = []
    for a in range(6):
        others = torch.cat([sim[a][torch.arange(6) != a], zn[a] @ mn.T / 0.5])
        expect.append(torch.logsumexp(others, 0) - sim[a, a ^ 1])  # one positive: a's pair
    torch.testing.assert_close(with_memory, torch.stack(expect).mean())


def test_instrument_memory_fills_and_skips_the_anchors_own_sky_patch(sky_store, one_thread):
    views = ViewDataset(sky_store, "train", n_instrument=3)
    batch = collate_views(views.__getitems__(list(range(8))))
    assert batch["anchor_xyz"].shape == (8, 3)
    torch.testing.assert_close(batch["anchor_xyz"].norm(dim=1), torch.ones(8))
    torch.manual_seed(0)
    over = dict(hybrid_weight=1.0, instrument_negatives="same_instrument", instrument_memory=12)
    model = build_counterfactual_model("tiny", "image", 2, 16, **over).train()
    model.loss(batch)
    mem = model._memory["instrument"]
    assert mem["z"].shape[0] == 8 and "physics" not in model._memory  # this batch's anchors
    model.loss(batch)
    mem = model._memory["instrument"]
    assert mem["z"].shape[0] == 12  # capped at instrument_memory
    # the same anchors again: every memory entry at an anchor's own position is excluded
    owner = torch.arange(8)
    groups = torch.cat([batch["instrument"], batch["instrument"]])
    _, allowed = model._memory_negatives("instrument", batch, owner, groups)
    xyz = torch.cat([batch["anchor_xyz"], batch["anchor_xyz"]])
    same_place = xyz @ mem["xyz"].T > 0.999999
    assert same_place.any() and not (allowed & same_place).any()
    other_inst = groups[:, None] != mem["group"][None, :]
    assert not (allowed & other_inst).any()
    with pytest.raises(ConfigError, match="instrument_memory"):
        build_counterfactual_model("tiny", "image", 2, 16, instrument_memory=-1)


def test_physics_memory_keeps_earlier_anchors_as_negatives_but_never_their_own_source(
    sky_store, one_thread
):
    views = ViewDataset(sky_store, "train", n_instrument=3)
    batch = collate_views(views.__getitems__(list(range(8))))
    torch.manual_seed(0)
    over = dict(
        hybrid_weight=1.0, fm_weight=0.0, physics_negatives="same_instrument", physics_memory=12
    )
    model = build_counterfactual_model("tiny", "image", 2, 16, **over).train()
    first = model.loss(batch)["phys"]
    mem = model._memory["physics"]
    assert mem["z"].shape[0] == 8 and "instrument" not in model._memory
    torch.testing.assert_close(mem["z"].norm(dim=1), torch.ones(8))
    second = model.loss(batch)["phys"]
    assert model._memory["physics"]["z"].shape[0] == 12  # capped at physics_memory
    mem = model._memory["physics"]
    mask = batch["physics_mask"].bool()
    owner = torch.arange(8)[:, None].expand_as(mask)[mask]
    rows = torch.cat([batch["source"], batch["source"][owner]])
    groups = torch.cat([batch["instrument"], batch["physics_instrument"][mask]])
    _, allowed = model._memory_negatives("physics", batch, owner, groups)
    own = rows[:, None] == mem["source"][None, :]
    assert own.any() and not (allowed & own).any()  # a source is never its own negative
    other_inst = groups[:, None] != mem["group"][None, :]
    assert not (allowed & other_inst).any()
    # the same batch again, now with negatives remembered from the first pass: the same
    # weights, so the loss can only rise (more terms in each anchor's denominator)
    assert second >= first - 1e-6
    # the single latent may use it (its one encoder is the physics one)
    single = build_counterfactual_model(
        "tiny",
        "image",
        2,
        16,
        single_latent=True,
        hybrid_weight=1.0,
        fm_weight=0.0,
        physics_memory=4,
    ).train()
    single.loss(batch)
    assert single._memory["physics"]["z"].shape[0] == 4
    with pytest.raises(ConfigError, match="physics_memory"):
        build_counterfactual_model("tiny", "image", 2, 16, physics_memory=-1)


def test_band_drop_blanks_the_same_bands_in_every_instrument_input(sky_store, one_thread):
    views = ViewDataset(sky_store, "train", n_instrument=3)
    batch = collate_views(views.__getitems__(list(range(8))))
    model = build_counterfactual_model("tiny", "image", 2, 16, instrument_band_drop=0.5)
    seen = set()
    for seed in range(12):
        out = model._drop_bands(batch, torch.Generator().manual_seed(seed))
        kept = out["instrument_anchor"].abs().sum(dim=(0, 2, 3)) > 0
        assert kept.any()  # at least one band survives
        for c in range(2):
            same = torch.equal(out["instrument_views"][:, :, c], batch["instrument_views"][:, :, c])
            assert same == bool(kept[c])
            blank = not out["instrument_views"][:, :, c].any()
            assert blank == (not bool(kept[c]))
        torch.testing.assert_close(out["anchor"], batch["anchor"])  # physics input untouched
        seen.add(tuple(kept.tolist()))
    assert len(seen) > 1
    with pytest.raises(ConfigError, match="band_drop"):
        build_counterfactual_model("tiny", "image", 2, 16, instrument_band_drop=1.0)


def test_image_statistics_read_noise_size_and_concentration():
    from whatsreal.models.counterfactual import image_statistics

    g = torch.Generator().manual_seed(0)
    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    blob = lambda s: torch.exp(-((yy - 15.5) ** 2 + (xx - 15.5) ** 2) / (2 * s * s))  # noqa: E731
    noise = 0.05 * torch.randn(1, 1, 32, 32, generator=g)
    x = torch.cat([noise + 3 * blob(2), 2 * noise + 3 * blob(2), noise + 3 * blob(4)])
    st = image_statistics(x)  # (3, 3): log noise, log radius, log peak/total
    assert float(st[1, 0] - st[0, 0]) == pytest.approx(np.log(2), abs=1e-4)  # noise x2
    assert float(st[2, 1]) > float(st[0, 1]) + 0.2  # a wider profile: larger radius
    assert float(st[2, 2]) < float(st[0, 2]) - 0.8  # and lower concentration


def test_statistics_decoder_trains_the_instrument_encoder_only(sky_store, one_thread):
    views = ViewDataset(sky_store, "train", n_instrument=3)
    batch = collate_views(views.__getitems__(list(range(8))))
    torch.manual_seed(0)
    model = build_counterfactual_model("tiny", "image", 2, 16, stats_weight=1.0)
    out = model.loss(batch)
    assert {"fm", "stats", "total"} <= set(out) and float(out["stats"]) > 0
    out["stats"].backward()
    grads = lambda enc: [p.grad for p in enc.parameters() if p.grad is not None]  # noqa: E731
    assert any(g.abs().sum() > 0 for g in grads(model.instrument_encoder))
    assert not any(g.abs().sum() > 0 for g in grads(model.physics_encoder))
    with pytest.raises(ConfigError, match="stats_weight"):
        build_counterfactual_model("tiny", "image", 2, 16, stats_weight=-1.0)


@pytest.mark.slow
def test_freeze_encoders_trains_the_decoder_alone(sky_store, tmp_path, one_thread):
    from whatsreal.train.counterfactual import fit_counterfactual

    base = dict(preset="tiny", batch_size=8, max_steps=2, val_every=2, val_batches=1)
    base.update(ckpt_every=2, progress=False, lr=1e-2)
    warm = fit_counterfactual(
        sky_store,
        tmp_path / "warm",
        CounterfactualTrainConfig(**base, model_overrides={"hybrid_weight": 1.0, "fm_weight": 0}),
    )
    cfg = CounterfactualTrainConfig(
        **{**base, "max_steps": 3},
        init_from=str(tmp_path / "warm" / "model"),
        freeze_encoders=True,
        model_overrides={"hybrid_weight": 1.0},  # would move the encoders if they trained
    )
    model = fit_counterfactual(sky_store, tmp_path / "frozen", cfg)
    # Encoder weights and BatchNorm statistics are the warm run's, bit for bit ...
    for name in ("physics_encoder", "instrument_encoder"):
        theirs = getattr(warm, name).state_dict()
        for key, value in getattr(model, name).state_dict().items():
            assert torch.equal(value, theirs[key]), f"{name}.{key} changed"
    views = ViewDataset(sky_store, "test", n_instrument=0)
    x = collate_views(views.__getitems__(list(range(6))))["anchor"]
    for a, b in zip(model.embed(x), warm.embed(x), strict=True):
        assert torch.equal(a, b)
    # ... and the decoder, which started where the warm run's idle one did, has learned.
    assert any(
        not torch.equal(a, b)
        for a, b in zip(model.decoder.parameters(), warm.decoder.parameters(), strict=True)
    )
    log = (tmp_path / "frozen" / "logs" / "metrics.csv").read_text()
    assert "val/fm" in log and "val/phys" not in log


def test_freeze_encoders_refuses_what_it_cannot_do():
    with pytest.raises(ConfigError, match=r"train\.init_from"):
        CounterfactualTrainConfig(preset="tiny", freeze_encoders=True)
    model = build_counterfactual_model("tiny", "image", 2, 16, fm_weight=0.0, hybrid_weight=1.0)
    from whatsreal.train.counterfactual import CounterfactualTask

    cfg = CounterfactualTrainConfig(preset="tiny", init_from="m", freeze_encoders=True)
    with pytest.raises(ConfigError, match="fm_weight"):
        CounterfactualTask(model, cfg)
