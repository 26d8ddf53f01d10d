"""Stage lines with elapsed time, the progress every pipeline prints."""

from __future__ import annotations

import time


class Stages:
    """Prints each stage with its elapsed time (rich), so long runs show live progress."""

    def __init__(self, quiet: bool = False) -> None:
        from rich.console import Console

        self.console = Console(quiet=quiet)
        self.t0 = time.perf_counter()

    def __call__(self, text: str) -> None:
        self.console.print(f"[bold cyan][{time.perf_counter() - self.t0:6.1f} s][/] {text}")
