"""The drift report for people: a PNG (PSI per column, and reference against new histograms of
the most drifted columns) and a self-contained HTML page with the table and the figure."""

from __future__ import annotations

import base64
import html
import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")  # files only; never a window
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from search.monitor.drift import DriftReport  # noqa: E402
from search.serving import MISSING

__all__ = ["plot_drift", "render_html"]

_MOST_COLUMNS = 20
_HISTOGRAMS = 3


def plot_drift(
    report: DriftReport, profile: dict[str, Any], frame: pd.DataFrame, path: Path
) -> Path:
    """PSI per column (worst 20) beside histograms of the (up to) three worst columns."""
    # Broken and untested columns have no PSI to draw; the data-quality section names them.
    measured = [c for c in report.columns if math.isfinite(c.psi)]
    shown = measured[:_MOST_COLUMNS]
    worst = measured[:_HISTOGRAMS]
    figure, axes = plt.subplots(
        1, 1 + len(worst), figsize=(5 + 4 * len(worst), 0.3 * len(shown) + 2.5), squeeze=False
    )
    bars = axes[0][0]
    names = [c.column for c in shown][::-1]
    values = [c.psi for c in shown][::-1]
    colours = ["tab:red" if c.drifted else "tab:blue" for c in shown][::-1]
    bars.barh(names, values, color=colours)
    bars.axvline(report.psi_threshold, color="black", linestyle="--", linewidth=1)
    bars.set_xlabel(f"PSI (dashed: threshold {report.psi_threshold:g}; red: drifted)")
    bars.set_title(f"{len(report.drifted)} of {len(report.columns)} columns drifted")
    for axis, column in zip(axes[0][1:], worst, strict=True):
        ref = profile["columns"][column.column]
        if ref["type"] == "numeric":
            new = pd.to_numeric(frame[column.column], errors="coerce").dropna()
            both = np.concatenate([np.asarray(ref["sample"], float), new.to_numpy(float)])
            bins = np.histogram_bin_edges(both, bins=30)
            axis.hist(ref["sample"], bins=bins, density=True, alpha=0.5, label="reference")
            axis.hist(new, bins=bins, density=True, alpha=0.5, label="new")
        else:
            counts = frame[column.column].astype("string").fillna(MISSING).value_counts()
            labels = list(ref["frequencies"])[:12]
            new_share = [counts.get(k, 0) / max(len(frame), 1) for k in labels]
            positions = np.arange(len(labels))
            axis.bar(
                positions - 0.2, [ref["frequencies"][k] for k in labels], 0.4, label="reference"
            )
            axis.bar(positions + 0.2, new_share, 0.4, label="new")
            axis.set_xticks(positions, labels, rotation=45, ha="right")
        axis.set_title(f"{column.column}: PSI {column.psi:.2f}")
        axis.legend()
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
    return path


def _multivariate_html(report: DriftReport) -> str:
    """The classifier two-sample test: its verdict, and the AUC each top column carries."""
    found = report.multivariate
    if found is None:
        note = report.multivariate_note
        return f"<h2>Multivariate</h2><p>{html.escape(note)}</p>" if note else ""
    rows = "".join(
        f"<tr><td>{html.escape(column)}</td><td>{drop:+.3f}</td></tr>"
        for column, drop in found.top_columns
    )
    marked = ' class="drifted"' if found.drifted else ""
    return (
        f"<h2>Multivariate</h2><p{marked}>{html.escape(found.describe())}</p>"
        "<p>Can a classifier tell the new rows from the training rows stored with the model? "
        "Out-of-fold AUC 0.5: no better than a coin; 1: every row. Drifted "
        f"when the 95% interval's lower end is above {found.threshold:g}.</p>"
        f"<table><tr><th>column</th><th>AUC lost when shuffled</th></tr>{rows}</table>"
    )


def _performance_html(report: DriftReport) -> str:
    """The metric estimated without labels beside the one realized with them, when known."""
    note = f"<p>{html.escape(report.estimated_note)}</p>" if report.estimated_note else ""
    figures: list[tuple[str, Any]] = []
    if report.estimated is not None:
        e = report.estimated
        figures.append((f"estimated ({e.method}) on {e.rows:,} rows without their labels", e))
    if report.realized is not None:
        figures.append(("realized on the labelled rows", report.realized))
    if not figures:
        return f"<h2>Performance</h2>{note}" if note else ""
    rows = "".join(
        f"<tr><td>{html.escape(what)}</td><td>{f.value:.4f}</td>"
        f"<td>[{f.low:.4f}, {f.high:.4f}]</td></tr>"
        for what, f in figures
    )
    return (
        f"<h2>Performance</h2>{note}<p>{html.escape(figures[0][1].metric)}; validation when "
        f"logged: {figures[0][1].reference:.4f}. The estimate sees a shift in the inputs, not "
        "in how the target depends on them.</p>"
        f"<table><tr><th></th><th>value</th><th>95% interval</th></tr>{rows}</table>"
    )


def _quality_html(report: DriftReport) -> str:
    """The data-quality section: per column the shares of unusable, missing, out-of-range and
    unseen values, broken columns marked."""
    quality = report.quality
    if quality is None:
        return ""
    rows = "".join(
        "<tr{}><td>{}</td><td>{}</td><td>{:.1%}</td><td>{:.1%}</td><td>{:.1%}</td><td>{:.1%}</td>"
        "<td>{:.1%}</td><td>{}</td></tr>".format(
            ' class="drifted"' if c.broken else "",
            html.escape(c.column),
            html.escape(c.expected),
            c.unparseable,
            c.missing,
            c.training_missing,
            c.outside,
            c.unseen,
            html.escape(c.problem or "no"),
        )
        for c in quality.columns
    )
    return (
        f"<h2>Data quality</h2><p>{html.escape(quality.verdict())}</p>"
        "<table><tr><th>column</th><th>training type</th><th>unparseable</th><th>missing</th>"
        "<th>missing in training</th><th>outside training range</th><th>unseen</th>"
        f"<th>broken</th></tr>{rows}</table>"
    )


def render_html(report: DriftReport, title: str, png: Path) -> str:
    """One page: the summary, the figure (embedded) and the table, worst column first."""
    image = base64.b64encode(png.read_bytes()).decode()
    rows = "".join(
        "<tr{}><td>{}</td><td>{}</td><td>{}</td><td>{:.2g}</td><td>{:.3f}</td><td>{:.3f}</td>"
        "<td>{:.1%}</td><td>{:+.1%}</td><td>{:.4f}</td><td>{}</td></tr>".format(
            ' class="drifted"' if c.drifted else "",
            html.escape(c.column),
            c.kind,
            c.test,
            c.p_adjusted,
            c.psi,
            c.distance,
            c.unseen_share,
            c.missing_change,
            c.importance,
            c.verdict,
        )
        for c in report.columns
    )
    summary = html.escape("\n".join(report.summary()))
    multivariate = _multivariate_html(report)
    performance = _performance_html(report)
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>body{{font-family:sans-serif;margin:2em}}table{{border-collapse:collapse}}
td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}td:first-child{{text-align:left}}
.drifted{{background:#fde0dc}}</style></head><body>
<h1>{html.escape(title)}</h1><p>{report.rows} new rows.</p>{_quality_html(report)}
<pre>{summary}</pre>
<img alt="PSI per column and histograms" src="data:image/png;base64,{image}">
{performance}
{multivariate}
<table><tr><th>column</th><th>kind</th><th>test</th><th>p (BH)</th><th>PSI</th>
<th>distance</th><th>unseen</th><th>missing change</th><th>importance</th><th>drifted</th></tr>
{rows}</table></body></html>
"""
