"""What every whatsreal model shares: a class registry and save/load of config + weights.

A model records its constructor arguments in ``self.config`` (JSON-able), so
``save_pretrained`` writes ``config.json`` + ``model.safetensors`` and
:func:`load_pretrained` rebuilds it without any training code.
"""

from __future__ import annotations

import inspect
import json
import os
from pathlib import Path
from typing import Any, TypeVar

import torch
from torch import nn

from whatsreal.errors import ModelFileError, NonFiniteError
from whatsreal.utils import atomic_write_with

CONFIG_NAME = "config.json"
SAFETENSORS_NAME = "model.safetensors"
TORCH_NAME = "model.pt"

MODEL_CLASSES: dict[str, type[nn.Module]] = {}

M = TypeVar("M", bound=type)


def register_model(cls: M) -> M:
    """Class decorator: make a model class loadable by name from a saved config.json."""
    MODEL_CLASSES[cls.__name__] = cls
    return cls


def constructor_args(cls: type, local_vars: dict[str, Any]) -> dict[str, Any]:
    """Pick the constructor arguments out of __init__'s locals(), in signature order."""
    names = [p for p in inspect.signature(cls.__init__).parameters if p != "self"]
    return {name: local_vars[name] for name in names}


def nonfinite_tensors(state: dict[str, torch.Tensor]) -> list[str]:
    """Names of the floating-point tensors of a state dict that hold NaN or inf."""
    return [
        name
        for name, t in state.items()
        if isinstance(t, torch.Tensor) and t.is_floating_point() and not bool(t.isfinite().all())
    ]


class PretrainedMixin:
    """save_pretrained / from_pretrained for modules that keep their constructor args in config."""

    config: dict[str, Any]

    def save_pretrained(self, directory: str | os.PathLike[str]) -> Path:
        """Write config.json and weights (safetensors if installed, else model.pt) atomically."""
        directory = Path(directory)
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}  # type: ignore[attr-defined]
        bad = nonfinite_tensors(state)
        if bad:  # a diverged model must not overwrite a good one, nor pass for a result
            raise NonFiniteError(
                f"refusing to save {type(self).__name__} to {directory}: {len(bad)} weight "
                f"tensor(s) hold NaN or inf (e.g. {', '.join(bad[:3])}); the training diverged "
                "or read corrupt data. Nothing was written"
            )
        directory.mkdir(parents=True, exist_ok=True)
        meta = {"class": type(self).__name__, "format_version": 1, "config": self.config}
        atomic_write_with(
            directory / CONFIG_NAME, lambda p: p.write_text(json.dumps(meta, indent=2))
        )
        try:
            from safetensors.torch import save_file
        except ImportError:
            atomic_write_with(directory / TORCH_NAME, lambda p: torch.save(state, p))
            (directory / SAFETENSORS_NAME).unlink(missing_ok=True)
        else:
            atomic_write_with(directory / SAFETENSORS_NAME, lambda p: save_file(state, str(p)))
            (directory / TORCH_NAME).unlink(missing_ok=True)
        return directory

    @classmethod
    def from_pretrained(
        cls, directory: str | os.PathLike[str], map_location: str | torch.device = "cpu"
    ) -> Any:
        """Rebuild a model saved by save_pretrained; no training code is needed."""
        model = load_pretrained(directory, map_location=map_location)
        if not isinstance(model, cls):
            raise TypeError(
                f"{directory} holds a {type(model).__name__}, not a {cls.__name__}; "
                "use whatsreal.load to load any model"
            )
        return model


def _one_line(exc: BaseException) -> str:
    """An exception's message on one line."""
    return " ".join(str(exc).split()) or type(exc).__name__


def _read_weights(
    path: Path, map_location: str | torch.device, fix: str
) -> dict[str, torch.Tensor]:
    """The state dict in a safetensors or torch file; a truncated or damaged file raises
    ModelFileError naming it instead of the library's traceback."""
    if path.name == SAFETENSORS_NAME:
        try:
            from safetensors.torch import load_file
        except ImportError as err:
            raise ImportError(
                f"{path} needs the 'safetensors' package (pip install safetensors)"
            ) from err
    try:
        if path.name == SAFETENSORS_NAME:
            return load_file(str(path), device=str(map_location))
        return torch.load(path, map_location=map_location, weights_only=True)
    except Exception as exc:  # safetensors, pickle and zip errors share no base class
        raise ModelFileError(
            f"cannot read the weights in {path} ({_one_line(exc)}); the file is truncated or "
            f"damaged: {fix}"
        ) from None


def load_pretrained(
    directory: str | os.PathLike[str], map_location: str | torch.device = "cpu"
) -> nn.Module:
    """Load whichever registered model class was saved in directory, in eval mode."""
    # Importing the model families registers their classes.
    from whatsreal.models import contrastive, counterfactual  # noqa: F401

    directory = Path(directory)
    config_path = directory / CONFIG_NAME
    if not config_path.is_file():
        raise FileNotFoundError(
            f"no {CONFIG_NAME} in {directory}; was it written by save_pretrained? "
            "(a training run keeps its model in <run>/model)"
        )
    fix = "copy the model folder again, or re-run the training that wrote it"
    try:
        meta = json.loads(config_path.read_text())
        name, config = meta.get("class"), meta["config"]
    except (ValueError, UnicodeDecodeError, KeyError, AttributeError) as exc:
        raise ModelFileError(
            f"{config_path} is not a readable model config ({_one_line(exc)}); it is truncated "
            f"or damaged: {fix}"
        ) from None
    if name not in MODEL_CLASSES:
        raise ValueError(f"{config_path} names class {name!r}; known: {sorted(MODEL_CLASSES)}")
    model = MODEL_CLASSES[name](**config)
    weights = directory / SAFETENSORS_NAME
    if not weights.is_file():
        weights = directory / TORCH_NAME
        if not weights.is_file():
            raise FileNotFoundError(f"no {SAFETENSORS_NAME} or {TORCH_NAME} in {directory}")
    state = _read_weights(weights, map_location, fix)
    bad = nonfinite_tensors(state)
    if bad:
        raise ModelFileError(
            f"{weights} holds NaN or inf in {len(bad)} tensor(s) (e.g. {', '.join(bad[:3])}); "
            "the training that wrote it diverged or read corrupt data: retrain it"
        )
    try:
        model.load_state_dict(state)
    except RuntimeError as exc:
        raise ModelFileError(
            f"the weights in {weights} do not fit the model {config_path} describes "
            f"({_one_line(exc)[:300]}); the two files come from different runs: {fix}"
        ) from None
    model.to(map_location)
    model.eval()
    return model
