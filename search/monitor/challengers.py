"""The challengers `tabslim retrain` trains on a window of new rows, and the window itself.

- `scratch`: the champion's widths trained from scratch, preprocessing refitted on the window
  (new categories, new scales);
- `fine_tune`: the champion itself, a quarter of the epochs more on the window, keeping its
  preprocessing (skipped when the window holds classes the champion never saw);
- `distill` (when the champion's study searched `distill`): the champion's widths trained
  from scratch on the window against the champion's own outputs, the champion as teacher;
- `search` (only with `--search N`): a short search on the window, seeded with the shapes of
  the champion's study front and bounded by the champion's widths, so never larger than it.
  With `search.fidelity`, Optuna's successive-halving pruner stops the worse shapes at rungs
  (the search has one objective, the validation metric, so Optuna's own pruner serves).

The window is the new rows before the holdout, plus, with `--reference-share S`, a seeded
share S of the training rows stored with the champion (`reference_rows.parquet`), so that a
challenger does not forget what the old rows taught when the new window is small.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import pandas as pd
from pytorch_lightning.callbacks import Callback
from torch import nn

from lightning_modules.callbacks import StopAtRungs
from lightning_modules.columns import time_order
from lightning_modules.data import TabularDataModule
from lightning_modules.distillation import teacher_outputs
from lightning_modules.errors import TabslimInputError
from lightning_modules.metrics import HIGHER_IS_BETTER
from lightning_modules.networks import NetworkSpec, build
from lightning_modules.preprocessing import Preprocessor
from lightning_modules.training import fit
from search.inputs import fit_settings
from search.serving import REFERENCE_ROWS_FILE
from search.study import rung_epochs, scratch_settings

Challenger = tuple[nn.Module, Preprocessor, TabularDataModule]
# A searched challenger's groups are drawn down to this share of the champion's widths.
_SEARCH_LOW = 0.25


@dataclass(frozen=True)
class ChallengerOptions:
    """Args:
    reference_share: share of the champion's stored training rows added to the window.
    search_trials: trials of the `search` challenger; 0 leaves it out.
    front: group widths of the champion's study front, to seed the search with.
    """

    reference_share: float = 0.0
    search_trials: int = 0
    front: list[list[int]] = field(default_factory=list)


def training_window(
    window: pd.DataFrame, network_dir: Path, share: float, time_column: str | None, seed: int
) -> pd.DataFrame:
    """The new rows' window, with a seeded `share` of the champion's training rows before it."""
    if share <= 0:
        return window
    path = network_dir / REFERENCE_ROWS_FILE
    if not path.is_file():
        raise TabslimInputError(
            "--reference-share needs the training rows stored with the champion, but this "
            "version was logged without them; use --reference-share 0, or log it again"
        )
    stored = pd.read_parquet(path)
    reference = stored.sample(n=max(1, round(share * len(stored))), random_state=seed)
    if time_column is not None:
        # The stored rows carry no time column; they come before every new row.
        earliest = window.iloc[time_order(window, time_column).argsort(kind="stable")]
        reference = reference.assign(**{time_column: earliest[time_column].iloc[0]})
    return pd.concat([reference, window], ignore_index=True)[list(window.columns)]


def train_challengers(
    window: pd.DataFrame,
    target: str,
    time_column: str | None,
    config: Any,
    champion: tuple[NetworkSpec, nn.Module, Preprocessor],
    options: ChallengerOptions,
) -> tuple[dict[str, Challenger], list[str]]:
    """Every challenger trained on `window`, and a line for each one left out."""
    spec, network, prep = champion
    settings = fit_settings(config)
    common = {"task": prep.task, "time_column": time_column, "seed": config.data.seed}
    scratch_data = TabularDataModule.from_frame(window, target, **common)
    # Every kind's spec is a frozen dataclass with the network_inputs() fields.
    shape = dataclasses.replace(spec, **scratch_data.network_inputs())  # type: ignore[type-var]
    scratch = fit(build(shape, seed=settings.seed), scratch_data, settings, evaluate_test=False)
    found = {"scratch": (scratch.network, scratch_data.preprocessor, scratch_data)}
    skipped: list[str] = []
    # Fine-tuning keeps the champion's outputs: a class it never saw cannot be learned there.
    unknown = sorted(set(map(str, window[target].unique())) - set(map(str, prep.classes)))
    if not prep.task.is_classification or not unknown:
        tuned_data = TabularDataModule.from_frame(window, target, preprocessor=prep, **common)
        tuning = dataclasses.replace(settings, max_epochs=max(1, settings.max_epochs // 4))
        tuned = fit(copy.deepcopy(network), tuned_data, tuning, evaluate_test=False)
        found["fine_tune"] = (tuned.network, prep, tuned_data)
    else:
        skipped.append(
            f"fine_tune skipped: the new rows hold classes the champion never saw {unknown}"
        )
    if "distill" in config.search.approaches:
        student, why_not = _distilled(shape, scratch_data, config, champion, window, target, common)
        if student is not None:
            found["distill"] = (student, scratch_data.preprocessor, scratch_data)
        else:
            skipped.append(f"distill skipped: {why_not}")
    if options.search_trials > 0:
        found["search"] = _searched(shape, scratch_data, settings, options, config.search.fidelity)
    return found, skipped


def _distilled(
    shape: NetworkSpec,
    data: TabularDataModule,
    config: Any,
    champion: tuple[NetworkSpec, nn.Module, Preprocessor],
    window: pd.DataFrame,
    target: str,
    common: dict[str, Any],
) -> tuple[nn.Module | None, str]:
    """The champion's widths from scratch on the window, taught by the champion; or None and
    why not. The champion reads the window's training rows through its own preprocessing
    (the same rows, split alike), and its outputs are put on the window's scale."""
    _, network, prep = champion
    if prep.task.is_anomaly:
        return None, "an autoencoder's reconstruction lives in its own input scale"
    if not prep.task.is_regression and list(prep.classes) != list(data.preprocessor.classes):
        return None, "the window's classes differ from the champion's"
    own = TabularDataModule.from_frame(window, target, preprocessor=prep, **common)
    outputs = teacher_outputs(network, own)
    if prep.task.is_regression:
        # Standardised by the champion's target scale; the student's is the window's.
        refit = data.preprocessor
        outputs = (outputs * prep.target_std + prep.target_mean - refit.target_mean) / (
            refit.target_std
        )
    settings = scratch_settings(config, {}, distill=True)
    settings = dataclasses.replace(settings, epoch_limit=None)
    student = fit(
        build(shape, seed=settings.seed), data, settings, evaluate_test=False, teacher=outputs
    )
    return student.network, ""


def _searched(
    champion: NetworkSpec,
    data: TabularDataModule,
    settings: Any,
    options: ChallengerOptions,
    fidelity: Any = None,
) -> Challenger:
    """The best of a short TPE search over widths up to the champion's, on the window's
    validation rows; the front's shapes that fit under the champion go first. With
    `fidelity`, a shape behind the better 1/reduction at a rung is pruned there."""
    widths = champion.group_sizes()
    metric, higher = data.task.metric, data.task.higher_is_better
    trained: dict[int, nn.Module] = {}

    def objective(trial: optuna.Trial) -> float:
        sizes = [
            max(1, round(w * trial.suggest_float(f"share_{i}", _SEARCH_LOW, 1.0, log=True)))
            for i, w in enumerate(widths)
        ]
        spec = champion.with_group_sizes(sizes)
        rungs = _rung_callbacks(trial, metric, settings.max_epochs, fidelity)
        result = fit(
            build(spec, seed=settings.seed),
            data,
            settings,
            evaluate_test=False,
            extra_callbacks=list[Callback](rungs),
        )
        if rungs and rungs[0].stopped_rung is not None:
            raise optuna.TrialPruned(f"stopped at {rungs[0].stopped_epoch} epochs")
        trained[trial.number] = result.network
        trial.set_user_attr("widths", sizes)
        value = result.val_metrics[metric]
        return value if math.isfinite(value) else -math.inf if higher else math.inf

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(
        direction="maximize" if higher else "minimize",
        sampler=optuna.samplers.TPESampler(seed=settings.seed),
        pruner=(
            optuna.pruners.SuccessiveHalvingPruner(
                min_resource=fidelity.min_epochs, reduction_factor=fidelity.reduction
            )
            if fidelity is not None
            else optuna.pruners.NopPruner()
        ),
    )
    for shape in options.front:
        if len(shape) == len(widths) and all(
            1 <= s <= w for s, w in zip(shape, widths, strict=True)
        ):
            shares = [min(1.0, max(_SEARCH_LOW, s / w)) for s, w in zip(shape, widths, strict=True)]
            study.enqueue_trial({f"share_{i}": v for i, v in enumerate(shares)})
    study.optimize(objective, n_trials=options.search_trials)
    best = study.best_trial  # a pruned trial is never the best: it has no value
    return trained[best.number], data.preprocessor, data


def _rung_callbacks(
    trial: optuna.Trial, metric: str, max_epochs: int, fidelity: Any
) -> list[StopAtRungs]:
    """A rung callback that reports to Optuna's pruner at each rung; none without fidelity."""
    if fidelity is None:
        return []
    rungs = rung_epochs(fidelity.min_epochs, fidelity.reduction, max_epochs)

    def decide(rung: int, value: float, parameters: int) -> bool:
        trial.report(value, rungs[rung])
        return not trial.should_prune()

    return [StopAtRungs(f"val_{metric}", rungs, decide, higher_is_better=HIGHER_IS_BETTER[metric])]
