"""Do physics-space anomalies find physical objects, and instrument-space ones artefacts?

The injection study of issue 13 (item 4). From held-out sources of a simulated store (the
splits a model was trained with, by the sampler's hash), a set of observations is built in
memory: the normal observations as the store holds them, a fraction replaced by rare
*physical* sources drawn under the same observations' conditions (rings and mergers; dips and
flares in light curves) and a fraction by normal observations with an *instrument* artefact
(satellite trails, bad columns, saturated stars; jumps and dropouts), see
:mod:`whatsreal.simulate.anomalies`. A ring is a ring in every survey, so every observation of
a galaxy host is replaced (normal and anomalous galaxies have the same number of
observations, and no anomaly sits next to its own normal twin); dips and flares are
transient, so they replace one observation of a star and its other observations stay
normal, as for a flare on a known star. An artefact replaces one observation.

Each space of each model is then scored by :func:`whatsreal.search.anomaly.knn_scores` and
:func:`~whatsreal.search.anomaly.iforest_scores` and judged by precision@k: the fraction of
the k highest-scoring observations that are of a class, with k the number injected of that
class (chance: the class's share of the set). Scores are computed over the pooled set and
within each instrument alone.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from whatsreal.errors import ConfigError
from whatsreal.evaluate.galaxies import split_sources
from whatsreal.sampling import SplitSpec
from whatsreal.simulate.anomalies import (
    GALAXY_ARTEFACTS,
    GALAXY_PHYSICAL,
    LABELS,
    LIGHTCURVE_ARTEFACTS,
    LIGHTCURVE_PHYSICAL,
    galaxy_prep_from_store,
    inject_galaxy_artefacts,
    inject_lightcurve_artefacts,
    inject_lightcurve_physical,
    lightcurve_parts,
    render_physical_galaxies,
)
from whatsreal.store import ObservationStore

__all__ = [
    "TRACK_KEYS",
    "AnomalySet",
    "AnomalySettings",
    "anomaly_checks",
    "anomaly_table",
    "check_run_split",
    "embed_spaces",
    "galaxy_anomaly_set",
    "lightcurve_anomaly_set",
    "pca_space",
    "precision_at_k",
    "run_anomaly_study",
    "score_spaces",
    "separability_auc",
    "settings_dict",
]

NORMAL, PHYSICAL, INSTRUMENT = 0, 1, 2


@dataclass
class AnomalySettings:
    """What one injection study builds and how it scores (one per modality)."""

    splits: SplitSpec = field(default_factory=SplitSpec)  # the model's training split
    use_splits: tuple[str, ...] = ("test",)  # held-out splits whose sources are used
    max_sources: int | None = None  # cap on held-out sources (None: all)
    physical_fraction: float = 0.01  # of the set's observations
    artefact_fraction: float = 0.01
    physical_kinds: tuple[str, ...] | None = None  # None: every kind of the modality
    artefact_kinds: tuple[str, ...] | None = None
    k: int = 10  # neighbours of the k-NN score
    iforest_trees: int = 200
    saturation_sigma: float = 300.0  # saturated stars: clip level in sky sigma
    n_controls: int = 8  # hosts re-rendered as normal galaxies to check the path is exact
    whiten: tuple[str, ...] = ()  # spaces also scored PCA-whitened, as "<space> (whitened)"
    seed: int = 0

    def __post_init__(self) -> None:
        if isinstance(self.splits, Mapping):
            self.splits = SplitSpec(**self.splits)
        self.use_splits = tuple(self.use_splits)
        self.whiten = tuple(self.whiten)
        bad = [s for s in self.use_splits if s not in ("train", "val", "test")]
        if bad or not self.use_splits:
            raise ConfigError(f"use_splits must name some of train/val/test; got {bad or '[]'}")
        if "train" in self.use_splits:
            raise ConfigError("use_splits: 'train' sources were trained on; use val and/or test")
        for key in ("physical_fraction", "artefact_fraction"):
            v = float(getattr(self, key))
            if not 0 < v < 0.5:
                raise ConfigError(f"AnomalySettings.{key} must be in (0, 0.5); got {v}")
        if self.physical_fraction + self.artefact_fraction >= 0.5:
            raise ConfigError("physical_fraction + artefact_fraction must stay below 0.5")
        if int(self.k) < 1 or int(self.iforest_trees) < 1:
            raise ConfigError("AnomalySettings.k and iforest_trees must be >= 1")


@dataclass
class AnomalySet:
    """Observations with labels: ``label`` 0 normal, 1 physical, 2 instrument (``LABELS``)."""

    flux: np.ndarray  # (N, ...) float32, store units
    label: np.ndarray  # (N,) int8
    kind: np.ndarray  # (N,) str: "normal" or the injected kind
    source_id: np.ndarray  # (N,) int64
    instrument: np.ndarray  # (N,) str
    row: np.ndarray  # (N,) the store row the observation is (or replaces)
    params: list[dict[str, Any] | None]  # what each injection drew (None for normal ones)
    info: dict[str, Any] = field(default_factory=dict)
    truth: dict[str, np.ndarray] = field(default_factory=dict)  # (N,) source truth, to describe

    def counts(self) -> dict[str, Any]:
        """Number of observations per class and per kind."""
        kinds, n = np.unique(self.kind, return_counts=True)
        return {
            **{LABELS[c]: int((self.label == c).sum()) for c in range(len(LABELS))},
            "kinds": {str(k): int(v) for k, v in zip(kinds, n, strict=True)},
        }


def check_run_split(model_dir: str | Path, splits: SplitSpec) -> None:
    """Raise if the training run that saved ``model_dir`` (its ``../config.yaml``) split the
    sources differently from ``splits``: held-out sources would then have been trained on."""
    import yaml

    run_cfg = Path(model_dir).parent / "config.yaml"
    if not run_cfg.is_file():
        return
    train = (yaml.safe_load(run_cfg.read_text()) or {}).get("train", {})
    have = {k: train.get(k) for k in ("val", "test", "split_seed")}
    want = {"val": splits.val, "test": splits.test, "split_seed": splits.seed}
    if any(have[k] is not None and float(have[k]) != float(want[k]) for k in want):
        raise ConfigError(
            f"{run_cfg} trained with split {have} but the study uses {want}; set the config's "
            "splits (val, test, seed) to the run's, or its held-out sources are not held out"
        )


def _held_out_rows(store: ObservationStore, s: AnomalySettings, rng: np.random.Generator):
    """Store rows of every observation of the held-out sources (sorted), and those sources."""
    parts = split_sources(store, s.splits)
    src = np.sort(np.concatenate([parts[name] for name in s.use_splits]))
    if s.max_sources is not None and src.size > int(s.max_sources):
        src = np.sort(rng.choice(src, int(s.max_sources), replace=False))
    if src.size == 0:
        raise ValueError(f"{store.path}: no sources in splits {list(s.use_splits)}")
    rows = np.flatnonzero(np.isin(store.source_id, src))
    return rows, src


def _source_truth(
    store: ObservationStore, source_id: np.ndarray, names: Sequence[str]
) -> dict[str, np.ndarray]:
    """Per-observation copies of the sources' truth columns that the store has."""
    t = store.truth_source
    if "source_id" not in t:
        return {}
    pos = np.searchsorted(t["source_id"], source_id)
    return {n: np.asarray(t[n], dtype=np.float64)[pos] for n in names if n in t}


def _balanced_kinds(kinds: Sequence[str], n: int, rng: np.random.Generator) -> list[str]:
    """``n`` kind names, as equal in number as possible, in random order."""
    out = [kinds[i % len(kinds)] for i in range(n)]
    return [out[i] for i in rng.permutation(n)]


def _counts(n_obs: int, s: AnomalySettings) -> tuple[int, int]:
    n_phys = max(1, round(s.physical_fraction * n_obs))
    n_art = max(1, round(s.artefact_fraction * n_obs))
    return n_phys, n_art


def galaxy_anomaly_set(
    store: ObservationStore, settings: AnomalySettings, prep: dict[str, Any] | None = None
) -> AnomalySet:
    """Held-out galaxies of a simulated store with injected rings/mergers (every survey's
    observation of a host, under that observation's own conditions and noise draw) and
    trails, bad columns and saturated stars (one observation each)."""
    s = settings
    rng = np.random.default_rng(np.random.SeedSequence([int(s.seed), 21]))
    t0 = time.perf_counter()
    prep = galaxy_prep_from_store(store) if prep is None else prep
    t_prep = time.perf_counter() - t0
    from whatsreal.simulate.galaxies import observe_source

    pop = prep["population"]
    if not np.array_equal(pop["source_id"], np.arange(pop["source_id"].size)):
        raise ValueError("the simulator catalogue's source ids must be 0..N-1 (its own order)")
    surveys = list(prep["config"].surveys)
    if sorted(surveys) != sorted(store.instruments):
        raise ValueError(f"{store.path} holds {store.instruments} but its config {surveys}")
    rows, src = _held_out_rows(store, s, rng)
    inst_names = np.asarray(store.instruments, dtype=object)
    n_phys_obs, n_art = _counts(rows.size, s)

    # physical hosts: galaxies (not stars) seen by every survey
    sid_rows = store.source_id[rows]
    per_source = np.bincount(np.searchsorted(src, sid_rows), minlength=src.size)
    eligible = src[(per_source == len(surveys)) & ~pop["is_star"][src].astype(bool)]
    n_hosts = max(1, n_phys_obs // len(surveys))
    if eligible.size < n_hosts:
        raise ValueError(f"{store.path}: only {eligible.size} galaxy hosts for {n_hosts} needed")
    hosts = np.sort(rng.choice(eligible, n_hosts, replace=False))
    phys_kinds = _balanced_kinds(list(s.physical_kinds or GALAXY_PHYSICAL), n_hosts, rng)
    t1 = time.perf_counter()
    rendered = render_physical_galaxies(prep, hosts, phys_kinds, seed=s.seed, surveys=surveys)
    t_render = time.perf_counter() - t1

    flux = store.read(rows)["flux"].astype(np.float32)
    # controls: hosts re-rendered as their normal galaxy through the anomalies' path must give
    # the store's pixels back; if they do not (another version wrote the store), every normal
    # observation is re-rendered through that path instead, so both classes share one path
    n_ctrl = min(int(s.n_controls), hosts.size)
    worst, scale = 0.0, 0.0
    for host in hosts[:n_ctrl]:
        for survey in surveys:
            code = store.instrument_code(survey)
            r = int(rows[(sid_rows == host) & (store.instrument[rows] == code)][0])
            stored = store.read([r])["flux"][0]
            again = observe_source(prep, survey, int(host))["flux"]
            worst = max(worst, float(np.abs(again - stored).max()))
            scale = max(scale, float(np.abs(stored).max()))
    exact = worst <= 1e-6 * scale
    if not exact:
        for j, r in enumerate(rows):
            survey = str(inst_names[store.instrument[r]])
            flux[j] = observe_source(prep, survey, int(store.source_id[r]))["flux"]
    label = np.zeros(rows.size, np.int8)
    kind = np.full(rows.size, "normal", dtype=object)
    params: list[dict[str, Any] | None] = [None] * rows.size
    pos = {int(r): j for j, r in enumerate(rows)}
    for h, (host, k, p) in enumerate(zip(hosts, phys_kinds, rendered["params"], strict=True)):
        for survey in surveys:
            code = store.instrument_code(survey)
            r = int(rows[(sid_rows == host) & (store.instrument[rows] == code)][0])
            j = pos[r]
            flux[j] = rendered[survey]["flux"][h]
            label[j], kind[j], params[j] = PHYSICAL, k, {"kind": k, **p}

    # artefacts: observations of other sources, one per chosen observation
    free = np.flatnonzero(label == NORMAL)
    art_j = np.sort(rng.choice(free, n_art, replace=False))
    art_kinds = _balanced_kinds(list(s.artefact_kinds or GALAXY_ARTEFACTS), n_art, rng)
    art_rows = rows[art_j]
    ivar = store.read(art_rows, ("ivar",))["ivar"] if "ivar" in store.arrays else None
    grid_scale = np.asarray(store.truth_instrument["grid_scale"])[store.instrument[art_rows]]
    fwhm_px = np.asarray(store.truth_obs["psf_fwhm"])[art_rows] / grid_scale[:, None]
    presets = store.config["galaxies"]["presets"]
    beta = [float(presets[n]["psf_beta"]) for n in inst_names[store.instrument[art_rows]]]
    new, art_params = inject_galaxy_artefacts(
        flux[art_j],
        ivar,
        art_kinds,
        seed=s.seed,
        psf_fwhm_px=fwhm_px,
        beta=beta,
        saturation_sigma=s.saturation_sigma,
    )
    flux[art_j] = new
    for j, k, p in zip(art_j, art_kinds, art_params, strict=True):
        label[j], kind[j], params[j] = INSTRUMENT, k, p

    info = {
        "held_out_sources": int(src.size),
        "physical_hosts": int(hosts.size),
        "controls": {
            "n": int(n_ctrl * len(surveys)),
            "max_abs_diff_vs_store": worst,
            "what": "host observations re-rendered as their normal galaxy through the path the "
            "anomalies take, against the store's pixels (0 = the same path, bit for bit)",
        },
        "normals": "the store's own pixels (the controls reproduce them)"
        if exact
        else "re-rendered through the anomalies' path (the store's pixels were not reproduced)",
        "seconds": {"prepare": round(t_prep, 1), "render_physical": round(t_render, 2)},
    }
    return AnomalySet(
        flux=flux,
        label=label,
        kind=kind.astype(str),
        source_id=sid_rows.astype(np.int64),
        instrument=inst_names[store.instrument[rows]].astype(str),
        row=rows.astype(np.int64),
        params=params,
        info=info,
        truth=_source_truth(store, sid_rows, ("mag_i", "r_half", "is_star", "has_companion")),
    )


def lightcurve_anomaly_set(store: ObservationStore, settings: AnomalySettings) -> AnomalySet:
    """Held-out stars of a simulated light-curve store with dips and flares injected into the
    source signal of some observations (before the instrument) and jumps and dropouts applied
    to others (after)."""
    s = settings
    rng = np.random.default_rng(np.random.SeedSequence([int(s.seed), 22]))
    rows, src = _held_out_rows(store, s, rng)
    n_phys, n_art = _counts(rows.size, s)
    flux = store.read(rows)["flux"].astype(np.float32)
    label = np.zeros(rows.size, np.int8)
    kind = np.full(rows.size, "normal", dtype=object)
    params: list[dict[str, Any] | None] = [None] * rows.size
    chosen = rng.choice(rows.size, n_phys + n_art, replace=False)
    phys_j, art_j = np.sort(chosen[:n_phys]), np.sort(chosen[n_phys:])

    parts = lightcurve_parts(store, rows[phys_j])
    phys_kinds = _balanced_kinds(list(s.physical_kinds or LIGHTCURVE_PHYSICAL), n_phys, rng)
    new, p_phys = inject_lightcurve_physical(parts, phys_kinds, seed=s.seed)
    flux[phys_j] = new
    for j, k, p in zip(phys_j, phys_kinds, p_phys, strict=True):
        label[j], kind[j], params[j] = PHYSICAL, k, p

    art_kinds = _balanced_kinds(list(s.artefact_kinds or LIGHTCURVE_ARTEFACTS), n_art, rng)
    new, p_art = inject_lightcurve_artefacts(flux[art_j], art_kinds, seed=s.seed)
    flux[art_j] = new
    for j, k, p in zip(art_j, art_kinds, p_art, strict=True):
        label[j], kind[j], params[j] = INSTRUMENT, k, p

    # control: the recomputed eq. 1 without an event must give back the store's curves
    ctrl = lightcurve_parts(store, rows[phys_j[: s.n_controls]])
    clip = float(ctrl["clip"])
    again = np.clip(ctrl["scale"] * ctrl["signal"] + ctrl["offset"], -clip, clip) + ctrl["noise"]
    stored = store.read(rows[phys_j[: s.n_controls]])["flux"][:, 0]
    inst_names = np.asarray(store.instruments, dtype=object)
    info = {
        "held_out_sources": int(src.size),
        "controls": {
            "n": len(stored),
            "max_abs_diff_vs_store": float(np.abs(again - stored).max()) if len(stored) else 0.0,
            "what": "curves recomputed from the truth by the path the events take, without an "
            "event, against the store (float32 rounding only)",
        },
    }
    return AnomalySet(
        flux=flux,
        label=label,
        kind=kind.astype(str),
        source_id=store.source_id[rows].astype(np.int64),
        instrument=inst_names[store.instrument[rows]].astype(str),
        row=rows.astype(np.int64),
        params=params,
        info=info,
        truth=_source_truth(store, store.source_id[rows], ("period",)),
    )


# --------------------------------------------------------------------------- spaces
def embed_spaces(model: Any, flux: np.ndarray, batch_size: int = 256) -> dict[str, np.ndarray]:
    """Every latent space of ``model`` for in-memory observations (inference path of
    :func:`whatsreal.infer.embed.inference_model`); dual models also give ``both``, the two
    latents concatenated (a reference, not a trained single-latent model)."""
    from whatsreal.infer.embed import embed_array, inference_model

    model = inference_model(model)
    parts: dict[str, list[np.ndarray]] = {}
    for lo in range(0, len(flux), batch_size):
        for key, z in embed_array(model, flux[lo : lo + batch_size]).items():
            parts.setdefault(key, []).append(z)
    out = {k: np.concatenate(v) for k, v in parts.items()}
    if "physics" in out and "instrument" in out:
        out["both"] = np.concatenate([out["physics"], out["instrument"]], axis=1)
    return out


def pca_space(
    flux: np.ndarray, n_components: int, scale: Sequence[float] | None = None, seed: int = 0
) -> np.ndarray:
    """Raw-input baseline: PCA of the (asinh-stretched, if ``scale`` per channel is given)
    flattened observations to ``n_components`` dimensions."""
    from sklearn.decomposition import PCA

    x = np.asarray(flux, dtype=np.float32)
    if scale is not None:
        s = np.asarray(scale, np.float32).reshape(1, -1, *([1] * (x.ndim - 2)))
        x = np.arcsinh(x / s)
    x = x.reshape(len(x), -1)
    n = min(int(n_components), *x.shape)
    return PCA(n, svd_solver="randomized", random_state=seed).fit_transform(x).astype(np.float32)


# --------------------------------------------------------------------------- scores
def precision_at_k(scores: np.ndarray, positive: np.ndarray, k: int | None = None) -> float:
    """Fraction of the ``k`` highest scores that are positive (k: the number of positives)."""
    positive = np.asarray(positive, dtype=bool)
    k = int(positive.sum()) if k is None else int(k)
    if k < 1:
        raise ValueError("precision@k needs k >= 1 (no positives were given)")
    top = np.argsort(-np.asarray(scores), kind="stable")[:k]
    return float(positive[top].mean())


def _auc(scores: np.ndarray, label: np.ndarray, cls: int) -> float:
    """ROC AUC of one class against the normal observations only."""
    from sklearn.metrics import roc_auc_score

    keep = (label == cls) | (label == NORMAL)
    return float(roc_auc_score(label[keep] == cls, scores[keep]))


def _bright_half_auc(
    sc: np.ndarray, label: np.ndarray, cls: int, truth: Mapping[str, np.ndarray], sel: np.ndarray
) -> dict[str, float]:
    """AUC among sources brighter than the normals' median i magnitude (where a host's
    catalogue magnitude is known): are the anomalies found where they can be seen?"""
    if "mag_i" not in truth:
        return {}
    mag = truth["mag_i"][sel]
    bright = mag < np.median(mag[label == NORMAL])
    lab = label[bright]
    if not ((lab == cls).any() and (lab == NORMAL).any()):
        return {}
    return {"auc_bright_half": _auc(sc[bright], lab, cls), "k_bright_half": int((lab == cls).sum())}


def _judge(scores: np.ndarray, data: AnomalySet, sel: np.ndarray) -> dict[str, Any]:
    """precision@k and AUC of each class, and how many of each kind reach its class's top k."""
    label, kind, sc = data.label[sel], data.kind[sel], scores[sel]
    order = np.argsort(-sc, kind="stable")
    out: dict[str, Any] = {}
    n_top = 0
    for cls in (PHYSICAL, INSTRUMENT):
        pos = label == cls
        k = int(pos.sum())
        n_top += k
        if k == 0:
            continue
        top = order[:k]
        found = {
            str(name): int((kind[top] == name).sum()) for name in np.unique(kind[pos]).tolist()
        }
        out[LABELS[cls]] = {
            "precision_at_k": precision_at_k(sc, pos),
            "k": k,
            "chance": round(float(k / sel.sum()), 4),
            "auc": _auc(sc, label, cls),
            **_bright_half_auc(sc, label, cls, data.truth, sel),
            "found_by_kind": found,
            # each kind alone: precision@k_kind of the whole ranking for that kind
            "precision_at_k_by_kind": {
                name: precision_at_k(sc, kind == name) for name in sorted(found)
            },
        }
    # what else the top of the list holds: the normal observations among the top k_phys + k_inst
    top = order[:n_top]
    normal_top = top[label[top] == NORMAL]
    out["top_normals"] = {"n": int(normal_top.size), "of": int(n_top)}
    if data.truth and normal_top.size:
        all_normal = label == NORMAL
        out["top_normals"]["mean"] = {
            name: round(float(np.mean(v[sel][normal_top])), 3) for name, v in data.truth.items()
        }
        out["top_normals"]["mean_all_normals"] = {
            name: round(float(np.mean(v[sel][all_normal])), 3) for name, v in data.truth.items()
        }
    return out


def score_spaces(
    spaces: Mapping[str, np.ndarray], data: AnomalySet, settings: AnomalySettings
) -> dict[str, Any]:
    """k-NN and isolation-forest precision@k of each space, pooled over instruments and
    within each instrument: {space: {method: {"pooled": ..., "per_instrument": {...}}}}."""
    from whatsreal.search.anomaly import iforest_scores, knn_scores, whiten

    s = settings
    missing = sorted(set(s.whiten) - set(spaces))
    if missing:
        raise ConfigError(f"settings.whiten names {missing}, not among the spaces {list(spaces)}")
    spaces = dict(spaces)
    for name in s.whiten:
        spaces[f"{name} (whitened)"] = whiten(spaces[name])
    out: dict[str, Any] = {}
    groups = {"pooled": np.ones(len(data.label), bool)}
    groups.update({name: data.instrument == name for name in np.unique(data.instrument)})
    for name, z in spaces.items():
        if len(z) != len(data.label):
            raise ValueError(f"space {name!r} has {len(z)} vectors for {len(data.label)} objects")
        out[name] = {}
        for method in ("knn", "iforest"):
            res: dict[str, Any] = {"per_instrument": {}}
            for group, sel in groups.items():
                if sel.sum() < 3 or not (data.label[sel] != NORMAL).any():
                    continue
                zz = z[sel]
                if method == "knn":
                    sc = knn_scores(zz, k=s.k)
                else:
                    sc = iforest_scores(zz, n_estimators=s.iforest_trees, seed=s.seed)
                full = np.zeros(len(data.label), np.float32)
                full[sel] = sc
                judged = _judge(full, data, sel)
                if group == "pooled":
                    res["pooled"] = judged
                else:
                    res["per_instrument"][group] = judged
            out[name][method] = res
    return out


def settings_dict(settings: AnomalySettings) -> dict[str, Any]:
    """The settings as plain JSON-able values."""
    d = dataclasses.asdict(settings)
    return {k: list(v) if isinstance(v, tuple) else v for k, v in d.items()}


def separability_auc(z: np.ndarray, label: np.ndarray, cls: int, seed: int = 0) -> float:
    """Supervised reference: 5-fold cross-validated ROC AUC of a logistic regression telling
    class ``cls`` from the normal observations, i.e. whether the space *holds* the difference
    even where an unsupervised score does not isolate it."""
    from sklearn.linear_model import LogisticRegression
    from sklearn.metrics import roc_auc_score
    from sklearn.model_selection import StratifiedKFold, cross_val_predict
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    keep = (label == cls) | (label == NORMAL)
    y = label[keep] == cls
    folds = min(5, int(y.sum()))
    if folds < 2:
        return float("nan")
    clf = make_pipeline(
        StandardScaler(), LogisticRegression(max_iter=2000, class_weight="balanced")
    )
    cv = StratifiedKFold(folds, shuffle=True, random_state=seed)
    p = cross_val_predict(clf, z[keep], y, cv=cv, method="predict_proba")[:, 1]
    return float(roc_auc_score(y, p))


# --------------------------------------------------------------------------- the study
TRACK_KEYS = ("store", "model", "single_latent", "random_init", "raw_pca", "settings")


def run_anomaly_study(
    track: Mapping[str, Any], modality: str, where: str = "", progress: bool = True
) -> dict[str, Any]:
    """One modality's injection study from its config section (keys :data:`TRACK_KEYS`):
    build the set, embed it with the dual model (and the single-latent model, a random-init
    copy of the dual model and a raw-input PCA, where asked), score every space."""
    import torch

    from whatsreal.config import build_dataclass, check_keys
    from whatsreal.models.base import load_pretrained

    check_keys(track, TRACK_KEYS, where)
    for key in ("store", "model"):
        if not track.get(key):
            raise ConfigError(f"'{where}.{key}' is required (a path)")
    if modality not in ("image", "series"):
        raise ValueError(f"modality must be 'image' or 'series'; got {modality!r}")
    settings = build_dataclass(AnomalySettings, track.get("settings") or {}, f"{where}.settings")
    t0 = time.perf_counter()

    def say(msg: str) -> None:
        if progress:
            print(f"[{where} {time.perf_counter() - t0:6.1f}s] {msg}", flush=True)

    for key in ("store", "model", "single_latent"):
        if track.get(key) and not Path(track[key]).exists():
            raise FileNotFoundError(
                f"{where}.{key}: {track[key]} does not exist; train or simulate it first, or "
                "point the config at it"
            )
    store = ObservationStore(track["store"])
    models = {"dual": track["model"]}
    if track.get("single_latent"):
        models["single"] = track["single_latent"]
    for path in models.values():
        check_run_split(path, settings.splits)
    if modality == "image":
        data = galaxy_anomaly_set(store, settings)
    else:
        data = lightcurve_anomaly_set(store, settings)
    say(f"set: {data.counts()}")
    spaces: dict[str, np.ndarray] = {}
    timings: dict[str, float] = {}
    dual = None
    for name, path in models.items():
        t = time.perf_counter()
        model = load_pretrained(path)
        dual = model if name == "dual" else dual
        for space, z in embed_spaces(model, data.flux).items():
            spaces[f"{name}/{space}"] = z
        timings[f"embed_{name}"] = round(time.perf_counter() - t, 1)
        say(f"embedded with {name} ({path}) in {timings[f'embed_{name}']} s")
    if track.get("random_init", True):
        t = time.perf_counter()
        torch.manual_seed(settings.seed)
        rand = type(dual)(**dual.config)
        spaces["random_init/both"] = embed_spaces(rand, data.flux)["both"]
        timings["embed_random_init"] = round(time.perf_counter() - t, 1)
        say(f"embedded with a random-init {type(dual).__name__}")
    n_pca = track.get("raw_pca")
    if n_pca:
        scale = dual.config.get("scale") if modality == "image" else None
        spaces["raw_pca"] = pca_space(data.flux, int(n_pca), scale, settings.seed)
    t = time.perf_counter()
    scores = score_spaces(spaces, data, settings)
    for name, z in spaces.items():  # whitened copies get none: theirs is the same (linear)
        scores[name]["linear_auc"] = {
            LABELS[c]: separability_auc(z, data.label, c, settings.seed)
            for c in (PHYSICAL, INSTRUMENT)
        }
    timings["score"] = round(time.perf_counter() - t, 1)
    timings["total"] = round(time.perf_counter() - t0, 1)
    say("scored")
    return {
        "store": str(track["store"]),
        "models": {k: str(v) for k, v in models.items()},
        "settings": settings_dict(settings),
        "counts": data.counts(),
        "info": data.info,
        "dims": {k: int(v.shape[1]) for k, v in spaces.items()},
        "spaces": scores,
        "checks": anomaly_checks(scores),
        "seconds": timings,
    }


def anomaly_checks(scores: Mapping[str, Any], method: str = "knn") -> dict[str, bool | None]:
    """The issue's claims as booleans (pooled precision@k of ``method``); None where a space
    is missing."""

    def p(space: str, cls: str) -> float | None:
        try:
            return scores[space][method]["pooled"][cls]["precision_at_k"]
        except KeyError:
            return None

    def gt(a: float | None, b: float | None) -> bool | None:
        return None if a is None or b is None else bool(a > b)

    phys, inst = "dual/physics", "dual/instrument"
    single = "single/latent" if "single/latent" in scores else None
    return {
        "physics_space_finds_physical_over_instrument_space": gt(
            p(phys, "physical"), p(inst, "physical")
        ),
        "instrument_space_finds_artefacts_over_physics_space": gt(
            p(inst, "instrument"), p(phys, "instrument")
        ),
        "physics_space_beats_single_latent_on_physical": gt(
            p(phys, "physical"), p(single, "physical") if single else None
        ),
        "instrument_space_beats_single_latent_on_artefacts": gt(
            p(inst, "instrument"), p(single, "instrument") if single else None
        ),
    }


def anomaly_table(result: Mapping[str, Any]) -> str:
    """Plain-text table of one study: pooled precision@k (and AUC) per space and method, the
    supervised separability, and the chance level."""
    any_space = next(iter(result["spaces"].values()))
    pooled = any_space["knn"]["pooled"]
    head = (
        f"{'space':<28}{'method':<9}{'P@k phys':>9}{'P@k inst':>9}"
        f"{'AUC phys':>9}{'AUC inst':>9}{'AUC ph br':>10}{'linAUC ph':>10}{'linAUC in':>10}"
    )
    lines = [
        f"k = {pooled['physical']['k']} physical, {pooled['instrument']['k']} artefacts among "
        f"{sum(v for k, v in result['counts'].items() if k != 'kinds')} observations; chance "
        f"P@k = {pooled['physical']['chance']:.3f} / {pooled['instrument']['chance']:.3f}",
        head,
        "-" * len(head),
    ]
    for name, res in result["spaces"].items():
        lin = res.get("linear_auc", {})
        for method in ("knn", "iforest"):
            q = res[method]["pooled"]
            lines.append(
                f"{name:<28}{method:<9}"
                f"{q['physical']['precision_at_k']:>9.3f}{q['instrument']['precision_at_k']:>9.3f}"
                f"{q['physical']['auc']:>9.3f}{q['instrument']['auc']:>9.3f}"
                f"{q['physical'].get('auc_bright_half', float('nan')):>10.3f}"
                + (
                    f"{lin.get('physical', float('nan')):>10.3f}"
                    f"{lin.get('instrument', float('nan')):>10.3f}"
                    if method == "knn"
                    else ""
                )
            )
    lines.append(
        "AUC: the class against the normal observations; AUC ph br: the same among sources "
        "brighter than the normals' median i magnitude; linAUC: a supervised reference, 5-fold "
        "logistic regression (does the space hold the difference at all?)"
    )
    lines.append("k-NN precision@k of each kind alone (k = the number of that kind):")
    for name, res in result["spaces"].items():
        q = res["knn"]["pooled"]
        by_kind = {
            **q["physical"]["precision_at_k_by_kind"],
            **q["instrument"]["precision_at_k_by_kind"],
        }
        lines.append(f"  {name:<28}" + "  ".join(f"{k} {v:.2f}" for k, v in by_kind.items()))
    return "\n".join(lines)
