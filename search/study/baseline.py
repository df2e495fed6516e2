"""The study's trained baseline as other trials need it: its network (prune trials start from
it) and its outputs on the training rows (distill trials learn from them).

Both are made once, by the baseline trial, and read back by every worker of the study.
"""

from __future__ import annotations

import numpy as np
import optuna
import torch
from torch import nn

from lightning_modules.distillation import teacher_outputs
from lightning_modules.networks import TabularNetwork
from search.serving import load_network
from search.study.context import SearchContext
from search.study.settings import StudySettings

__all__ = ["TEACHER_FILE", "load_baseline", "load_teacher"]


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
