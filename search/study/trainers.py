"""The two ways a candidate trains: its shape from scratch (or distilled from the baseline),
or the trained baseline pruned and fine-tuned (approaches 1 and 2 of Klemetti et al.).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import optuna
import torch
from pytorch_lightning.callbacks import Callback
from torch import nn

from lightning_modules.callbacks import StopBelowThreshold
from lightning_modules.distillation import Distillation
from lightning_modules.evaluation import evaluate_network
from lightning_modules.networks import NetworkSpec, TabularNetwork, build
from lightning_modules.training import FitSettings, fit
from pruning.plan import PruningPlan, apply_plan
from search.config import Config
from search.inputs import fit_settings
from search.study.baseline import load_baseline
from search.study.context import SearchContext
from search.study.settings import StudySettings
from search.study.space import ScratchShape, apply_shape

__all__ = ["Trained", "prune_baseline", "scratch_settings", "train_scratch"]


@dataclass
class Trained:
    """A candidate after training: the network, its spec and metrics, and the epochs run.

    `epochs` counts training epochs for both approaches: from scratch until early stopping, or
    every fine-tuning epoch of a pruning plan.
    """

    network: nn.Module
    spec: NetworkSpec
    val_metrics: dict[str, float]
    test_metrics: dict[str, float]
    epochs: int
    seconds: float
    stopped_below_floor: bool = False
    details: dict[str, Any] = dataclasses.field(default_factory=dict)
    # How training ended (`lightning_modules.training.STOPPED_BY`, or "plan" for the planned
    # fine-tuning epochs of a pruned network).
    stopped_by: str = "plan"


def scratch_settings(
    config: Config, params: Mapping[str, Any], baseline: bool = False, distill: bool = False
) -> FitSettings:
    """How a scratch candidate trains: the training section, with its own searched learning
    rate and weight decay, and room to train on while it still improves (`max_epochs_factor`).

    The epoch cap fits the baseline; a small network is often still improving there, and
    cutting it off would judge an unfinished network. The baseline keeps the cap as it is.
    """
    settings = fit_settings(config)
    if distill:
        given = config.search.distill
        settings = dataclasses.replace(
            settings,
            max_epochs=given.max_epochs or settings.max_epochs,
            distill=Distillation(given.weight, given.temperature),
        )
    limit = None if baseline else round(settings.max_epochs * config.search.max_epochs_factor)
    return dataclasses.replace(
        settings,
        lr=params.get("lr", settings.lr),
        weight_decay=params.get("weight_decay", settings.weight_decay),
        epoch_limit=limit,
    )


def train_scratch(
    ctx: SearchContext,
    shape: ScratchShape,
    stopper: StopBelowThreshold | None,
    baseline: bool = False,
    *,
    teacher: torch.Tensor | None = None,
    callbacks: list[Callback] | None = None,
) -> Trained:
    """Approach 1 of Klemetti et al.: the smaller shape, trained from scratch; with `teacher`
    (the baseline's outputs on the training rows), distilled from it instead."""
    spec = apply_shape(ctx.baseline, shape)
    settings = scratch_settings(ctx.config, shape.training, baseline, distill=teacher is not None)
    result = fit(
        build(spec, seed=settings.seed),
        ctx.data,
        settings,
        extra_callbacks=([stopper] if stopper else []) + (callbacks or []),
        teacher=teacher,
    )
    assert isinstance(result.network, TabularNetwork)
    return Trained(
        network=result.network,
        spec=spec,
        val_metrics=result.val_metrics,
        test_metrics=result.test_metrics,
        epochs=result.epochs,
        seconds=result.seconds,
        stopped_below_floor=bool(stopper and stopper.stopped_epoch is not None),
        stopped_by=result.stopped_by,
    )


def prune_baseline(
    ctx: SearchContext,
    plan: PruningPlan,
    settings: StudySettings,
    study: optuna.Study,
    callbacks: list[Callback] | None = None,
) -> Trained:
    """Approach 2 of Klemetti et al.: prune the trained baseline structurally, then fine-tune."""
    started = time.perf_counter()
    fit_with = fit_settings(ctx.config)
    result = apply_plan(
        load_baseline(ctx, settings, study),
        plan,
        data=ctx.data,
        fit_settings=fit_with,
        seed=fit_with.seed,
        callbacks=callbacks,
    )
    return Trained(
        network=result.network,
        spec=result.network.spec,
        val_metrics=result.val_metrics,
        test_metrics=evaluate_network(result.network, ctx.data, "test"),
        epochs=result.epochs,
        seconds=time.perf_counter() - started,
        details=result.details,
    )
