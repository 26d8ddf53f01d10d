"""Does a model separate physics from observing conditions? Seed 000 Fig. 5, per survey.

Pooled over surveys, survey identity alone explains PSF and depth, so a pooled probe cannot
tell whether an instrument latent sees the conditions. Here every survey's own conditions
are probed *within that survey* (DESIGN.md §6), from:

- the physics latent and the instrument latent of each model; the instrument latent both of
  the observation itself and pooled (mean) over it and its ``k`` sky neighbours, which is
  what the instrument encoder is given in training;
- a random-init encoder of the same architecture;
- a classical anchor: the log robust spread (MAD) of each band's border pixels (sky noise);
- two supervised ResNet references trained on the same images: a *same-survey* ResNet that
  sees the observation and its sky neighbours (the information ceiling) and seed 000's
  *cross-predict* ResNet that sees the other survey's image of the same galaxy (the spatial
  part both surveys share).

Leakage is split in two: survey identity from the physics latent (a classifier; chance is
the majority fraction) and within-survey conditions. Cross-survey transfer trains a probe on
one survey's physics latents and tests it on the other survey's latents of other galaxies.
"""

from __future__ import annotations

import copy
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from whatsreal.evaluate.galaxies import (
    PHYSICS_PARAMS,
    paired_rows,
    probe_r2,
    split_sources,
    truth_table,
)
from whatsreal.evaluate.probes import (
    ProbeSettings,
    classification_accuracy,
    r2_score,
)
from whatsreal.infer.embed import embed_rows
from whatsreal.sampling import SplitSpec, sky_context_rows
from whatsreal.store import ObservationStore
from whatsreal.utils import save_figure

__all__ = [
    "CONDITION_PARAMS",
    "SURVEY_PHYSICS_PARAMS",
    "TRANSFER_PARAMS",
    "ReferenceRegressor",
    "SeparationSettings",
    "border_noise_features",
    "condition_table",
    "cross_survey_transfer",
    "evaluate_separation",
    "fig5_figure",
    "linear_r2",
    "pool_context",
    "predict_reference",
    "separation_figure",
    "separation_goals",
    "survey_identity",
    "train_reference",
]

BANDS = ("g", "r", "i", "z")
# Per-band conditions as seed 000 Table 4 lists them (PSF size and depth in every band), and
# the sky noise in every band (the condition an image shows most directly); the others in i.
# sky_sigma and n_exp enter as logs: they act multiplicatively.
CONDITION_PARAMS = (
    *(f"psf_fwhm_{b}" for b in BANDS),
    *(f"depth_{b}" for b in BANDS),
    *(f"sky_sigma_{b}" for b in BANDS),
    "n_exp_i",
    "psf_e1_i",
    "psf_e2_i",
    "ebv",
)
SURVEY_PHYSICS_PARAMS = PHYSICS_PARAMS  # the physics truth every galaxy probe reads
TRANSFER_PARAMS = ("mag_i", "g_r", "r_i", "i_z", "r_half", "e1", "e2")


@dataclass
class SeparationSettings:
    """What :func:`evaluate_separation` measures and on how many galaxies."""

    surveys: Sequence[str] = ("hsc", "legacy")
    n_probe_train: int = 2000  # training galaxies whose observations train the probes
    n_test: int = 1000  # held-out galaxies the probes are scored on
    k_context: int = 5  # sky neighbours pooled into the context instrument latent
    reference_minutes: float = 4.0  # wall-clock budget of each supervised reference
    reference_max_steps: int = 100_000
    reference_batch: int = 64
    reference_lr: float = 1e-3
    reference_backbone: str = "resnet18"
    references: bool = True
    # also probe the InfoNCE projection heads' outputs (physics_head, instrument_head), the
    # space the contrastive terms act on: a diagnostic of where the invariance sits
    head_outputs: bool = False
    probe: ProbeSettings = field(default_factory=ProbeSettings)
    splits: SplitSpec = field(default_factory=SplitSpec)
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.probe, Mapping):
            self.probe = ProbeSettings(**self.probe)
        if isinstance(self.splits, Mapping):
            self.splits = SplitSpec(**self.splits)
        self.surveys = tuple(self.surveys)
        if len(self.surveys) < 2:
            raise ValueError(f"surveys needs at least two names; got {self.surveys}")
        for key in ("n_probe_train", "n_test", "reference_batch"):
            if int(getattr(self, key)) < 1:
                raise ValueError(f"SeparationSettings.{key} must be >= 1")
        if self.k_context < 0:
            raise ValueError(f"SeparationSettings.k_context must be >= 0; got {self.k_context}")


# --------------------------------------------------------------------------- truth
def condition_table(store: ObservationStore, rows: np.ndarray) -> dict[str, np.ndarray]:
    """The observing conditions of each row (:data:`CONDITION_PARAMS` that the store has)."""
    t = store.truth_obs
    rows = np.asarray(rows, dtype=np.int64)
    out: dict[str, np.ndarray] = {}
    for name in CONDITION_PARAMS:
        base, _, band = name.rpartition("_")
        if name == "ebv":
            base, band = "ebv", ""
        if base not in t:
            continue
        v = np.asarray(t[base], dtype=np.float64)[rows]
        if v.ndim == 2:
            v = v[:, BANDS.index(band)] if band in BANDS else v.mean(1)
        out[name] = np.log10(np.maximum(v, 1e-30)) if base in ("sky_sigma", "n_exp") else v
    return out


def condition_spread(
    store: ObservationStore, survey: str, n: int = 3000, k: int = 5
) -> dict[str, dict[str, float]]:
    """How much each observing condition varies within one survey, and how much of it sky
    neighbours share: {condition: {"std", "neighbour_corr"}} over the survey's first ``n``
    observations. ``std`` is in :func:`condition_table`'s units (arcsec, mag, dex);
    ``neighbour_corr`` is the mean over the ``k`` context slots of the correlation between
    an observation's value and its neighbour's (what the instrument encoder can pool)."""
    if survey not in store.instruments:
        raise ValueError(f"survey {survey!r} not in {store.path}; it has {store.instruments}")
    rows = np.flatnonzero(np.asarray(store.instrument) == store.instruments.index(survey))[:n]
    if rows.size < 3:
        raise ValueError(f"{store.path}: {survey} has {rows.size} observations; need >= 3")
    own = condition_table(store, rows)
    ctx = sky_context_rows(store, rows, k)
    out: dict[str, dict[str, float]] = {}
    for name, values in own.items():
        corrs = []
        for j in range(ctx.shape[1]):
            have = ctx[:, j] >= 0
            if have.sum() < 3 or np.std(values[have]) == 0:
                continue
            other = condition_table(store, ctx[have, j])[name]
            if np.std(other) > 0:
                corrs.append(float(np.corrcoef(values[have], other)[0, 1]))
        out[name] = {
            "std": float(np.std(values)),
            "neighbour_corr": float(np.mean(corrs)) if corrs else math.nan,
        }
    return out


def physics_table(store: ObservationStore, rows: np.ndarray) -> dict[str, np.ndarray]:
    """The physical parameters of each row's source (log10 r_half, as the probes use it)."""
    t = truth_table(store, np.asarray(rows, dtype=np.int64))
    return {k: t[k] for k in SURVEY_PHYSICS_PARAMS if k in t}


# --------------------------------------------------------------------------- features
def border_noise_features(flux: np.ndarray, width: int = 4) -> np.ndarray:
    """Classical noise anchor: log10 of 1.4826 x the median absolute deviation of each band's
    border pixels (a ``width``-pixel frame, mostly sky). (N, C, H, W) -> (N, C)."""
    flux = np.asarray(flux, dtype=np.float64)
    if flux.ndim != 4:
        raise ValueError(f"flux must be (N, C, H, W); got shape {flux.shape}")
    frame = np.ones(flux.shape[-2:], dtype=bool)
    frame[width:-width, width:-width] = False
    border = flux[..., frame]  # (N, C, n_border)
    med = np.median(border, axis=-1, keepdims=True)
    mad = 1.4826 * np.median(np.abs(border - med), axis=-1)
    return np.log10(np.maximum(mad, 1e-30))


def raw_pixel_features(
    flux: np.ndarray, scale: Sequence[float], fit: np.ndarray, n_components: int = 128
) -> np.ndarray:
    """The raw-pixel baseline: each band's ``asinh(flux / scale)`` (the models' own stretch),
    flattened and reduced by one PCA fitted on the rows ``fit`` (so every survey lands in
    the same space and a probe's MLP sees a few hundred numbers, not 9,216)."""
    from sklearn.decomposition import PCA

    c = flux.shape[1]
    x = np.arcsinh(
        flux / np.asarray(scale, dtype=np.float32).reshape(1, c, *([1] * (flux.ndim - 2)))
    )
    x = x.reshape(len(flux), -1)
    k = int(min(n_components, len(fit), x.shape[1]))
    return PCA(n_components=k, random_state=0).fit(x[fit]).transform(x).astype(np.float32)


def pool_context(z: np.ndarray, own: np.ndarray, context: np.ndarray) -> np.ndarray:
    """Mean of each observation's latent with its context's latents.

    ``own`` (N,) and ``context`` (N, k) index rows of ``z`` (M, d); -1 marks an empty
    context slot. The observation itself always counts, so an empty context returns its own
    latent."""
    z = np.asarray(z, dtype=np.float64)
    own = np.asarray(own, dtype=np.int64)
    context = np.asarray(context, dtype=np.int64).reshape(own.size, -1)
    total = z[own].copy()
    count = np.ones(own.size)
    for j in range(context.shape[1]):
        have = context[:, j] >= 0
        total[have] += z[context[have, j]]
        count += have
    return total / count[:, None]


# --------------------------------------------------------------------------- probes
def linear_r2(
    x_train: np.ndarray,
    y_train: Mapping[str, np.ndarray],
    x_test: np.ndarray,
    y_test: Mapping[str, np.ndarray],
) -> dict[str, float]:
    """Test R² of a cross-validated ridge regression for every target."""
    from sklearn.linear_model import RidgeCV
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    out = {}
    for name in y_train:
        reg = make_pipeline(StandardScaler(), RidgeCV(alphas=np.logspace(-3, 3, 13)))
        reg.fit(x_train, y_train[name])
        out[name] = r2_score(y_test[name], reg.predict(x_test))
    return out


def survey_identity(
    x_train: np.ndarray,
    s_train: np.ndarray,
    x_test: np.ndarray,
    s_test: np.ndarray,
    settings: ProbeSettings | None = None,
    seed: int = 0,
) -> dict[str, float]:
    """Accuracy of the MLP classifier naming an observation's survey from its features,
    with chance (the majority fraction of the test set)."""
    labels = np.concatenate([s_train, s_test]).astype(np.int64)
    feats = np.concatenate([x_train, x_test])
    n = len(s_train)
    acc = classification_accuracy(
        feats,
        labels,
        np.arange(n),
        np.arange(n, labels.size),
        int(labels.max()) + 1,
        settings=settings,
        seed=seed,
    )
    chance = float(np.bincount(s_test.astype(np.int64)).max() / max(len(s_test), 1))
    return {"accuracy": acc, "chance": chance}


def cross_survey_transfer(
    x_src_train: np.ndarray,
    y_src_train: Mapping[str, np.ndarray],
    x_dst_train: np.ndarray,
    y_dst_train: Mapping[str, np.ndarray],
    x_dst_test: np.ndarray,
    y_dst_test: Mapping[str, np.ndarray],
    settings: ProbeSettings | None = None,
    seed: int = 0,
) -> dict[str, dict[str, float]]:
    """ "Label in one survey, infer in another": a probe trained on the source survey's
    latents and one trained on the destination's, both scored on the destination's test set.
    Returns {param: {"in_survey", "transfer", "gap"}} (gap = in_survey - transfer)."""
    own = probe_r2(x_dst_train, y_dst_train, x_dst_test, y_dst_test, settings, seed)
    moved = probe_r2(x_src_train, y_src_train, x_dst_test, y_dst_test, settings, seed)
    return {k: {"in_survey": own[k], "transfer": moved[k], "gap": own[k] - moved[k]} for k in own}


# --------------------------------------------------------------------------- references
class ReferenceRegressor(nn.Module):
    """Supervised reference: a timm ResNet on a *set* of images (mean of per-image features,
    padded slots masked), then a linear head to the standardised targets."""

    def __init__(
        self,
        in_channels: int,
        n_outputs: int,
        backbone: str = "resnet18",
        scale: Sequence[float] | None = None,
    ) -> None:
        super().__init__()
        import timm

        self.backbone = timm.create_model(
            backbone, pretrained=False, num_classes=0, in_chans=in_channels
        )
        self.head = nn.Linear(self.backbone.num_features, n_outputs)
        s = (
            torch.ones(in_channels)
            if scale is None
            else torch.as_tensor(scale, dtype=torch.float32)
        )
        self.register_buffer("scale", s.view(1, -1, 1, 1))

    def forward(self, views: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """views (B, V, C, H, W) in flux units, mask (B, V) -> predictions (B, n_outputs)."""
        b, v = views.shape[:2]
        x = torch.asinh(views.flatten(0, 1) / self.scale)
        f = self.backbone(x).view(b, v, -1)
        m = mask.to(f.dtype)[..., None]
        pooled = (f * m).sum(1) / m.sum(1).clamp_min(1.0)
        return self.head(pooled)


def _gather_views(flux: np.ndarray, lookup: np.ndarray, rows: np.ndarray):
    """(B, V) store rows (-1 = empty) -> views (B, V, ...) and mask, from preloaded flux."""
    mask = rows >= 0
    idx = lookup[np.maximum(rows, 0)]
    views = flux[idx] * mask[(...,) + (None,) * (flux.ndim - 1)]
    return torch.from_numpy(views), torch.from_numpy(mask)


def _preload(store: ObservationStore, view_rows: Sequence[np.ndarray]):
    rows = np.unique(np.concatenate([r[r >= 0].ravel() for r in view_rows]))
    lookup = np.full(store.n_obs, -1, dtype=np.int64)
    lookup[rows] = np.arange(rows.size)
    return store.read(rows)["flux"].astype(np.float32), lookup


def train_reference(
    store: ObservationStore,
    view_rows: np.ndarray,
    targets: np.ndarray,
    minutes: float,
    max_steps: int = 100_000,
    batch_size: int = 64,
    lr: float = 1e-3,
    backbone: str = "resnet18",
    seed: int = 0,
) -> tuple[ReferenceRegressor, dict[str, Any]]:
    """Train a :class:`ReferenceRegressor` on sets of store rows ``view_rows`` (N, V; -1 =
    empty) to predict ``targets`` (N, P) for a wall-clock budget (AdamW, cosine over the
    steps that fit, Smooth-L1 on standardised targets as the probes use)."""
    from whatsreal.models.counterfactual import robust_scale

    view_rows = np.asarray(view_rows, dtype=np.int64)
    targets = np.asarray(targets, dtype=np.float64)
    if view_rows.ndim != 2 or targets.ndim != 2 or len(view_rows) != len(targets):
        raise ValueError(
            f"view_rows (N, V) and targets (N, P) must match; got {view_rows.shape} "
            f"and {targets.shape}"
        )
    flux, lookup = _preload(store, [view_rows])
    ivar = (
        store.read(np.flatnonzero(lookup >= 0)[:2000], ("ivar",))["ivar"]
        if "ivar" in store.arrays
        else None
    )
    scale = robust_scale(flux[:2000], ivar)
    y_mu, y_sd = targets.mean(0), targets.std(0) + 1e-12
    y = torch.from_numpy(((targets - y_mu) / y_sd).astype(np.float32))
    torch.manual_seed(seed)
    model = ReferenceRegressor(flux.shape[1], targets.shape[1], backbone, scale)
    model.y_mu, model.y_sd = y_mu, y_sd
    rng = np.random.default_rng(seed)

    def loss_of_batch() -> torch.Tensor:
        idx = rng.integers(0, len(view_rows), batch_size)
        views, mask = _gather_views(flux, lookup, view_rows[idx])
        return F.smooth_l1_loss(model(views, mask), y[idx])

    info = fit_for_budget(model, loss_of_batch, minutes, lr, max_steps)
    info.update(train_examples=len(view_rows), views_per_example=int(view_rows.shape[1]))
    return model, info


def fit_for_budget(
    model: nn.Module,
    loss_of_batch: Callable[[], torch.Tensor],
    minutes: float,
    lr: float,
    max_steps: int = 100_000,
    probe_steps: int = 5,
) -> dict[str, Any]:
    """Train ``model`` on ``loss_of_batch()`` (a fresh batch's loss per call) for a wall-clock
    budget: AdamW, a few timed steps, then a cosine schedule over the steps that fit, so every
    supervised reference ends its schedule inside its minutes. Leaves the model in eval mode.
    Returns {"steps", "seconds", "final_loss"}."""
    opt = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=1e-4)
    model.train()

    def step(lr_now: float) -> float:
        for g in opt.param_groups:
            g["lr"] = lr_now
        loss = loss_of_batch()
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        return loss.item()

    t0 = time.perf_counter()
    for _ in range(probe_steps):
        step(lr)
    per_step = (time.perf_counter() - t0) / probe_steps
    steps = int(min(max_steps, max(probe_steps, minutes * 60 / per_step - probe_steps)))
    loss = math.nan
    for k in range(steps):
        loss = step(lr * 0.5 * (1 + math.cos(math.pi * k / max(steps, 1))))
        if not math.isfinite(loss):  # a diverged reference must not score as a result
            raise RuntimeError(
                f"{type(model).__name__} diverged at step {k + probe_steps} (loss {loss}); "
                "lower the learning rate"
            )
    model.eval()
    return {
        "steps": steps + probe_steps,
        "seconds": round(time.perf_counter() - t0, 1),
        "final_loss": loss,
    }


@torch.inference_mode()
def predict_reference(
    model: ReferenceRegressor, store: ObservationStore, view_rows: np.ndarray, batch_size: int = 256
) -> np.ndarray:
    """Predictions (N, P) in the targets' units for sets of store rows (N, V)."""
    view_rows = np.asarray(view_rows, dtype=np.int64)
    flux, lookup = _preload(store, [view_rows])
    out = []
    for lo in range(0, len(view_rows), batch_size):
        views, mask = _gather_views(flux, lookup, view_rows[lo : lo + batch_size])
        out.append(model(views, mask).numpy())
    return np.concatenate(out) * model.y_sd + model.y_mu


# --------------------------------------------------------------------------- pipeline
def _galaxy_sets(store: ObservationStore, s: SeparationSettings) -> dict[str, np.ndarray]:
    """(N, n_surveys) rows of probe-train and test galaxies seen by every survey."""
    parts = split_sources(store, s.splits)
    rng = np.random.default_rng(s.seed)
    out = {}
    for split, n in (("train", s.n_probe_train), ("test", s.n_test)):
        src = parts[split]
        src = np.sort(rng.choice(src, size=min(n * 2, src.size), replace=False))
        cols = [paired_rows(store, src, s.surveys[0], other) for other in s.surveys[1:]]
        # keep galaxies every survey saw, in the first survey's order
        common = set(cols[0][:, 0].tolist())
        for c in cols[1:]:
            common &= set(c[:, 0].tolist())
        keep = [r for r in cols[0][:, 0] if r in common][:n]
        table = {s.surveys[0]: np.array(keep, dtype=np.int64)}
        for other, c in zip(s.surveys[1:], cols, strict=True):
            m = dict(zip(c[:, 0].tolist(), c[:, 1].tolist(), strict=True))
            table[other] = np.array([m[r] for r in keep], dtype=np.int64)
        out[split] = np.stack([table[name] for name in s.surveys], axis=1)
    return out


def _latents(
    model: nn.Module,
    store: ObservationStore,
    rows: np.ndarray,
    context: np.ndarray,
    heads: bool = False,
):
    """physics, instrument (own image) and instrument_context (pooled) latents of rows; with
    ``heads``, also the projection heads' outputs of the own-image latents (when the model
    has heads that are not the identity). A single-latent model gives ``{"latent": ...}``
    (and ``latent_head``)."""
    single = bool(getattr(model, "single_latent", False))
    uniq = np.unique(rows if single else np.concatenate([rows, context[context >= 0]]))
    z = embed_rows(model, store, uniq, batch_size=256)
    pos = np.full(store.n_obs, -1, dtype=np.int64)
    pos[uniq] = np.arange(uniq.size)
    own = pos[rows]
    if "latent" in z:
        out = {"latent": z["latent"][own]}
        head = getattr(model, "physics_head", None) if heads else None
        if head is not None and not isinstance(head, nn.Identity):
            with torch.inference_mode():
                out["latent_head"] = head(torch.from_numpy(out["latent"])).numpy()
        return out
    ctx = np.where(context >= 0, pos[np.maximum(context, 0)], -1)
    out = {
        "physics": z["physics"][own],
        "instrument": z["instrument"][own],
        "instrument_context": pool_context(z["instrument"], own, ctx),
    }
    for key in ("physics", "instrument") if heads else ():
        head = getattr(model, f"{key}_head", None)
        if head is None or isinstance(head, nn.Identity):
            continue
        with torch.inference_mode():
            out[f"{key}_head"] = head(torch.from_numpy(out[key])).numpy()
    return out


def _targets(store: ObservationStore, rows: np.ndarray) -> dict[str, np.ndarray]:
    return {**physics_table(store, rows), **condition_table(store, rows)}


def _split_targets(y: Mapping[str, np.ndarray], n: int):
    return {k: v[:n] for k, v in y.items()}, {k: v[n:] for k, v in y.items()}


def _references(
    store: ObservationStore, s: SeparationSettings, j: int, say
) -> tuple[dict[str, dict[str, float]], dict[str, Any]]:
    """Same-survey (own image + sky context) and cross-predict (other survey's image) ResNets
    for survey j's conditions, trained on training galaxies, scored on the test galaxies."""
    parts = split_sources(store, s.splits)
    survey, other = s.surveys[j], s.surveys[1 if j == 0 else 0]
    pairs_tr = paired_rows(store, parts["train"], survey, other)
    sets = _galaxy_sets(store, s)
    te = sets["test"]
    te_pairs = np.stack([te[:, j], te[:, 1 if j == 0 else 0]], axis=1)
    names = [k for k in CONDITION_PARAMS if k in condition_table(store, pairs_tr[:1, 0])]
    y_tr = condition_table(store, pairs_tr[:, 0])
    y_te = condition_table(store, te_pairs[:, 0])
    y_tr_arr = np.stack([y_tr[k] for k in names], axis=1)
    allowed = np.isin(store.source_id, parts["train"])
    inputs = {
        "same_survey_resnet": (
            np.concatenate(
                [pairs_tr[:, :1], sky_context_rows(store, pairs_tr[:, 0], s.k_context, allowed)],
                axis=1,
            ),
            np.concatenate(
                [te_pairs[:, :1], sky_context_rows(store, te_pairs[:, 0], s.k_context)], axis=1
            ),
        ),
        "cross_predict_resnet": (pairs_tr[:, 1:2], te_pairs[:, 1:2]),
    }
    scores, info = {}, {}
    for ref, (x_tr, x_te) in inputs.items():
        say(f"  {survey}: training the {ref} for {s.reference_minutes} min")
        model, meta = train_reference(
            store,
            x_tr,
            y_tr_arr,
            s.reference_minutes,
            s.reference_max_steps,
            s.reference_batch,
            s.reference_lr,
            s.reference_backbone,
            s.seed,
        )
        pred = predict_reference(model, store, x_te)
        scores[ref] = {k: r2_score(y_te[k], pred[:, i]) for i, k in enumerate(names)}
        info[ref] = meta
    return scores, info


def _raw_pixel_baseline(store, s: SeparationSettings, rows, n_tr: int, probes_for):
    """Per-survey probes, survey identity and cross-survey retrieval of the raw pixels
    (:func:`raw_pixel_features`, one PCA fitted on every survey's probe-train rows)."""
    from whatsreal.evaluate.galaxies import retrieval
    from whatsreal.train.counterfactual import default_scale

    scale = default_scale(store, "image")
    flux = np.concatenate([store.read(rows[name])["flux"] for name in s.surveys])
    n = len(rows[s.surveys[0]])
    fit = np.concatenate([np.arange(n_tr) + j * n for j in range(len(s.surveys))])
    feats = raw_pixel_features(flux, scale, fit)
    per = {name: feats[j * n : (j + 1) * n] for j, name in enumerate(s.surveys)}
    codes = np.arange(len(s.surveys))
    n_te = n - n_tr
    out: dict[str, Any] = {
        "n_components": int(feats.shape[1]),
        "survey_identity": survey_identity(
            np.concatenate([per[name][:n_tr] for name in s.surveys]),
            np.repeat(codes, n_tr),
            np.concatenate([per[name][n_tr:] for name in s.surveys]),
            np.repeat(codes, n_te),
            s.probe,
            s.seed,
        ),
    }
    a, b = s.surveys[:2]
    out["retrieval"] = retrieval(per[a][n_tr:], per[b][n_tr:])
    for name in s.surveys:
        out[f"probes_{name}"] = probes_for(per[name], name)
    return out


def evaluate_separation(
    store: ObservationStore,
    models: Mapping[str, nn.Module],
    random_model: nn.Module | None = None,
    settings: SeparationSettings | None = None,
    progress: bool = True,
    shared: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    """Per-survey probes (seed 000 Fig. 5), survey identity and cross-survey transfer for
    each dual-latent model, beside the model-free references (random encoder, border-noise
    anchor, supervised ResNets). Returns {"shared": ..., "models": {name: ...}}.

    ``shared``: the "shared" part of an earlier call with the same store and settings; its
    references are kept instead of retrained (they do not depend on the models)."""
    from whatsreal.evaluate.galaxies import retrieval

    s = settings or SeparationSettings()
    t_start = time.perf_counter()

    def say(msg: str) -> None:
        if progress:
            print(f"[separation {time.perf_counter() - t_start:6.0f} s] {msg}", flush=True)

    missing = [name for name in s.surveys if name not in store.instruments]
    if missing:
        raise ValueError(f"surveys {missing} not in {store.path}; it has {store.instruments}")
    sets = _galaxy_sets(store, s)
    n_tr, n_te = len(sets["train"]), len(sets["test"])
    if min(n_tr, n_te) < 10:
        raise ValueError(
            f"{store.path}: only {n_tr} training and {n_te} test galaxies are seen by every "
            f"survey of {list(s.surveys)}; the probes need at least 10 each (more sources, "
            "or surveys that overlap)"
        )
    say(f"{n_tr} probe-train and {n_te} test galaxies seen by {', '.join(s.surveys)}")
    rows = {
        name: np.concatenate([sets["train"][:, j], sets["test"][:, j]])
        for j, name in enumerate(s.surveys)
    }
    context = {name: sky_context_rows(store, r, s.k_context) for name, r in rows.items()}
    y = {name: _targets(store, r) for name, r in rows.items()}
    probe = s.probe

    def probes_for(feats: np.ndarray, name: str) -> dict[str, float]:
        y_tr, y_te = _split_targets(y[name], n_tr)
        return probe_r2(feats[:n_tr], y_tr, feats[n_tr:], y_te, probe, s.seed)

    fresh: dict[str, Any] = {
        "surveys": list(s.surveys),
        "n_probe_train": n_tr,
        "n_test": n_te,
        "k_context": s.k_context,
        "per_survey": {},
    }
    if shared is not None:
        stale = {k: (shared.get(k), v) for k, v in fresh.items() if k != "per_survey"}
        stale = {k: pair for k, pair in stale.items() if pair[0] != pair[1]}
        if stale:
            raise ValueError(
                f"the shared references were measured on other galaxy sets ({stale}: "
                "(given, now)); rerun without reusing them"
            )
        say("reusing the shared references")
        fresh = copy.deepcopy(dict(shared))
    for j, name in enumerate(s.surveys if shared is None else ()):
        say(f"{name}: border-noise anchor")
        feats = border_noise_features(store.read(rows[name])["flux"])
        y_tr, y_te = _split_targets(y[name], n_tr)
        entry = {
            "border_noise": probes_for(feats, name),
            "border_noise_linear": linear_r2(feats[:n_tr], y_tr, feats[n_tr:], y_te),
        }
        if random_model is not None:
            z = _latents(random_model, store, rows[name], context[name])
            entry["random_physics"] = probes_for(z["physics"], name)
            entry["random_instrument_context"] = probes_for(z["instrument_context"], name)
        if s.references:
            refs, info = _references(store, s, j, say)
            entry.update(refs)
            fresh.setdefault("references", {})[name] = info
        fresh["per_survey"][name] = entry
    if "raw_pixels" not in fresh:
        say("raw-pixel baseline (asinh pixels, PCA)")
        fresh["raw_pixels"] = _raw_pixel_baseline(store, s, rows, n_tr, probes_for)
        for name in s.surveys:
            fresh["per_survey"][name]["raw_pixels"] = fresh["raw_pixels"].pop(f"probes_{name}")

    out_models: dict[str, Any] = {}
    for mname, model in models.items():
        say(f"{mname}: latents and probes")
        z = {
            name: _latents(model, store, rows[name], context[name], s.head_outputs)
            for name in s.surveys
        }
        space = "physics" if "physics" in z[s.surveys[0]] else "latent"  # what retrieval uses
        res: dict[str, Any] = {"per_survey": {}, "space": space}
        for name in s.surveys:
            res["per_survey"][name] = {
                latent: probes_for(z[name][latent], name) for latent in z[name]
            }
        # survey identity, pooled over surveys
        codes = np.arange(len(s.surveys))
        res["survey_identity"] = {}
        for latent in [k for k in z[s.surveys[0]] if k != "instrument_context"]:
            x_tr = np.concatenate([z[name][latent][:n_tr] for name in s.surveys])
            x_te = np.concatenate([z[name][latent][n_tr:] for name in s.surveys])
            s_tr, s_te = np.repeat(codes, n_tr), np.repeat(codes, n_te)
            res["survey_identity"][latent] = survey_identity(x_tr, s_tr, x_te, s_te, probe, s.seed)
        res["transfer"] = {}
        for a in s.surveys:
            for b in s.surveys:
                if a == b:
                    continue
                keep = [k for k in TRANSFER_PARAMS if k in y[a]]
                ya_tr, _ = _split_targets({k: y[a][k] for k in keep}, n_tr)
                yb_tr, yb_te = _split_targets({k: y[b][k] for k in keep}, n_tr)
                za, zb = z[a][space], z[b][space]
                res["transfer"][f"{a}->{b}"] = cross_survey_transfer(
                    za[:n_tr], ya_tr, zb[:n_tr], yb_tr, zb[n_tr:], yb_te, probe, s.seed
                )
        a, b = s.surveys[:2]
        res["retrieval"] = retrieval(z[a][space][n_tr:], z[b][space][n_tr:])
        out_models[mname] = res
    if shared is None:
        fresh["seconds"] = round(time.perf_counter() - t_start, 1)
    return {"shared": fresh, "models": out_models}


# --------------------------------------------------------------------------- goals
GOAL_CONDITIONS = ("psf_fwhm_i", "depth_i")
LEAKAGE_CONDITIONS = tuple(k for k in CONDITION_PARAMS if k != "ebv")


def separation_goals(results: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """Issue 10's galaxy goals for each evaluated variant: {variant: {goal: {value, goal,
    met}}}. E(B-V) is left out of the physics-latent leakage: it is a foreground both surveys
    share, so the physics latent may carry it honestly (the cross-predict ResNet shows how
    much)."""
    shared = results["shared"]["per_survey"]
    goals: dict[str, dict[str, Any]] = {}
    for v, entry in results["variants"].items():
        ev = entry.get("evaluation")
        if not ev:
            continue
        g: dict[str, Any] = {}
        space = ev.get("space", "physics")
        name_of = "physics latent" if space == "physics" else "single latent"
        for survey, per in ev["per_survey"].items():
            ceiling = shared[survey].get("same_survey_resnet", {})
            for k in GOAL_CONDITIONS if "instrument_context" in per else ():
                val = per["instrument_context"][k]
                ceil = ceiling.get(k, math.nan)
                if math.isnan(ceil):  # references not run: the absolute floor alone
                    need, why = 0.5, "no ceiling measured"
                else:
                    need = 0.7 * ceil if ceil < 0.5 / 0.7 else max(0.7 * ceil, 0.5)
                    why = f"ceiling {ceil:.2f}"
                label = f"{survey}: instrument latent (+ context) R²({k})"
                g[f"{label} >= max(0.7 x ceiling, 0.5)"] = {
                    "value": val,
                    "goal": f">= {need:.2f} ({why})",
                    "met": bool(val >= need),
                }
            # the galaxy's leakage, judged on both: the own-image latent (the strict reading)
            # and the context-pooled one (what the model conditions on, and what the
            # condition goals above are judged on)
            for latent, name in (("instrument", "own image"), ("instrument_context", "+ context")):
                for k in ("mag_i", "r_half") if latent in per else ():
                    val = per[latent][k]
                    g[f"{survey}: instrument latent ({name}) R²({k}) <= 0.3"] = {
                        "value": val,
                        "goal": "<= 0.3",
                        "met": bool(val <= 0.3),
                    }
            leak = max(per[space][k] for k in LEAKAGE_CONDITIONS if k in per[space])
            g[f"{survey}: {name_of} max R²(conditions) <= 0.1"] = {
                "value": leak,
                "goal": "<= 0.1",
                "met": bool(leak <= 0.1),
            }
        ident = ev["survey_identity"][space]
        need = round(ident.get("chance", 0.5) + 0.15, 2)  # 0.65 for two balanced surveys
        g[f"{name_of} survey-identity accuracy <= {need:.2f}"] = {
            "value": ident["accuracy"],
            "goal": f"<= {need:.2f} (chance {ident.get('chance', 0.5):.2f} + 0.15)",
            "met": bool(ident["accuracy"] <= need),
        }
        worst = max(q["gap"] for t in ev["transfer"].values() for q in t.values())
        g["cross-survey transfer: worst gap <= 0.05"] = {
            "value": worst,
            "goal": "<= 0.05",
            "met": bool(worst <= 0.05),
        }
        for key, need in (("top1", 0.85), ("recall@10", 0.97)):
            val = ev["retrieval"][key]
            g[f"retrieval {key} >= {need}"] = {
                "value": val,
                "goal": f">= {need}",
                "met": bool(val >= need),
            }
        spec = results.get("config", {}).get("variants", {}).get(v) or {}
        full = spec.get("full_overlap")
        full_ev = results["variants"].get(full, {}).get("evaluation") if full else None
        fraction = float((spec.get("train") or {}).get("footprint_fraction", 1.0))
        # issue 12, item 5: a partial-overlap run against its full-overlap twin; the goal is
        # set at 20% overlap, so it binds runs at 20% or more (5% is reported, not judged)
        if full_ev and fraction >= 0.2 - 1e-9:
            ratio = ev["retrieval"]["top1"] / full_ev["retrieval"]["top1"]
            g[f"top-1 / {full}'s top-1 (full overlap) >= 0.9"] = {
                "value": ratio,
                "goal": ">= 0.9",
                "met": bool(ratio >= 0.9),
            }
        goals[v] = g
    return goals


# --------------------------------------------------------------------------- figure
def separation_figure(results: Mapping[str, Any], path: str | Path, variant: str | None = None):
    """Write :func:`fig5_figure` of one variant to ``path`` (PNG); returns the path."""
    fig = fig5_figure(results, variant)
    return save_figure(fig, path)


def fig5_figure(results: Mapping[str, Any], variant: str | None = None):
    """Seed 000 Fig. 5 per survey: probe R² of physics parameters and of that survey's own
    conditions from each representation of one variant (default: the last evaluated)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    evaluated = [v for v, e in results["variants"].items() if e.get("evaluation")]
    if not evaluated:
        raise ValueError("no evaluated variant to plot")
    variant = variant or evaluated[-1]
    ev = results["variants"][variant]["evaluation"]
    shared = results["shared"]["per_survey"]
    surveys = list(ev["per_survey"])
    space = ev.get("space", "physics")
    fig, axes = plt.subplots(len(surveys), 1, figsize=(13, 3.4 * len(surveys)), squeeze=False)
    series = (
        [
            ("single latent", lambda sv: ev["per_survey"][sv]["latent"], "tab:green"),
        ]
        if space == "latent"
        else [
            ("physics latent", lambda sv: ev["per_survey"][sv]["physics"], "tab:blue"),
            (
                "instrument latent (own image)",
                lambda sv: ev["per_survey"][sv]["instrument"],
                "salmon",
            ),
            (
                "instrument latent (+ sky context)",
                lambda sv: ev["per_survey"][sv]["instrument_context"],
                "tab:red",
            ),
        ]
    )
    series += [
        ("random encoder (physics)", lambda sv: shared[sv].get("random_physics", {}), "0.6"),
        ("raw pixels (PCA)", lambda sv: shared[sv].get("raw_pixels", {}), "tan"),
        ("border-noise anchor", lambda sv: shared[sv].get("border_noise", {}), "tab:olive"),
        ("same-survey ResNet", lambda sv: shared[sv].get("same_survey_resnet", {}), "k"),
        ("cross-predict ResNet", lambda sv: shared[sv].get("cross_predict_resnet", {}), "plum"),
    ]
    for ax, sv in zip(axes[:, 0], surveys, strict=True):
        params = list(ev["per_survey"][sv][space])
        x = np.arange(len(params))
        width = 0.8 / len(series)
        for i, (label, get, colour) in enumerate(series):
            vals = get(sv)
            h = [max(vals.get(p, np.nan), -0.2) for p in params]
            ax.bar(x + (i - len(series) / 2 + 0.5) * width, h, width, label=label, color=colour)
        n_phys = sum(p in SURVEY_PHYSICS_PARAMS for p in params)
        ax.axvspan(-0.5, n_phys - 0.5, color="0.92", zorder=-1)
        ax.set_xticks(x, params, rotation=45, ha="right", fontsize=8)
        ax.set_ylim(-0.2, 1.0)
        ax.axhline(0, color="k", lw=0.5)
        ax.set_ylabel(f"R² within {sv}")
        ax.set_title(f"{variant}: physics parameters (grey) and {sv}'s own conditions", fontsize=9)
    axes[0, 0].legend(fontsize=7, ncol=4, loc="upper right")
    fig.tight_layout()
    return fig
