"""Lightning training of the structured contrastive models (seed 001).

The model is a plain module (``whatsreal.models.contrastive``); this file only wires it to
data (source-grouped batches from the store) and to Lightning (early stopping on the
validation loss, checkpoints, CSV log, progress bar, DDP-ready sampling).
"""

from __future__ import annotations

import json
import logging
import warnings
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, ClassVar, Literal

import lightning as L
import torch
from lightning.pytorch.callbacks import Timer
from torch.utils.data import DataLoader

from whatsreal.config import save_config, validate_dataclass
from whatsreal.errors import ConfigError
from whatsreal.models.contrastive import build_contrastive_model
from whatsreal.sampling import ObservationDataset, SourceBatchSampler, SplitSpec, collate_views
from whatsreal.store import ObservationStore
from whatsreal.train.guards import (
    RunCSVLogger,
    prepare_resume,
    refuse_nonfinite_checkpoint,
    stop_if_not_finite,
)
from whatsreal.train.schedules import cosine_factor, weight_ema
from whatsreal.utils import atomic_write_json

log = logging.getLogger(__name__)

# Lightning 2.x on torch >= 2.10 warns about its own use of a torch pytree API; not ours to fix.
warnings.filterwarnings("ignore", message=r".*isinstance\(treespec, LeafSpec\).*")


@dataclass
class ContrastiveTrainConfig:
    """Everything a contrastive run needs besides the store; saved as YAML with the run.
    Values are converted to their field's types and checked against ``limits``."""

    preset: str = "cpu"
    single_latent: bool = False
    model_overrides: dict[str, Any] = field(default_factory=dict)
    lr: float = 1e-3  # seed 001 App. B: Adam, 1e-3
    # "constant" (seed 001) or "cosine": decay to min_lr_ratio × lr over the run's budget,
    # max_steps or max_minutes (whichever ends first), so the last steps refine
    lr_schedule: Literal["constant", "cosine"] = "constant"
    min_lr_ratio: float = 0.0
    # An exponential moving average of the weights (decay per step, ramped up over the first
    # steps) for validation, the best-checkpoint choice and the saved model; 0 keeps the raw
    # weights, as seed 001 does.
    ema_decay: float = 0.0
    sources_per_batch: int = 64
    views_per_source: int = 4
    max_epochs: int = 200
    max_steps: int | None = None  # optimizer steps (equal-steps comparisons); None = no limit
    max_minutes: float | None = None
    patience: int = 8  # early stopping on the validation loss (seed 001 App. B)
    val: float = 0.1
    test: float = 0.1
    split_seed: int = 0
    seed: int = 0
    num_workers: int = 0
    accelerator: str = "auto"
    devices: int | str = "auto"
    precision: str = "auto"  # bf16-mixed on GPUs that support it, else 32-true
    progress: bool = True

    limits: ClassVar[dict[str, str]] = {
        "lr": "> 0",
        "min_lr_ratio": ">= 0 and <= 1",
        "ema_decay": ">= 0 and < 1",
        "sources_per_batch": ">= 1",
        "views_per_source": ">= 1",
        "max_epochs": ">= 1",
        "max_steps": ">= 1",
        "max_minutes": "> 0",
        "patience": ">= 0",
        "val": ">= 0 and < 1",
        "test": ">= 0 and < 1",
        "split_seed": ">= 0",
        "seed": ">= 0 and <= 4294967295",  # Lightning replaces a larger seed by a random one
        "num_workers": ">= 0",
    }
    # What a checkpoint depends on: a resume that changes any of these is refused.
    resume_fixed: ClassVar[tuple[str, ...]] = (
        *("preset", "single_latent", "model_overrides", "ema_decay"),
        *("val", "test", "split_seed"),
    )

    def __post_init__(self) -> None:
        validate_dataclass(self, "train")
        if self.lr_schedule == "cosine" and not (self.max_steps or self.max_minutes):
            raise ConfigError(
                "train.lr_schedule: 'cosine' decays over the run's budget; set train.max_steps "
                "or train.max_minutes, or use lr_schedule: constant"
            )

    @property
    def splits(self) -> SplitSpec:
        return SplitSpec(self.val, self.test, self.split_seed)


def resolve_precision(precision: str) -> str:
    """'auto' means bf16 mixed precision on a GPU that supports it and fp32 elsewhere."""
    if precision != "auto":
        return precision
    if torch.cuda.is_available() and torch.cuda.is_bf16_supported():
        return "bf16-mixed"
    return "32-true"


class ContrastiveTask(L.LightningModule):
    """Adam on the model's own weighted loss (eq. 10); logs every term. With ``schedule``
    "cosine" the learning rate decays over ``max_steps`` or ``max_seconds`` of training,
    whichever is nearer its end (the time read from Lightning's timer, resumes included).
    With ``ema_decay`` > 0 an EMA of the weights is validated and returned (:attr:`final`)."""

    def __init__(
        self,
        model: torch.nn.Module,
        lr: float,
        schedule: str = "constant",
        max_steps: int | None = None,
        max_seconds: float | None = None,
        min_lr_ratio: float = 0.0,
        ema_decay: float = 0.0,
    ) -> None:
        super().__init__()
        self.model = model
        self.ema = weight_ema(model, ema_decay) if ema_decay > 0 else None
        self.lr = lr
        self.schedule, self.min_lr_ratio = schedule, min_lr_ratio
        self.max_steps, self.max_seconds = max_steps, max_seconds

    def progress(self, step: int) -> float:
        """The fraction of the training budget spent at optimizer step ``step``."""
        done = [step / self.max_steps] if self.max_steps else []
        if self.max_seconds:
            timer = next((c for c in self.trainer.callbacks if isinstance(c, Timer)), None)
            if timer is not None:
                done.append(timer.time_elapsed("train") / self.max_seconds)
        return max(done, default=0.0)

    def lr_factor(self, step: int) -> float:
        """The learning-rate multiplier at optimizer step ``step``."""
        if self.schedule == "constant":
            return 1.0
        return cosine_factor(self.progress(step), self.min_lr_ratio)

    @property
    def final(self) -> torch.nn.Module:
        """The weights that are validated and saved: the EMA if there is one, else the model."""
        return self.ema.module if self.ema is not None else self.model

    def _step(self, batch: dict[str, torch.Tensor], stage: str) -> torch.Tensor:
        model = self.model if stage == "train" else self.final
        losses = model.loss(batch["x"], batch["source"], batch["instrument"])
        if stage == "train":
            stop_if_not_finite(losses["total"], batch, self.trainer)
        bs = batch["x"].shape[0]
        for name, value in losses.items():
            self.log(
                f"{stage}/{name}",
                value,
                batch_size=bs,
                prog_bar=name == "total",
                on_step=False,
                on_epoch=True,
                sync_dist=stage == "val",
            )
        return losses["total"]

    def training_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> torch.Tensor:
        return self._step(batch, "train")

    def validation_step(self, batch: dict[str, torch.Tensor], batch_idx: int) -> None:
        self._step(batch, "val")

    def configure_optimizers(self) -> Any:
        opt = torch.optim.Adam(self.model.parameters(), lr=self.lr)
        if self.schedule == "constant":
            return opt
        sched = torch.optim.lr_scheduler.LambdaLR(opt, self.lr_factor)
        return {"optimizer": opt, "lr_scheduler": {"scheduler": sched, "interval": "step"}}

    def optimizer_step(self, *args: Any, **kwargs: Any) -> None:
        # EMA right after each optimiser step, before any checkpoint of that step is written,
        # so that a resumed run continues exactly.
        super().optimizer_step(*args, **kwargs)
        if self.ema is not None:
            self.ema.update_parameters(self.model)

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        refuse_nonfinite_checkpoint(checkpoint, self.global_step)


class ContrastiveData(L.LightningDataModule):
    """Source-grouped batches so that same-source and same-instrument positives exist."""

    def __init__(self, store: ObservationStore, cfg: ContrastiveTrainConfig) -> None:
        super().__init__()
        self.store, self.cfg = store, cfg

    def _loader(self, split: str) -> DataLoader:
        ds = ObservationDataset(self.store, split, splits=self.cfg.splits)
        sampler = SourceBatchSampler(
            ds,
            self.cfg.sources_per_batch,
            self.cfg.views_per_source,
            seed=self.cfg.seed,
            drop_last=split == "train",
        )
        return DataLoader(
            ds,
            batch_sampler=sampler,
            collate_fn=collate_views,
            num_workers=self.cfg.num_workers,
            persistent_workers=self.cfg.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader("train")

    def val_dataloader(self) -> DataLoader:
        return self._loader("val")


def fit_contrastive(
    store: ObservationStore | str | Path,
    out_dir: str | Path,
    cfg: ContrastiveTrainConfig | None = None,
    callbacks: list[L.Callback] | None = None,
    resume: bool | str | Path = False,
) -> torch.nn.Module:
    """Train a contrastive model on a store; save config, checkpoints, log and the best model.

    Starts afresh unless ``resume`` is True (continue from ``out_dir/checkpoints``, falling
    back past an unreadable ``last.ckpt``) or a checkpoint path; a resume whose model or
    splits differ from the run's is refused before any file is touched. A NaN or inf loss
    stops training (:class:`~whatsreal.errors.NonFiniteError`) and non-finite weights are
    never saved. Returns the best model (by validation loss; its weight EMA with
    ``cfg.ema_decay`` > 0), in eval mode, and writes it with ``save_pretrained`` to
    ``out_dir/model``.
    """
    cfg = cfg or ContrastiveTrainConfig()
    store = store if isinstance(store, ObservationStore) else ObservationStore(store)
    out = Path(out_dir)
    L.seed_everything(cfg.seed, workers=True, verbose=False)
    c, t = store.shape
    overrides = dict(cfg.model_overrides)
    if overrides.get("adversary_weight", 0) > 0:  # the adversary's classes: the instruments
        overrides.setdefault("n_instruments", len(store.instruments))
    model = build_contrastive_model(
        cfg.preset,
        in_channels=c,
        length=t,
        single_latent=cfg.single_latent,
        **overrides,
    )
    task = ContrastiveTask(
        model,
        cfg.lr,
        cfg.lr_schedule,
        max_steps=cfg.max_steps,
        max_seconds=cfg.max_minutes * 60 if cfg.max_minutes else None,
        min_lr_ratio=cfg.min_lr_ratio,
        ema_decay=cfg.ema_decay,
    )
    run_config = {
        "model": "contrastive",
        "store": str(store.path),
        "train": asdict(cfg),
        "resolved_model": model.config,
    }
    fixed = [f"train.{k}" for k in cfg.resume_fixed] + ["model", "resolved_model"]
    ckpt_path, resume_step = prepare_resume(out, resume, run_config, task, fixed)
    save_config(run_config, out / "config.yaml")  # only now: a refused resume changes nothing
    ckpt = L.pytorch.callbacks.ModelCheckpoint(
        dirpath=out / "checkpoints", monitor="val/total", mode="min", save_last=True
    )
    cbs = [
        ckpt,
        L.pytorch.callbacks.EarlyStopping("val/total", patience=cfg.patience, mode="min"),
        *(callbacks or []),
    ]
    max_time = {"minutes": cfg.max_minutes} if cfg.max_minutes else None
    trainer = L.Trainer(
        default_root_dir=out,
        max_epochs=cfg.max_epochs,
        max_steps=cfg.max_steps if cfg.max_steps else -1,
        max_time=max_time,
        accelerator=cfg.accelerator,
        devices=cfg.devices,
        precision=resolve_precision(cfg.precision),
        callbacks=cbs,
        logger=RunCSVLogger(out, resume_step=resume_step),
        enable_progress_bar=cfg.progress,
        enable_model_summary=False,
        use_distributed_sampler=False,  # SourceBatchSampler shards by rank itself
        log_every_n_steps=1,
    )
    trainer.fit(task, datamodule=ContrastiveData(store, cfg), ckpt_path=ckpt_path)
    if ckpt.best_model_path:
        state = torch.load(ckpt.best_model_path, map_location="cpu", weights_only=True)
        task.load_state_dict(state["state_dict"])
    model = task.final.cpu().eval()
    if trainer.is_global_zero:
        model.save_pretrained(out / "model")
        atomic_write_json(
            out / "training.json",
            {"steps": int(trainer.global_step), "epochs": int(trainer.current_epoch)},
        )
    return model


def trained_steps(run_dir: str | Path) -> int | None:
    """Optimizer steps a finished :func:`fit_contrastive` run took (None if unknown)."""
    path = Path(run_dir) / "training.json"
    return int(json.loads(path.read_text())["steps"]) if path.is_file() else None
