"""`tabslim report`: a study's front as an aligned text table relative to its baseline."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import pandas as pd

from search import pareto
from search.study import find_study
from search.study_settings import StudySettings

__all__ = ["fmt", "format_report", "ratio_text", "study_report"]


def study_report(name: str, storage_url: str | None) -> str:
    """The report of study `name` in `storage_url` (default: the journal under mlruns/)."""
    study = find_study(name, storage_url)
    metric = StudySettings.read(study).metric
    return format_report(pareto.trial_table(study), metric=metric)


def format_report(table: pd.DataFrame, *, metric: str) -> str:
    """Aligned text table of the baseline and the front members of `trial_table` output."""
    if table.empty:
        return "No finished trials yet: run a search first, then report again."
    base = table[table["baseline"]]
    members = table[table["pareto"] & ~table["baseline"]]
    shown = pd.concat([base, members])
    n_front = int(table["pareto"].sum())
    header = (
        f"{metric}: {n_front} Pareto-front model{'s' if n_front != 1 else ''} "
        f"of {len(table)} finished trial{'s' if len(table) != 1 else ''}"
        + (" (baseline first)" if len(base) else " (no baseline finished yet)")
    )
    names = (
        "trial",
        "approach",
        "widths",
        "params",
        "param ratio",
        "latency ratio",
        f"val {metric}",
        "delta",
        f"test {metric}",
    )
    # Text columns read best left-aligned, numbers right-aligned so their digits line up.
    left = (False, True, True, False, False, False, False, False, False)
    cells = [_cells(row) for row in shown.itertuples(index=False)]
    widths = [max(len(r[i]) for r in [names, *cells]) for i in range(len(names))]
    lines = [header, _join(names, widths, left)]
    lines += [_join(r, widths, left) for r in cells]
    if members.empty:
        lines.append("No feasible candidate besides the baseline yet.")
    return "\n".join(lines)


def _cells(row: Any) -> tuple[str, ...]:
    return (
        str(row.trial),
        "baseline" if row.baseline else row.approach,
        row.hidden or "-",
        fmt(row.parameters, ",.0f"),
        ratio_text(row.param_ratio),
        ratio_text(row.latency_ratio),
        fmt(row.metric, ".4f"),
        fmt(row.metric_delta, "+.4f"),
        fmt(row.test_metric, ".4f"),
    )


def fmt(value: Any, spec: str, suffix: str = "") -> str:
    """`value` formatted by `spec`, or "-" for a missing one."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:{spec}}{suffix}"


def ratio_text(value: float) -> str:
    # Two decimals read well ("0.23x") but would show a 50x smaller network as "0.02x".
    return fmt(value, ".2f" if math.isnan(value) or value >= 0.1 else ".3f", "x")


def _join(cells: Sequence[str], widths: Sequence[int], left: Sequence[bool]) -> str:
    return "  ".join(
        c.ljust(w) if is_left else c.rjust(w)
        for c, w, is_left in zip(cells, widths, left, strict=True)
    ).rstrip()
