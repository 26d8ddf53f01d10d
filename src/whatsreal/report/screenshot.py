"""Screenshot a report page in headless Chromium, to check that it renders in a browser.

    python -m whatsreal.report.screenshot runs/x/report.html docs/images/x.png --height 2600

Chromium is not a Python dependency: install it from the system's packages (Debian:
``apt-get install chromium``). The PNG is reduced to a 256-colour palette (Pillow) so that
it can be kept in the repository.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import tempfile
from collections.abc import Sequence
from pathlib import Path

__all__ = ["BROWSERS", "find_browser", "screenshot"]

BROWSERS = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")


def find_browser() -> str:
    """Path of the first headless-capable Chromium on PATH (or in $CHROMIUM)."""
    for name in (os.environ.get("CHROMIUM"), *BROWSERS):
        if name and (path := shutil.which(name)):
            return path
    raise FileNotFoundError(
        f"no Chromium found (tried $CHROMIUM and {list(BROWSERS)} on PATH); install one, "
        "e.g. `apt-get install chromium`, or set CHROMIUM to its path"
    )


def screenshot(
    page: str | Path,
    out: str | Path,
    width: int = 1280,
    height: int = 2600,
    colours: int | None = 256,
    timeout_s: float = 120.0,
) -> Path:
    """Render ``page`` (an HTML file) at ``width`` x ``height`` CSS pixels to the PNG ``out``
    (written atomically); ``colours`` quantises it (None keeps full colour). Returns ``out``."""
    page, out = Path(page).resolve(), Path(out)
    if not page.is_file():
        raise FileNotFoundError(f"{page}: no such report page")
    if width < 1 or height < 1:
        raise ValueError(f"width and height must be >= 1; got {width} x {height}")
    browser = find_browser()
    out.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        raw = Path(tmp) / "shot.png"
        cmd = [
            browser,
            "--headless=new",
            "--no-sandbox",
            "--disable-gpu",
            "--hide-scrollbars",
            f"--user-data-dir={tmp}/profile",
            f"--window-size={width},{height}",
            f"--screenshot={raw}",
            page.as_uri(),
        ]
        done = subprocess.run(cmd, capture_output=True, text=True, timeout=timeout_s)
        if done.returncode != 0 or not raw.is_file():
            tail = (done.stderr or done.stdout).strip().splitlines()[-3:]
            raise RuntimeError(f"{browser} could not render {page}: {' | '.join(tail)}")
        from PIL import Image

        img = Image.open(raw).convert("RGB")
        if colours:
            img = img.quantize(colors=colours, method=Image.Quantize.MEDIANCUT)
        part = out.with_name(f".{out.name}.part")
        img.save(part, format="PNG", optimize=True)
        part.replace(out)
    return out


def main(argv: Sequence[str] | None = None) -> int:
    """Command line: ``python -m whatsreal.report.screenshot PAGE OUT [--width] [--height]``."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("page", help="report HTML file")
    ap.add_argument("out", help="PNG to write")
    ap.add_argument("--width", type=int, default=1280, help="CSS pixels (default 1280)")
    ap.add_argument("--height", type=int, default=2600, help="CSS pixels (default 2600)")
    ap.add_argument("--full-colour", action="store_true", help="keep the PNG unquantised")
    args = ap.parse_args(argv)
    path = screenshot(
        args.page, args.out, args.width, args.height, None if args.full_colour else 256
    )
    print(f"{path} ({path.stat().st_size / 1024:.0f} KiB)")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
