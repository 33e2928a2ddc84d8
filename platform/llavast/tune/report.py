"""A sweep's trials as a table: CSV text, a terminal-friendly list of rows, and a picture of the objective
against each swept parameter (one scatter per parameter; trials ASHA stopped early drawn hollow)."""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from typing import Any

from matplotlib.figure import Figure

from llavast.config.sweep import PARAMETERS
from llavast.tune.validation import OBJECTIVE_KEY


def swept(rows: Sequence[dict[str, Any]]) -> list[str]:
    """The parameters the trials vary (in PARAMETERS order)."""
    return [name for name in PARAMETERS if any(row.get(name) is not None for row in rows)]


def trials_csv(rows: Sequence[dict[str, Any]]) -> str:
    columns = ["trial_id", *swept(rows), OBJECTIVE_KEY, "loss", "steps", "stopped_early", "error"]
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def trials_figure(rows: Sequence[dict[str, Any]], objective: str) -> Figure:
    """Objective (y) against each swept parameter (x), one panel per parameter."""
    names = swept(rows) or ["trial"]
    figure = Figure(figsize=(3.2 * len(names), 3.0), layout="constrained")
    axes = figure.subplots(1, len(names), squeeze=False)[0]
    scored = [r for r in rows if r.get(OBJECTIVE_KEY) is not None]
    for ax, name in zip(axes, names, strict=True):
        for early, style in ((False, {"color": "C0"}), (True, {"facecolors": "none", "edgecolors": "C1"})):
            mine = [r for r in scored if bool(r.get("stopped_early")) == early]
            xs = [r.get(name, i) for i, r in enumerate(mine)]
            ax.scatter(xs, [r[OBJECTIVE_KEY] for r in mine], label="stopped early" if early else "ran to the end",
                       **style)
        if name == "lr":
            ax.set_xscale("log")
        ax.set_xlabel(name)
        ax.set_ylabel(objective)
        ax.grid(alpha=0.3)
    axes[0].legend(fontsize="small")
    figure.suptitle(f"{len(scored)} trial(s): {objective} by parameter")
    return figure
