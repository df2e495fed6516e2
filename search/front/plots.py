"""Plots of a study's trials: an interactive HTML chart and a static PNG, from `trial_table`.

x = parameters (log), y = validation metric, colour = latency ratio (latency in ms while there
is no baseline), symbol = approach; front members are outlined and joined by a step line, the
baseline is a star and the floor a dashed line.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import plotly.graph_objects as go
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.text import Annotation
from matplotlib.transforms import Bbox, BboxBase

from search.front.report import delta_text, fmt, ratio_text

__all__ = ["plot_front_html", "plot_front_png"]

# Plotly and matplotlib spell marker shapes differently; unknown approaches cycle through extras.
_PLOTLY_SYMBOLS = {"scratch": "circle", "prune": "diamond"}
_PLOTLY_EXTRA = ("square", "triangle-up", "cross", "x")
_MPL_MARKERS = {"scratch": "o", "prune": "D"}
_MPL_EXTRA = ("s", "^", "P", "X")
# Where a front label may sit relative to its point, in points, tried in this order; negative
# x offsets are counted from the label's right edge (see `_place_labels`).
_LABEL_OFFSETS = [
    (dx, sign * (5 + 12 * step) - (8 if sign < 0 else 0))
    for step in range(10)
    for sign in (1, -1)
    for dx in (5, -5)
]


def plot_front_html(
    table: pd.DataFrame,
    path: str | Path,
    *,
    metric: str,
    floor: float | None = None,
    title: str | None = None,
) -> Path:
    """Write an interactive plotly chart of `trial_table` output; works offline."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    colour, colour_label = _colour_column(table)
    fig = go.Figure()
    for i, (approach, part) in enumerate(table.groupby("approach", sort=True)):
        fig.add_trace(_plotly_trials(part, str(approach), i, colour, metric))
    members = table[table["pareto"]].sort_values("parameters")
    if len(members) > 1:
        fig.add_trace(_plotly_front_line(members))
    base = table[table["baseline"]]
    if len(base):
        fig.add_trace(_plotly_baseline(base, metric))
    if floor is not None:
        fig.add_hline(
            y=floor,
            line_dash="dash",
            line_color="crimson",
            annotation_text=_floor_label(table, floor),
            annotation_position="bottom right",
        )
    fig.update_layout(
        title=_title(table, members, metric, title),
        xaxis={"type": "log", "title": "parameters"},
        yaxis={"title": f"validation {metric}"},
        coloraxis={"colorscale": "Viridis", "colorbar": {"title": colour_label}},
        legend={"title": "approach"},
        template="plotly_white",
    )
    # The whole plotly.js goes inline so the file opens without network (MLflow artifact, CI).
    fig.write_html(path, include_plotlyjs=True, full_html=True)
    return path


def _plotly_front_line(members: pd.DataFrame) -> go.Scatter:
    return go.Scatter(
        x=members["parameters"],
        y=members["metric"],
        mode="lines",
        line={"shape": "hv", "color": "black", "width": 1},
        name="Pareto front",
        hoverinfo="skip",
    )


def _plotly_baseline(base: pd.DataFrame, metric: str) -> go.Scatter:
    return go.Scatter(
        x=base["parameters"],
        y=base["metric"],
        mode="markers",
        name="baseline",
        hovertext=[_hover(row, metric) for row in base.itertuples(index=False)],
        hoverinfo="text",
        marker={
            "symbol": "star",
            "size": 20,
            "color": "gold",
            "line": {"color": "black", "width": 1},
        },
    )


def _error_bars(rows: pd.DataFrame) -> tuple[np.ndarray, np.ndarray]:
    """Distances from each metric down and up to its paired 95% interval (0 where none).

    The interval is of candidate - baseline on the same rows, so on the metric's axis it spans
    metric - (delta - low) .. metric + (high - delta).
    """
    lower = (rows["metric_delta"] - rows["delta_low"]).to_numpy(dtype=float)
    upper = (rows["delta_high"] - rows["metric_delta"]).to_numpy(dtype=float)
    return np.clip(np.nan_to_num(lower), 0, None), np.clip(np.nan_to_num(upper), 0, None)


def _plotly_trials(
    part: pd.DataFrame, approach: str, index: int, colour: str, metric: str
) -> go.Scatter:
    on_front = part["pareto"].to_numpy(dtype=bool)
    lower, upper = _error_bars(part)
    return go.Scatter(
        x=part["parameters"],
        y=part["metric"],
        error_y={
            "type": "data",
            "symmetric": False,
            "array": upper,
            "arrayminus": lower,
            "thickness": 1,
            "width": 3,
            "color": "rgba(80,80,80,0.6)",
        },
        mode="markers",
        name=approach or "unknown",
        hovertext=[_hover(row, metric) for row in part.itertuples(index=False)],
        hoverinfo="text",
        marker={
            "symbol": _PLOTLY_SYMBOLS.get(approach, _PLOTLY_EXTRA[index % len(_PLOTLY_EXTRA)]),
            "color": part[colour],
            "coloraxis": "coloraxis",
            "size": np.where(on_front, 14, 8),
            "opacity": np.where(on_front, 1.0, 0.45),
            "line": {"color": "black", "width": np.where(on_front, 2, 0)},
        },
    )


def plot_front_png(
    table: pd.DataFrame,
    path: str | Path,
    *,
    metric: str,
    floor: float | None = None,
    title: str | None = None,
    dpi: int = 150,
) -> Path:
    """Write a static PNG of `trial_table` output: trials grey, front coloured and labelled.

    Front points carry their hidden widths as labels, placed so that no two labels overlap.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A bare Figure renders with Agg on savefig and leaves pyplot's global state alone.
    fig = Figure(figsize=(8, 5), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    if table.empty:
        ax.text(0.5, 0.5, "no finished trials", ha="center", va="center", transform=ax.transAxes)
        fig.savefig(path, dpi=dpi)
        return path
    members = table[table["pareto"]].sort_values("parameters")
    _scatter_trials(fig, ax, table)
    _draw_front(ax, members)
    base = table[table["baseline"]]
    if len(base):
        ax.scatter(
            base["parameters"],
            base["metric"],
            marker="*",
            s=300,
            color="gold",
            edgecolors="black",
            zorder=4,
            label="baseline",
        )
    if floor is not None:
        ax.axhline(
            floor, linestyle="--", color="crimson", linewidth=1, label=_floor_label(table, floor)
        )
    if (table["parameters"] > 0).any():
        ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel(f"validation {metric}")
    ax.set_title(_title(table, members, metric, title))
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    _place_labels(fig, ax, members, floor=floor)
    fig.savefig(path, dpi=dpi)
    return path


def _draw_front(ax: Axes, members: pd.DataFrame) -> None:
    """The front members' paired intervals and the step line that joins them."""
    lower, upper = _error_bars(members)
    if np.isfinite(lower).any():
        ax.errorbar(
            members["parameters"],
            members["metric"],
            yerr=[lower, upper],
            fmt="none",
            ecolor="0.35",
            elinewidth=1,
            capsize=3,
            zorder=2.5,
            label="95% interval (paired)",
        )
    if len(members) > 1:
        ax.step(
            members["parameters"],
            members["metric"],
            where="post",
            color="black",
            linewidth=1,
            label="Pareto front",
            zorder=2,
        )


def _scatter_trials(fig: Figure, ax: Axes, table: pd.DataFrame) -> None:
    """Every trial grey by approach; front members coloured by latency on top."""
    colour, colour_label = _colour_column(table)
    members = table[table["pareto"]]
    # Scale colours over the front only: it is the only coloured part, and slow dominated
    # trials would otherwise squeeze it into one end of the colour map.
    finite = members[colour].dropna()
    vmin, vmax = (finite.min(), finite.max()) if len(finite) else (0.0, 1.0)
    mappable = None
    for i, (approach, part) in enumerate(table.groupby("approach", sort=True)):
        marker = _MPL_MARKERS.get(str(approach), _MPL_EXTRA[i % len(_MPL_EXTRA)])
        ax.scatter(
            part["parameters"],
            part["metric"],
            marker=marker,
            color="0.7",
            s=25,
            label=str(approach) or "unknown",
        )
        ours = part[part["pareto"]]
        if len(ours):
            mappable = ax.scatter(
                ours["parameters"],
                ours["metric"],
                marker=marker,
                c=ours[colour],
                cmap="viridis",
                vmin=vmin,
                vmax=vmax,
                s=70,
                edgecolors="black",
                zorder=3,
            )
    if mappable is not None:
        fig.colorbar(mappable, ax=ax, label=colour_label)


def _place_labels(
    fig: Figure, ax: Axes, members: pd.DataFrame, *, floor: float | None = None
) -> list[Annotation]:
    """Label each front member with its widths, at the first offset where no label overlaps.

    The layout is fixed first (a draw), so that label boxes can be measured in pixels; the
    labels stay out of the layout, so placing them does not move the axes again. A label with
    no free place inside the figure is hidden, and a note says how many were.
    """
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    placed = _obstacles(ax, members, floor)
    n_obstacles = len(placed)
    labels = []
    for row in members.itertuples(index=False):
        label = ax.annotate(
            row.hidden if row.precision == "fp32" else f"{row.hidden} {row.precision}",
            (row.parameters, row.metric),
            xytext=_LABEL_OFFSETS[0],
            textcoords="offset points",
            fontsize=7,
            zorder=5,
        )
        label.set_in_layout(False)
        # Clear of markers, error bars and the floor line where possible; of labels always.
        box = _first_free(label, renderer, placed, fig.bbox) or _first_free(
            label, renderer, placed[n_obstacles:], fig.bbox
        )
        if box is None:
            label.set_visible(False)
        else:
            placed.append(box)
        labels.append(label)
    hidden = sum(not label.get_visible() for label in labels)
    if hidden:
        fig.text(
            0.01,
            0.01,
            f"{hidden} crowded labels left out; widths are in pareto_front.csv",
            fontsize=7,
            color="0.4",
        )
    return labels


def _fig_dpi(ax: Axes) -> float:
    figure = ax.get_figure()
    assert figure is not None
    return float(figure.dpi)


def _obstacles(ax: Axes, members: pd.DataFrame, floor: float | None) -> list[Bbox]:
    """Pixel boxes a label should not cover: front markers, their error bars, the floor line."""
    to_pixels = ax.transData.transform
    half = 4.0 * _fig_dpi(ax) / 72.0  # about a marker's radius, in pixels
    lower, upper = _error_bars(members)
    boxes = []
    for (x, y), low, high in zip(
        members[["parameters", "metric"]].to_numpy(dtype=float), lower, upper, strict=True
    ):
        (px, py), (_, bottom), (_, top) = to_pixels([(x, y), (x, y - low), (x, y + high)])
        boxes.append(Bbox.from_extents(px - half, py - half, px + half, py + half))
        boxes.append(Bbox.from_extents(px - 1, bottom - 1, px + 1, top + 1))
    if floor is not None and len(members):
        level = to_pixels([(float(members["parameters"].iloc[0]), floor)])[0][1]
        boxes.append(Bbox.from_extents(ax.bbox.x0, level - 1, ax.bbox.x1, level + 1))
    return boxes


def _first_free(
    label: Annotation, renderer: Any, placed: Iterable[Bbox], inside: BboxBase
) -> Bbox | None:
    """Move `label` to the first offset whose box, padded, overlaps none of `placed` and lies
    within `inside`; return its box, or None when every offset is taken."""
    taken = list(placed)
    dpi = renderer.dpi
    width_points = label.get_window_extent(renderer).width * 72.0 / dpi
    for dx, dy in _LABEL_OFFSETS:
        label.xyann = (dx if dx > 0 else dx - width_points, dy)
        box = label.get_window_extent(renderer)
        # Two pixels of air: boxes that only touch read as one label ("3-53-6").
        padded = box.expanded(1.0 + 4.0 / max(box.width, 1.0), 1.0 + 4.0 / max(box.height, 1.0))
        fits = inside.containsx(box.x0) and inside.containsx(box.x1)
        fits = fits and inside.containsy(box.y0) and inside.containsy(box.y1)
        if fits and not any(padded.overlaps(other) for other in taken):
            return box
    return None


def _title(table: pd.DataFrame, members: pd.DataFrame, metric: str, title: str | None) -> str:
    return title or f"{metric} vs parameters ({len(table)} trials, {len(members)} on front)"


def _colour_column(table: pd.DataFrame) -> tuple[str, str]:
    if table["latency_ratio"].notna().any():
        return "latency_ratio", "latency ratio"
    return "latency_ms", "latency (ms)"


def _floor_label(table: pd.DataFrame, floor: float) -> str:
    # For a lower-is-better metric the limit sits above the baseline, so it is a ceiling.
    base = table.loc[table["baseline"], "metric"]
    word = "ceiling" if len(base) and floor > base.iloc[0] else "floor"
    return f"{word} {floor:.4f}"


def _hover(row: Any, metric: str) -> str:
    flags = ", ".join(
        name for name, on in (("baseline", row.baseline), ("front", row.pareto)) if on
    )
    return "<br>".join(
        [
            f"trial {row.trial} ({row.approach}{', ' + flags if flags else ''})",
            f"widths {row.hidden or '-'} ({row.precision})",
            f"params {fmt(row.parameters, ',.0f')} ({ratio_text(row.param_ratio)})",
            f"latency {fmt(row.latency_ms, '.3g')} ms ({ratio_text(row.latency_ratio)})",
            f"val {metric} {fmt(row.metric, '.4f')}, delta "
            f"{delta_text(row.metric_delta, row.delta_low, row.delta_high)}",
            f"test {metric} {fmt(row.test_metric, '.4f')}, delta "
            f"{delta_text(row.test_delta, row.test_delta_low, row.test_delta_high)}",
            "feasible" if row.feasible else "infeasible",
        ]
    )
