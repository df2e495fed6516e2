"""The paper's comparison at matched sizes: pruned front members re-trained from scratch.

Klemetti et al. found that training the smaller shape from scratch usually ends more accurate
than pruning and fine-tuning. With `search.front.paired`, every front member that came from
pruning is trained again from scratch with identical widths; the table goes to the parent MLflow
run.
"""

from __future__ import annotations

import optuna
import pandas as pd

from lightning_modules.networks import build, count_parameters, spec_from_dict
from lightning_modules.training import fit
from search.front import pareto
from search.inputs import fit_settings
from search.study import SearchContext, attributes


def paired_comparison(study: optuna.Study, ctx: SearchContext) -> pd.DataFrame:
    """One row per pruned front member: its metrics beside a scratch twin of the same widths."""
    metric = ctx.metric
    # Finished pairs are cached on the study, so that a resumed study does not train them again.
    cache = attributes.paired_cache(study)
    rows = []
    for trial in pareto.front(study):
        if attributes.approach(trial) != "prune":
            continue
        spec = spec_from_dict(attributes.spec_dict(trial))
        if str(trial.number) not in cache:
            config = fit_settings(ctx.config)
            twin = fit(build(spec, seed=config.seed), ctx.data, config)
            cache[str(trial.number)] = {
                "val": twin.val_metrics[metric],
                "test": twin.test_metrics[metric],
            }
            attributes.write_paired_cache(study, cache)
        twin_metrics = cache[str(trial.number)]
        metrics = attributes.trial_metrics(trial)
        plan = attributes.plan_dict(trial) or {}
        rows.append(
            {
                "trial": trial.number,
                "widths": "-".join(map(str, spec.group_sizes())),
                "parameters": count_parameters(build(spec)),
                "criterion": plan.get("criterion"),
                "fine_tune_epochs": plan.get("fine_tune_epochs"),
                f"prune_val_{metric}": metrics[f"val_{metric}"],
                f"scratch_val_{metric}": twin_metrics["val"],
                f"prune_test_{metric}": metrics.get(f"test_{metric}"),
                f"scratch_test_{metric}": twin_metrics["test"],
                "scratch_minus_prune_test": twin_metrics["test"]
                - metrics.get(f"test_{metric}", 0.0),
            }
        )
    columns = [
        "trial",
        "widths",
        "parameters",
        "criterion",
        "fine_tune_epochs",
        f"prune_val_{metric}",
        f"scratch_val_{metric}",
        f"prune_test_{metric}",
        f"scratch_test_{metric}",
        "scratch_minus_prune_test",
    ]
    return pd.DataFrame(rows, columns=columns)
