"""The study's trained baseline as other trials need it: its network (prune trials start from
it) and its outputs on the training rows (distill trials learn from them); and the check
that it learned at all, before any candidate is judged against it.

Both are made once, by the baseline trial, and read back by every worker of the study.
"""

from __future__ import annotations

import numpy as np
import optuna
import torch
from torch import nn

from lightning_modules.distillation import teacher_outputs
from lightning_modules.errors import TabslimInputError
from lightning_modules.evaluation import no_better_than_constant
from lightning_modules.networks import TabularNetwork
from search.serving import load_network
from search.study import attributes
from search.study.context import SearchContext
from search.study.settings import StudySettings

__all__ = ["TEACHER_FILE", "check_baseline_learned", "load_baseline", "load_teacher"]


def load_baseline(ctx: SearchContext, settings: StudySettings, study: optuna.Study) -> nn.Module:
    """The study's trained baseline: trained once (trial 0), read back by every worker."""
    if ctx.trained_baseline is None:
        if settings.baseline_trial is None:
            raise RuntimeError("a prune trial needs the baseline, which has not finished yet")
        _, network, _ = load_network(ctx.network_dir(study, settings.baseline_trial))
        assert isinstance(network, TabularNetwork)
        ctx.trained_baseline = network
    return ctx.trained_baseline


TEACHER_FILE = "teacher_outputs.npy"


def load_teacher(ctx: SearchContext, settings: StudySettings, study: optuna.Study) -> torch.Tensor:
    """The baseline's outputs on the training rows: saved once by the baseline trial, read back
    by every worker (computed from the baseline when a study began without distill)."""
    if ctx.teacher is None:
        if settings.baseline_trial is None:
            raise RuntimeError("a distill trial needs the baseline, which has not finished yet")
        path = ctx.network_dir(study, settings.baseline_trial) / TEACHER_FILE
        if path.is_file():
            ctx.teacher = torch.from_numpy(np.load(path))
        else:
            ctx.teacher = teacher_outputs(load_baseline(ctx, settings, study), ctx.data)
    return ctx.teacher


def check_baseline_learned(study: optuna.Study, ctx: SearchContext) -> None:
    """Raise a one-line error when the baseline learned nothing: every candidate would be judged
    against it, and the search would register a champion at chance level. The reason is kept
    on the study, so that `tabslim report` says why it stopped."""
    settings = StudySettings.read(study)
    training = ctx.config.training
    causes = (
        f"a learning rate too high or too low (training.lr {training.lr:g}), too few epochs "
        f"(training.max_epochs {training.max_epochs}), or columns that do not predict the "
        "target can cause this; search again under a new --study name"
    )
    reason = None
    if settings.baseline_metric is None:
        reason = (
            f"the baseline of study '{study.study_name}' did not finish training (its loss or "
            f"metrics were not finite); {causes}"
        )
    elif (guess := no_better_than_constant(ctx.data, settings.baseline_metric)) is not None:
        reason = (
            f"the baseline did not learn: its validation {ctx.metric} "
            f"{settings.baseline_metric:.4g} is no better than {guess}; {causes}"
        )
    if reason is not None:
        attributes.write_stopped(study, reason)
        raise TabslimInputError(reason)
