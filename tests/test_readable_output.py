"""Output a person can read: plain values in messages (no `np.int64(0)`), no `-0`, advice said
once, lines that fit a 120-column terminal, a short `train` summary, counts that agree."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from test_champion import _study

from lightning_modules.anomaly import positive_class
from lightning_modules.data import check_table
from lightning_modules.errors import TabslimInputError
from search.commands.output import TERMINAL_COLUMNS, fit, train_summary, worker_state
from search.front import floor_advice, format_report, pareto
from search.monitor import DriftReport, Realized, retrain_reasons


def test_a_single_class_message_shows_the_plain_value() -> None:
    frame = pd.DataFrame({"x": [1.0, 2.0, 3.0], "y": np.array([0, 0, 0], dtype=np.int64)})
    with pytest.raises(TabslimInputError) as error:
        check_table(frame, "y", "classification", "t.csv")
    assert "np." not in str(error.value) and "single class (0)" in str(error.value)


def test_a_positive_class_that_is_not_rare_shows_the_plain_value() -> None:
    y = pd.Series(np.array([0, 1] * 10, dtype=np.int64))
    with pytest.raises(TabslimInputError) as error:
        positive_class(y, "y", "t.csv")
    assert "np." not in str(error.value) and "but 0 is 50.0%" in str(error.value)


def test_floor_advice_says_no_minus_zero_and_names_a_trial_once() -> None:
    # Trial 1's interval starts at exactly 0: it certifies a floor of 0, not of -0.
    study = _study([(0.975, 100.0, (0.0, 0.02)), (0.969, 300.0, (-0.008, 0.006))])
    lines = floor_advice(study)
    said = "\n".join(lines)
    assert "max_metric_drop 0 " in said and "-0 " not in said and "-0." not in said
    for trial in range(4):
        assert said.count(f"would certify trial {trial} ") <= 1


def test_long_lines_wrap_to_the_terminal_and_short_ones_stay() -> None:
    text = "short line\n  " + " ".join(["word"] * 80)
    out = fit(text)
    assert out.splitlines()[0] == "short line"
    assert all(len(line) <= TERMINAL_COLUMNS for line in out.splitlines())
    assert out.splitlines()[2].startswith("      word")  # its own indent, and four more


def test_the_front_table_drops_columns_to_fit_a_terminal() -> None:
    study = _study([(0.975, 100.0, (-0.004, 0.02)), (0.972, 800.0, (-0.012, 0.016))])
    table = pareto.trial_table(study).assign(hidden="256-512-256-128")
    full = format_report(table, metric="accuracy")
    narrow = format_report(table, metric="accuracy", width=TERMINAL_COLUMNS)
    assert max(map(len, full.splitlines())) > TERMINAL_COLUMNS
    assert max(map(len, narrow.splitlines())) <= TERMINAL_COLUMNS
    assert "val delta [95% CI]" in narrow and "precision" not in narrow


def test_train_prints_a_short_summary() -> None:
    metrics = {f"latency_torch_b1_p{p}_ms": 0.1 for p in (10, 90)} | {
        "val_accuracy": 0.851852,
        "test_accuracy": 0.925926,
        "val_log_loss": 0.94,
        "epochs": 2.0,
        "best_epoch": 1.0,
        "parameters": 103939.0,
        "size_bytes": 428446.0,
        "latency_onnxruntime_b1_median_ms": 0.0186,
        "latency_onnxruntime_b1024_median_ms": 2.349,
    }
    lines = train_summary(metrics)
    assert lines[0] == "  validation accuracy 0.8519, test accuracy 0.9259 (2 epochs, best at 1)"
    assert "103,939 parameters" in lines[1]
    assert lines[2].endswith("median): 0.0186 ms at batch 1, 2.35 ms at batch 1024")
    assert len(lines) == 3


def test_a_worker_never_says_more_complete_than_asked_for() -> None:
    assert worker_state(3, 4) == "the study has 3 of its 4 trials complete"
    said = worker_state(6, 4)
    assert "6 of 4" not in said and "the 4 trials" in said


def test_a_fall_whose_interval_reaches_back_is_said_to_be_no_reason() -> None:
    # 3.6 points down, but the rows are too few for the interval to clear the tolerance.
    report = DriftReport(rows=200, psi_threshold=0.2, alpha=0.05)
    report.realized = Realized("accuracy", 0.891, 0.85, 0.93, 0.927)
    assert retrain_reasons(report, {}, tolerance=0.01, threshold=0.1, force=False) == []
    (said,) = [line for line in report.summary() if "no reason to retrain" in line]
    assert "whole interval" in said and "0.036 worse" in said
    # Its whole interval beyond the tolerance: a reason, which says the rule.
    report = DriftReport(rows=2000, psi_threshold=0.2, alpha=0.05)
    report.realized = Realized("accuracy", 0.85, 0.83, 0.87, 0.927)
    (reason,) = retrain_reasons(report, {}, tolerance=0.01, threshold=0.1, force=False)
    assert "the whole 95% interval beyond the tolerance" in reason
