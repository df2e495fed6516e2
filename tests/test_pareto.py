from __future__ import annotations

import base64
import json
import math
import re
from collections.abc import Callable
from itertools import combinations, pairwise
from pathlib import Path
from typing import Any

import numpy as np
import optuna
import pandas as pd
import pytest
from hand_built import ACCURACY, RMSE, accuracy_study, add_trial, new_study
from matplotlib.axes import Axes
from matplotlib.colors import to_rgb
from matplotlib.figure import Figure
from matplotlib.text import Annotation

from search.front import (
    TABLE_COLUMNS,
    format_report,
    front,
    hypervolume,
    metric_floor,
    plot_front_html,
    plot_front_png,
    plots,
    recommend,
    trial_table,
)

optuna.logging.set_verbosity(optuna.logging.WARNING)


def test_front_excludes_infeasible_and_dominated_trials() -> None:
    members = front(accuracy_study())
    assert [t.number for t in members] == [1, 4]


def test_front_leaves_out_repeats_and_orders_smallest_first() -> None:
    study = accuracy_study()
    # A repeat of trial 1's sample carries trial 1's values: it is the same model, so only the
    # original stands on the front. Optuna alone lists both.
    add_trial(study, 0.968, 2_500, 1.0, hidden=(64, 32), repeat_of=1)
    assert len(study.best_trials) == 3
    members = front(study)
    assert [t.number for t in members] == [1, 4]
    sizes = [t.values[1] for t in members]
    assert sizes == sorted(sizes)


def test_a_trial_without_constraints_counts_as_feasible() -> None:
    # Optuna treats an empty constraint dict as feasible, even beside constrained trials.
    study = new_study(ACCURACY)
    study.add_trial(optuna.trial.create_trial(values=[0.97, 10_000, 2.0], user_attrs={}))
    add_trial(study, 0.90, 1_000, 1.0)
    assert [t.number for t in front(study)] == [0]
    assert trial_table(study)["feasible"].tolist() == [False, True]


def test_table_for_higher_is_better_metric() -> None:
    table = trial_table(accuracy_study())
    assert tuple(table.columns) == TABLE_COLUMNS
    assert table["trial"].tolist() == [2, 1, 3, 4, 0]  # sorted by size
    row = table.set_index("trial").loc[1]
    assert row["metric_delta"] == pytest.approx(-0.002)
    assert row["size_ratio"] == pytest.approx(0.25)
    assert row["param_ratio"] == pytest.approx(0.25)
    assert row["latency_ratio"] == pytest.approx(0.5)
    assert row["test_metric"] == pytest.approx(0.961)
    assert row["hidden"] == "64-32"
    assert bool(row["feasible"]) and bool(row["pareto"])
    by_trial = table.set_index("trial")
    assert by_trial["baseline"].to_dict() == {2: False, 1: False, 3: False, 4: False, 0: True}
    assert by_trial["feasible"].to_dict() == {2: False, 1: True, 3: True, 4: True, 0: True}
    assert by_trial["pareto"].to_dict() == {2: False, 1: True, 3: False, 4: True, 0: False}
    assert math.isnan(by_trial.loc[3, "test_metric"])


def test_table_for_lower_is_better_metric_uses_size_objective_and_parameters_apart() -> None:
    study = new_study(RMSE)
    # Size objective is bytes; parameters live in metrics and get their own ratio.
    add_trial(study, 10.0, 4_000, 2.0, baseline=True, metrics={"parameters": 1_000})
    add_trial(study, 10.3, 1_000, 1.0, metrics={"parameters": 250, "test_rmse": 10.9})
    add_trial(study, 10.8, 500, 0.5, metrics={"parameters": 120})
    table = trial_table(study).set_index("trial")
    assert table.loc[1, "metric_delta"] == pytest.approx(0.3)  # positive: worse for rmse
    assert table.loc[1, "size_ratio"] == pytest.approx(0.25)
    assert table.loc[1, "param_ratio"] == pytest.approx(0.25)
    assert table.loc[1, "test_metric"] == pytest.approx(10.9)
    assert not table.loc[2, "feasible"]
    assert [t.number for t in front(study)] == [1, 0]
    assert metric_floor(study) == pytest.approx(10.5)


def test_table_ratios_are_nan_without_a_finished_baseline() -> None:
    settings = {k: v for k, v in ACCURACY.items() if k not in ("baseline_trial", "baseline_metric")}
    study = new_study(settings)
    add_trial(study, 0.9, 100, 1.0, constraint=-1.0)
    table = trial_table(study)
    assert table[["metric_delta", "size_ratio", "param_ratio", "latency_ratio"]].isna().all().all()
    assert not table["baseline"].any()
    assert metric_floor(study) is None
    assert hypervolume(study) == 0.0


def test_table_skips_unfinished_trials_and_is_empty_for_a_new_study() -> None:
    study = accuracy_study()
    study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.FAIL))
    assert len(trial_table(study)) == 5
    empty = trial_table(new_study(ACCURACY))
    assert empty.empty
    assert tuple(empty.columns) == TABLE_COLUMNS


def test_recommend_picks_the_smallest_feasible_trial() -> None:
    assert recommend(accuracy_study()).number == 1  # type: ignore[union-attr]


def test_recommend_breaks_size_ties_by_latency_then_metric() -> None:
    study = new_study(ACCURACY)
    add_trial(study, 0.970, 10_000, 2.0, baseline=True)
    add_trial(study, 0.969, 1_000, 1.2)
    add_trial(study, 0.967, 1_000, 1.1)
    add_trial(study, 0.968, 1_000, 1.1)
    assert recommend(study).number == 3  # type: ignore[union-attr]


def test_recommend_is_none_without_a_feasible_trial() -> None:
    study = new_study(ACCURACY)
    add_trial(study, 0.90, 1_000, 1.0)
    add_trial(study, 0.95, 2_000, 1.0)
    assert recommend(study) is None
    assert front(study) == []
    assert recommend(new_study(ACCURACY)) is None


def test_metric_floor_is_baseline_minus_allowed_drop() -> None:
    assert metric_floor(accuracy_study()) == pytest.approx(0.965)


def _plotly_figure(html: str) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """The traces and the layout that the page hands to `Plotly.newPlot(div, data, layout)`."""
    decoder = json.JSONDecoder()
    at = html.index("Plotly.newPlot(") + len("Plotly.newPlot(")
    parts = []
    for _ in range(3):
        while html[at] in " \t\n,":
            at += 1
        part, at = decoder.raw_decode(html, at)
        parts.append(part)
    _, data, layout = parts
    return data, layout


def _numbers(values: list[float] | dict[str, str]) -> list[float]:
    """A plotly array: a JSON list, or numpy's bytes in base64 (`{"dtype", "bdata"}`)."""
    if isinstance(values, list):
        return [float(v) for v in values]
    raw = base64.b64decode(values["bdata"])
    return np.frombuffer(raw, dtype=values["dtype"]).astype(float).tolist()


def test_plot_front_html_is_offline_and_holds_every_trial_the_front_and_the_floor(
    tmp_path: Path,
) -> None:
    study = accuracy_study()
    path = plot_front_html(
        trial_table(study), tmp_path / "front.html", metric="accuracy", floor=metric_floor(study)
    )
    html = path.read_text(encoding="utf-8")
    # plotly.js itself is inline (megabytes of it), not fetched from a CDN.
    assert "<script src=" not in html and re.search(r"plotly\.js v\d", html)
    assert len(html) > 1_000_000
    data, layout = _plotly_figure(html)
    traces = {trace["name"]: trace for trace in data}
    assert list(traces) == ["prune", "scratch", "Pareto front", "baseline"]
    # Trials by approach, at (parameters, validation metric), smallest first as in the table.
    assert _numbers(traces["prune"]["x"]) == [1_000, 6_000]
    assert _numbers(traces["scratch"]["x"]) == [2_500, 5_000, 10_000]
    assert _numbers(traces["scratch"]["y"]) == [0.968, 0.966, 0.970]
    hover = [text for trace in data for text in trace.get("hovertext", [])]
    assert sorted(int(text.split()[1]) for text in hover if text.startswith("trial")) == [
        0, 0, 1, 2, 3, 4,  # the baseline twice: among the trials and as the star
    ]  # fmt: skip
    trial_1 = next(text for text in hover if text.startswith("trial 1 "))
    expected = "trial 1 (scratch, front)<br>widths 64-32 (fp32)<br>params 2,500 (0.25x)"
    assert trial_1.startswith(expected)
    assert "test accuracy 0.9610" in trial_1
    # The front is trials 1 and 4, joined by a step line; the baseline is trial 0.
    front_line = traces["Pareto front"]
    assert front_line["line"]["shape"] == "hv"
    assert _numbers(front_line["x"]) == [2_500, 6_000]
    assert _numbers(front_line["y"]) == [0.968, 0.972]
    assert _numbers(traces["baseline"]["x"]) == [10_000]
    (shape,) = layout["shapes"]
    assert shape["y0"] == shape["y1"] == pytest.approx(0.965)
    assert [a["text"] for a in layout["annotations"]] == ["floor 0.9650"]
    assert layout["title"]["text"] == "accuracy vs parameters (5 trials, 2 on front)"


def _pixels(image: np.ndarray, colour: str) -> int:
    """How many pixels have `colour` (a matplotlib name), give or take antialiasing."""
    rgb = np.array(to_rgb(colour))
    return int((np.abs(image[..., :3] - rgb).max(axis=2) < 0.02).sum())


def test_plot_front_png_draws_the_baseline_star_and_the_floor(
    tmp_path: Path, read_png: Callable[[Path], np.ndarray]
) -> None:
    study = accuracy_study()
    path = plot_front_png(
        trial_table(study), tmp_path / "front.png", metric="accuracy", floor=metric_floor(study)
    )
    image = read_png(path)
    assert image.shape[:2] == (750, 1200)  # 8 x 5 inches at 150 dpi
    assert _pixels(image, "gold") > 100  # the baseline's star, and its legend entry
    assert _pixels(image, "crimson") > 100  # the dashed floor line


def test_plots_survive_an_empty_table_and_a_missing_baseline(
    tmp_path: Path, read_png: Callable[[Path], np.ndarray]
) -> None:
    empty = trial_table(new_study(ACCURACY))
    image = read_png(plot_front_png(empty, tmp_path / "empty.png", metric="accuracy"))
    assert image.shape[:2] == (750, 1200)
    html = plot_front_html(empty, tmp_path / "empty.html", metric="accuracy").read_text()
    data, layout = _plotly_figure(html)
    assert data == [] and "shapes" not in layout
    assert layout["title"]["text"] == "accuracy vs parameters (0 trials, 0 on front)"

    study = new_study({k: v for k, v in ACCURACY.items() if k != "baseline_trial"})
    add_trial(study, 0.968, 2_500, 1.0)
    add_trial(study, 0.972, 6_000, 1.8)
    table = trial_table(study)
    image = read_png(plot_front_png(table, tmp_path / "nobase.png", metric="accuracy"))
    # No baseline star and no floor line without a baseline or a floor.
    assert _pixels(image, "gold") == 0 and _pixels(image, "crimson") == 0
    html = plot_front_html(table, tmp_path / "nobase.html", metric="accuracy").read_text()
    data, _ = _plotly_figure(html)
    assert [trace["name"] for trace in data] == ["scratch", "Pareto front"]


@pytest.mark.parametrize("n_members", [8, 20])
def test_plot_front_png_labels_of_a_crowded_front_do_not_overlap(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, n_members: int
) -> None:
    # Nearly equal sizes and metrics: every point lands on the same few pixels; 20 labels are
    # more than the offsets to try, so some are stacked above the others.
    study = new_study(ACCURACY)
    add_trial(study, 0.969, 10_000, 2.0, hidden=(256, 128), baseline=True)
    for i in range(n_members):
        add_trial(study, 0.970 + 1e-5 * i, 1_000 + i, 1.0, hidden=(64 + i, 32))
    table = trial_table(study)
    assert int(table["pareto"].sum()) == n_members
    placed: list[tuple[Figure, list[Annotation]]] = []
    place_labels = plots._place_labels

    def recording(fig: Figure, ax: Axes, members: pd.DataFrame, **kwargs: Any) -> list[Annotation]:
        labels = place_labels(fig, ax, members, **kwargs)
        placed.append((fig, labels))
        return labels

    monkeypatch.setattr(plots, "_place_labels", recording)
    plot_front_png(table, tmp_path / "crowded.png", metric="accuracy", floor=metric_floor(study))
    ((fig, labels),) = placed
    assert [label.get_text() for label in labels] == [f"{64 + i}-32" for i in range(n_members)]
    assert [label.xy for label in labels] == [
        (1_000 + i, pytest.approx(0.970 + 1e-5 * i)) for i in range(n_members)
    ]
    # Measured as saved, at 150 dpi.
    fig.set_dpi(150)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    shown = [label for label in labels if label.get_visible()]
    boxes = [label.get_window_extent(renderer) for label in shown]
    overlapping = [(i, j) for (i, a), (j, b) in combinations(enumerate(boxes), 2) if a.overlaps(b)]
    assert overlapping == []
    # Every label shown lies inside the saved figure; a crowd too large is left out, and said.
    assert all(fig.bbox.x0 <= b.x0 and b.x1 <= fig.bbox.x1 for b in boxes)
    assert all(fig.bbox.y0 <= b.y0 and b.y1 <= fig.bbox.y1 for b in boxes)
    hidden = len(labels) - len(shown)
    notes = [t.get_text() for t in fig.texts]
    assert notes == ([f"{hidden} crowded labels left out; widths are in pareto_front.csv"]
                     if hidden else [])  # fmt: skip
    assert len(shown) >= min(n_members, 8)
    # The check has teeth: all at the first offset, the labels would pile up.
    for label in labels:
        label.xyann = plots._LABEL_OFFSETS[0]
    piled = [label.get_window_extent(renderer) for label in labels]
    assert all(a.overlaps(b) for a, b in pairwise(piled))


def test_format_report_lists_the_baseline_first_then_front_members() -> None:
    report = format_report(trial_table(accuracy_study()), metric="accuracy")
    header, columns, *rows = report.splitlines()
    assert "accuracy" in header and "5 finished trials" in header and "2 Pareto-front" in header
    assert columns.split()[:2] == ["trial", "approach"]
    assert [r.split()[0] for r in rows] == ["0", "1", "4"]
    assert rows[0].split()[1] == "baseline"
    assert "0.25x" in rows[1] and "0.50x" in rows[1] and "-0.0020" in rows[1]
    assert "0.9610" in rows[1]  # test accuracy
    # Aligned: the last column is right-aligned, so every line has the same width.
    assert len({len(line) for line in [columns, *rows]}) == 1


def test_format_report_signs_deltas_and_keeps_small_ratios_readable() -> None:
    study = new_study(RMSE)
    add_trial(study, 10.0, 40_000, 2.0, baseline=True, metrics={"parameters": 10_000})
    add_trial(study, 10.3, 400, 0.5, metrics={"parameters": 100})
    header, _, base_row, row = format_report(trial_table(study), metric="rmse").splitlines()
    assert "rmse" in header
    assert "+0.0000" in base_row and "1.00x" in base_row
    assert "+0.3000" in row  # worse rmse is a positive delta
    assert "0.010x" in row and "0.25x" in row


def test_format_report_for_a_study_without_trials() -> None:
    report = format_report(trial_table(new_study(ACCURACY)), metric="accuracy")
    assert report.startswith("No finished trials")


def test_table_dtypes_suit_filtering() -> None:
    table = trial_table(accuracy_study())
    assert table["baseline"].dtype == bool
    assert pd.api.types.is_float_dtype(table["metric"])


def test_front_labels_keep_clear_of_markers_error_bars_and_the_floor(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    study = new_study(ACCURACY)
    add_trial(study, 0.97, 100_000, 2.0, hidden=(256, 128), baseline=True)
    spread = [(0.966, 2_000, 1.0), (0.969, 5_000, 1.2), (0.972, 12_000, 1.4), (0.974, 14_000, 1.6)]
    for i, (metric, size, latency) in enumerate(spread):
        interval = {"val_delta_ci_low": metric - 0.97 - 0.01, "val_delta_ci_high": metric - 0.96}
        add_trial(study, metric, size, latency, hidden=(16 + i, 8),
             metrics={"parameters": size, **interval})  # fmt: skip
    table = trial_table(study)
    placed: list[tuple[Figure, Axes, list[Annotation], list[Any]]] = []
    place_labels = plots._place_labels

    def recording(fig: Figure, ax: Axes, members: pd.DataFrame, **kwargs: Any) -> list[Annotation]:
        labels = place_labels(fig, ax, members, **kwargs)
        placed.append((fig, ax, labels, plots._obstacles(ax, members, kwargs.get("floor"))))
        return labels

    monkeypatch.setattr(plots, "_place_labels", recording)
    plot_front_png(table, tmp_path / "spread.png", metric="accuracy", floor=metric_floor(study))
    ((fig, ax, labels, obstacles),) = placed
    renderer = fig.canvas.get_renderer()  # type: ignore[attr-defined]
    # Markers and error bars of the four members, and the floor line.
    assert len(obstacles) == 2 * len(spread) + 1
    boxes = [label.get_window_extent(renderer) for label in labels]
    assert all(label.get_visible() for label in labels)
    assert not [(b, o) for b in boxes for o in obstacles if b.overlaps(o)]
    # The check has teeth: at the first offset, some label would cover a bar, marker or line.
    for label in labels:
        label.xyann = plots._LABEL_OFFSETS[0]
    first = [label.get_window_extent(renderer) for label in labels]
    assert [(b, o) for b in first for o in obstacles if b.overlaps(o)]
