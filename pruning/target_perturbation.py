"""Target perturbation: which neurons move most when the target moves, and reductive pruning.

After Gurbych and Prymachenko, "Method for Reductive Pruning of Neural Networks and Its
Applications" (2022). Copies of a trained network are trained further, from the same weights and
with the same seed, on a perturbed target (factors 0.9 and 1.1) beside a control copy on the true
target. A weight's relative deviation is |(w_perturbed - w_control) / w_perturbed|, averaged over
the perturbed copies and over folds; the weights that deviate most are removed first. The loop
removes a fraction of what remains (0.1 at first), keeps a step only if the held-out error does
not get worse, and otherwise rolls it back and halves the fraction, so it finds by itself how
much to keep.

Where this differs from the paper:
- Whole neurons, not single weights: a neuron's deviation is the mean over its incoming weight
  row (and its bias where no BatchNorm follows; see `_incoming`), and removal is physical
  (`pruning.removal.remove_units`), never a mask.
- Steps are judged on the validation split. The test split is never read: every training and
  evaluation here sees a view of the data module that has no test tensors at all.
- The perturbation needs no change to the training code. The network is wrapped in a module that
  returns `inner(x) / factor` and the wrapper is trained with the ordinary `fit` on the true
  target, so the inner network learns `factor x` what the control learns:
  - regression: `target x factor`, as in the paper. Targets are standardised for training, so
    this scales the target's spread about its mean (the paper scales raw values, which also
    shifts the mean; for a standardised target the spread is what carries the scale).
  - classification: multiplying class labels means nothing, so the perturbation is of the
    logits: the inner network must produce logits `factor x` those of the control to reach the
    same loss. This is a temperature perturbation: the predicted classes are the same, the
    probabilities sharper (1.1) or softer (0.9). It is the classification analogue of scaling
    a regression target: the quantity the network's output is fitted to moves by a known
    factor while the task itself (which class wins) is unchanged.
- Each copy keeps its weights after exactly `epochs` epochs, not those of its best validation
  epoch, so every copy takes the same number of steps and differences come from the target only.
- The validation error is RMSE for regression and log loss for classification: log loss is
  continuous, so a step that helps or hurts a little shows, where 1 - accuracy on a small
  validation split is flat over most small steps.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Sequence
from typing import Any

import pytorch_lightning as pl
import torch
from pytorch_lightning.callbacks import Callback
from torch import nn

from lightning_modules.data import TabularDataModule
from lightning_modules.errors import TabslimInputError
from lightning_modules.networks import TabularNetwork
from lightning_modules.networks.base import unit_values
from lightning_modules.training import FitSettings, fit

__all__ = ["perturbation_scores"]

# |w_perturbed| below this counts as this in the relative deviation: a weight that training left
# near zero would otherwise give a ratio in the thousands and swamp its neuron's row mean.
# Hidden weights start at about 1/sqrt(fan_in) (0.03 for 1000 inputs), so this is small beside
# them.
DEVIATION_EPSILON = 1e-3

SCORE_SETTINGS = frozenset({"factors", "folds", "epochs", "seed"})


class _ScaledOutput(nn.Module):
    """`inner(x) / factor`: trained on the true target, `inner` learns `factor x` the target."""

    def __init__(self, inner: Any, factor: float) -> None:
        super().__init__()
        self.inner = inner
        self.factor = factor

    def forward(self, x_num: torch.Tensor, x_cat: torch.Tensor | None = None) -> torch.Tensor:
        return self.inner(x_num, x_cat) / self.factor


class _LastWeights(Callback):
    """The inner network's weights when training ends, before `fit` restores its best epoch."""

    def __init__(self, wrapper: _ScaledOutput) -> None:
        self.wrapper = wrapper
        self.state: dict[str, torch.Tensor] | None = None

    def on_train_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.state = {
            k: v.detach().cpu().clone() for k, v in self.wrapper.inner.state_dict().items()
        }


def without_test_split(
    data: TabularDataModule, train_rows: torch.Tensor | None = None
) -> TabularDataModule:
    """The data module with no test tensors, and optionally only some training rows.

    A shallow copy with its own `tensors` dict: the original keeps all its splits, and any use of
    the test split through the view fails loudly instead of leaking.
    """
    view = copy.copy(data)
    train = data.tensors["train"]
    if train_rows is not None:
        train = {k: v.index_select(0, train_rows) for k, v in train.items()}
    view.tensors = {"train": train, "val": data.tensors["val"]}
    return view


def check_network(network: nn.Module) -> Any:
    """`network` if it declares prunable groups (any tabslim kind), else a one-line error."""
    if not isinstance(network, TabularNetwork):
        raise TabslimInputError(
            f"target perturbation prunes a tabslim network, but got {type(network).__name__}"
        )
    return network


def is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _check_score_settings(factors: Sequence[float], folds: int, epochs: int) -> None:
    if len(factors) == 0:
        raise TabslimInputError("target perturbation needs at least one factor, but got none")
    for factor in factors:
        if not factor > 0 or factor == 1:
            raise TabslimInputError(
                f"perturbation factors must be positive and not 1, but got {factor=}"
            )
    if not is_int(folds) or folds < 1:
        raise TabslimInputError(f"folds must be an integer >= 1, but got {folds=}")
    if not is_int(epochs) or epochs < 1:
        raise TabslimInputError(f"epochs must be an integer >= 1, but got {epochs=}")


def _fold_rows(n_rows: int, folds: int, seed: int) -> list[torch.Tensor | None]:
    """Training rows per fold: all rows for one fold, else the rows outside each of k parts."""
    if folds == 1:
        return [None]
    if folds > n_rows:
        raise TabslimInputError(
            f"folds must be at most the {n_rows} training rows, but got {folds=}"
        )
    order = torch.randperm(n_rows, generator=torch.Generator().manual_seed(seed))
    parts = torch.tensor_split(order, folds)
    return [
        torch.cat([p for j, p in enumerate(parts) if j != i]).sort().values for i in range(folds)
    ]


def _train_copy(network: Any, data: TabularDataModule, config: FitSettings, factor: float) -> Any:
    """A copy of `network` trained on the target x `factor`, on the CPU in eval mode."""
    # Train mode whatever mode the input is in (a trained network comes back from `fit` in eval
    # mode): Lightning keeps the mode it finds, and eval mode would freeze BatchNorm statistics.
    wrapper = _ScaledOutput(copy.deepcopy(network), factor).train()
    last = _LastWeights(wrapper)
    fit(wrapper, data, config, extra_callbacks=[last], evaluate_test=False)
    assert last.state is not None, "training ran no epoch"
    wrapper.inner.load_state_dict(last.state)
    return wrapper.inner.cpu().eval()


def _incoming(network: Any) -> list[torch.Tensor]:
    """Per prunable group, each unit's incoming parameters as rows: (size, n).

    Biases count only in groups without BatchNorm. BatchNorm subtracts the batch mean, so the
    bias before it has no effect and a gradient that is zero up to rounding, which Adam scales
    up to steps of about the learning rate: its drift is optimiser noise, not a response to the
    target, and in a small layer it would outweigh the whole weight row.
    """
    state = network.state_dict()
    rows = []
    for group in network.prunable_groups():
        normalised = any(s.batch_norm for s in group.slices_of("norm"))
        roles = ("weight",) if normalised else ("weight", "bias")
        rows.append(torch.cat([unit_values(state, s) for s in group.slices_of(*roles)], 1))
    return [r.double() for r in rows]


def _relative_deviation(perturbed: torch.Tensor, control: torch.Tensor) -> torch.Tensor:
    """Per neuron (row), the mean of |(w_p - w_c) / w_p| over its incoming parameters: (out,)."""
    return ((perturbed - control).abs() / perturbed.abs().clamp_min(DEVIATION_EPSILON)).mean(1)


def perturbation_scores(
    network: Any,
    *,
    data: TabularDataModule,
    fit_settings: FitSettings,
    factors: Sequence[float] = (0.9, 1.1),
    folds: int = 1,
    epochs: int = 3,
    seed: int = 0,
) -> list[torch.Tensor]:
    """Per hidden layer, each neuron's importance: minus its mean relative deviation.

    Higher is more important (keep); every score is <= 0. A neuron's deviation is the mean of
    |(w_p - w_c) / w_p| over its incoming weight row (and bias, without BatchNorm), where
    |w_p| below `DEVIATION_EPSILON` counts as `DEVIATION_EPSILON`, averaged over the perturbed
    copies and the folds. The input network is not modified; the test split is not read.

    Args:
        network: a trained network of any kind; every copy starts from its weights.
        fit_settings: optimiser settings for the copies; their epochs and seed come from
            `epochs` and `seed`, and early stopping is off.
        factors: target multipliers of the perturbed copies (positive, not 1).
        folds: 1 trains every copy on all training rows; k >= 2 splits the training rows into k
            seeded parts, and fold i trains a control and the perturbed copies on the rows
            outside part i. Validation is the same for every fold.
        epochs: epochs each copy trains.
        seed: the seed of every copy's training and of the fold split.
    """
    network = check_network(network)
    _check_score_settings(factors, folds, epochs)
    config = dataclasses.replace(
        fit_settings, max_epochs=epochs, patience=epochs + 1, seed=seed, progress_bar=False
    )
    n_train = len(data.tensors["train"]["y"])
    totals = [torch.zeros(w, dtype=torch.float64) for w in network.spec.group_sizes()]
    for rows in _fold_rows(n_train, folds, seed):
        view = without_test_split(data, rows)
        control = _incoming(_train_copy(network, view, config, 1.0))
        for factor in factors:
            perturbed = _incoming(_train_copy(network, view, config, float(factor)))
            for layer, (p, c) in enumerate(zip(perturbed, control, strict=True)):
                totals[layer] += _relative_deviation(p, c)
    copies = folds * len(factors)
    return [-(total / copies).float() for total in totals]
