"""What keeps a training run honest, shared by the Lightning tasks.

- :func:`stop_if_not_finite`: a NaN or inf loss stops the run with an error that names the
  step and the batch's store rows (and which of them hold non-finite inputs), before the
  optimiser can spread it into the weights.
- :func:`refuse_nonfinite_checkpoint`: no checkpoint is written with NaN or inf weights
  (``save_pretrained`` refuses the same for models).
- :class:`RunCSVLogger`: ``logs/metrics.csv`` keeps the rows of earlier segments on resume.
- :func:`prepare_resume`: picks the checkpoint to resume from, falling back past unreadable
  ones, and refuses one that does not fit the new config, before any file is written.
"""

from __future__ import annotations

import csv
import io
import logging
import warnings
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch
import yaml
from lightning.pytorch.loggers import Logger
from lightning.pytorch.utilities import rank_zero_only

from whatsreal.config import load_config
from whatsreal.errors import ConfigError, ModelFileError, NonFiniteError
from whatsreal.models.base import nonfinite_tensors
from whatsreal.utils import atomic_write_text

log = logging.getLogger(__name__)

METRICS_NAME = "metrics.csv"

# Input tensors of the samplers' batches and the keys holding their store rows.
_ROWS_OF = {
    "anchor": "anchor_row",
    "physics": "physics_rows",
    "instrument_views": "instrument_rows",
    "x": "row",
}


# -- finite loss and weights ----------------------------------------------------------------------


def stop_if_not_finite(loss: torch.Tensor, batch: Mapping[str, Any], trainer: Any) -> None:
    """Raise :class:`NonFiniteError` naming the step and the batch's store rows when ``loss``
    is NaN or inf; under DDP every rank stops together (no rank waits on a dead one)."""
    finite = bool(torch.isfinite(loss.detach()).all())
    world = getattr(trainer, "world_size", 1)
    if world > 1:
        finite = trainer.strategy.reduce_boolean_decision(finite, all=True)
    if finite:
        return
    step = int(trainer.global_step)
    where = (
        f" (on rank {trainer.global_rank}, loss {float(loss.detach()):g} here)" if world > 1 else ""
    )
    bad = _rows_with_nonfinite_inputs(batch)
    if bad:
        cause = (
            f"the batch's inputs hold NaN or inf at store rows {_short(bad)}: the store is "
            "corrupt there (check it with `whatsreal store verify STORE`)"
        )
    else:
        cause = (
            f"the inputs are finite (store rows: {_batch_rows(batch)}), so the model diverged: "
            "lower train.lr, raise train.warmup_steps or set train.grad_clip"
        )
    raise NonFiniteError(
        f"training stopped: the loss is {float(loss.detach()):g} at step {step}{where}; {cause}. "
        "No weights were saved from this step on."
    )


def refuse_nonfinite_checkpoint(checkpoint: Mapping[str, Any], step: int) -> None:
    """Raise :class:`NonFiniteError` instead of writing a checkpoint whose weights hold NaN
    or inf (for ``LightningModule.on_save_checkpoint``, which runs before the write)."""
    bad = nonfinite_tensors(checkpoint.get("state_dict", {}))
    if bad:
        raise NonFiniteError(
            f"training stopped at step {step}: refusing to write a checkpoint whose weights "
            f"hold NaN or inf ({len(bad)} tensor(s), e.g. {', '.join(bad[:3])}); lower "
            "train.lr or check the store for corrupt values"
        )


def _rows_with_nonfinite_inputs(batch: Mapping[str, Any]) -> list[int]:
    rows: set[int] = set()
    for key, row_key in _ROWS_OF.items():
        data, idx = batch.get(key), batch.get(row_key)
        if not isinstance(data, torch.Tensor) or not isinstance(idx, torch.Tensor):
            continue
        if not data.is_floating_point() or data.ndim <= idx.ndim:
            continue
        bad = ~torch.isfinite(data).flatten(idx.ndim).all(-1)
        rows.update(int(r) for r in idx[bad].tolist() if r >= 0)
    return sorted(rows)


def _batch_rows(batch: Mapping[str, Any]) -> str:
    parts = []
    for row_key in _ROWS_OF.values():
        idx = batch.get(row_key)
        if isinstance(idx, torch.Tensor):
            parts.append(f"{row_key} {_short(sorted({int(r) for r in idx.flatten() if r >= 0}))}")
    return "; ".join(parts) or "unknown (the batch carries no row indices)"


def _short(values: Sequence[int], n: int = 20) -> str:
    head = ", ".join(str(v) for v in values[:n])
    return f"[{head}{f', ... ({len(values)} in all)' if len(values) > n else ''}]"


# -- a CSV log that survives resume ---------------------------------------------------------------


def read_metrics(path: str | Path) -> list[dict[str, str]]:
    """Rows of a ``metrics.csv``, leaving out a last line that a kill cut short."""
    path = Path(path)
    if not path.is_file():
        return []
    lines = path.read_text().splitlines(keepends=True)
    if lines and not lines[-1].endswith("\n"):
        lines = lines[:-1]
    return [
        row
        for row in csv.DictReader(lines)
        if None not in row and all(v is not None for v in row.values())
    ]


def _step_of(row: Mapping[str, str]) -> int | None:
    try:
        return int(float(row.get("step") or ""))
    except ValueError:
        return None


class RunCSVLogger(Logger):
    """``<root>/logs/metrics.csv``, kept across resumes.

    At the first row written, the rows of earlier segments for steps before ``resume_step``
    stay; later ones (which the resumed run logs again) go. ``resume_step=None`` is a fresh
    run, which starts the file anew. Each row is appended as it is logged, so a killed run
    loses at most that row; a new column rewrites the file atomically.
    """

    def __init__(self, root: str | Path, resume_step: int | None = None, name: str = "logs"):
        super().__init__()
        self._root, self._name, self._resume_step = Path(root), name, resume_step
        self._keys: list[str] | None = None  # the header on disk once started

    @property
    def name(self) -> str:
        return self._name

    @property
    def version(self) -> str:
        return ""

    @property
    def root_dir(self) -> str:
        return str(self._root)

    @property
    def save_dir(self) -> str:
        return str(self._root)

    @property
    def log_dir(self) -> str:
        return str(self._root / self._name)

    @property
    def path(self) -> Path:
        """The CSV file."""
        return self._root / self._name / METRICS_NAME

    @rank_zero_only
    def log_hyperparams(self, params: Any, *args: Any, **kwargs: Any) -> None:
        """Nothing: the hyper-parameters are in the run's config.yaml."""

    @rank_zero_only
    def log_metrics(self, metrics: Mapping[str, Any], step: int | None = None) -> None:
        """Append one row (``step`` included)."""
        row = {k: v.item() if isinstance(v, torch.Tensor) else v for k, v in metrics.items()}
        row["step"] = step
        if self._keys is None:
            self._start()
        assert self._keys is not None
        if not self._keys or set(row) - set(self._keys):
            rows = [*read_metrics(self.path), row]
            self._keys = sorted(set(self._keys).union(*rows))
            self._rewrite(rows)
            return
        with open(self.path, "a", newline="") as f:
            csv.DictWriter(f, fieldnames=self._keys, restval="").writerow(row)

    def _start(self) -> None:
        rows = []
        if self._resume_step is not None:
            rows = [
                r
                for r in read_metrics(self.path)
                if (s := _step_of(r)) is not None and s < self._resume_step
            ]
        self._keys = sorted(set().union(*rows)) if rows else []
        if rows:
            self._rewrite(rows)
        else:
            self.path.unlink(missing_ok=True)

    def _rewrite(self, rows: list[dict[str, Any]]) -> None:
        buf = io.StringIO(newline="")
        writer = csv.DictWriter(buf, fieldnames=self._keys or [], restval="")
        writer.writeheader()
        writer.writerows(rows)
        atomic_write_text(self.path, buf.getvalue())


# -- resume ---------------------------------------------------------------------------------------


def read_checkpoint(path: str | Path) -> dict[str, Any]:
    """Open a Lightning checkpoint on the CPU, memory-mapped (cheap even when large)."""
    return torch.load(path, map_location="cpu", weights_only=True, mmap=True)


def prepare_resume(
    out: Path,
    resume: bool | str | Path,
    run_config: Mapping[str, Any],
    module: torch.nn.Module,
    fixed: Sequence[str],
) -> tuple[str | None, int | None]:
    """The checkpoint to resume from and its step, or (None, None) for a fresh start.

    ``resume=True`` takes the newest checkpoint in ``out/checkpoints`` (``last.ckpt``), or
    the newest readable one when that is truncated or corrupt (with a warning naming it);
    a path takes that file.
    The run folder's ``config.yaml`` must agree with ``run_config`` on the dotted ``fixed``
    keys and the checkpoint's tensors must fit ``module``: otherwise a ConfigError names the
    keys. Nothing is written, so a refused resume leaves the run folder as it was.
    """
    path, ckpt = _pick_checkpoint(out, resume)
    if path is None or ckpt is None:
        return None, None
    problems = _config_differences(out / "config.yaml", run_config, fixed)
    problems += _shape_differences(ckpt.get("state_dict", {}), module.state_dict())
    if problems:
        raise ConfigError(
            f"cannot resume {out} from {path.name}: the run was made with other settings: "
            f"{'; '.join(problems[:8])}{' ...' if len(problems) > 8 else ''}. Use the run's "
            f"settings (in {out / 'config.yaml'}), or a new output folder for a new run"
        )
    changed = _config_differences(out / "config.yaml", run_config, ["train"])
    if changed:
        log.info("resuming %s with changed settings: %s", out, "; ".join(changed))
    return str(path), int(ckpt.get("global_step", 0))


def _pick_checkpoint(
    out: Path, resume: bool | str | Path
) -> tuple[Path | None, dict[str, Any] | None]:
    if resume is False:
        return None, None
    if resume is not True:
        path = Path(resume)
        if not path.is_file():
            raise FileNotFoundError(f"checkpoint to resume from not found: {path}")
        try:
            return path, read_checkpoint(path)
        except Exception as exc:  # torch raises many kinds for a damaged file
            raise ModelFileError(
                f"checkpoint {path} is truncated or corrupt ({_first_line(exc)}); pass "
                "another checkpoint, or resume=False to start afresh"
            ) from None
    folder = out / "checkpoints"
    if not folder.is_dir():
        return None, None
    # Newest first: last.ckpt is written right after the step checkpoint of the same state,
    # and a fresh run into an old folder writes last-v1.ckpt beside a stale last.ckpt.
    candidates = sorted(folder.glob("*.ckpt"), key=lambda p: (p.stat().st_mtime, p.name))[::-1]
    unreadable: list[str] = []
    for path in candidates:
        try:
            ckpt = read_checkpoint(path)
        except Exception as exc:  # torch raises many kinds for a damaged file
            unreadable.append(f"{path} ({_first_line(exc)})")
            continue
        if unreadable:
            msg = (
                f"checkpoint {unreadable[0]} is unreadable (truncated by a kill?); resuming "
                f"from the previous good one, {path}"
            )
            warnings.warn(msg, stacklevel=3)
        return path, ckpt
    if unreadable:
        raise ModelFileError(
            f"cannot resume {out}: every checkpoint is unreadable: {'; '.join(unreadable)}. "
            f"Delete {folder} to start the run afresh"
        )
    return None, None


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


_MISSING = object()


def _plain(obj: Any) -> Any:
    """``obj`` as it reads back from YAML, so saved and new configs compare like for like."""
    return yaml.safe_load(yaml.safe_dump(obj, sort_keys=False))


def _get(cfg: Any, dotted: str) -> Any:
    for part in dotted.split("."):
        if not isinstance(cfg, Mapping) or part not in cfg:
            return _MISSING
        cfg = cfg[part]
    return cfg


def _leaf_differences(saved: Any, new: Any, key: str) -> list[str]:
    if isinstance(saved, Mapping) and isinstance(new, Mapping):
        out = []
        for k in sorted(set(saved) | set(new), key=str):
            out += _leaf_differences(saved.get(k, _MISSING), new.get(k, _MISSING), f"{key}.{k}")
        return out
    if saved == new:
        return []

    def show(v: Any) -> str:
        return "(not set)" if v is _MISSING else repr(v)

    return [f"{key} is {show(saved)} in the run, {show(new)} now"]


def _config_differences(
    path: Path, run_config: Mapping[str, Any], keys: Sequence[str]
) -> list[str]:
    if not path.is_file():
        return []
    saved, new = load_config(path), _plain(dict(run_config))
    out = []
    for key in keys:
        a, b = _get(saved, key), _get(new, key)
        if a is _MISSING and key == "resolved_model":
            continue  # written by older versions without it
        out += _leaf_differences(a, b, key)
    return out


def _shape_differences(theirs: Mapping[str, Any], mine: Mapping[str, torch.Tensor]) -> list[str]:
    out = [
        f"tensor {k} is {tuple(theirs[k].shape)} in the checkpoint, {tuple(v.shape)} now"
        for k, v in mine.items()
        if k in theirs and hasattr(theirs[k], "shape") and tuple(theirs[k].shape) != v.shape
    ]
    missing = [k for k in mine if k not in theirs]
    extra = [k for k in theirs if k not in mine]
    if missing:
        out.append(f"{len(missing)} tensor(s) not in the checkpoint (e.g. {missing[0]})")
    if extra:
        out.append(f"{len(extra)} checkpoint tensor(s) this model lacks (e.g. {extra[0]})")
    return out
