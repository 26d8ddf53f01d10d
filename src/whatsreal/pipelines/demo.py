"""`whatsreal demo`: both tracks at small sizes, one combined report.

Each track simulates its data, trains without labels and scores the latents on held-out
sources (:func:`whatsreal.pipelines.lightcurves.run_lightcurve_track`,
:func:`whatsreal.pipelines.galaxies.run_galaxy_track`); the pages are then joined into one
``report.html``.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path
from typing import Any

from whatsreal.errors import ConfigError

__all__ = ["TRACKS", "run_demo"]

TRACKS = ("lightcurves", "galaxies")


def run_demo(
    out: str | Path,
    preset: str = "demo",
    track: str = "both",
    minutes: float | None = None,
    log: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Run the demo's tracks (``track``: ``both``, ``lightcurves`` or ``galaxies``) with the
    named preset into ``out/<track>/`` and write ``out/report.html``. ``minutes`` caps the
    light-curve dual model's wall time (the presets train fixed steps, load-independent).
    Every track's config is checked before the first one starts, so a bad preset fails at
    once and writes nothing. Returns {"report": path, "summaries": [one text per track],
    "results": {track: results}}."""
    if track not in ("both", *TRACKS):
        raise ConfigError(f"track must be 'both' or one of {TRACKS}; got {track!r}")
    from whatsreal.pipelines.galaxies import galaxy_summary, galaxy_track_config, run_galaxy_track
    from whatsreal.pipelines.lightcurves import (
        lightcurve_summary,
        run_lightcurve_track,
        track_config,
    )
    from whatsreal.report.html import combine_reports

    tracks = TRACKS if track == "both" else (track,)
    out = Path(out)
    galaxy_cfg = galaxy_track_config(preset) if "galaxies" in tracks else None
    lc_cfg = track_config(preset) if "lightcurves" in tracks else None
    if lc_cfg is not None and minutes is not None:
        lc_cfg = replace(lc_cfg, train=replace(lc_cfg.train, max_minutes=minutes))
    pages, summaries, results = [], [], {}
    if lc_cfg is not None:
        log(f"== light curves (seed 001's modality) -> {out / 'lightcurves'}")
        results["lightcurves"] = run_lightcurve_track(out / "lightcurves", lc_cfg)
        summaries.append(lightcurve_summary(results["lightcurves"]))
        pages.append(("Light curves", out / "lightcurves" / "report.html"))
    if galaxy_cfg is not None:
        log(f"== galaxies (seed 000's modality) -> {out / 'galaxies'}")
        results["galaxies"] = run_galaxy_track(out / "galaxies", galaxy_cfg)
        summaries.append(galaxy_summary(results["galaxies"]))
        pages.append(("Galaxies", out / "galaxies" / "report.html"))
    report = combine_reports(
        out / "report.html",
        "whatsreal demo: physics and instrument, separated",
        f"Preset '{preset}'. Each track simulates its data, trains without labels and "
        "scores the latents on held-out sources; each section is also a page of its own.",
        pages,
    )
    return {"report": report, "summaries": summaries, "results": results}
