"""The Pareto front of a tabslim study: table, recommendation, hypervolume, plots and report.

A tabslim study has directions `[metric, size, latency]` (metric maximised or minimised, the
other two minimised), a study attribute `"tabslim"` with the baseline and the allowed metric
drop, and trials that carry `"approach"`, `"hidden"`, `"metrics"` (and `"baseline"` for the
baseline) user attributes plus a `"metric_floor"` constraint. Feasible means every constraint
value is <= 0, as in Optuna; a trial without constraints counts as feasible.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
import plotly.graph_objects as go
from matplotlib.figure import Figure
from optuna._hypervolume import compute_hypervolume
from optuna.study import StudyDirection
from optuna.trial import FrozenTrial, TrialState

__all__ = [
    "TABLE_COLUMNS",
    "format_report",
    "front",
    "hypervolume",
    "metric_floor",
    "plot_front_html",
    "plot_front_png",
    "recommend",
    "trial_table",
]

TABLE_COLUMNS: tuple[str, ...] = (
    "trial",
    "approach",
    "baseline",
    "hidden",
    "metric",
    "metric_delta",
    "test_metric",
    "size",
    "size_ratio",
    "parameters",
    "param_ratio",
    "latency_ms",
    "latency_ratio",
    "feasible",
    "pareto",
)

_DTYPES: dict[str, str] = {
    "trial": "int64",
    "approach": "str",
    "baseline": "bool",
    "hidden": "str",
    "feasible": "bool",
    "pareto": "bool",
    **{
        name: "float64"
        for name in TABLE_COLUMNS
        if name not in ("trial", "approach", "baseline", "hidden", "feasible", "pareto")
    },
}
# Positions in `FrozenTrial.values`, fixed by the study's directions.
_METRIC, _SIZE, _LATENCY = 0, 1, 2
# A zero allowed drop would make the hypervolume box flat; this keeps ties with the baseline at
# (almost) nothing while candidates that beat the baseline still count.
_EPS = 1e-9
_NAN = float("nan")
# Plotly and matplotlib spell marker shapes differently; unknown approaches cycle through extras.
_PLOTLY_SYMBOLS = {"scratch": "circle", "prune": "diamond"}
_PLOTLY_EXTRA = ("square", "triangle-up", "cross", "x")
_MPL_MARKERS = {"scratch": "o", "prune": "D"}
_MPL_EXTRA = ("s", "^", "P", "X")


def front(study: optuna.Study) -> list[FrozenTrial]:
    """The feasible Pareto front, smallest first (ties: faster, then better metric)."""
    # Optuna drops infeasible trials here as soon as any trial in the study has a constraint.
    # A repeat of an earlier sample carries that trial's values; it is the same model, so only
    # the original stands on the front.
    members = [t for t in study.best_trials if "repeat_of" not in t.user_attrs]
    return sorted(members, key=_order_key(_higher_is_better(study)))


def recommend(study: optuna.Study) -> FrozenTrial | None:
    """The smallest feasible trial (ties: lower latency, then better metric), or None."""
    feasible = [t for t in _complete(study) if _is_feasible(t)]
    if not feasible:
        return None
    # The lexicographic minimum of a set is never dominated within it, so this is on the front.
    return min(feasible, key=_order_key(_higher_is_better(study)))


def metric_floor(study: optuna.Study) -> float | None:
    """The worst acceptable validation metric, or None while the baseline metric is unknown.

    For a lower-is-better metric (e.g. rmse) this is a ceiling: baseline + max_metric_drop.
    """
    settings = _settings(study)
    base_metric = _baseline_metric(settings, _baseline(study, _complete(study)))
    if base_metric is None or settings.get("max_metric_drop") is None:
        return None
    drop = float(settings["max_metric_drop"])
    return base_metric - drop if _higher_is_better(study) else base_metric + drop


def trial_table(study: optuna.Study) -> pd.DataFrame:
    """One row per COMPLETE trial, with `TABLE_COLUMNS`, sorted by size.

    `metric_delta` is candidate minus baseline metric (negative is worse for accuracy, better
    for rmse). Ratios are candidate / baseline and NaN while no baseline has finished.
    """
    settings = _settings(study)
    trials = _complete(study)
    base = _baseline(study, trials)
    base_metric = _baseline_metric(settings, base)
    base_size, base_latency, base_params = (
        (base.values[_SIZE], base.values[_LATENCY], _parameters(base))
        if base is not None
        else (_NAN, _NAN, _NAN)
    )
    on_front = {t.number for t in front(study)}
    test_key = f"test_{settings['metric']}" if "metric" in settings else None

    rows: list[dict[str, Any]] = []
    for t in trials:
        metrics = t.user_attrs.get("metrics") or {}
        parameters = _parameters(t)
        rows.append(
            {
                "trial": t.number,
                "approach": str(t.user_attrs.get("approach", "")),
                "baseline": base is not None and t.number == base.number,
                "hidden": "-".join(str(w) for w in t.user_attrs.get("hidden", [])),
                "metric": t.values[_METRIC],
                "metric_delta": _NAN if base_metric is None else t.values[_METRIC] - base_metric,
                "test_metric": float(metrics.get(test_key, _NAN)) if test_key else _NAN,
                "size": t.values[_SIZE],
                "size_ratio": _ratio(t.values[_SIZE], base_size),
                "parameters": parameters,
                "param_ratio": _ratio(parameters, base_params),
                "latency_ms": t.values[_LATENCY],
                "latency_ratio": _ratio(t.values[_LATENCY], base_latency),
                "feasible": _is_feasible(t),
                "pareto": t.number in on_front,
            }
        )
    # Explicit dtypes keep an empty table filterable: an empty object column used as a mask
    # would be read as a list of column names.
    table = pd.DataFrame(rows, columns=list(TABLE_COLUMNS)).astype(_DTYPES)
    return table.sort_values(["size", "latency_ms", "trial"], kind="stable").reset_index(drop=True)


def hypervolume(study: optuna.Study, *, latency_ref: float = 1.25) -> float:
    """Hypervolume of the feasible trials, relative to the baseline; 0.0 without a baseline.

    Each trial becomes the minimised point (metric loss vs baseline, size ratio, latency ratio)
    and the reference point is (max_metric_drop, 1.0, latency_ref), or a tiny metric margin when
    no drop is allowed: only trials better than the floor, smaller than the baseline and faster
    than `latency_ref` times its latency add volume.

    The space is scaled by one baseline, so use this to compare samplers or runs on the same
    dataset and baseline, not to compare datasets.

    Args:
        latency_ref: The slowest latency ratio that still counts. Above 1.0 on purpose: a
            smaller network may not be measurably faster (per-call overhead, noise).
    """
    # A programming error, not user input: the config checks the flag where it enters.
    if not (math.isfinite(latency_ref) and latency_ref > 0):
        raise ValueError(f"latency_ref must be a positive number, but got {latency_ref=}.")
    settings = _settings(study)
    trials = _complete(study)
    base = _baseline(study, trials)
    base_metric = _baseline_metric(settings, base)
    if base is None or base_metric is None:
        return 0.0
    feasible = [t for t in trials if _is_feasible(t)]
    values = np.array([t.values for t in feasible], dtype=float).reshape(-1, 3)
    sign = 1.0 if _higher_is_better(study) else -1.0
    with np.errstate(divide="ignore", invalid="ignore"):
        # Shape (n_feasible, 3): loss, size ratio, latency ratio; all minimised.
        points = np.column_stack(
            [
                # Clipped at 0: a gain over the baseline is one or two lucky validation rows
                # on small tables, and would otherwise outweigh any amount of shrinking.
                np.maximum(sign * (base_metric - values[:, _METRIC]), 0.0),
                values[:, _SIZE] / base.values[_SIZE],
                values[:, _LATENCY] / base.values[_LATENCY],
            ]
        )
    drop = float(settings.get("max_metric_drop", 0.0))
    reference = np.array([drop if drop > 0 else _EPS, 1.0, latency_ref])
    # compute_hypervolume raises on points outside the box, and points on its boundary add
    # nothing, so keep the strictly inside ones (NaN ratios compare False and drop out too).
    inside = points[np.all(points < reference, axis=1)]
    if len(inside) == 0:
        return 0.0
    return float(compute_hypervolume(inside, reference))


def plot_front_html(
    table: pd.DataFrame,
    path: str | Path,
    *,
    metric: str,
    floor: float | None = None,
    title: str | None = None,
) -> Path:
    """Write an interactive plotly chart of `trial_table` output; works offline.

    x = parameters (log), y = validation metric, colour = latency ratio (latency in ms while
    there is no baseline), symbol = approach; front members are outlined and joined by a step
    line, the baseline is a star and `floor` (see `metric_floor`) a dashed line.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    colour, colour_label = _colour_column(table)
    fig = go.Figure()
    for i, (approach, part) in enumerate(table.groupby("approach", sort=True)):
        on_front = part["pareto"].to_numpy(dtype=bool)
        fig.add_trace(
            go.Scatter(
                x=part["parameters"],
                y=part["metric"],
                mode="markers",
                name=str(approach) or "unknown",
                hovertext=[_hover(row, metric) for row in part.itertuples(index=False)],
                hoverinfo="text",
                marker={
                    "symbol": _PLOTLY_SYMBOLS.get(
                        str(approach), _PLOTLY_EXTRA[i % len(_PLOTLY_EXTRA)]
                    ),
                    "color": part[colour],
                    "coloraxis": "coloraxis",
                    "size": np.where(on_front, 14, 8),
                    "opacity": np.where(on_front, 1.0, 0.45),
                    "line": {"color": "black", "width": np.where(on_front, 2, 0)},
                },
            )
        )
    members = table[table["pareto"]].sort_values("parameters")
    if len(members) > 1:
        fig.add_trace(
            go.Scatter(
                x=members["parameters"],
                y=members["metric"],
                mode="lines",
                line={"shape": "hv", "color": "black", "width": 1},
                name="Pareto front",
                hoverinfo="skip",
            )
        )
    base = table[table["baseline"]]
    if len(base):
        fig.add_trace(
            go.Scatter(
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
        )
    if floor is not None:
        fig.add_hline(
            y=floor,
            line_dash="dash",
            line_color="crimson",
            annotation_text=_floor_label(table, floor),
            annotation_position="bottom right",
        )
    fig.update_layout(
        title=title or f"{metric} vs parameters ({len(table)} trials, {len(members)} on front)",
        xaxis={"type": "log", "title": "parameters"},
        yaxis={"title": f"validation {metric}"},
        coloraxis={"colorscale": "Viridis", "colorbar": {"title": colour_label}},
        legend={"title": "approach"},
        template="plotly_white",
    )
    # The whole plotly.js goes inline so the file opens without network (MLflow artifact, CI).
    fig.write_html(path, include_plotlyjs=True, full_html=True)
    return path


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

    Same encoding as `plot_front_html`; the front points carry their hidden widths as labels.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # A bare Figure renders with Agg on savefig and leaves pyplot's global state alone.
    fig = Figure(figsize=(8, 5), layout="constrained")
    ax = fig.add_subplot()
    if table.empty:
        ax.text(0.5, 0.5, "no finished trials", ha="center", va="center", transform=ax.transAxes)
        fig.savefig(path, dpi=dpi)
        return path

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
    ordered = members.sort_values("parameters")
    if len(ordered) > 1:
        ax.step(
            ordered["parameters"],
            ordered["metric"],
            where="post",
            color="black",
            linewidth=1,
            label="Pareto front",
            zorder=2,
        )
    for row in ordered.itertuples(index=False):
        ax.annotate(
            row.hidden,
            (row.parameters, row.metric),
            xytext=(5, 5),
            textcoords="offset points",
            fontsize=7,
        )
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
    if mappable is not None:
        fig.colorbar(mappable, ax=ax, label=colour_label)
    if (table["parameters"] > 0).any():
        ax.set_xscale("log")
    ax.set_xlabel("parameters")
    ax.set_ylabel(f"validation {metric}")
    ax.set_title(title or f"{metric} vs parameters ({len(table)} trials, {len(members)} on front)")
    ax.grid(True, which="major", alpha=0.3)
    ax.legend(fontsize=8, loc="best")
    fig.savefig(path, dpi=dpi)
    return path


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
    cells = [
        (
            str(row.trial),
            "baseline" if row.baseline else row.approach,
            row.hidden or "-",
            _fmt(row.parameters, ",.0f"),
            _ratio_text(row.param_ratio),
            _ratio_text(row.latency_ratio),
            _fmt(row.metric, ".4f"),
            _fmt(row.metric_delta, "+.4f"),
            _fmt(row.test_metric, ".4f"),
        )
        for row in shown.itertuples(index=False)
    ]
    widths = [max(len(r[i]) for r in [names, *cells]) for i in range(len(names))]
    lines = [header, _join(names, widths, left)]
    lines += [_join(r, widths, left) for r in cells]
    if members.empty:
        lines.append("No feasible candidate besides the baseline yet.")
    return "\n".join(lines)


def _settings(study: optuna.Study) -> dict[str, Any]:
    return dict(study.user_attrs.get("tabslim") or {})


def _higher_is_better(study: optuna.Study) -> bool:
    # The direction is what Optuna optimises and what best_trials uses, so it wins over the
    # "higher_is_better" copy in the study attribute.
    return study.directions[_METRIC] == StudyDirection.MAXIMIZE


def _complete(study: optuna.Study) -> list[FrozenTrial]:
    return study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,))


def _is_feasible(trial: FrozenTrial) -> bool:
    # Optuna 5 returns a dict {name: value}; no constraint at all counts as feasible.
    return all(v <= 0.0 for v in trial.constraints.values())


def _baseline(study: optuna.Study, trials: Sequence[FrozenTrial]) -> FrozenTrial | None:
    number = _settings(study).get("baseline_trial")
    if number is not None:
        return next((t for t in trials if t.number == int(number)), None)
    # The study attribute is written after the baseline finishes; until then, its own flag.
    return next((t for t in trials if t.user_attrs.get("baseline") is True), None)


def _baseline_metric(settings: dict[str, Any], base: FrozenTrial | None) -> float | None:
    # Prefer the stored figure: it is the one the metric_floor constraint was computed from.
    if settings.get("baseline_metric") is not None:
        return float(settings["baseline_metric"])
    return base.values[_METRIC] if base is not None else None


def _parameters(trial: FrozenTrial) -> float:
    metrics = trial.user_attrs.get("metrics") or {}
    return float(metrics.get("parameters", _NAN))


def _ratio(value: float, reference: float) -> float:
    if math.isnan(value) or math.isnan(reference) or reference == 0:
        return _NAN
    return value / reference


def _order_key(higher_is_better: bool) -> Callable[[FrozenTrial], tuple[float, float, float, int]]:
    sign = -1.0 if higher_is_better else 1.0

    def key(t: FrozenTrial) -> tuple[float, float, float, int]:
        return (t.values[_SIZE], t.values[_LATENCY], sign * t.values[_METRIC], t.number)

    return key


def _colour_column(table: pd.DataFrame) -> tuple[str, str]:
    if table["latency_ratio"].notna().any():
        return "latency_ratio", "latency ratio"
    return "latency_ms", "latency (ms)"


def _fmt(value: Any, spec: str, suffix: str = "") -> str:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "-"
    return f"{value:{spec}}{suffix}"


def _floor_label(table: pd.DataFrame, floor: float) -> str:
    # For a lower-is-better metric the limit sits above the baseline, so it is a ceiling.
    base = table.loc[table["baseline"], "metric"]
    word = "ceiling" if len(base) and floor > base.iloc[0] else "floor"
    return f"{word} {floor:.4f}"


def _ratio_text(value: float) -> str:
    # Two decimals read well ("0.23x") but would show a 50x smaller network as "0.02x".
    return _fmt(value, ".2f" if math.isnan(value) or value >= 0.1 else ".3f", "x")


def _join(cells: Sequence[str], widths: Sequence[int], left: Sequence[bool]) -> str:
    return "  ".join(
        c.ljust(w) if is_left else c.rjust(w)
        for c, w, is_left in zip(cells, widths, left, strict=True)
    ).rstrip()


def _hover(row: Any, metric: str) -> str:
    flags = ", ".join(
        name for name, on in (("baseline", row.baseline), ("front", row.pareto)) if on
    )
    return "<br>".join(
        [
            f"trial {row.trial} ({row.approach}{', ' + flags if flags else ''})",
            f"widths {row.hidden or '-'}",
            f"params {_fmt(row.parameters, ',.0f')} ({_ratio_text(row.param_ratio)})",
            f"latency {_fmt(row.latency_ms, '.3g')} ms ({_ratio_text(row.latency_ratio)})",
            f"val {metric} {_fmt(row.metric, '.4f')} ({_fmt(row.metric_delta, '+.4f')})",
            f"test {metric} {_fmt(row.test_metric, '.4f')}",
            "feasible" if row.feasible else "infeasible",
        ]
    )
