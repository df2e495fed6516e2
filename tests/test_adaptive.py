from __future__ import annotations

import torch
from test_target_perturbation import _exact_regressor  # the network whose steps are known

from lightning_modules.training import FitSettings
from pruning.plan import PruningPlan, apply_plan

SETTINGS = FitSettings(max_epochs=1, lr=1e-3, accelerator="cpu")


def test_the_adaptive_schedule_rolls_back_a_worse_step_and_chooses_the_keep_ratios() -> None:
    data, network = _exact_regressor()
    # Mean keep ratio 0.5: the first step removes half of the 6 neurons.
    plan = PruningPlan(
        keep_ratios=(0.5, 0.5), order=(0, 1), criterion="l1", schedule="adaptive",
        fine_tune_epochs=0, step_epochs=0,
    )  # fmt: skip
    result = apply_plan(network, plan, data=data, fit_settings=SETTINGS)
    # Step 1 takes both dead neurons and a vital one: worse, rolled back. Step 2 (a quarter)
    # takes only the dead ones: no worse, kept. Step 3 takes a vital one: rolled back. Then a
    # step rounds to no neuron and the loop stops.
    assert result.details == {
        "kept": [2, 2],
        "keep_ratios": [0.5, 1.0],
        "steps_accepted": 1,
        "steps_rolled_back": 2,
        "first_step": 0.5,
        "stop_reason": "nothing_to_remove",
    }
    assert result.network.spec.hidden == (2, 2)
    x = data.tensors["val"]["x_num"]
    assert torch.allclose(result.network(x), network(x))
    assert result.val_metrics["rmse"] < 1e-4


def test_the_adaptive_schedule_can_be_drawn_in_a_search() -> None:
    import optuna

    from search.config import PruneConfig
    from search.study import draw_plan

    params = {
        "keep_ratio_0": 0.5, "keep_ratio_1": 0.5, "prune_priority_0": 0.5,
        "prune_priority_1": 0.5, "prune_schedule": "adaptive", "prune_criterion": "l1",
        "fine_tune_epochs": 1,
    }  # fmt: skip
    plan = draw_plan(optuna.trial.FixedTrial(params), PruneConfig(), 2)
    assert plan.schedule == "adaptive" and "adaptive" in PruneConfig().schedules
