"""Lightning training of the counterfactual flow-matching model (seed 000).

Step-bounded by design: the cosine learning-rate schedule runs over ``max_steps`` (seed 000's
code sized it by epochs), batches come from :class:`~whatsreal.sampling.StepBatchSampler`
and the flow-matching noise from a generator seeded by (seed, step, rank), so a run resumed
from a checkpoint continues exactly as an uninterrupted one would. EMA weights are kept in
the checkpoint and are what gets saved as the model.
"""

from __future__ import annotations

import inspect
import logging
import time
import typing
import warnings
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any, ClassVar, Literal

import lightning as L
import numpy as np
import torch
from torch.utils.data import DataLoader

from whatsreal.config import check_keys, convert_value, save_config, validate_dataclass
from whatsreal.errors import ConfigError
from whatsreal.models.base import load_pretrained
from whatsreal.models.counterfactual import (
    CounterfactualModel,
    build_counterfactual_model,
    robust_scale,
)
from whatsreal.sampling import (
    SplitSpec,
    StepBatchSampler,
    StepIndexedViews,
    ViewDataset,
    collate_views,
    footprint_rows,
)
from whatsreal.store import ObservationStore
from whatsreal.train.contrastive import resolve_precision
from whatsreal.train.guards import (
    RunCSVLogger,
    prepare_resume,
    read_metrics,
    refuse_nonfinite_checkpoint,
    stop_if_not_finite,
)
from whatsreal.train.schedules import cosine_lambda, weight_ema

log = logging.getLogger(__name__)

warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")


@dataclass
class CounterfactualTrainConfig:
    """Everything a counterfactual run needs besides the store; saved as YAML with the run.

    Defaults are seed 000's (AdamW 1e-4, batch 64, 75,000 steps, validation every 1,000
    steps, up to 5 instrument views, 95/5 split) except the preset, which is ``cpu``.
    Every value is converted to its field's type and checked against ``limits`` when the
    config is made (``lr: 1e-3``, a string in YAML 1.1, becomes 0.001).
    """

    preset: str = "cpu"
    modality: Literal["auto", "image", "series"] = "auto"  # image: (C, H, W) stores; series: (C, T)
    model_overrides: dict[str, Any] = field(default_factory=dict)
    lr: float = 1e-4
    weight_decay: float = 0.01
    warmup_steps: int = 0
    min_lr_ratio: float = 0.0
    batch_size: int = 64
    max_steps: int = 75_000
    max_minutes: float | None = None
    val_every: int = 1_000
    val_batches: int = 8
    n_physics: int = 1
    n_instrument: int = 5
    instrument_views: Literal["auto", "sky", "pool"] = "auto"
    batching: Literal["random", "sky"] = "random"  # sky: batches of neighbours sharing views
    init_from: str | None = None  # a saved model whose encoders (and heads) start this run
    # train the flow decoder alone on init_from's encoders, which stay as they are (BatchNorm
    # statistics included): the latents, and any index built on them, do not change
    freeze_encoders: bool = False
    # partial overlap, emulated on a full-overlap store (sampling.footprint_rows): this
    # instrument's rows outside the Dec strip holding footprint_fraction of them are hidden
    footprint_instrument: str | None = None
    footprint_fraction: float = 1.0
    ema_decay: float = 0.999
    grad_clip: float = 1.0
    val: float = 0.05
    test: float = 0.05  # held out for evaluation (seed 000 used 95/5 train/val only)
    split_seed: int = 0
    seed: int = 0
    num_workers: int = 0
    accelerator: str = "auto"
    devices: int | str = "auto"
    num_nodes: int = 1
    precision: str = "auto"
    channels_last: bool = True
    fused_optimizer: bool = True
    compile: bool = False
    ckpt_every: int = 1_000
    snapshot_minutes: float | None = None
    progress: bool = True
    log_every: int = 10  # optimizer steps between rows of logs/metrics.csv

    limits: ClassVar[dict[str, str]] = {
        "lr": "> 0",
        "weight_decay": ">= 0",
        "warmup_steps": ">= 0",
        "min_lr_ratio": ">= 0 and <= 1",
        "batch_size": ">= 1",
        "max_steps": ">= 1",
        "max_minutes": "> 0",
        "val_every": ">= 1",
        "val_batches": ">= 1",
        "n_physics": ">= 1",
        "n_instrument": ">= 0",
        "ema_decay": ">= 0 and <= 1",
        "grad_clip": ">= 0",
        "val": ">= 0 and < 1",
        "test": ">= 0 and < 1",
        "split_seed": ">= 0",
        "seed": ">= 0 and <= 4294967295",  # Lightning replaces a larger seed by a random one
        "num_workers": ">= 0",
        "num_nodes": ">= 1",
        "ckpt_every": ">= 1",
        "snapshot_minutes": "> 0",
        "log_every": ">= 1",
        "footprint_fraction": "> 0 and <= 1",
    }
    # What a checkpoint depends on: a resume that changes any of these is refused.
    resume_fixed: ClassVar[tuple[str, ...]] = (
        *("preset", "modality", "model_overrides"),
        *("val", "test", "split_seed"),
        *("footprint_instrument", "footprint_fraction", "freeze_encoders"),
    )

    def __post_init__(self) -> None:
        validate_dataclass(self, "train")
        if self.freeze_encoders and not self.init_from:
            raise ConfigError(
                "train.freeze_encoders keeps the encoders as train.init_from gives them, but "
                "train.init_from is not set: point it at a trained run's model/ folder"
            )

    @property
    def splits(self) -> SplitSpec:
        return SplitSpec(self.val, self.test, self.split_seed)


def step_generator(seed: int, step: int, rank: int, device: torch.device) -> torch.Generator:
    """A generator whose state depends only on (seed, step, rank): resumable noise."""
    gen = torch.Generator(device=device)
    gen.manual_seed(int(np.random.SeedSequence([seed, step, rank]).generate_state(1)[0]))
    return gen


class CounterfactualTask(L.LightningModule):
    """AdamW + cosine-over-steps on the model's loss; EMA of the weights for evaluation."""

    def __init__(self, model: CounterfactualModel, cfg: CounterfactualTrainConfig) -> None:
        super().__init__()
        self.model = model
        self.cfg = cfg
        if cfg.freeze_encoders:
            if model.single_latent or model.fm_weight <= 0:
                raise ConfigError(
                    "train.freeze_encoders trains the flow decoder alone, and this model has "
                    "none to train (single_latent, or model_overrides.fm_weight 0)"
                )
            model.requires_grad_(False)
            model.decoder.requires_grad_(True)
        self.ema = weight_ema(model, cfg.ema_decay)
        self.train()  # Lightning keeps each module's mode: the frozen encoders' eval starts here
        self._forward = torch.compile(model.loss) if cfg.compile else model.loss

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        gen = step_generator(self.cfg.seed, self.global_step, self.global_rank, self.device)
        losses = self._forward(self._prepare(batch), gen, decoder_only=self.cfg.freeze_encoders)
        stop_if_not_finite(losses["total"], batch, self.trainer)  # before it reaches the weights
        bs = batch["anchor"].shape[0]
        for name, value in losses.items():
            self.log(f"train/{name}", value, batch_size=bs, prog_bar=name == "total")
        return losses["total"]

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        # EMA right after each optimiser step: before any checkpoint of that step is written
        # (callbacks' on_train_batch_end runs first), so resumed runs continue exactly.
        super().optimizer_step(*args, **kwargs)
        self.ema.update_parameters(self.model)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        refuse_nonfinite_checkpoint(checkpoint, self.global_step)

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        gen = step_generator(self.cfg.seed + 1, batch_idx, self.global_rank, self.device)
        model: CounterfactualModel = self.ema.module  # type: ignore[assignment]
        losses = model.loss(self._prepare(batch), gen, decoder_only=self.cfg.freeze_encoders)
        bs = batch["anchor"].shape[0]
        for name, value in losses.items():
            self.log(f"val/{name}", value, batch_size=bs, sync_dist=True, prog_bar=name == "total")

    def _prepare(self, batch: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        if self.cfg.channels_last and self.model.modality == "image":
            batch = dict(batch)
            for key in ("anchor",):
                batch[key] = batch[key].contiguous(memory_format=torch.channels_last)
        return batch

    def train(self, mode: bool = True) -> CounterfactualTask:
        """Lightning's train/eval switch; frozen encoders stay in eval mode, so their
        BatchNorm layers neither use batch statistics nor update their running ones."""
        super().train(mode)
        if self.cfg.freeze_encoders:
            for name, child in self.model.named_children():
                if name != "decoder":
                    child.eval()
        return self

    def configure_optimizers(self) -> Any:
        # Lightning refuses gradient clipping with a fused optimizer under mixed precision
        # (bf16-mixed is the GPU default): fuse in full precision only.
        mixed = "mixed" in resolve_precision(self.cfg.precision) or self.cfg.precision == "16"
        fused = self.cfg.fused_optimizer and _fused_ok() and not mixed
        opt = torch.optim.AdamW(
            [p for p in self.model.parameters() if p.requires_grad],
            lr=self.cfg.lr,
            weight_decay=self.cfg.weight_decay,
            **({"fused": True} if fused else {}),
        )
        cfg = self.cfg
        sched = torch.optim.lr_scheduler.LambdaLR(
            opt, lambda s: cosine_lambda(s, cfg.max_steps, cfg.warmup_steps, cfg.min_lr_ratio)
        )
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}


def _fused_ok() -> bool:
    try:
        torch.optim.AdamW([torch.nn.Parameter(torch.zeros(1))], fused=True)
    except (RuntimeError, TypeError):
        return False
    return True


def visible_rows(store: ObservationStore, cfg: CounterfactualTrainConfig) -> np.ndarray | None:
    """The store rows a run trains on: all, or those of its emulated partial footprint."""
    if cfg.footprint_instrument is None:
        return None
    return footprint_rows(store, cfg.footprint_instrument, cfg.footprint_fraction)


class CounterfactualData(L.LightningDataModule):
    """Step-indexed training batches and a fixed validation subset from one store."""

    def __init__(self, store: ObservationStore, cfg: CounterfactualTrainConfig) -> None:
        super().__init__()
        self.store, self.cfg = store, cfg

    def _views(self, split: str) -> ViewDataset:
        c = self.cfg
        return ViewDataset(
            self.store,
            split,
            n_physics=c.n_physics,
            n_instrument=c.n_instrument,
            instrument_views=c.instrument_views,
            splits=c.splits,
            seed=c.seed,
            visible=visible_rows(self.store, c),
        )

    def train_dataloader(self) -> DataLoader:
        views = self._views("train")
        start = self.trainer.global_step if self.trainer is not None else 0
        if self.cfg.batching not in ("random", "sky"):
            raise ConfigError(f"batching must be 'random' or 'sky'; got {self.cfg.batching!r}")
        order = views.sky_order() if self.cfg.batching == "sky" else None
        sampler = StepBatchSampler(
            len(views), self.cfg.batch_size, self.cfg.seed, start, order=order
        )
        return DataLoader(
            StepIndexedViews(views),
            batch_sampler=sampler,
            collate_fn=collate_views,
            num_workers=self.cfg.num_workers,
            persistent_workers=self.cfg.num_workers > 0,
        )

    def val_dataloader(self) -> DataLoader:
        views = self._views("val")
        n = min(len(views), self.cfg.val_batches * self.cfg.batch_size)
        # A fixed subset, spread over the split, in a fixed order.
        subset = np.linspace(0, len(views) - 1, n).astype(int) if n else np.zeros(0, int)
        return DataLoader(
            torch.utils.data.Subset(views, subset.tolist()),
            batch_size=self.cfg.batch_size,
            collate_fn=collate_views,
            num_workers=self.cfg.num_workers,
        )


class SnapshotCallback(L.Callback):
    """Save the EMA model every ``minutes`` of training wall time (time-to-quality curves)."""

    def __init__(self, directory: Path, minutes: float) -> None:
        self.directory, self.seconds = directory, minutes * 60
        self.t0 = 0.0
        self.next = self.seconds

    def on_train_start(self, trainer: L.Trainer, pl_module: L.LightningModule) -> None:
        self.t0 = time.monotonic()

    def on_train_batch_end(self, trainer: L.Trainer, pl_module: Any, *args: Any) -> None:
        elapsed = time.monotonic() - self.t0
        if elapsed >= self.next and trainer.is_global_zero:
            name = f"step{trainer.global_step:07d}_{elapsed / 60:06.2f}min"
            pl_module.ema.module.save_pretrained(self.directory / name)
            self.next += self.seconds

    def on_train_end(self, trainer: L.Trainer, pl_module: Any) -> None:
        if trainer.is_global_zero:
            elapsed = time.monotonic() - self.t0
            name = f"step{trainer.global_step:07d}_{elapsed / 60:06.2f}min"
            pl_module.ema.module.save_pretrained(self.directory / name)


def _rich_available() -> bool:
    import importlib.util

    return importlib.util.find_spec("rich") is not None


class StepProgressBar(L.pytorch.callbacks.RichProgressBar):
    """Lightning's rich bar, titled by the step budget: runs here end at ``max_steps`` with
    no epoch limit, where the stock title reads "Epoch 0/-2"."""

    def _get_train_description(self, current_epoch: int) -> str:
        trainer = self.trainer
        if trainer.max_epochs is not None and trainer.max_epochs >= 0:
            return super()._get_train_description(current_epoch)
        return f"Epoch {current_epoch} (run ends at step {trainer.max_steps})"


def default_scale(store: ObservationStore, modality: str, rows: int = 2_000) -> list[float]:
    """Per-channel softening from up to ``rows`` evenly spaced observations of the store."""
    idx = np.linspace(0, store.n_obs - 1, min(rows, store.n_obs)).astype(np.int64)
    arrays = ("flux", "ivar") if "ivar" in store.arrays else ("flux",)
    data = store.read(np.unique(idx), arrays)
    return robust_scale(data["flux"], data.get("ivar"))


def build_for_store(store: ObservationStore, cfg: CounterfactualTrainConfig) -> CounterfactualModel:
    """Build the model the config asks for, sized to the store's arrays."""
    shape = store.shape
    modality = cfg.modality
    if modality == "auto":
        modality = "image" if len(shape) == 3 else "series"
    if modality == "image" and (len(shape) != 3 or shape[1] != shape[2]):
        raise ConfigError(f"modality 'image' needs square (C, H, W) arrays; store has {shape}")
    if modality == "series" and len(shape) != 2:
        raise ConfigError(f"modality 'series' needs (C, T) arrays; store has {shape}")
    overrides = dict(cfg.model_overrides)
    check_keys(overrides, _model_options(), "train.model_overrides")
    if "stretch" not in overrides and modality == "series":
        overrides["stretch"] = "linear"
    if overrides.get("scale", "auto") == "auto":
        overrides["scale"] = default_scale(store, modality)
    hints = typing.get_type_hints(CounterfactualModel.__init__)
    overrides = {  # YAML 1.1 reads `hybrid_weight: 3e-1` as a string
        k: convert_value(v, hints.get(k, Any), f"train.model_overrides.{k}")
        for k, v in overrides.items()
    }
    if overrides.get("adversary_weight", 0) > 0:
        overrides.setdefault("n_instruments", len(store.instruments))
    model = build_counterfactual_model(cfg.preset, modality, shape[0], shape[-1], **overrides)
    if cfg.init_from:
        warm_start(model, cfg.init_from)
    return model


def _model_options() -> list[str]:
    skip = {"self", "modality", "in_channels", "size"}
    return [p for p in inspect.signature(CounterfactualModel.__init__).parameters if p not in skip]


WARM_START_PREFIXES = (
    "physics_encoder.",
    "instrument_encoder.",
    "physics_head.",
    "instrument_head.",
)


def warm_start(model: CounterfactualModel, path: str | Path) -> list[str]:
    """Copy the encoders (and contrastive heads, when both models have them) of a saved
    model into ``model``: e.g. a contrastive-only run as the start of a hybrid one.
    Returns the names of the tensors copied."""
    path = Path(path)
    if not (path / "config.json").is_file():
        raise FileNotFoundError(
            f"init_from={str(path)!r} is not a saved model directory (no config); point it "
            "at a run's model/ folder"
        )
    source = load_pretrained(path)
    theirs = {k: v for k, v in source.state_dict().items() if k.startswith(WARM_START_PREFIXES)}
    mine = model.state_dict()
    bad = [k for k, v in theirs.items() if k in mine and mine[k].shape != v.shape]
    if bad:
        raise ConfigError(
            f"init_from={str(path)!r} does not fit this model: shapes differ for {bad[:3]}; "
            "use the same preset and token_dim"
        )
    copied = {k: v for k, v in theirs.items() if k in mine}
    if not any(k.startswith("physics_encoder.") for k in copied):
        raise ConfigError(f"init_from={str(path)!r} has no physics encoder to copy")
    model.load_state_dict(copied, strict=False)
    return sorted(copied)


def fit_counterfactual(
    store: ObservationStore | str | Path,
    out_dir: str | Path,
    cfg: CounterfactualTrainConfig | None = None,
    callbacks: list[L.Callback] | None = None,
    resume: bool | str | Path = True,
) -> CounterfactualModel:
    """Train on a store; write config, checkpoints, a CSV log and the EMA model.

    ``resume=True`` continues from ``out_dir/checkpoints/last.ckpt`` if present (or the
    previous checkpoint, with a warning, if that one is unreadable); pass a path to resume
    from a given checkpoint, or False to start afresh. A resume whose model or splits differ
    from the run's is refused before any file is touched; the CSV log keeps earlier rows.
    Training stops with :class:`~whatsreal.errors.NonFiniteError` on a NaN or inf loss, and
    non-finite weights are never saved. Returns the EMA model in eval mode, also saved with
    ``save_pretrained`` to ``out_dir/model``.
    """
    cfg = cfg or CounterfactualTrainConfig()
    store = store if isinstance(store, ObservationStore) else ObservationStore(store)
    out = Path(out_dir)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    model = build_for_store(store, cfg)
    run_config = {
        "model": "counterfactual",
        "store": str(store.path),
        "train": asdict(cfg),
        "resolved_model": model.config,
    }
    if cfg.channels_last and model.modality == "image":
        model = model.to(memory_format=torch.channels_last)
    task = CounterfactualTask(model, cfg)
    fixed = [f"train.{k}" for k in cfg.resume_fixed] + ["model", "resolved_model"]
    ckpt_path, resume_step = prepare_resume(out, resume, run_config, task, fixed)
    save_config(run_config, out / "config.yaml")  # only now: a refused resume changes nothing
    ckpt = L.pytorch.callbacks.ModelCheckpoint(
        dirpath=out / "checkpoints",
        every_n_train_steps=cfg.ckpt_every,
        save_last=True,
    )
    cbs: list[L.Callback] = [ckpt, L.pytorch.callbacks.LearningRateMonitor("step")]
    if cfg.snapshot_minutes:
        cbs.append(SnapshotCallback(out / "snapshots", cfg.snapshot_minutes))
    if cfg.progress and _rich_available():
        cbs.append(StepProgressBar())
    cbs += callbacks or []
    unused = model.fm_weight <= 0  # the decoder is idle in a contrastive-only run
    strategy = "ddp_find_unused_parameters_true" if unused else "auto"
    trainer = L.Trainer(
        default_root_dir=out,
        max_steps=cfg.max_steps,
        max_epochs=-1,  # max_steps ends the run
        max_time={"minutes": cfg.max_minutes} if cfg.max_minutes else None,
        val_check_interval=cfg.val_every,
        check_val_every_n_epoch=None,
        num_sanity_val_steps=0,
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        num_nodes=cfg.num_nodes,
        strategy=strategy if _multi_device(cfg) else "auto",
        precision=resolve_precision(cfg.precision),
        gradient_clip_val=cfg.grad_clip or None,
        callbacks=cbs,
        logger=RunCSVLogger(out, resume_step=resume_step),
        enable_progress_bar=cfg.progress,
        enable_model_summary=False,
        use_distributed_sampler=False,  # StepBatchSampler shards by rank itself
        log_every_n_steps=cfg.log_every,
    )
    with warnings.catch_warnings():
        if cfg.freeze_encoders:  # the encoders' eval mode is the point of the option
            warnings.filterwarnings("ignore", message=r".*module\(s\) in eval mode")
        trainer.fit(task, datamodule=CounterfactualData(store, cfg), ckpt_path=ckpt_path)
    ema: CounterfactualModel = task.ema.module.cpu().eval()  # type: ignore[assignment]
    ema = ema.to(memory_format=torch.contiguous_format)
    if trainer.is_global_zero:
        ema.save_pretrained(out / "model")
    return ema


def measure_step_seconds(
    store: ObservationStore, cfg: CounterfactualTrainConfig, steps: int = 7
) -> float:
    """Median wall time of one training step (forward, backward, AdamW) on real batches of
    ``cfg``'s batching and precision, on the CPU, after two warm-up steps; sizes a step
    budget to a time budget."""
    torch.manual_seed(cfg.seed)
    bf16 = resolve_precision(cfg.precision).startswith("bf16")
    model = build_for_store(store, cfg).train()
    opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr)
    views = ViewDataset(
        store,
        "train",
        cfg.n_physics,
        cfg.n_instrument,
        cfg.instrument_views,
        cfg.splits,
        visible=visible_rows(store, cfg),
    )
    items = views.sky_order() if cfg.batching == "sky" else np.arange(len(views))
    times = []
    for i in range(max(steps, 3)):
        chunk = items[i * cfg.batch_size : (i + 1) * cfg.batch_size].tolist()
        batch = collate_views(views.__getitems__(chunk))
        t0 = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model.loss(batch)["total"]
        opt.zero_grad()
        loss.backward()
        opt.step()
        times.append(time.perf_counter() - t0)
    return float(np.median(times[2:]))


def fit_within_minutes(
    store: ObservationStore,
    out_dir: str | Path,
    cfg: CounterfactualTrainConfig,
    minutes: float,
    safety: float = 0.95,
) -> tuple[CounterfactualModel, dict[str, float]]:
    """Train for a wall-clock budget: measure a step, size ``max_steps`` so the cosine
    schedule ends inside ``minutes`` (``max_minutes`` stops it there regardless).
    Returns the model and {"seconds_per_step_probe", "max_steps", "train_seconds"}."""
    if minutes <= 0:
        raise ConfigError(f"minutes must be > 0; got {minutes}")
    step_s = measure_step_seconds(store, cfg)
    max_steps = max(1, int(minutes * 60 * safety / step_s))
    cfg = replace(cfg, max_steps=max_steps, max_minutes=minutes)
    t0 = time.perf_counter()
    model = fit_counterfactual(store, out_dir, cfg, resume=False)
    info = {
        "seconds_per_step_probe": step_s,
        "max_steps": max_steps,
        "steps_trained": logged_steps(out_dir),
        "train_seconds": round(time.perf_counter() - t0, 1),
    }
    return model, info


def fit_for_steps(
    store: ObservationStore, out_dir: str | Path, cfg: CounterfactualTrainConfig, steps: int
) -> tuple[CounterfactualModel, dict[str, float]]:
    """Train for exactly ``steps`` optimizer steps (the cosine schedule ends there), however
    long they take: comparisons at equal steps do not depend on the machine's load.
    Returns the model and {"max_steps", "steps_trained", "train_seconds"}."""
    if steps < 1:
        raise ConfigError(f"steps must be >= 1; got {steps}")
    cfg = replace(cfg, max_steps=int(steps), max_minutes=None)
    t0 = time.perf_counter()
    model = fit_counterfactual(store, out_dir, cfg, resume=False)
    info = {
        "max_steps": int(steps),
        "steps_trained": logged_steps(out_dir),
        "train_seconds": round(time.perf_counter() - t0, 1),
    }
    return model, info


def logged_steps(run_dir: str | Path) -> int | None:
    """Optimizer steps a run took, from its CSV log: the last logged step + 1, so exact to
    within the logging interval (``log_every``, 10 steps by default)."""
    path = Path(run_dir) / "logs" / "metrics.csv"
    if not path.is_file():
        return None
    steps = [int(float(r["step"])) for r in read_metrics(path) if r.get("step")]
    return max(steps) + 1 if steps else 0


def _multi_device(cfg: CounterfactualTrainConfig) -> bool:
    if cfg.num_nodes > 1 or cfg.devices not in (1, "1", "auto"):
        return True
    return cfg.devices == "auto" and torch.cuda.device_count() > 1
