"""Certification: rows with one job each, a test that holds its size, a family-wise error held
across candidates, a walk that reaches the likely passer, and the power said up front."""

from __future__ import annotations

import copy
import functools
from pathlib import Path

import numpy as np
import optuna
import pandas as pd
import pytest
import torch
import yaml
from sklearn.datasets import make_classification

from lightning_modules.data import TabularDataModule
from lightning_modules.networks import MLPSpec, build, infer
from lightning_modules.training import FitSettings, fit
from search.config import validate
from search.front import certification_chain, confirm_search
from search.front.certify import Link, judge_chain
from search.inputs import load_data
from search.measure import ALPHA, noninferiority, paired_delta
from search.measure.noninferiority import tango_p_value
from search.serving import build_profile, estimate_accuracy
from search.study import (
    StudyKey,
    StudySettings,
    TrialKey,
    baseline_params,
    build_context,
    directions,
    power_statement,
    run_trial,
    state_power,
    study_settings,
)

TINY = yaml.safe_load((Path(__file__).parent / "tiny_search.yaml").read_text())
SETTINGS = StudySettings(metric="accuracy", higher_is_better=True, max_metric_drop=0.005)


def _at_the_floor(n: int, disagree: float, drop: float, rng: np.random.Generator) -> tuple:
    """Paired 0/1 rows whose true accuracy difference is exactly -drop: the candidate alone
    is right on `disagree` of rows, the baseline alone on `disagree + drop`."""
    draw = rng.multinomial(n, [disagree, disagree + drop, 1 - 2 * disagree - drop])
    gains, losses, _ = (int(c) for c in draw)
    candidate = np.r_[np.ones(gains), np.zeros(losses), np.ones(n - gains - losses)]
    baseline = np.r_[np.zeros(gains), np.ones(losses), np.ones(n - gains - losses)]
    return candidate, baseline


@pytest.mark.parametrize("n", [200, 1000, 5000, 20_000])
@pytest.mark.parametrize("disagree", [0.002, 0.02, 0.1])
def test_false_passes_at_the_floor_stay_within_nominal_plus_noise(n: int, disagree: float) -> None:
    drop, runs = 0.005, 2000
    rng = np.random.default_rng(n + int(disagree * 1000))
    counts = rng.multinomial(n, [disagree, disagree + drop, 1 - 2 * disagree - drop], size=runs)
    passed = np.mean([tango_p_value(int(g), int(b), n, drop) < ALPHA for g, b, _ in counts])
    # Three binomial standard errors above the nominal 2.5%.
    noise = 3 * np.sqrt(ALPHA * (1 - ALPHA) / runs)
    assert passed <= ALPHA + noise


def test_the_percentile_bootstrap_it_replaces_does_not_hold_its_size_on_few_rows() -> None:
    # The counter-check: where the networks rarely disagree, the paired bootstrap's interval
    # is often of width zero and passes a quarter of the candidates on the floor (the issue
    # measured 12-32% on real splits); the score test stays within 2.5%.
    drop, n, runs = 0.005, 200, 400
    rng = np.random.default_rng(3)
    bootstrap = tango = 0
    for run in range(runs):
        candidate, baseline = _at_the_floor(n, 0.002, drop, rng)
        bootstrap += paired_delta(candidate, baseline, "accuracy", seed=run).low > -drop
        tango += noninferiority(candidate, baseline, "accuracy", drop).passes()
    assert bootstrap / runs > 0.15 and tango / runs < ALPHA


def test_rows_without_a_single_disagreement_still_leave_an_interval() -> None:
    same = np.ones(300)
    certificate = noninferiority(same, same, "accuracy", 0.005)
    assert certificate.high - certificate.low > 0.01
    # 300 rows of agreement cannot promise half a point; 3,000 can.
    assert not certificate.passes()
    assert noninferiority(np.ones(3000), np.ones(3000), "accuracy", 0.005).passes()


def test_the_interval_and_the_verdict_agree() -> None:
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(50, 3000))
        candidate = (rng.random(n) < 0.9).astype(float)
        baseline = candidate.copy()
        flip = rng.random(n) < 0.04
        baseline[flip] = 1 - baseline[flip]
        drop = float(rng.uniform(0.0, 0.03))
        certificate = noninferiority(candidate, baseline, "accuracy", drop)
        assert (certificate.low > -drop) == certificate.passes()


def test_a_regression_candidate_is_judged_on_its_rmse_relative_to_the_baseline() -> None:
    rng = np.random.default_rng(1)
    baseline = rng.exponential(size=4000)
    assert noninferiority(baseline * 1.001, baseline, "rmse", 0.05).passes()
    assert not noninferiority(baseline * 1.2, baseline, "rmse", 0.05).passes()


def _trial(number: int, size: float) -> optuna.trial.FrozenTrial:
    trial = optuna.trial.create_trial(values=[0.9, size, 1.0])
    trial.number = number
    return trial


def test_the_chain_shrinks_and_puts_the_likely_passer_before_the_smallest_on_the_floor() -> None:
    # Trials 1 and 2 are tiny and sit on the floor; trial 3 is ten times larger and holds with
    # margin; trial 4 is larger still. Smallest first, a walk that stops at its first failure
    # would judge 1, fail, and crown the baseline.
    sizes = {1: 10.0, 2: 12.0, 3: 100.0, 4: 400.0}
    chance = {1: 0.1, 2: 0.15, 3: 0.97, 4: 0.99}
    order = [_trial(n, s) for n, s in sizes.items()]
    chain = certification_chain(order, 1000.0, lambda t: chance[t.number])
    numbers = [link.trial.number for link in chain]
    assert 3 in numbers
    # Strictly shrinking, and the long shots only after the likely passer.
    assert all(sizes[a] > sizes[b] for a, b in zip(numbers, numbers[1:], strict=False))
    assert numbers.index(3) < min(numbers.index(n) for n in (1, 2) if n in numbers)
    # Testing it: trial 3 passes and the tiny ones fail; the champion is 3, not the baseline.
    passes = {1: False, 2: False, 3: True, 4: True}
    held = [n for n in numbers if passes[n]]
    walked = []
    for n in numbers:
        walked.append(n)
        if not passes[n]:
            break
    assert held and [n for n in walked if passes[n]][-1] == 3


def test_the_chain_stops_where_a_long_shot_costs_more_than_it_could_gain() -> None:
    # A candidate that would likely fail is not tested before one that would likely pass.
    order = [_trial(1, 10.0), _trial(2, 500.0)]
    chain = certification_chain(order, 1000.0, lambda t: 0.01 if t.number == 1 else 0.9)
    assert [link.trial.number for link in chain][0] == 2
    assert certification_chain([], 1000.0, lambda t: 1.0) == []


def test_the_fixed_sequence_holds_the_family_wise_error_across_candidates_on_the_floor() -> None:
    # Five candidates, every one exactly on the floor: any pass is a false certificate.
    drop, n, runs = 0.01, 800, 600
    rng = np.random.default_rng(7)
    chain = [Link(_trial(k, 100.0 - k), 0.5) for k in range(5)]
    false = 0
    for _ in range(runs):
        rows = {}
        baseline = (rng.random(n) < 0.9).astype(float)
        for link in chain:
            # Right where the baseline errs on 2% of rows, wrong where it is right on 3%.
            candidate = baseline.copy()
            wins = (baseline == 0) & (rng.random(n) < 0.02 / 0.1)
            losses = (baseline == 1) & (rng.random(n) < 0.03 / 0.9)
            candidate[wins], candidate[losses] = 1, 0
            rows[link.trial.number] = candidate
        verdicts = judge_chain(
            chain,
            lambda t, rows=rows: rows[t.number],
            baseline,
            StudySettings(metric="accuracy", higher_is_better=True, max_metric_drop=drop),
            lambda t: None,
        )
        false += any(passed for _, passed, _ in verdicts.values())
    noise = 3 * np.sqrt(ALPHA * (1 - ALPHA) / runs)
    assert false / runs <= ALPHA + noise


def test_the_power_statement_names_the_floor_these_rows_can_certify() -> None:
    baseline_rows = np.r_[np.ones(270), np.zeros(30)]  # 10% errors on validation
    statement = power_statement(SETTINGS, baseline_rows, 300)
    assert not statement.can_certify
    # 80% power: (1.96 + 0.84) * sqrt(0.1 / 300) = 0.051.
    assert statement.floor == pytest.approx(0.0511, abs=0.001)
    assert "the smallest floor they certify with 80% power is 0.051" in statement.text()
    assert statement.rows_needed == pytest.approx(31_400, rel=0.01)
    assert power_statement(SETTINGS, baseline_rows, 50_000).can_certify


def test_a_search_says_what_its_certification_rows_can_certify_before_any_candidate(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from search.commands import run_search

    raw = yaml.safe_load(yaml.safe_dump(TINY))
    raw["search"] |= {"n_trials": 1, "storage": str(tmp_path / "j.journal")}
    raw["tracking"] = {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    raw["search"]["max_metric_drop"] = 0.005
    run_search(validate(raw, "test"), progress=False)
    out = capsys.readouterr().out
    # Only the baseline trained, and the statement was said: wine's 27 certification rows
    # cannot certify half a point, and the line names what they can.
    assert "tabslim: certification: 27 held-out rows" in out
    assert "too few to certify the floor 0.005; the smallest floor they certify" in out


def _decisions(tmp_path: Path, scramble: bool, leak: bool) -> tuple[list, list, list]:
    """A tiny search's decisions (objectives, epochs, the certification order) and its
    certification's p-values; `scramble` changes every certification row's label, `leak`
    plants a leak: the validation rows replaced by the certification rows."""
    raw = yaml.safe_load(yaml.safe_dump(TINY))
    raw["tracking"] = {"uri": f"sqlite:///{tmp_path / 'mlflow.db'}"}
    config = validate(raw, "test")
    data = load_data(config)
    if scramble:
        certify = dict(data.tensors["certify"])
        certify["y"] = (certify["y"] + 1) % data.n_classes
        data.tensors = {**data.tensors, "certify": certify}
    if leak:
        data.tensors = {**data.tensors, "val": data.tensors["certify"]}
    ctx = build_context(config, data)
    ctx.trials_dir = tmp_path / ("trials-scrambled" if scramble else "trials")
    study = optuna.create_study(
        directions=directions(True), sampler=optuna.samplers.RandomSampler(seed=0)
    )
    study_settings(ctx).write(study)
    study.enqueue_trial(baseline_params(config.search.space, 2), user_attrs={"baseline": True})
    study.optimize(functools.partial(run_trial, ctx=ctx), n_trials=4)
    state_power(study, ctx)
    table = confirm_search(study, ctx)
    assert table is not None
    made = [
        (t.number, round(t.values[0], 6), t.values[1], t.user_attrs["metrics"]["epochs"])
        for t in study.trials
    ]
    order = table["trial"].tolist() + table["chance"].round(6).tolist()
    return made, order, table["p_value"].tolist()


def test_no_decision_of_the_search_reads_the_certification_rows(tmp_path: Path) -> None:
    made, order, p_values = _decisions(tmp_path / "a", scramble=False, leak=False)
    made_s, order_s, p_values_s = _decisions(tmp_path / "b", scramble=True, leak=False)
    # Early stopping, the objectives and the certification order are blind to those rows...
    assert made == made_s and order == order_s
    # ...which certification does read.
    assert p_values != p_values_s


def test_a_planted_leak_is_caught(tmp_path: Path) -> None:
    # The same check fails when the validation rows are the certification rows.
    made, order, _ = _decisions(tmp_path / "a", scramble=False, leak=True)
    made_s, order_s, _ = _decisions(tmp_path / "b", scramble=True, leak=True)
    assert made != made_s or order != order_s


def test_cbpe_calibrated_on_certification_rows_is_unbiased_on_fresh_rows() -> None:
    x, y = make_classification(
        n_samples=12_000, n_features=8, n_informative=5, flip_y=0.1, random_state=0
    )
    columns = [f"f{i}" for i in range(8)]
    frame = pd.DataFrame(x, columns=columns).assign(label=y)
    table, fresh = frame.iloc[:6000], frame.iloc[6000:]
    data = TabularDataModule.from_frame(table, "label", certify_fraction=0.15)
    spec = MLPSpec(d_num=data.preprocessor.d_num, d_out=2, hidden=(32, 16))
    network = fit(build(spec, seed=0), data, FitSettings(max_epochs=15, seed=0)).network
    profile = build_profile(data, network, seed=0)
    assert profile["validation"]["split"] == "certify"
    inputs = data.preprocessor.transform(fresh)
    decoded = data.preprocessor.decode(
        infer(network, inputs["x_num"], inputs["x_cat"]), inputs["x_num"]
    )
    value, low, high = estimate_accuracy(profile["estimator"], decoded["probabilities"])
    realized = float(np.mean(decoded["prediction"] == fresh["label"].to_numpy()))
    # Within the estimate's own interval, and within a point.
    assert low <= realized <= high
    assert abs(value - realized) < 0.01


def test_the_four_splits_are_disjoint_and_the_certification_rows_calibrate() -> None:
    data = TabularDataModule.from_bundled("wine", certify_fraction=0.15)
    parts = [data.train_frame, data.val_frame, data.certify_frame, data.test_frame]
    assert sum(len(p) for p in parts) == 178
    seen = [set(map(tuple, p.to_numpy().tolist())) for p in parts]
    for i, a in enumerate(seen):
        for b in seen[i + 1 :]:
            assert not (a & b)
    assert data.calibration_split == "certify"
    assert copy.copy(data).has_certification
    assert torch.equal(
        data.tensors["certify"]["y"], data.preprocessor.encode_target(data.certify_frame["target"])
    )


def test_a_peer_that_merely_touches_the_floor_does_not_stop_one_that_clears_it() -> None:
    from search.study import goes_on
    from search.study.fidelity import Peer

    floor = 0.90
    own = Peer(0.95, 1000.0)  # clears the floor by five points
    touching = [Peer(0.901, 100.0)]  # smaller, and just past the floor
    # Capped at the floor itself, the smaller one counts as just as good and stops it; capped
    # a certification half-width past the floor, it does not.
    stopped, _ = goes_on(own, touching, floor=floor, higher_is_better=True, reduction=2)
    kept, _ = goes_on(own, touching, floor=floor, higher_is_better=True, reduction=2, margin=0.03)
    assert not stopped and kept


def test_exploratory_advice_leaves_out_trials_stopped_at_a_rung() -> None:
    from test_champion import _study

    from search.front import floor_advice

    study = _study([(0.95, 100.0, (-0.03, -0.01)), (0.969, 300.0, (-0.008, 0.006))])
    advice = floor_advice(study)
    assert advice and all(line.startswith("exploratory: ") for line in advice)
    assert "0.1x" in advice[1]
    # A trial stopped at a rung, smaller and with the tightest interval: unstopped, it would be
    # "the champion there".
    stopped = study.trials[1]
    metrics = stopped.user_attrs["metrics"] | {
        "val_delta_ci_low": -0.001,
        "val_delta_ci_high": 0.01,
    }
    study.add_trial(
        optuna.trial.create_trial(
            values=[0.97, 50.0, 1.0],
            params=stopped.params,
            distributions=stopped.distributions,
            user_attrs=stopped.user_attrs | {"metrics": metrics, TrialKey.RUNG_STOP: {"rung": 0}},
            constraints=stopped.system_attrs.get("constraints"),
        )
    )
    assert "trial 3" not in " ".join(floor_advice(study))


def test_the_best_of_several_challengers_is_judged_on_a_wider_interval() -> None:
    rng = np.random.default_rng(0)
    candidate = (rng.random(2000) < 0.92).astype(float)
    baseline = (rng.random(2000) < 0.90).astype(float)
    one = paired_delta(candidate, baseline, "accuracy", seed=0)
    of_three = paired_delta(candidate, baseline, "accuracy", seed=0, confidence=1 - 0.05 / 3)
    assert of_three.low < one.low and of_three.high > one.high


def test_an_estimate_over_rows_mostly_beyond_the_training_range_is_withheld() -> None:
    from types import SimpleNamespace

    from search.monitor.estimated import Estimated
    from search.monitor.gate import retrain_reasons

    far = Estimated("accuracy", 0.5, 0.45, 0.55, 0.9, "CBPE", 100, outside=0.8, outside_column="x")
    assert far.withheld and "withheld" in far.describe() and "0.5000" not in far.describe()
    report = SimpleNamespace(realized=None, estimated=far, score=0.0)
    # A withheld estimate is no reason to retrain.
    assert retrain_reasons(report, {}, 0.01, 0.5, force=False) == []
    near = Estimated("accuracy", 0.5, 0.45, 0.55, 0.9, "CBPE", 100, outside=0.1)
    assert not near.withheld
    assert retrain_reasons(SimpleNamespace(realized=None, estimated=near, score=0.0), {}, 0.01,
                           0.5, force=False)  # fmt: skip


def test_an_int8_copy_is_certified_on_its_own_rows_never_by_its_sources_pass() -> None:
    # Found by bench/population.py on a real table: an INT8 copy that was never tested
    # inherited its source's pass, and was -1.4 points on the rows the study never saw.
    from test_champion import _study
    from test_confirm import _with_variant

    from search.front import candidates, champion

    study = _study([(0.975, 300.0, (-0.004, 0.014))])
    _with_variant(study, 1, 300.0)  # trial 2: same parameters, faster
    order = candidates(study)
    assert [t.number for t in order] == [2, 1]
    # At equal size the faster is the better champion: the copy may follow its source, and a
    # copy as likely to pass as its source is tested alone (its source is tested with it).
    likely = {1: 0.95, 2: 0.5}
    chain = certification_chain(order, 1000.0, lambda t: likely[t.number])
    assert [link.trial.number for link in chain] == [1, 2]
    assert [link.trial.number for link in certification_chain(order, 1000.0, lambda t: 0.9)] == [2]
    passed = {"by": "holdout", "passed": True, "val_delta_mean": 0.001,
              "cv_delta_ci_low": -0.002, "cv_delta_ci_high": 0.004}  # fmt: skip
    study.set_user_attr(StudyKey.POWER, {"rows": 2100})
    study.set_user_attr(StudyKey.CONFIRMATION, {"1": passed})
    chosen = champion(study)
    assert chosen.trial is not None and chosen.trial.number == 1


def test_a_reference_read_on_few_rows_is_no_exact_yardstick_for_a_retrain() -> None:
    from types import SimpleNamespace

    from search.monitor.drift import Realized
    from search.monitor.gate import retrain_reasons

    # 0.7475 [0.728, 0.766] realized on 2,000 new rows against 0.7844 read when logged.
    realized = Realized("accuracy", 0.7475, 0.728, 0.766, 0.7844)
    report = SimpleNamespace(realized=realized, estimated=None, score=0.0, decision_notes=[])
    # On 450 held-out rows the reference itself is +/-0.038: no reason to retrain.
    few = {"validation": {"rows": 450}}
    assert retrain_reasons(report, few, 0.01, 0.5, force=False) == []
    # On 45,000 rows it is all but exact, and the fall is real.
    many = {"validation": {"rows": 45_000}}
    assert retrain_reasons(report, many, 0.01, 0.5, force=False)


def test_a_ranking_metric_gets_no_made_up_projection() -> None:
    settings = StudySettings(metric="pr_auc", higher_is_better=True, max_metric_drop=0.005)
    rows = np.stack([np.linspace(0, 1, 900), (np.arange(900) % 50 == 0).astype(float)], axis=1)
    statement = power_statement(settings, rows, 900)
    assert not statement.can_certify
    assert "not projected" in statement.text() and "rows would certify" not in statement.text()


def test_a_chain_cut_to_its_limit_is_the_best_chain_of_that_length() -> None:
    # Four shrinking candidates, each likely to pass: with room for one test, the best single
    # test is the smallest likely passer, not the largest (a longer chain cut short).
    order = [_trial(n, s) for n, s in [(1, 10.0), (2, 50.0), (3, 200.0), (4, 600.0)]]
    chance = {1: 0.9, 2: 0.95, 3: 0.99, 4: 0.99}
    full = certification_chain(order, 1000.0, lambda t: chance[t.number])
    one = certification_chain(order, 1000.0, lambda t: chance[t.number], limit=1)
    assert len(one) == 1 and one[0].trial.number == 1
    # Unlimited, the chain first secures a near-certain pass, then tries the smallest: cut to
    # one test, that chain would have kept the safe candidate, 20 times larger.
    assert [link.trial.number for link in full] == [3, 1]
