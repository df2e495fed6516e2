from __future__ import annotations

import numpy as np
import pandas as pd
import torch

from lightning_modules.data import TabularDataModule
from lightning_modules.networks import MLP, MLPSpec, build
from lightning_modules.training import FitSettings
from pruning.plan import PruningPlan, apply_plan

SETTINGS = FitSettings(max_epochs=1, lr=1e-3, accelerator="cpu")


def _exact_regressor() -> tuple[TabularDataModule, MLP]:
    """y = 3 f0, computed exactly as relu(f0) - relu(-f0) by two vital neurons per layer.

    Layer 0 also has two dead neurons (zero in and out): by l1 they score 0 and go first, and
    removing them changes no output; removing any vital neuron makes the error large.
    """
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"f0": rng.normal(size=200), "f1": rng.normal(size=200)})
    frame["y"] = 3 * frame["f0"]
    data = TabularDataModule.from_frame(frame, "y", task="regression", batch_size=32)
    spec = MLPSpec(hidden=(4, 2), dropout=0.0, batch_norm=False, **data.network_inputs())
    network = build(spec)
    state = {k: torch.zeros_like(v) for k, v in network.state_dict().items()}
    state["blocks.0.linear.weight"][:2, 0] = torch.tensor([1.0, -1.0])
    state["blocks.1.linear.weight"][:, :2] = torch.eye(2)
    state["head.weight"][0, :] = torch.tensor([1.0, -1.0])
    network.load_state_dict(state)
    return data, network.eval()


def test_the_adaptive_schedule_rolls_back_a_worse_step_and_chooses_the_keep_ratios() -> None:
    data, network = _exact_regressor()
    # Mean keep ratio 0.5: the first step removes half of the 6 neurons.
    plan = PruningPlan(
        keep_ratios=(0.5, 0.5), order=(0, 1), criterion="l1", schedule="adaptive",
        fine_tune_epochs=0,
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
    from search.space import draw_plan

    params = {
        "keep_ratio_0": 0.5, "keep_ratio_1": 0.5, "prune_priority_0": 0.5,
        "prune_priority_1": 0.5, "prune_schedule": "adaptive", "prune_criterion": "l1",
        "fine_tune_epochs": 1,
    }  # fmt: skip
    plan = draw_plan(optuna.trial.FixedTrial(params), PruneConfig(), 2)
    assert plan.schedule == "adaptive" and "adaptive" in PruneConfig().schedules
