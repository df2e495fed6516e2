"""Distillation: the third approach, a shape trained against the baseline's outputs."""

from __future__ import annotations

import dataclasses
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
from lightning_modules.distillation import Distillation, teacher_outputs
from lightning_modules.networks import MLPSpec, build, infer
from lightning_modules.training import FitSettings, fit
from search.config import Config, validate
from search.front.confirm import confirm_candidates
from search.serving import load_network
from search.study import (
    TEACHER_FILE,
    SearchContext,
    StudyKey,
    baseline_params,
    build_context,
    directions,
    run_trial,
    study_settings,
)

TINY = yaml.safe_load((Path(__file__).parent / "tiny_search.yaml").read_text())


def _noisy(seed: int) -> TabularDataModule:
    """Labels with a fifth flipped: a teacher smooths them, a scratch network fits them."""
    x, y = make_classification(
        n_samples=400, n_features=6, n_informative=4, flip_y=0.2, random_state=seed
    )
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(6)])
    frame["label"] = y
    return TabularDataModule.from_frame(frame, "label", seed=seed, batch_size=32)


def _trained(
    data: TabularDataModule, hidden: tuple[int, ...], **settings: object
) -> torch.nn.Module:
    spec = MLPSpec(hidden=hidden, **data.network_inputs())
    fit_settings = FitSettings(max_epochs=20, lr=0.01, seed=0)
    teacher = settings.pop("teacher", None)
    fit_settings = dataclasses.replace(fit_settings, **settings)  # type: ignore[arg-type]
    return fit(build(spec, seed=0), data, fit_settings, teacher=teacher).network  # type: ignore[arg-type]


def test_weight_zero_is_plain_training_bit_for_bit(
    small_data: TabularDataModule, one_thread: None
) -> None:
    teacher = torch.randn(len(small_data.tensors["train"]["y"]), small_data.n_classes) * 3
    scratch = _trained(small_data, (16, 8), max_epochs=3)
    distilled = _trained(
        small_data, (16, 8), max_epochs=3, distill=Distillation(0.0, 1.0), teacher=teacher
    )
    for (name, a), (_, b) in zip(
        scratch.state_dict().items(), distilled.state_dict().items(), strict=True
    ):
        assert torch.equal(a, b), name
    # A teacher with weight does change the weights: the test above is not vacuous.
    followed = _trained(
        small_data, (16, 8), max_epochs=3, distill=Distillation(0.5, 2.0), teacher=teacher
    )
    assert not torch.equal(
        next(iter(scratch.state_dict().values())), next(iter(followed.state_dict().values()))
    )


@pytest.mark.parametrize("seed", [0, 1])
def test_a_student_matches_its_teacher_on_more_rows_than_scratch(
    seed: int, one_thread: None
) -> None:
    data = _noisy(seed)
    teacher = _trained(data, (32, 32))
    outputs = teacher_outputs(teacher, data)

    def agreement(network: torch.nn.Module) -> int:
        rows = 0
        for split in ("train", "val", "test"):
            x_num, x_cat = data.tensors[split]["x_num"], data.tensors[split]["x_cat"]
            same = infer(network, x_num, x_cat).argmax(1) == infer(teacher, x_num, x_cat).argmax(1)
            rows += int(same.sum())
        return rows

    scratch = _trained(data, (8,))
    student = _trained(data, (8,), distill=Distillation(1.0, 1.0), teacher=outputs)
    assert agreement(student) > agreement(scratch)


def test_a_regression_student_follows_its_teacher(one_thread: None) -> None:
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(300, 4)), columns=list("abcd"))
    frame["y"] = frame["a"] * 2 - frame["b"] + rng.normal(scale=1.5, size=300)
    data = TabularDataModule.from_frame(frame, "y", batch_size=32)
    teacher = _trained(data, (32,))
    outputs = teacher_outputs(teacher, data)
    train = data.tensors["train"]

    def distance(network: torch.nn.Module) -> float:
        mine = infer(network, train["x_num"], train["x_cat"])
        return float(((mine - outputs) ** 2).mean())

    scratch = _trained(data, (4,))
    student = _trained(data, (4,), distill=Distillation(1.0, 1.0), teacher=outputs)
    assert distance(student) < distance(scratch)


def test_teacher_outputs_must_match_the_training_rows(small_data: TabularDataModule) -> None:
    with pytest.raises(ValueError, match="one row per training row"):
        small_data.with_teacher(torch.zeros(3, 2))


def _config(tmp_path: Path) -> Config:
    raw = yaml.safe_load(yaml.safe_dump(TINY))
    raw["search"] |= {"approaches": ["scratch", "distill"], "confirm": 2, "confirm_by": "folds"}
    raw["tracking"] = {"uri": f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"}
    return validate(raw, "test")


def _study(tmp_path: Path) -> tuple[SearchContext, optuna.Study]:
    """A study of scratch and distill trials on the tiny search, its baseline enqueued."""
    config = _config(tmp_path)
    ctx = build_context(config)
    ctx.trials_dir = tmp_path / "trials"
    settings = study_settings(ctx)
    study = optuna.create_study(directions=directions(True))
    settings.write(study)
    study.enqueue_trial(baseline_params(config.search.space, 2), user_attrs={"baseline": True})
    return ctx, study


def test_distill_runs_in_a_search_and_serves_as_an_ordinary_network(tmp_path: Path) -> None:
    ctx, study = _study(tmp_path)
    same = {"multiplier_0": 0.5, "multiplier_1": 0.5}
    study.enqueue_trial({"approach": "distill", **same})
    study.enqueue_trial({"approach": "scratch", **same})
    study.optimize(functools.partial(run_trial, ctx=ctx), n_trials=3)
    baseline, distilled, scratch = study.trials

    # The teacher's outputs are saved once, beside the baseline, for every worker.
    saved = np.load(ctx.trials_dir / f"trial-{baseline.number}" / TEACHER_FILE)
    assert saved.shape == (len(ctx.data.tensors["train"]["y"]), ctx.data.n_classes)
    # The same shape, trained two ways: not a repeat of one another.
    assert distilled.user_attrs["approach"] == "distill" and "repeat_of" not in scratch.user_attrs
    assert distilled.user_attrs["hidden"] == scratch.user_attrs["hidden"] == [16, 8]
    assert distilled.user_attrs["metrics"] != scratch.user_attrs["metrics"]
    # Served, it is an ordinary network: its spec and weights alone rebuild it.
    spec, network, _ = load_network(ctx.trials_dir / f"trial-{distilled.number}")
    assert isinstance(spec, MLPSpec) and not any("teacher" in k for k in network.state_dict())


def test_confirmation_by_folds_judges_a_distilled_candidate(tmp_path: Path) -> None:
    ctx, study = _study(tmp_path)
    study.enqueue_trial({"approach": "distill", "multiplier_0": 0.5, "multiplier_1": 0.5})
    study.optimize(functools.partial(run_trial, ctx=ctx), n_trials=2)
    # Confirmation by folds trains it against each fold's own baseline (2 baselines, 2 students).
    table = confirm_candidates(study, ctx, 2, "folds")
    verdict = study.user_attrs[StudyKey.CONFIRMATION]["1"]
    assert verdict["by"] == "folds" and verdict["runs"] == 2
    assert list(table["approach"]) == ["distill"]


def test_retrain_trains_a_distill_challenger_taught_by_the_champion(tmp_path: Path) -> None:
    from lightning_modules.datasets import drift_batch
    from search.monitor.challengers import ChallengerOptions, train_challengers

    raw = yaml.safe_load(yaml.safe_dump(TINY))
    raw["training"]["max_epochs"] = 4
    raw["search"] |= {
        "approaches": ["scratch", "distill"],
        "fidelity": {"min_epochs": 1, "reduction": 2},
    }
    config = validate(raw, "test")
    reference = TabularDataModule.from_frame(drift_batch("none", seed=0, n_rows=600), "churned")
    spec = MLPSpec(hidden=(16, 8), **reference.network_inputs())
    network = fit(build(spec, seed=0), reference, FitSettings(max_epochs=3)).network
    window = drift_batch("concept", seed=1, n_rows=500)
    found, skipped = train_challengers(
        window,
        "churned",
        None,
        config,
        (spec, network, reference.preprocessor),
        ChallengerOptions(search_trials=4),
    )
    assert set(found) == {"scratch", "fine_tune", "distill", "search"} and not skipped
    student, prep, data = found["distill"]
    # The champion's widths, trained on the window, with nothing of the teacher in it.
    assert student.spec.group_sizes() == spec.group_sizes()  # type: ignore[operator, union-attr]
    assert prep is data.preprocessor


def test_a_regression_challenger_learns_the_champions_predictions_on_the_windows_scale(
    tmp_path: Path, one_thread: None
) -> None:
    from search.monitor.challengers import ChallengerOptions, train_challengers

    rng = np.random.default_rng(0)
    frame = pd.DataFrame(rng.normal(size=(1200, 3)), columns=["a", "b", "c"])
    frame["y"] = 1000 + 50 * frame["a"] + 10 * frame["b"] + rng.normal(scale=5, size=1200)
    # The window's target sits far above the champion's: its standardisation differs.
    reference, window = frame[frame["a"] < 0.5], frame[frame["a"] > 0].reset_index(drop=True)
    raw = yaml.safe_load(yaml.safe_dump(TINY))
    raw["training"] |= {"max_epochs": 30}
    raw["search"] |= {"approaches": ["scratch", "distill"], "distill": {"weight": 1.0}}
    config = validate(raw, "test")
    data = TabularDataModule.from_frame(reference, "y", batch_size=32)
    spec = MLPSpec(hidden=(16,), **data.network_inputs())
    champion = fit(build(spec, seed=0), data, FitSettings(max_epochs=30, lr=0.01)).network
    found, _ = train_challengers(
        window, "y", None, config, (spec, champion, data.preprocessor), ChallengerOptions()
    )
    student, prep, window_data = found["distill"]

    def predicted(network: torch.nn.Module, module: TabularDataModule) -> torch.Tensor:
        train, scale = module.tensors["train"], module.preprocessor
        out = infer(network, train["x_num"], train["x_cat"]).squeeze(-1)
        return out * scale.target_std + scale.target_mean

    champion_rows = TabularDataModule.from_frame(
        window, "y", preprocessor=data.preprocessor, task="regression", seed=config.data.seed
    )
    gap = (predicted(student, window_data) - predicted(champion, champion_rows)).abs().mean()
    shift = abs(window_data.preprocessor.target_mean - data.preprocessor.target_mean)
    # Taught on the wrong scale, the student would sit about `shift` off its teacher.
    assert shift > 20 and float(gap) < shift / 4
