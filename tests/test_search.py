from __future__ import annotations

import functools
import hashlib
import json
import re
from pathlib import Path

import mlflow
import optuna
import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from lightning_modules.datasets import load_bundled
from lightning_modules.evaluation import evaluate_network
from lightning_modules.networks import MLPSpec
from search.commands import main, run_search
from search.config import Config, validate
from search.front import champion, pareto
from search.serving import load_network
from search.study import (
    SearchContext,
    StudySettings,
    attributes,
    baseline_params,
    build_context,
    directions,
    run_trial,
    study_settings,
)

TINY = yaml.safe_load((Path(__file__).parent / "tiny_search.yaml").read_text())


def _config(tmp_path: Path, **search: object) -> Config:
    raw = yaml.safe_load(yaml.safe_dump(TINY))
    raw["search"] |= search
    raw["tracking"] = {"uri": f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"}
    return validate(raw, "test")


def _write(tmp_path: Path, config: Config) -> Path:
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config.model_dump(mode="json")))
    return path


def _assert_rebuilds(trial: optuna.trial.FrozenTrial, ctx: SearchContext) -> None:
    """The trial's folder rebuilds the network it measured, from its spec and weights alone.

    The trial recorded its test metrics from the network in memory; the network rebuilt from
    `spec.json` and the state_dict must score the same on the same rows.
    """
    spec, network, _ = load_network(ctx.trials_dir / f"trial-{trial.number}")
    assert spec == MLPSpec.from_dict(trial.user_attrs["spec"])
    assert list(spec.hidden) == trial.user_attrs["hidden"]
    rebuilt = evaluate_network(network, ctx.data, "test")
    recorded = trial.user_attrs["metrics"]
    assert set(rebuilt) == {"accuracy", "balanced_accuracy", "roc_auc", "log_loss"}
    for name, value in rebuilt.items():
        assert value == pytest.approx(recorded[f"test_{name}"], abs=1e-6), name


def _report_rows(report: str) -> list[list[str]]:
    """The cells of each model row of `format_report` output (the header lines left out)."""
    return [line.split() for line in report.splitlines()[2:] if line.split()[0].isdigit()]


def _front_rows(study: optuna.Study) -> list[list[str]]:
    """(trial, approach, widths) of the baseline, then of the other front members by size."""
    baseline = next(t for t in study.trials if t.user_attrs.get("baseline"))
    members = [t for t in pareto.front(study) if t.number != baseline.number]
    return [
        [str(t.number), "baseline" if t is baseline else t.user_attrs["approach"], _widths(t)]
        for t in [baseline, *members]
    ]


def _widths(trial: optuna.trial.FrozenTrial) -> str:
    return "-".join(map(str, trial.user_attrs["hidden"]))


def test_objective_trains_measures_and_constrains(tmp_path: Path) -> None:
    config = _config(tmp_path)
    ctx = build_context(config)
    ctx.trials_dir = tmp_path / "trials"
    settings = study_settings(ctx)
    study = optuna.create_study(directions=directions(settings.higher_is_better))
    settings.write(study)
    study.enqueue_trial(baseline_params(config.search.space, 2), user_attrs={"baseline": True})
    study.enqueue_trial({"approach": "scratch", "multiplier_0": 0.25, "multiplier_1": 0.5})
    study.optimize(functools.partial(run_trial, ctx=ctx), n_trials=2)

    baseline, small = study.trials
    stored = StudySettings.read(study)
    assert stored.baseline_trial == 0 and stored.baseline_metric == baseline.values[0]
    assert baseline.user_attrs["hidden"] == [32, 16] and small.user_attrs["hidden"] == [8, 8]
    assert small.values[1] < baseline.values[1]  # fewer parameters
    metrics = small.user_attrs["metrics"]
    assert metrics["parameters"] == small.values[1]
    assert metrics["latency_onnxruntime_b64_median_ms"] == small.values[2]
    # The objective is the served graph's latency; the network's own graph is not timed per
    # trial (it doubled the measuring time for a figure no decision reads).
    assert not any(name.startswith("latency_network") for name in metrics)
    assert {"val_accuracy", "test_accuracy", "size_bytes", "flops"} <= set(metrics)
    # Where the trial's time went: training, and the per-row work beside it, which at a
    # million rows must stay small; the phases are timed one after another.
    phases = {k: v for k, v in metrics.items() if k.startswith("seconds.")}
    assert set(phases) == {
        f"seconds.{p}" for p in ("train", "measure", "row_scores", "paired", "save")
    }
    assert all(v >= 0 for v in phases.values())
    assert phases["seconds.train"] >= metrics["train_seconds"]
    floor = baseline.values[0] - 0.2
    assert small.constraints["metric_floor"] == pytest.approx(floor - small.values[0])
    _assert_rebuilds(small, ctx)


def test_a_repeated_sample_is_not_trained_again(tmp_path: Path) -> None:
    config = _config(tmp_path)
    ctx = build_context(config)
    ctx.trials_dir = tmp_path / "trials"
    settings = study_settings(ctx)
    study = optuna.create_study(directions=directions(True))
    settings.write(study)
    for _ in range(2):
        study.enqueue_trial({"approach": "scratch", "multiplier_0": 0.5, "multiplier_1": 0.5})
    study.optimize(functools.partial(run_trial, ctx=ctx), n_trials=2)
    first, second = study.trials
    assert second.user_attrs["repeat_of"] == 0
    assert second.values == first.values
    assert not (ctx.trials_dir / "trial-1").exists()


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A real 4-trial search, then resumed to 6 trials, all in a temporary folder."""
    root = tmp_path_factory.mktemp("search")
    config = _config(root, study="tiny", storage=str(root / "optuna.journal"))
    first = run_search(config, progress=False)
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(root / "optuna.journal"))
    )
    before = {
        t.number: t.datetime_complete
        for t in optuna.load_study(study_name="tiny", storage=storage).trials
    }
    config = _config(root, study="tiny", storage=str(root / "optuna.journal"), n_trials=6)
    second = run_search(config, progress=False)
    study = optuna.load_study(study_name="tiny", storage=storage)
    return {
        "root": root,
        "config": config,
        "first": first,
        "second": second,
        "before": before,
        "study": study,
    }


def test_search_resumes_and_trains_nothing_twice(searched: dict[str, object]) -> None:
    study = searched["study"]
    assert isinstance(study, optuna.Study)
    before = searched["before"]
    assert isinstance(before, dict)
    assert len(before) == 4
    complete = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(complete) == 6
    for number, finished_at in before.items():
        assert study.trials[number].datetime_complete == finished_at
    assert sum(bool(t.user_attrs.get("baseline")) for t in study.trials) == 1


def test_mlflow_mirrors_trials_with_current_pareto_tags(searched: dict[str, object]) -> None:
    config = searched["config"]
    study = searched["study"]
    assert isinstance(config, Config) and isinstance(study, optuna.Study)
    mlflow.set_tracking_uri(config.tracking.uri)
    client = MlflowClient()
    runs = mlflow.search_runs(experiment_names=["tabslim"], output_format="list")
    parents = [r for r in runs if r.data.tags.get("tabslim.kind") == "study"]
    trials = [r for r in runs if r.data.tags.get("tabslim.kind") == "trial"]
    assert len(parents) == 1
    assert sorted(int(r.data.tags["tabslim.trial"]) for r in trials) == list(range(6))
    parent_id = parents[0].info.run_id
    assert all(r.data.tags["mlflow.parentRunId"] == parent_id for r in trials)
    front = {t.number for t in pareto.front(study)}
    assert front  # the baseline at least is feasible
    for run in trials:
        number = int(run.data.tags["tabslim.trial"])
        assert run.data.tags["pareto"] == ("true" if number in front else "false")
        assert "val_accuracy" in run.data.metrics
        params = run.data.params
        assert params["widths"] == "-".join(map(str, study.trials[number].user_attrs["hidden"]))
        assert ("multiplier_0" if params["approach"] == "scratch" else "keep_ratio_0") in params
        if number in front:
            assert "tabslim.model_uri" in run.data.tags
    artifacts = {a.path for a in client.list_artifacts(parent_id)}
    assert {"pareto_front.csv", "pareto_front.html", "pareto_front.png", "trials.csv"} <= artifacts
    table = pd.read_csv(client.download_artifacts(parent_id, "pareto_front.csv"))
    assert set(table["trial"]) == front
    assert table["test_metric"].notna().all()
    assert MlflowClient().get_run(parent_id).data.metrics["front_size"] == len(front)


def test_champion_is_registered_and_predicts_raw_rows(searched: dict[str, object]) -> None:
    config = searched["config"]
    study = searched["study"]
    assert isinstance(config, Config) and isinstance(study, optuna.Study)
    mlflow.set_tracking_uri(config.tracking.uri)
    version = MlflowClient().get_model_version_by_alias("tiny", "champion")
    # The champion by the study's rule (confident: certified on the held-out rows).
    chosen = champion(study).trial
    assert chosen is not None and version.tags["tabslim.trial"] == str(chosen.number)
    # The front's widths travel with the champion, for `tabslim retrain --search`.
    front = [t.user_attrs["hidden"] for t in pareto.front(study)]
    assert json.loads(version.tags["tabslim.front_widths"]) == front
    model = mlflow.pyfunc.load_model("models:/tiny@champion")
    rows = load_bundled("wine").drop(columns=["target"]).head(5)
    predicted = model.predict(rows)
    assert len(predicted) == 5 and set(predicted["prediction"]) <= {0, 1, 2}
    # It carries the reference profile that drift checks compare new rows with.
    files = Path(mlflow.artifacts.download_artifacts("models:/tiny@champion"))
    profile = json.loads((files / "artifacts" / "network" / "profile.json").read_text())
    assert set(profile["columns"]) == set(rows.columns)
    assert profile["validation"]["metric"] == "accuracy"


def test_report_prints_the_front_relative_to_the_baseline(
    searched: dict[str, object], capsys: pytest.CaptureFixture[str]
) -> None:
    root = searched["root"]
    assert isinstance(root, Path)
    code = main(["report", "--study", "tiny", "--storage", str(root / "optuna.journal")])
    out = capsys.readouterr().out
    assert code == 0
    study = searched["study"]
    assert isinstance(study, optuna.Study)
    header = out.splitlines()[1].split()[:6]
    assert header == ["trial", "approach", "precision", "widths", "params", "param"]
    rows = _report_rows(out)
    assert [[row[0], row[1], row[3]] for row in rows] == _front_rows(study)
    assert {row[2] for row in rows} == {"fp32"}  # tiny_search.yaml turns INT8 copies off
    # The baseline's own ratios are 1 and its delta 0.
    assert rows[0][5:7] == ["1.00x", "1.00x"] and rows[0][8] == "+0.0000"


def test_the_champion_is_timed_as_served_beside_the_baseline(
    searched: dict[str, object], capsys: pytest.CaptureFixture[str]
) -> None:
    config, study, root = searched["config"], searched["study"], searched["root"]
    assert isinstance(config, Config) and isinstance(study, optuna.Study)
    assert isinstance(root, Path)
    stored, problem = attributes.served_latency(study)
    assert problem is None  # HTTP was not asked for (measure.served: in_process)
    models = {entry["model"] for entry in stored}
    # The baseline beside the champion, or the champion alone where it is the baseline.
    assert "champion" in models and models <= {"baseline", "champion"}
    assert {entry["rows"] for entry in stored} == set(config.measure.batch_sizes)
    for entry in stored:
        # MLflow's pyfunc runs the same graph, with pandas and its wrapper around it.
        assert 0 < entry["graph_ms"] < entry["in_process_ms"] and entry["http_ms"] is None
    mlflow.set_tracking_uri(config.tracking.uri)
    (parent,) = mlflow.search_runs(
        experiment_names=["tabslim"], filter_string="tags.`tabslim.kind` = 'study'",
        output_format="list",
    )  # fmt: skip
    assert parent.data.metrics["served_champion_in_process_b1_ms"] > 0
    assert main(["report", "--study", "tiny", "--storage", str(root / "optuna.journal")]) == 0
    out = capsys.readouterr().out
    assert "served latency" in out and "in-process" in out


def _journal_digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_bad_search_input_exits_2_and_leaves_the_study_alone(
    searched: dict[str, object], capsys: pytest.CaptureFixture[str]
) -> None:
    root = searched["root"]
    config = searched["config"]
    assert isinstance(root, Path) and isinstance(config, Config)
    journal = root / "optuna.journal"
    before = _journal_digest(journal)
    changed = config.model_copy(deep=True)
    changed.search.space.multiplier.low = 0.5
    other_space = _write(root, changed)
    unreachable = "postgresql://nobody:secret@127.0.0.1:1/none"
    cases = [
        # Only the key that changed, not the whole space as JSON.
        (["--config", str(other_space)],
         r"study 'tiny' .* was made with a different space\.multiplier\.low \(0\.25 there, "
         r"0\.5 in this config\)"),
        (["--config", str(other_space), "--sampler", "cmaes"], "search.sampler"),
        (["--config", str(other_space), "--study", "x", "--storage", unreachable],
         "cannot open storage .*nobody:\\*\\*\\*@"),
        (["--config", str(other_space), "--study", "x", "--storage",
          f"sqlite:///{root}/missing/dir/x.db"], "cannot open storage"),
    ]  # fmt: skip
    for args, message in cases:
        assert main(["search", *args, "--quiet"]) == 2, args
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and err.startswith("tabslim: error: ")
        assert re.search(message, err), err
        assert "secret" not in err
    assert _journal_digest(journal) == before
    assert main(["report", "--study", "nope", "--storage", str(journal)]) == 2
    assert "no study 'nope'" in capsys.readouterr().err


@pytest.mark.slow
def test_two_workers_share_one_study(tmp_path: Path) -> None:
    config = _config(
        tmp_path, study="pair", storage=str(tmp_path / "j.journal"), workers=2, n_trials=6
    )
    outcome = run_search(config, progress=False)
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "j.journal"))
    )
    study = optuna.load_study(study_name="pair", storage=storage)
    states = [t.state for t in study.trials]
    assert optuna.trial.TrialState.FAIL not in states
    assert optuna.trial.TrialState.RUNNING not in states
    numbers = [t.number for t in study.trials]
    assert len(numbers) == len(set(numbers)) and 6 <= len(numbers) <= 7
    assert outcome.trials == len(numbers)
    mlflow.set_tracking_uri(config.tracking.uri)
    runs = mlflow.search_runs(experiment_names=["tabslim"], output_format="list")
    mirrored = sorted(
        int(r.data.tags["tabslim.trial"])
        for r in runs
        if r.data.tags.get("tabslim.kind") == "trial"
    )
    assert mirrored == sorted(numbers)


PRUNE_PARAMS = {
    "approach": "prune",
    "keep_ratio_0": 0.2,
    "keep_ratio_1": 0.2,
    "prune_priority_0": 0.1,  # layer 1 goes first: priorities are pruned highest first
    "prune_priority_1": 0.9,
    "prune_schedule": "iterative",
    "prune_criterion": "l1",
    "fine_tune_epochs": 1,
}


def test_prune_trial_prunes_the_trained_baseline_and_fine_tunes(tmp_path: Path) -> None:
    config = _config(tmp_path)
    ctx = build_context(config)
    ctx.trials_dir = tmp_path / "trials"
    settings = study_settings(ctx)
    study = optuna.create_study(directions=directions(True))
    settings.write(study)
    study.enqueue_trial(baseline_params(config.search.space, 2), user_attrs={"baseline": True})
    study.enqueue_trial(PRUNE_PARAMS)
    study.optimize(functools.partial(run_trial, ctx=ctx), n_trials=2)
    baseline, pruned = study.trials
    assert pruned.user_attrs["approach"] == "prune"
    assert pruned.user_attrs["hidden"] == [6, 3]  # round(0.2 x 32), round(0.2 x 16)
    assert pruned.user_attrs["plan"]["order"] == [1, 0]
    assert pruned.user_attrs["plan"]["criterion"] == "l1"
    assert pruned.values[1] < baseline.values[1]
    # Epochs trained, as for scratch trials: one step epoch after each of 2 layers, 1 final.
    assert pruned.user_attrs["metrics"]["epochs"] == 3
    assert "metric_floor" in pruned.constraints
    _assert_rebuilds(pruned, ctx)


def test_one_study_mixes_both_approaches_and_pairs_pruned_front_members(tmp_path: Path) -> None:
    # Every candidate is feasible with this floor, so the smallest one, the pruned (6, 3), is on
    # the front for sure and gets a scratch twin.
    loose = {"study": "mixed", "storage": str(tmp_path / "m.journal"), "max_metric_drop": 1.0}
    config = _config(tmp_path, n_trials=1, **loose)
    run_search(config, progress=False)
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "m.journal"))
    )
    study = optuna.load_study(study_name="mixed", storage=storage)
    study.enqueue_trial(PRUNE_PARAMS)
    study.enqueue_trial({"approach": "scratch", "multiplier_0": 0.5, "multiplier_1": 0.5})
    config = _config(tmp_path, n_trials=3, paired=True, **loose)
    outcome = run_search(config, progress=False)
    study = optuna.load_study(study_name="mixed", storage=storage)
    approaches = [t.user_attrs["approach"] for t in study.trials]
    assert approaches == ["scratch", "prune", "scratch"]
    # The report: the baseline, then the front, which holds the pruned (6, 3) for sure.
    n_front = len(pareto.front(study))
    header = outcome.report.splitlines()[0]
    assert header.startswith(f"accuracy: {n_front} Pareto-front model")
    assert header.endswith(" of 3 finished trials (baseline first)")
    rows = _report_rows(outcome.report)
    assert [[row[0], row[1], row[3]] for row in rows] == _front_rows(study)
    # Parameters 13*32+32 + 2*32 + 32*16+16 + 2*16 + 16*3+3 = 1,123 and, for (6, 3), 135.
    assert rows[0][4:7] == ["1,123", "1.00x", "1.00x"] and rows[0][8] == "+0.0000"
    pruned_row = next(row for row in rows if row[0] == "1")
    assert pruned_row[:6] == ["1", "prune", "fp32", "6-3", "135", "0.12x"]
    table = pareto.trial_table(study)
    assert set(table["approach"]) == {"scratch", "prune"}
    mlflow.set_tracking_uri(config.tracking.uri)
    (parent,) = [
        r for r in mlflow.search_runs(experiment_names=["tabslim"], output_format="list")
        if r.data.tags.get("tabslim.kind") == "study"
    ]  # fmt: skip
    pruned_front = [t for t in pareto.front(study) if t.user_attrs["approach"] == "prune"]
    client = MlflowClient()
    paired = pd.read_csv(client.download_artifacts(parent.info.run_id, "paired_comparison.csv"))
    assert [t.number for t in pruned_front] == [1]
    assert list(paired["trial"]) == [1]
    row = paired.iloc[0]
    assert row["widths"] == "6-3"
    assert 0 <= row["scratch_test_accuracy"] <= 1 and 0 <= row["prune_test_accuracy"] <= 1
    assert row["scratch_minus_prune_test"] == pytest.approx(
        row["scratch_test_accuracy"] - row["prune_test_accuracy"]
    )


def test_the_default_scheme_trains_the_uniform_ladder_right_after_the_baseline(
    tmp_path: Path,
) -> None:
    space = TINY["search"]["space"] | {"scheme": "scale_shape", "ladder": [0.5, 0.25]}
    config = _config(
        tmp_path, study="ladder", storage=str(tmp_path / "j.journal"), n_trials=4, space=space
    )
    run_search(config, progress=False)
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(tmp_path / "j.journal"))
    )
    trials = optuna.load_study(study_name="ladder", storage=storage).trials
    assert [t.user_attrs["hidden"] for t in trials[:3]] == [[32, 16], [16, 8], [8, 4]]
    assert [t.user_attrs["approach"] for t in trials[1:3]] == ["scratch", "scratch"]
    # The fourth refines the ladder where it crossed the floor: a uniform shape again.
    from search.study import is_feasible, refine_ladder

    rungs = [(t.params["width_scale"], is_feasible(t)) for t in trials[1:3]]
    expected = refine_ladder(rungs, config.search.space)
    assert expected, rungs  # the tiny search holds at 0.5 at least
    assert trials[3].params == {
        "approach": "scratch", "width_scale": expected[0], "width_shape_0": 1.0,
        "width_shape_1": 1.0,
    }  # fmt: skip
