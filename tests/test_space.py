from __future__ import annotations

import optuna
import pytest

from lightning_modules.errors import TabslimInputError
from lightning_modules.networks import MLPSpec
from search.config import Range, SpaceConfig, validate
from search.study import apply_shape, baseline_params, draw_shape, round_width

BASELINE = (256, 256, 128)


@pytest.mark.parametrize(
    "width, multiple, expected",
    [(256.0, 8, 256), (12.8, 8, 16), (3.2, 8, 3), (0.2, 8, 1), (100.0, 1, 100), (9.0, 8, 8)],
)
def test_round_width(width: float, multiple: int, expected: int) -> None:
    assert round_width(width, multiple) == expected


def test_fixed_multipliers_give_rounded_widths() -> None:
    space = SpaceConfig(scheme="per_layer")
    trial = optuna.trial.FixedTrial(
        {"multiplier_0": 0.5, "multiplier_1": 0.05, "multiplier_2": 0.3}
    )
    drawn = draw_shape(trial, space, BASELINE)
    assert drawn.hidden == (128, 16, 40)
    assert drawn.multipliers == (0.5, 0.05, 0.3)
    assert drawn.training == {}
    assert drawn.key() == "128-16-40"


def test_baseline_params_reproduce_the_baseline() -> None:
    space = SpaceConfig(remove_layers=True)
    trial = optuna.trial.FixedTrial(baseline_params(space, 3))
    assert draw_shape(trial, space, BASELINE).hidden == BASELINE


def test_removing_every_layer_keeps_the_first() -> None:
    space = SpaceConfig(scheme="per_layer", remove_layers=True)
    params: dict[str, object] = {f"multiplier_{i}": 0.5 for i in range(3)}
    params |= {f"keep_layer_{i}": False for i in range(3)}
    assert draw_shape(optuna.trial.FixedTrial(params), space, BASELINE).hidden == (128,)
    params["keep_layer_2"] = True
    assert draw_shape(optuna.trial.FixedTrial(params), space, BASELINE).hidden == (64,)


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_samples_stay_within_bounds_and_never_below_one(seed: int) -> None:
    space = SpaceConfig(
        scheme="per_layer",
        multiplier=Range(low=0.001, high=0.5, step=None),
        layers=[Range(low=0.25, high=0.75, step=0.25)],
        width_multiple=8,
    )
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    for _ in range(20):
        trial = study.ask()
        drawn = draw_shape(trial, space, (64, 16, 4))
        assert drawn.multipliers[0] in (0.25, 0.5, 0.75)
        assert all(0.001 <= m <= 0.5 for m in drawn.multipliers[1:])
        assert all(w >= 1 for w in drawn.hidden)
        study.tell(trial, sum(drawn.hidden))


def test_training_knobs_are_sampled_and_applied() -> None:
    space = SpaceConfig(
        scheme="per_layer",
        lr=Range(low=1e-4, high=1e-2, log=True),
        dropout=Range(low=0.0, high=0.3),
    )
    trial = optuna.trial.FixedTrial({"multiplier_0": 1.0, "lr": 0.003, "dropout": 0.2})
    drawn = draw_shape(trial, space, (32,))
    assert drawn.training == {"lr": 0.003, "dropout": 0.2}
    spec = apply_shape(MLPSpec(d_num=4, d_out=2, hidden=(32,), dropout=0.1), drawn)
    assert spec.dropout == 0.2 and spec.hidden == (32,)
    assert drawn.key() == "32|dropout=0.2,lr=0.003"


@pytest.mark.parametrize(
    "space, message",
    [
        ({"multiplier": {"low": 0.8, "high": 0.2}}, "bounds reversed: low=0.8 is above high=0.2"),
        ({"multiplier": {"low": 0.0, "high": 1.0}}, "multiplier must be above 0"),
        ({"multiplier": {"low": -0.5, "high": 1.0}}, "multiplier must be above 0"),
        ({"multiplier": {"low": 0.1, "high": 9.0}}, "multiplier must be at most 4"),
        ({"layers": [{"low": 0.1, "high": 1.0}, {"low": 0, "high": 1}]}, "layers.1: .*above 0"),
        ({"multiplier": {"low": 0.1, "high": 1.0, "step": 0}}, "step: .*greater than 0"),
        ({"dropout": {"low": 0.0, "high": 1.5}}, "dropout must lie in"),
        ({"lr": {"low": 0.0, "high": 0.1, "log": True}}, "log range needs low > 0"),
    ],
)
def test_bad_space_is_a_clear_error(space: dict[str, object], message: str) -> None:
    with pytest.raises(TabslimInputError, match=message):
        validate({"search": {"space": space}}, "'c.yaml'")


@pytest.mark.parametrize(
    "search, message",
    [
        ({"sampler": "cmaes"}, "search.sampler: input should be 'tpe', 'nsga2'"),
        ({"size": "megabytes"}, "search.size: input should be 'parameters', 'bytes' or 'flops'"),
        ({"latency": {"runtime": "tensorrt"}}, "search.latency.runtime"),
        ({"n_trials": 0}, "search.n_trials"),
        ({"max_metric_drop": -0.1}, "search.max_metric_drop"),
    ],
)
def test_bad_search_settings_are_clear_errors(search: dict[str, object], message: str) -> None:
    with pytest.raises(TabslimInputError, match=message):
        validate({"search": search}, "'c.yaml'")


def test_more_layer_bounds_than_layers_is_an_error() -> None:
    layers = [{"low": 0.5, "high": 1.0}] * 4
    message = "4 entries, but the mlp baseline has only 3 prunable groups"
    with pytest.raises(TabslimInputError, match=message):
        validate({"search": {"space": {"layers": layers}}}, "'c.yaml'")


@pytest.mark.parametrize(
    "prune, message",
    [
        ({"criteria": ["l1", "l3"]}, "unknown pruning criterion 'l3'"),
        ({"keep_ratio": {"low": 0.0, "high": 0.5}}, r"keep_ratio must lie in \(0, 1\]"),
        ({"keep_ratio": {"low": 0.5, "high": 1.5}}, r"keep_ratio must lie in \(0, 1\]"),
        ({"keep_ratio": {"low": 0.001, "high": 0.5}}, "would leave hidden layer 0 .* empty"),
        ({"order": [0, 1, 3]}, "search.prune.order names group 3"),
        ({"order": [0, 0, 1]}, "must list each of the 3 groups once"),
        ({"fine_tune_epochs": [1, -1]}, "fine_tune_epochs must be 0 or more"),
        ({"schedules": ["gradual"]}, "search.prune.schedules.0"),
    ],
)
def test_bad_pruning_settings_are_clear_errors(prune: dict[str, object], message: str) -> None:
    with pytest.raises(TabslimInputError, match=message) as caught:
        validate({"search": {"prune": prune}}, "'c.yaml'")
    assert "\n" not in str(caught.value)


def test_prune_plans_are_sampled_as_data() -> None:
    from search.config import PruneConfig
    from search.study import draw_plan

    params = {
        "keep_ratio_0": 0.5, "keep_ratio_1": 0.25, "keep_ratio_2": 1.0,
        "prune_priority_0": 0.2, "prune_priority_1": 0.7, "prune_priority_2": 0.5,
        "prune_schedule": "iterative", "prune_criterion": "taylor", "fine_tune_epochs": 4,
    }  # fmt: skip
    plan = draw_plan(optuna.trial.FixedTrial(params), PruneConfig(), 3)
    assert plan.keep_ratios == (0.5, 0.25, 1.0)
    assert plan.order == (1, 2, 0)  # highest priority first
    assert (plan.criterion, plan.schedule, plan.fine_tune_epochs) == ("taylor", "iterative", 4)
    fixed = draw_plan(optuna.trial.FixedTrial(params), PruneConfig(order=[2, 0, 1]), 3)
    assert fixed.order == (2, 0, 1)


@pytest.mark.parametrize("sampler", ["nsga2", "gp", "qmc"])
def test_samplers_that_cannot_model_both_approaches_are_refused(sampler: str) -> None:
    per_layer = {"sampler": sampler, "space": {"scheme": "per_layer"}}
    with pytest.raises(TabslimInputError, match=f"search.sampler '{sampler}' cannot model"):
        validate({"search": per_layer}, "'c.yaml'")
    single = validate({"search": per_layer | {"approaches": ["scratch"]}}, "'c.yaml'")
    assert single.search.sampler == sampler
    # The default scheme shares the width parameters between approaches, which they model.
    shared = validate({"search": {"sampler": sampler}}, "'c.yaml'")
    assert shared.search.space.scheme == "scale_shape"


def test_scale_and_shape_multiply_and_clip_to_the_layer_range() -> None:
    space = SpaceConfig(layers=[Range(low=0.1, high=0.5)])
    params = {"width_scale": 0.4, "width_shape_0": 2.0, "width_shape_1": 0.5, "width_shape_2": 1.0}
    drawn = draw_shape(optuna.trial.FixedTrial(params), space, BASELINE)
    # 0.4 x 2.0 = 0.8 is clipped to layer 0's high of 0.5; 0.4 x 0.5 = 0.2; 0.4 x 1.0 = 0.4.
    assert drawn.multipliers == (0.5, 0.2, 0.4)
    assert drawn.hidden == (128, 48, 48)


def test_the_small_networks_are_a_large_part_of_the_default_space() -> None:
    # Per-layer uniform draws on 0.05-1.0 put 0.3% of the mass where every layer is under 0.15x;
    # a log-scale overall width puts a good share there.
    space = SpaceConfig()
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    small = 0
    for _ in range(400):
        trial = study.ask()
        small += max(draw_shape(trial, space, BASELINE).multipliers) < 0.15
        study.tell(trial, 0.0)
    assert small / 400 > 0.2


def test_prune_trials_draw_their_keep_ratios_from_the_shared_width_parameters() -> None:
    from search.config import PruneConfig
    from search.study import draw_plan

    params = {
        "width_scale": 0.25, "width_shape_0": 1.0, "width_shape_1": 2.0, "width_shape_2": 0.5,
        "prune_priority_0": 0.2, "prune_priority_1": 0.7, "prune_priority_2": 0.5,
        "prune_schedule": "one_shot", "prune_criterion": "l1", "fine_tune_epochs": 1,
    }  # fmt: skip
    plan = draw_plan(optuna.trial.FixedTrial(params), PruneConfig(), 3, SpaceConfig())
    assert plan.keep_ratios == (0.25, 0.5, 0.125)
    shape = draw_shape(optuna.trial.FixedTrial(params), SpaceConfig(), BASELINE)
    assert shape.multipliers == plan.keep_ratios


def test_the_ladder_is_uniform_scratch_shapes() -> None:
    from search.study import ladder_params

    space = SpaceConfig(ladder=[0.5, 0.25])
    queued = ladder_params(space, 3, ["scratch", "prune"])
    assert [q["approach"] for q in queued] == ["scratch", "scratch"]
    shapes = [draw_shape(optuna.trial.FixedTrial(q), space, BASELINE).hidden for q in queued]
    assert shapes == [(128, 128, 64), (64, 64, 32)]
    assert ladder_params(space, 3, ["prune"]) == []


def test_a_ladder_outside_the_scale_is_refused() -> None:
    with pytest.raises(TabslimInputError, match="ladder value 0.01 lies outside"):
        validate({"search": {"space": {"ladder": [0.5, 0.01]}}}, "'c.yaml'")


@pytest.mark.parametrize(
    ("rungs", "expected"),
    [
        # Crossed between 0.125 (within) and 0.0625 (not): two steps in between.
        ([(0.5, True), (0.25, True), (0.125, True), (0.0625, False)], [0.078745, 0.099213]),
        # Even the smallest rung held: keep halving.
        ([(0.5, True), (0.25, True)], [0.0625, 0.125]),
        # Nothing small held: the sampler takes over.
        ([(0.5, False), (0.25, False)], []),
        # Halving stops at the scale's low end (0.02), once.
        ([(0.03, True)], [0.02]),
    ],
)
def test_the_ladder_is_refined_where_it_crossed_the_floor(
    rungs: list[tuple[float, bool]], expected: list[float]
) -> None:
    from search.study import refine_ladder

    assert refine_ladder(rungs, SpaceConfig()) == pytest.approx(expected, abs=1e-6)
