"""The separation report (issue 10): seed 000 Fig. 5 per survey, survey identity, transfer
and the goals, as one self-contained HTML page."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from whatsreal.evaluate.separation import fig5_figure
from whatsreal.report.html import HtmlReport


def write_separation_report(results: Mapping[str, Any], path: str | Path) -> Path:
    """Write the page for a :mod:`benchmarks.separation_galaxies`-style results dict."""
    import matplotlib.pyplot as plt

    rep = HtmlReport("whatsreal: does the model separate physics from observing conditions?")
    shared = results["shared"]
    rep.text(
        f"Probes trained on {shared['n_probe_train']} training galaxies and scored on "
        f"{shared['n_test']} held-out galaxies, within each survey (seed 000 Fig. 5). "
        f"The context instrument latent pools the observation with its {shared['k_context']} "
        "sky neighbours, which is what the instrument encoder sees in training."
    )
    evaluated = [v for v, e in results["variants"].items() if e.get("evaluation")]
    rep.heading("Variants")
    rows = []
    for v in evaluated:
        ev = results["variants"][v]["evaluation"]
        gap = max(q["gap"] for t in ev["transfer"].values() for q in t.values())
        rows.append(
            [
                v,
                json.dumps(results["variants"][v].get("overrides", {})),
                ev["retrieval"]["top1"],
                ev["survey_identity"][ev.get("space", "physics")]["accuracy"],
                gap,
            ]
        )
    rep.table(
        rows, ["variant", "overrides", "top-1", "survey id (physics or single latent)", "worst gap"]
    )
    for v in evaluated:
        rep.heading(f"Per-survey probes: {v}")
        fig = fig5_figure(results, v)
        rep.figure(fig, f"{v}: R² within each survey, physics (grey) then that survey's conditions")
        plt.close(fig)
    goals = results.get("goals", {})
    if goals:
        rep.heading("Goals")
        rep.table(
            [
                [v, k, g["value"], g["goal"], "met" if g["met"] else "NOT met"]
                for v, gs in goals.items()
                for k, g in gs.items()
            ],
            ["variant", "goal", "value", "target", ""],
        )
    return rep.write(path)
