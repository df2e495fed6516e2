from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.datasets import make_classification, make_regression

from lightning_modules.data import TabularDataModule
from lightning_modules.errors import TabslimInputError
from lightning_modules.evaluation import evaluate_network
from lightning_modules.networks import MLP, MLPSpec, build
from lightning_modules.training import FitSettings
from pruning.reductive import reductive_prune
from pruning.target_perturbation import _ScaledOutput, _train_copy, perturbation_scores

CONFIG = FitSettings(max_epochs=2, lr=5e-3, accelerator="cpu")


def _data(task: str, n: int = 240) -> TabularDataModule:
    if task == "regression":
        x, y = make_regression(n_samples=n, n_features=5, n_informative=3, noise=5, random_state=0)
    else:
        x, y = make_classification(n_samples=n, n_features=5, n_informative=3, random_state=0)
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(5)]).assign(y=y)
    return TabularDataModule.from_frame(frame, "y", task=task, batch_size=32)


def _network(data: TabularDataModule, hidden: tuple[int, ...] = (16, 8)) -> MLP:
    return build(MLPSpec(hidden=hidden, **data.network_inputs()), seed=0)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    sa, sb = a.state_dict(), b.state_dict()
    return sa.keys() == sb.keys() and all(torch.equal(sa[k], sb[k]) for k in sa)


def test_wrapper_divides_the_output_by_the_factor() -> None:
    data = _data("regression")
    inner = _network(data).eval()
    x = data.tensors["val"]
    expected = inner(x["x_num"], x["x_cat"]) / 1.1
    assert torch.equal(_ScaledOutput(inner, 1.1)(x["x_num"], x["x_cat"]), expected)


def test_perturbed_copies_learn_a_scaled_target_and_controls_are_deterministic() -> None:
    data = _data("regression")
    network = _network(data).eval()  # as `fit` hands a trained network back
    before = {k: v.clone() for k, v in network.state_dict().items()}
    control, again = (_train_copy(network, data, CONFIG, 1.0) for _ in range(2))
    low, high = (_train_copy(network, data, CONFIG, f) for f in (0.9, 1.1))
    # Same start, same seed: differences come from the target alone.
    assert _same_weights(control, again)
    assert not _same_weights(control, low) and not _same_weights(control, high)
    assert all(torch.equal(v, network.state_dict()[k]) for k, v in before.items())
    # The copies trained in train mode: BatchNorm statistics moved.
    key = "blocks.0.norm.running_mean"
    assert not torch.equal(control.state_dict()[key], before[key])
    x = data.tensors["train"]
    with torch.no_grad():
        spread = {
            name: float(copy(x["x_num"], x["x_cat"]).std())
            for name, copy in [("low", low), ("control", control), ("high", high)]
        }
    # The inner network fits target x factor: its outputs spread more as the factor grows.
    assert spread["low"] < spread["control"] < spread["high"]


@pytest.mark.parametrize("task", ["regression", "binary"])
def test_scores_are_one_nonpositive_value_per_neuron_and_deterministic(task: str) -> None:
    data = _data(task)
    network = _network(data)
    before = {k: v.clone() for k, v in network.state_dict().items()}
    kwargs = {"data": data, "fit_settings": CONFIG, "factors": (1.1,), "epochs": 1, "seed": 3}
    scores = perturbation_scores(network, **kwargs)  # type: ignore[arg-type]
    assert [s.shape for s in scores] == [(16,), (8,)]
    assert all(bool(torch.isfinite(s).all()) and bool((s <= 0).all()) for s in scores)
    assert any(bool((s < 0).any()) for s in scores)
    again = perturbation_scores(network, **kwargs)  # type: ignore[arg-type]
    assert all(torch.equal(a, b) for a, b in zip(scores, again, strict=True))
    assert all(torch.equal(v, network.state_dict()[k]) for k, v in before.items())


def _exact_regressor() -> tuple[TabularDataModule, MLP]:
    """y = 3 f0, and a network that computes it exactly with two vital neurons per layer.

    Standardised, y equals f0, and the network outputs relu(f0) - relu(-f0) = f0. Layer 0 has
    two dead neurons (zero in and out), so removing them changes no output bit.
    """
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"f0": rng.normal(size=200), "f1": rng.normal(size=200)})
    frame["y"] = 3 * frame["f0"]
    data = TabularDataModule.from_frame(frame, "y", task="regression", batch_size=32)
    spec = MLPSpec(hidden=(4, 2), dropout=0.0, batch_norm=False, **data.network_inputs())
    network = build(spec)
    state = {k: torch.zeros_like(v) for k, v in network.state_dict().items()}
    state["blocks.0.linear.weight"][:2, 0] = torch.tensor([1.0, -1.0])  # relu(f0), relu(-f0)
    state["blocks.1.linear.weight"][:, :2] = torch.eye(2)  # passed on as they are
    state["head.weight"][0, :] = torch.tensor([1.0, -1.0])
    network.load_state_dict(state)
    return data, network.eval()


# Neurons 2 and 3 of layer 0 (dead) deviate most, then neuron 0 of layer 0 (vital).
CRAFTED_SCORES = [torch.tensor([-1.0, -1.0, -9.0, -8.0]), torch.tensor([-1.0, -1.0])]


def test_a_worse_step_is_rolled_back_and_the_fraction_halved() -> None:
    data, network = _exact_regressor()
    before = {k: v.clone() for k, v in network.state_dict().items()}
    start_error = evaluate_network(network, data)["rmse"]
    assert start_error < 1e-4
    result = reductive_prune(
        network, data=data, fit_settings=CONFIG, scores=CRAFTED_SCORES, start_fraction=0.5
    )
    steps = [(h["fraction"], h["removed"], h["hidden"], h["accepted"]) for h in result.history]
    assert steps == [
        (0.5, 3, [1, 2], False),  # a vital neuron goes too: worse, rolled back
        (0.25, 2, [2, 2], True),  # only the dead neurons: no worse, kept
        (0.25, 1, [1, 2], False),  # a vital neuron: worse, rolled back
    ]
    assert result.history[0]["val_error"] > 0.1 and result.history[2]["val_error"] > 0.1
    # 0.125 x 4 neurons rounds to none: nothing left to try.
    assert result.stop_reason == "nothing_to_remove"
    assert result.network.spec.hidden == (2, 2) and result.kept == [[0, 1], [0, 1]]
    assert result.val_error == result.history[1]["val_error"] <= start_error
    x = data.tensors["val"]
    assert torch.equal(result.network(x["x_num"]), network(x["x_num"]))
    assert all(torch.equal(v, network.state_dict()[k]) for k, v in before.items())


@pytest.mark.parametrize(
    ("settings", "n_steps", "reason"),
    [
        ({"min_fraction": 0.2}, 3, "min_fraction"),
        ({"max_steps": 2}, 2, "max_steps"),
    ],
)
def test_the_loop_stops(settings: dict[str, float], n_steps: int, reason: str) -> None:
    data, network = _exact_regressor()
    result = reductive_prune(
        network,
        data=data,
        fit_settings=CONFIG,
        scores=CRAFTED_SCORES,
        start_fraction=0.5,
        **settings,  # type: ignore[arg-type]
    )
    assert len(result.history) == n_steps and result.stop_reason == reason
    assert result.network.spec.hidden == (2, 2)


def test_nothing_to_remove_when_every_layer_has_one_neuron() -> None:
    data, network = _exact_regressor()
    tiny = build(network.spec.with_hidden((1, 1)))
    result = reductive_prune(tiny, data=data, fit_settings=CONFIG, scores=[torch.zeros(1)] * 2)
    assert result.history == [] and result.stop_reason == "nothing_to_remove"


def test_the_test_split_is_never_read() -> None:
    data = _data("binary")
    for name, tensor in data.tensors["test"].items():
        if tensor.is_floating_point():
            data.tensors["test"][name] = torch.full_like(tensor, float("nan"))
        else:
            data.tensors["test"][name] = torch.full_like(tensor, -1)  # not a class
    network = _network(data, hidden=(8, 4))
    scores = perturbation_scores(
        network, data=data, fit_settings=CONFIG, factors=(0.9,), folds=2, epochs=1
    )
    assert [s.shape for s in scores] == [(8,), (4,)]
    assert all(bool(torch.isfinite(s).all()) for s in scores)
    result = reductive_prune(
        network,
        data=data,
        fit_settings=CONFIG,
        scores=scores,
        start_fraction=0.5,
        max_steps=2,
        fine_tune_epochs=1,
    )
    # Both steps ran (accepted or rolled back, there is always a neuron left to try) and were
    # scored on finite validation rows: the NaN test rows never entered an error.
    assert len(result.history) == 2 and result.stop_reason == "max_steps"
    assert np.isfinite(result.val_error)
    assert all(np.isfinite(h["val_error"]) for h in result.history)
    assert set(data.tensors) == {"train", "val", "test"}  # the caller's module is untouched


@pytest.mark.parametrize(
    "bad",
    [
        {"factors": (0.9, 1.0)},
        {"factors": (-1.1,)},
        {"factors": ()},
        {"folds": 0},
        {"folds": 10_000},
        {"epochs": 0},
    ],
)
def test_bad_score_settings_are_rejected(bad: dict[str, object]) -> None:
    data = _data("regression")
    with pytest.raises(TabslimInputError):
        perturbation_scores(_network(data), data=data, fit_settings=CONFIG, **bad)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    "bad",
    [
        {"start_fraction": 0.0},
        {"start_fraction": 1.0},
        {"min_fraction": 1.5},
        {"max_steps": 0},
        {"fine_tune_epochs": -1},
        {"scores": [torch.zeros(4)]},
        {"scores": [torch.zeros(4), torch.tensor([0.0, float("nan")])]},
        {"scores": CRAFTED_SCORES, "epochs": 2},
        {"folds": 0},
        {"temperature": 2.0},
    ],
)
def test_bad_prune_settings_are_rejected(bad: dict[str, object]) -> None:
    data, network = _exact_regressor()
    with pytest.raises(TabslimInputError):
        reductive_prune(network, data=data, fit_settings=CONFIG, **bad)  # type: ignore[arg-type]


def test_only_mlps_are_accepted() -> None:
    data = _data("regression")
    with pytest.raises(TabslimInputError, match="tabslim network"):
        perturbation_scores(torch.nn.Linear(5, 1), data=data, fit_settings=CONFIG)  # type: ignore[arg-type]
