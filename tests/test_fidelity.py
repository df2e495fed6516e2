"""Multi-fidelity search (`search.fidelity`): rungs, who goes on, and what a stopped trial is."""

from __future__ import annotations

import functools
from pathlib import Path

import optuna
import pytest
import yaml
from hand_built import ACCURACY, add_trial, new_study
from mlflow.tracking import MlflowClient
from optuna.distributions import FloatDistribution

from search.commands import run_search
from search.config import Config, validate
from search.front import champion, format_report, pareto
from search.study import (
    SearchContext,
    TrialKey,
    baseline_params,
    build_context,
    directions,
    goes_on,
    run_trial,
    rung_epochs,
    study_settings,
)
from search.study.fidelity import Peer, RungJudge

TINY = yaml.safe_load((Path(__file__).parent / "tiny_search.yaml").read_text())


def _config(tmp_path: Path, max_epochs: int = 4, **search: object) -> Config:
    raw = yaml.safe_load(yaml.safe_dump(TINY))
    raw["training"]["max_epochs"] = max_epochs
    raw["search"] |= {"fidelity": {"min_epochs": 1, "reduction": 2}} | search
    raw["tracking"] = {"uri": f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"}
    return validate(raw, "test")


@pytest.mark.parametrize(
    ("min_epochs", "reduction", "max_epochs", "expected"),
    [(3, 3, 40, (3, 9, 27)), (3, 3, 27, (3, 9)), (1, 2, 4, (1, 2)), (5, 3, 5, ())],
)
def test_rungs_are_geometric_below_the_full_epochs(
    min_epochs: int, reduction: int, max_epochs: int, expected: tuple[int, ...]
) -> None:
    assert rung_epochs(min_epochs, reduction, max_epochs) == expected


def _decide(own: Peer, peers: list[Peer], floor: float | None = None) -> bool:
    return goes_on(own, peers, floor=floor, higher_is_better=True, reduction=3)[0]


def test_at_equal_size_the_better_third_of_a_rung_goes_on() -> None:
    # Nine hand-made curves at one rung, all of one size: plain successive halving.
    values = [0.50, 0.55, 0.60, 0.65, 0.70, 0.75, 0.80, 0.85, 0.90]
    peers = [Peer(v, 100.0) for v in values]
    going = [_decide(p, [q for q in peers if q is not p]) for p in peers]
    assert going == [False] * 6 + [True] * 3


def test_a_smaller_candidate_behind_larger_ones_goes_on() -> None:
    # Plain ASHA would stop it: eight larger networks are ahead after a few epochs.
    larger = [Peer(0.8 + 0.01 * i, 1000.0 + i) for i in range(8)]
    assert _decide(Peer(0.6, 50.0), larger)
    # Of five at the rung, one no larger and better stops it (it goes on below 5 // 3 = 1).
    assert not _decide(Peer(0.6, 50.0), [*larger[:3], Peer(0.7, 40.0)])
    # Of ten, one such is not yet enough (below 10 // 3 = 3), three are.
    assert _decide(Peer(0.6, 50.0), [*larger, Peer(0.7, 40.0)])
    assert not _decide(Peer(0.6, 50.0), [*larger[:6], *(Peer(0.7, 40.0 + i) for i in range(3))])


def test_past_the_floor_only_size_counts() -> None:
    # Both clear the floor of 0.8: the larger one is dominated by the smaller, although it is
    # more accurate, and stops; the smaller goes on.
    small, large = Peer(0.82, 10.0), Peer(0.95, 100.0)
    assert not _decide(large, [small], floor=0.8)
    assert _decide(small, [large], floor=0.8)
    # Without a floor the more accurate one is not dominated.
    assert _decide(large, [small])


def test_out_of_reach_of_the_floor_once_enough_candidates_finished() -> None:
    # Three smaller finished candidates, behind it at this rung (so none dominates it), gained
    # at most 0.12 after it: 0.6 cannot reach 0.8.
    finished = [Peer(0.55, 5.0, final=0.65), Peer(0.50, 6.0, 0.62), Peer(0.52, 7.0, 0.60)]
    going, reason = goes_on(
        Peer(0.6, 10.0), finished, floor=0.8, higher_is_better=True, reduction=3
    )
    assert not going and "out of reach" in reason
    # With fewer finished than the reduction factor, there is nothing to judge reach by.
    assert _decide(Peer(0.6, 10.0), finished[:2], floor=0.8)
    # Larger candidates' gains do not count: a narrow network learns more slowly.
    assert _decide(Peer(0.6, 1.0), finished, floor=0.8)
    # Lower is better (RMSE): 2.0 now, and the best gain -0.3 leaves it above 1.5.
    rmse = [Peer(2.1, 5.0, final=1.8), Peer(2.2, 6.0, 1.9), Peer(2.3, 7.0, 2.1)]
    going, _ = goes_on(Peer(2.0, 10.0), rmse, floor=1.5, higher_is_better=False, reduction=3)
    assert not going


def _judge(study: optuna.Study, floor: float = 0.9) -> tuple[optuna.Trial, RungJudge]:
    trial = study.ask({"x": FloatDistribution(0, 1)})
    judge = RungJudge(
        trial, approach="scratch", floor=floor, higher_is_better=True, rungs=(1, 3), reduction=3
    )
    return trial, judge


def test_a_rung_never_waits_for_a_straggler_and_decisions_are_recorded() -> None:
    study = optuna.create_study()
    straggler, _ = _judge(study)  # running, has reached no rung yet
    first, judge_first = _judge(study)
    second, judge_second = _judge(study)
    # The first at a rung decides at once, alone: nothing to wait for.
    assert judge_first(0, 0.5, 100)
    # A second, larger and worse, is dominated by the first and stops there.
    assert not judge_second(0, 0.4, 200)
    assert judge_second.stop is not None and judge_second.stop["epochs"] == 1
    records = {t.number: t.user_attrs.get(TrialKey.RUNGS) for t in study.trials}
    assert records[straggler.number] is None
    assert records[first.number] == {"1": {"value": 0.5, "parameters": 100, "goes_on": True}}
    assert records[second.number]["1"]["goes_on"] is False
    # Rungs are per schedule: a prune trial is not judged against scratch ones.
    pruned = study.ask({"x": FloatDistribution(0, 1)})
    judge = RungJudge(
        pruned, approach="prune", floor=0.9, higher_is_better=True, rungs=(1,), reduction=3
    )
    assert judge(0, 0.1, 10_000)


def _after_baseline(config: Config, tmp_path: Path) -> tuple[SearchContext, optuna.Study]:
    """A study of `config` whose baseline has trained (the floor is known)."""
    ctx = build_context(config)
    ctx.trials_dir = tmp_path / "trials"
    settings = study_settings(ctx)
    study = optuna.create_study(directions=directions(True))
    settings.write(study)
    study.enqueue_trial(baseline_params(config.search.space, 2), user_attrs={"baseline": True})
    study.optimize(functools.partial(run_trial, ctx=ctx), n_trials=1)
    return ctx, study


def _perfect_peer(study: optuna.Study, schedule: str) -> None:
    """A record at rung 1 (one epoch) that is tiny and perfect: it dominates any real
    candidate of `schedule` there. A repeat, so not a candidate of its own."""
    study.add_trial(
        optuna.trial.create_trial(
            values=[1.0, 1.0, 1.0],
            user_attrs={
                TrialKey.RUNGS: {"1": {"value": 1.0, "parameters": 1, "goes_on": True}},
                "rung_schedule": schedule,
                "repeat_of": 0,
            },
        )
    )


def test_a_stopped_trial_keeps_its_metrics_is_marked_and_is_never_champion(
    tmp_path: Path,
) -> None:
    config = _config(tmp_path, max_metric_drop=0.5)
    ctx, study = _after_baseline(config, tmp_path)
    _perfect_peer(study, "from_scratch")
    study.enqueue_trial({"approach": "scratch", "multiplier_0": 0.5, "multiplier_1": 0.5})
    study.optimize(functools.partial(run_trial, ctx=ctx), n_trials=1)
    stopped = study.trials[-1]

    assert stopped.state == optuna.trial.TrialState.COMPLETE
    assert stopped.user_attrs[TrialKey.RUNG_STOP]["epochs"] == 1
    assert "dominated" in stopped.user_attrs[TrialKey.RUNG_STOP]["reason"]
    metrics = stopped.user_attrs["metrics"]
    assert metrics["epochs"] == 1 and "val_accuracy" in metrics and "test_accuracy" in metrics
    # Within the generous floor and smaller than the baseline, yet unfinished: left out.
    assert stopped.values[1] < study.trials[0].values[1]
    assert stopped.number not in {t.number for t in pareto.front(study)}
    assert pareto.recommend(study).number != stopped.number
    picked = champion(study)
    assert picked.trial is not None and picked.trial.number != stopped.number
    table = pareto.trial_table(study).set_index("trial")
    assert table.loc[stopped.number, "stopped_epochs"] == 1
    assert "1 of them stopped at a rung" in format_report(
        pareto.trial_table(study), metric="accuracy"
    )


@pytest.mark.slow
def test_two_workers_on_a_journal_storage_decide_each_rung_once(tmp_path: Path) -> None:
    journal = tmp_path / "j.journal"
    config = _config(tmp_path, study="rungs", storage=str(journal), workers=2, n_trials=8)
    run_search(config, progress=False)
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(journal))
    )
    study = optuna.load_study(study_name="rungs", storage=storage)
    judged = [t for t in study.trials if t.user_attrs.get(TrialKey.RUNGS)]
    assert judged, "no trial reached a rung"
    for trial in judged:
        records = trial.user_attrs[TrialKey.RUNGS]
        epochs = sorted(int(e) for e in records)
        # Rungs in order from the first, each decided once; none after a stop.
        assert epochs == [1, 2][: len(epochs)]
        decisions = [records[str(e)]["goes_on"] for e in epochs]
        assert all(decisions[:-1])
        stop = trial.user_attrs.get(TrialKey.RUNG_STOP)
        assert (stop is not None) == (not decisions[-1])
        if stop is not None:
            assert stop["epochs"] == epochs[-1] == trial.user_attrs["metrics"]["epochs"]
    # MLflow says, per trial run, where it stopped.
    client = MlflowClient(config.tracking.uri)
    experiment = client.get_experiment_by_name(config.tracking.experiment)
    runs = client.search_runs([experiment.experiment_id], "tags.`tabslim.kind` = 'trial'")
    tags = {int(r.data.tags["tabslim.trial"]): r.data.tags for r in runs}
    for trial in judged:
        told = tags[trial.number]["tabslim.stopped_at_rung"]
        stop = trial.user_attrs.get(TrialKey.RUNG_STOP)
        assert told == ("no" if stop is None else f"{stop['rung']} ({stop['epochs']} epochs)")


def test_a_prune_trial_stops_at_a_rung_of_its_fine_tuning_epochs(tmp_path: Path) -> None:
    config = _config(
        tmp_path, max_metric_drop=0.5, prune={"criteria": ["l1"], "fine_tune_epochs": [4]}
    )
    ctx, study = _after_baseline(config, tmp_path)
    # Tiny and perfect after one epoch of fine-tuning; a scratch record would not count.
    _perfect_peer(study, "fine_tune")
    plan = {"keep_ratio_0": 0.5, "keep_ratio_1": 0.5, "prune_priority_0": 0.9,
            "prune_priority_1": 0.1, "prune_schedule": "one_shot", "prune_criterion": "l1",
            "fine_tune_epochs": 4}  # fmt: skip
    study.enqueue_trial({"approach": "prune", **plan})
    study.optimize(functools.partial(run_trial, ctx=ctx), n_trials=1)
    pruned = study.trials[-1]
    assert pruned.user_attrs["approach"] == "prune"
    assert pruned.user_attrs[TrialKey.RUNG_STOP]["epochs"] == 1
    # One of its four planned fine-tuning epochs ran.
    assert pruned.user_attrs["metrics"]["epochs"] == 1


def test_a_stopped_trial_neither_stands_on_the_front_nor_pushes_a_finished_one_off() -> None:
    study = new_study(ACCURACY)
    add_trial(study, 0.97, 10_000, 2.0, baseline=True)
    add_trial(study, 0.966, 2_000, 1.0)  # finished, within the floor of 0.965
    # It dominates that one, but was stopped at a rung.
    study.add_trial(
        optuna.trial.create_trial(
            values=[0.968, 1_000, 0.5],
            constraints={"metric_floor": -0.01},
            user_attrs={"approach": "scratch", "hidden": [8, 8], "metrics": {"parameters": 1_000},
                        TrialKey.RUNG_STOP: {"rung": 0, "epochs": 3, "reason": "dominated"}},
        )
    )  # fmt: skip
    assert [t.number for t in pareto.front(study)] == [1, 0]
    assert pareto.recommend(study).number == 1
