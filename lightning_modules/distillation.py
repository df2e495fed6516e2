"""Distillation: a student network learns from a teacher's outputs as well as from the labels.

The third way to train a shrunken shape, beside training it from scratch and pruning the
trained baseline (Klemetti et al. compare those two). The teacher's outputs are computed once
(`teacher_outputs`) and travel with the training batches as "teacher"; the LightningModule
mixes the distance to them into its loss (`distilled_loss`). A distilled network is an ordinary
network: nothing of the teacher stays in it.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn
from torch.nn import functional as F

from lightning_modules.data import TabularDataModule
from lightning_modules.networks import infer
from lightning_modules.task import Task

__all__ = ["Distillation", "distilled_loss", "teacher_outputs"]


@dataclass(frozen=True)
class Distillation:
    """How much a student follows its teacher (`weight`, in [0, 1]), and how softened the
    teacher's class probabilities are (`temperature`; classification only)."""

    weight: float = 0.5
    temperature: float = 1.0


def distilled_loss(
    task: Task,
    loss: torch.Tensor,
    output: torch.Tensor,
    teacher: torch.Tensor,
    distill: Distillation,
) -> torch.Tensor:
    """(1 - weight) x the task's `loss` + weight x the distance of `output` to `teacher`.

    Classification: KL(teacher || student) between probabilities softened by the temperature
    T, times T^2 so that its gradients keep their scale as T grows (Hinton et al., 2015).
    Regression (standardised targets) and reconstruction: the squared error to the teacher's
    output. With weight 0 the result is `loss`, bit for bit.

    Args:
        output, teacher: (rows, outputs) raw network outputs (logits, standardised
            predictions or reconstructions) for the same rows.
    """
    teacher = teacher.to(output.dtype)
    if not task.is_classification:
        distance = F.mse_loss(output, teacher)
    else:
        t = distill.temperature
        distance = F.kl_div(
            F.log_softmax(output / t, dim=1),
            F.log_softmax(teacher / t, dim=1),
            reduction="batchmean",
            log_target=True,
        ) * (t * t)
    return (1.0 - distill.weight) * loss + distill.weight * distance


def teacher_outputs(teacher: nn.Module, data: TabularDataModule) -> torch.Tensor:
    """The teacher's raw outputs for every training row of `data`, in its order (float32)."""
    train = data.tensors["train"]
    return infer(teacher, train["x_num"], train["x_cat"]).float()
