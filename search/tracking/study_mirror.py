"""MLflow mirrors the study for people: one parent run per study, one nested run per trial.

Optuna owns the trial state; this module copies finished trials into MLflow, keeps each trial's
`pareto` tag current as the front moves, and at the end logs the front (table and plots) and
registers the recommended model. Only the process that owns the parent run writes to MLflow, so
worker processes never contend for the SQLite store.
"""

from __future__ import annotations

import dataclasses
import json
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import mlflow
import optuna
import pandas as pd
from mlflow.entities import DatasetInput, Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from optuna.trial import FrozenTrial, TrialState

from lightning_modules.data import TabularDataModule
from lightning_modules.errors import TabslimInputError
from lightning_modules.evaluation import serving_preprocessor
from search import tracking
from search.cluster import RemoteNetworks, fetch
from search.front import (
    Champion,
    front_markdown,
    hypervolume,
    pareto,
    plot_front_html,
    plot_front_png,
    study_text,
)
from search.serving import FRONT_TAG, build_profile, load_network, log_model, reference_sample
from search.study import StudySettings, attributes, is_feasible
from search.tracking.registry import CHAMPION, PREVIOUS, held_by_retrain
from search.tracking.run_fields import champion_metrics, rung_tags, trial_params

_DONE = (TrialState.COMPLETE, TrialState.FAIL)


def _tag(value: bool) -> str:
    return "true" if value else "false"


@dataclass
class StudyMirror:
    """Mirrors one study into one MLflow experiment.

    Args:
        trials_dir: where trials saved their networks (spec, preprocessing, weights).
        input_example: a few raw rows, logged with each model as its input example.
        keep_models: "pareto" logs models of front members only, "all" of every trial.
        dataset: the training data, linked to the parent run and to every trial's run.
    """

    study: optuna.Study
    experiment_id: str
    trials_dir: Path
    input_example: Any
    keep_models: str = "pareto"
    params: dict[str, Any] = field(default_factory=dict)
    dataset: DatasetInput | None = None
    # Set once the parent run exists, when the tracking URI is a server: see network_store.
    remote: RemoteNetworks | None = None
    # The study's data, for the reference profile logged with each model (`search.serving.profile`).
    data: TabularDataModule | None = None
    # Training rows stored with each logged model (`tracking.reference_rows`).
    reference_rows: int = 0
    # Move `champion` to this search's champion even off a version `tabslim retrain` promoted.
    force: bool = False
    client: MlflowClient = field(default_factory=MlflowClient)
    parent_run_id: str = ""
    _runs: dict[int, str] = field(default_factory=dict)
    _pareto: dict[int, bool] = field(default_factory=dict)
    _models: dict[int, str] = field(default_factory=dict)
    _champion_trial: int = -1
    champion_note: str = ""

    def start(self) -> str:
        """Find or create the study's parent run, and learn which trials are mirrored already."""
        name = self.study.study_name
        found = tracking.find_study_run(self.client, self.experiment_id, name)
        if found is not None:
            self.parent_run_id = found
            self.client.update_run(self.parent_run_id, status="RUNNING")
        else:
            run = self.client.create_run(
                self.experiment_id,
                run_name=name,
                tags={"tabslim.kind": "study", "tabslim.study": name},
            )
            self.parent_run_id = run.info.run_id
            params = [Param(k, str(v)[:6000]) for k, v in self.params.items()]
            for start in range(0, len(params), 100):
                self.client.log_batch(self.parent_run_id, params=params[start : start + 100])
        if self.dataset is not None:
            tracking.log_dataset(self.client, self.parent_run_id, self.dataset)
        for run in self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`tabslim.study` = '{name}' and tags.`tabslim.kind` = 'trial'",
            max_results=50000,
        ):
            number = int(run.data.tags["tabslim.trial"])
            if run.info.status == "RUNNING" or number in self._runs:
                # A mirror cut off half-way by a killed coordinator, or a second copy of one:
                # deleted, so that `sync` logs the trial again, once and whole.
                self.client.delete_run(run.info.run_id)
                continue
            self._runs[number] = run.info.run_id
            self._pareto[number] = run.data.tags.get("pareto") == "true"
            if "tabslim.model_uri" in run.data.tags:
                self._models[number] = run.data.tags["tabslim.model_uri"]
        return self.parent_run_id

    def sync(self) -> int:
        """Mirror every newly finished trial and refresh the pareto tags; returns the front size."""
        front = {t.number for t in pareto.front(self.study)}
        for trial in self.study.get_trials(deepcopy=False, states=_DONE):
            # A dropped retry never ran; the trial it retried has its own FAILED run.
            if trial.number not in self._runs and not attributes.was_dropped(trial):
                self._mirror(trial, trial.number in front)
        for number, run_id in self._runs.items():
            on_front = number in front
            if self._pareto.get(number) != on_front:
                self.client.set_tag(run_id, "pareto", _tag(on_front))
                self._pareto[number] = on_front
        return len(front)

    def _mirror(self, trial: FrozenTrial, on_front: bool) -> None:
        run = self.client.create_run(
            self.experiment_id,
            run_name=f"trial-{trial.number}",
            start_time=int(trial.datetime_start.timestamp() * 1000)
            if trial.datetime_start
            else None,
            tags=self._trial_tags(trial, on_front),
        )
        run_id = run.info.run_id
        if self.dataset is not None:
            self.client.log_inputs(run_id, datasets=[self.dataset])
        finished = trial.datetime_complete or trial.datetime_start
        timestamp = int(finished.timestamp() * 1000) if finished else _now()
        metrics = [
            Metric(k, float(v), timestamp, 0) for k, v in attributes.trial_metrics(trial).items()
        ]
        stopped = attributes.stopped_below_floor(trial)
        self.client.log_batch(
            run_id,
            metrics=metrics,
            params=[Param(k, v) for k, v in trial_params(trial).items()],
            tags=[RunTag("tabslim.stopped_below_floor", _tag(stopped)), *rung_tags(trial)],
        )
        end = int(trial.datetime_complete.timestamp() * 1000) if trial.datetime_complete else None
        status = "FINISHED" if trial.state == TrialState.COMPLETE else "FAILED"
        self.client.set_terminated(run_id, status=status, end_time=end)
        self._runs[trial.number] = run_id
        self._pareto[trial.number] = on_front
        # Front members get their models at `finish`: the front moves with every trial, and a
        # logged model costs about as much as training a small candidate.
        if trial.state == TrialState.COMPLETE and self.keep_models == "all":
            self._log_model(trial)

    def _trial_tags(self, trial: FrozenTrial, on_front: bool) -> dict[str, str]:
        repeat = attributes.repeat_of(trial)
        return {
            "mlflow.parentRunId": self.parent_run_id,
            "tabslim.kind": "trial",
            "tabslim.study": self.study.study_name,
            "tabslim.trial": str(trial.number),
            "tabslim.state": trial.state.name,
            "tabslim.approach": attributes.approach(trial),
            "tabslim.precision": attributes.precision_label(trial),
            "baseline": _tag(attributes.is_baseline(trial)),
            # Where it ran: latencies of different hosts compare through latency_relative.
            **{
                f"tabslim.{k}": str(v)
                for k, v in attributes.where_ran(trial).items()
                if k in ("host", "cpu_model", "gpu")
            },
            "feasible": _tag(is_feasible(trial)),
            "pareto": _tag(on_front),
            **({"repeat_of": str(repeat)} if repeat is not None else {}),
        }

    def model_uri(self, trial: FrozenTrial) -> str | None:
        """The trial's logged model, logged now where `keep_models` did not keep it; None for a
        trial of a study made before networks were kept."""
        return self._models.get(trial.number) or self._log_model(trial)

    def _log_model(self, trial: FrozenTrial) -> str | None:
        repeat = attributes.repeat_of(trial)
        number = trial.number if repeat is None else repeat
        try:
            directory = fetch(self.study, number, self.trials_dir, self.remote)
        except TabslimInputError:
            return None  # a trial of a study made before networks were kept
        spec, network, preprocessor = load_network(directory)
        # Task anomaly: the served model flags rows at the threshold the trial chose on
        # validation with its own outputs (an INT8 copy's differ from its source's).
        threshold = attributes.trial_metrics(trial).get("val_threshold")
        if preprocessor.task.is_anomaly and threshold is not None:
            preprocessor = dataclasses.replace(preprocessor, anomaly_threshold=float(threshold))
        elif self.data is not None:
            preprocessor = serving_preprocessor(network, self.data)
        run_id = self._runs[trial.number]
        with mlflow.start_run(run_id=run_id, nested=True):
            # A quantized variant's folder holds the INT8 graph it was measured as: that serves,
            # and its own outputs calibrate its estimators.
            graph = directory / "model.onnx" if attributes.precision(trial) else None
            profile = (
                build_profile(self.data, network, graph=graph) if self.data is not None else None
            )
            rows = reference_sample(self.data, self.reference_rows) if self.data else None
            info = log_model(
                spec,
                network,
                preprocessor,
                self.input_example,
                profile=profile,
                onnx_graph=graph,
                reference_rows=rows,
            )
        self.client.set_tag(run_id, "tabslim.model_uri", info.model_uri)
        self._models[trial.number] = info.model_uri
        return str(info.model_uri)

    def finish(
        self,
        *,
        status: str = "FINISHED",
        tables: dict[str, pd.DataFrame] | None = None,
        champion: Champion | None = None,
    ) -> str | None:
        """Log the front, its plots and test metrics on the parent; register `champion`.

        `champion` is the search's decision (`search.front.decide_champion`); None registers
        nothing (a search that did not finish, or a baseline that did not learn). Returns the
        champion's model URI, or None when none was registered.
        """
        self.sync()
        for trial in pareto.front(self.study):
            if trial.number not in self._models:
                self._log_model(trial)
        settings = StudySettings.read(self.study)
        table = pareto.trial_table(self.study)
        front_table = table[table["pareto"]] if len(table) else table
        self._log_tables(table, front_table, settings, tables or {})
        summary = self._summary(table, front_table, settings.metric)
        champion_uri = self._register_champion(champion) if champion is not None else None
        if champion_uri is not None:
            chosen = table[table["trial"] == self._champion_trial].iloc[0]
            summary |= champion_metrics(chosen, settings.metric)
            summary = {k: v for k, v in summary.items() if v == v}  # MLflow refuses NaN
        run_id = self.parent_run_id
        self.client.log_batch(run_id, metrics=[Metric(k, v, _now(), 0) for k, v in summary.items()])
        # The run's Description in the UI: the front at a glance, before opening any artifact.
        markdown = front_markdown(table, metric=settings.metric)
        self.client.set_tag(run_id, "mlflow.note.content", markdown)
        self.client.set_terminated(run_id, status=status)
        return champion_uri

    def _log_tables(
        self,
        table: pd.DataFrame,
        front_table: pd.DataFrame,
        settings: StudySettings,
        tables: dict[str, pd.DataFrame],
    ) -> None:
        """The trials and the front as CSV, the front's plots, the report and `tables`."""
        run_id = self.parent_run_id
        with tempfile.TemporaryDirectory() as tmp:
            folder = Path(tmp)
            table.to_csv(folder / "trials.csv", index=False)
            front_table.to_csv(folder / "pareto_front.csv", index=False)
            self.client.log_artifact(run_id, str(folder / "trials.csv"))
            self.client.log_artifact(run_id, str(folder / "pareto_front.csv"))
            if len(table):
                plots = {"pareto_front.html": plot_front_html, "pareto_front.png": plot_front_png}
                for name, plot in plots.items():
                    plot(
                        table,
                        folder / name,
                        metric=settings.metric,
                        floor=settings.floor(),
                        title=f"{self.study.study_name}: {len(table)} trials",
                    )
                    self.client.log_artifact(run_id, str(folder / name))
            report = study_text(self.study)
            (folder / "report.txt").write_text(report + "\n")
            self.client.log_artifact(run_id, str(folder / "report.txt"))
            for name, extra in tables.items():
                extra.to_csv(folder / name, index=False)
                self.client.log_artifact(run_id, str(folder / name))

    def _summary(
        self, table: pd.DataFrame, front_table: pd.DataFrame, metric: str
    ) -> dict[str, float]:
        """The parent run's metrics: counts, hypervolume, the front's test metrics, the cost."""
        summary = {
            "trials_complete": float(len(table)),
            "front_size": float(len(front_table)),
            "hypervolume": hypervolume(self.study),
        }
        for row in front_table.itertuples():
            summary[f"front_trial_{row.trial}_test_{metric}"] = float(row.test_metric)
        cost = attributes.confirm_cost(self.study) or {}
        for key in ("candidates", "trainings", "seconds"):
            if key in cost:
                summary[f"confirm_{key}"] = float(cost[key])
        return summary

    def _register_champion(self, picked: Champion) -> str | None:
        self.champion_note = picked.note
        chosen = picked.trial
        if chosen is None:
            return None
        self._champion_trial = chosen.number
        self.client.set_tag(self.parent_run_id, "champion_rule", picked.rule)
        model_uri = self.model_uri(chosen)
        if model_uri is None:
            return None
        name = self.study.study_name
        try:
            current = self.client.get_model_version_by_alias(name, CHAMPION)
        except mlflow.exceptions.MlflowException:
            current = None
        # The front's shapes travel with the champion: `tabslim retrain --search` starts there.
        front = [
            attributes.hidden(t)
            for t in pareto.front(self.study)
            if attributes.hidden(t) is not None and not attributes.is_variant(t)
        ]
        if current is not None and current.tags.get("tabslim.trial") == str(chosen.number):
            # The same champion, but a resumed search may have moved the front.
            self.client.set_model_version_tag(name, current.version, FRONT_TAG, json.dumps(front))
            self.champion_note += f"; {name}@{CHAMPION} is version {current.version}"
            return f"models:/{name}@{CHAMPION}"
        held = None if current is None or self.force else held_by_retrain(current, chosen.number)
        if held is not None:
            self.champion_note = f"{self.champion_note}; {held}"
            return f"models:/{name}@{CHAMPION}"
        version = mlflow.register_model(
            model_uri,
            name,
            tags={
                "tabslim.trial": str(chosen.number),
                "tabslim.study": name,
                FRONT_TAG: json.dumps(front),
            },
        )
        if current is not None:
            # `tabslim rollback` moves back to the version this search replaced.
            self.client.set_registered_model_alias(name, PREVIOUS, current.version)
        self.client.set_registered_model_alias(name, CHAMPION, version.version)
        self.client.set_tag(self.parent_run_id, "champion_trial", str(chosen.number))
        self.champion_note += f"; {name}@{CHAMPION} is version {version.version}"
        return f"models:/{name}@{CHAMPION}"


def _now() -> int:
    return int(time.time() * 1000)
