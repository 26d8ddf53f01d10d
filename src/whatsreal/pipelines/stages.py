"""Stage lines with elapsed time, the progress every pipeline prints."""

from __future__ import annotations

import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any


class Stages:
    """Prints each stage with its elapsed time (rich), so long runs show live progress."""

    def __init__(self, quiet: bool = False) -> None:
        from rich.console import Console

        self.console = Console(quiet=quiet)
        self.t0 = time.perf_counter()

    def __call__(self, text: str) -> None:
        self.console.print(f"[bold cyan][{time.perf_counter() - self.t0:6.1f} s][/] {text}")


def start_track(out_dir: str | Path, cfg: Any, quiet: bool = False) -> tuple[Path, Stages]:
    """What every track does first: quiet Lightning's banners (warnings stay), create the
    output folder, save the run's config there as ``config.yaml``, start the stage clock."""
    from whatsreal.config import save_config

    for name in ("lightning.pytorch", "lightning.fabric"):
        logging.getLogger(name).setLevel(logging.WARNING)
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    save_config(asdict(cfg), out / "config.yaml")
    return out, Stages(quiet)
