"""Layer sensitivity scan: prune one hidden layer alone at several ratios and record the drop.

Anik et al. measure each layer's sensitivity on its own and prune in an order set by it;
Klemetti et al. found structured pruning best at pinpointing the layers whose neurons matter
least once it gets at least one fine-tuning epoch. So each (layer, ratio) is scored with no
fine-tuning and after a few epochs, and the layers are ordered from least to most sensitive.

Here a *ratio* is the share of a layer's neurons that is removed: 0.25 removes a quarter. The
kept count is `round((1 - ratio) x width)` (halves up) and never below one, so a ratio that
would empty a narrow layer keeps its single best neuron (and one that rounds to the full width
removes none);
the table's `kept` column says what was actually kept.

After removal the BatchNorm statistics are re-estimated on the training rows (no weight
changes), so "0 epochs" measures the lost neurons, not statistics left over from the unpruned
network.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import torch
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure

from lightning_modules.data import TabularDataModule
from lightning_modules.errors import TabslimInputError
from lightning_modules.evaluation import evaluate_network
from lightning_modules.training import FitSettings
from pruning.batch_norm import recalibrate_batch_norm
from pruning.choices import DEFAULT_CRITERION, DEFAULT_EPOCHS, DEFAULT_RATIOS
from pruning.criteria import calibration_batch, check_criterion, layer_scores
from pruning.fine_tune import fine_tune
from pruning.removal import keep_top, remove_units

COLUMNS = [
    "layer",
    "group",
    "width",
    "ratio",
    "kept",
    "epochs",
    "metric",
    "baseline_metric",
    "drop",
]
# Mean drops closer than this count as tied, so float noise does not reorder equal layers.
_TIE = 1e-9


def check_ratios(ratios: Sequence[float]) -> tuple[float, ...]:
    """The ratios as floats, each strictly between 0 and 1, without repeats."""
    checked = tuple(float(r) for r in ratios)
    if not checked:
        raise TabslimInputError("sensitivity needs at least one ratio in (0, 1)")
    for ratio in checked:
        if not 0.0 < ratio < 1.0:  # also refuses nan
            raise TabslimInputError(
                f"a sensitivity ratio is the share of a layer's neurons removed and must be in "
                f"(0, 1), but got ratio={ratio:g}"
            )
    if len(set(checked)) != len(checked):
        raise TabslimInputError(f"sensitivity ratios must not repeat, but got {list(checked)}")
    return checked


def check_epochs(epochs: Sequence[int]) -> tuple[int, ...]:
    checked = tuple(int(e) for e in epochs)
    if not checked or any(e < 0 for e in checked) or len(set(checked)) != len(checked):
        raise TabslimInputError(
            f"fine-tuning epochs must be distinct counts of 0 or more, but got {list(epochs)}"
        )
    return checked


def _drop(metric: float, baseline: float, higher_is_better: bool) -> float:
    # Positive = worse, whichever way the metric points.
    return baseline - metric if higher_is_better else metric - baseline


def layer_order(table: pd.DataFrame) -> list[int]:
    """Layers from least to most sensitive: by mean drop over the table's rows, ties by index.

    A NaN drop (a metric that diverged) counts as the worst possible.
    """
    drops = table["drop"].astype(float).fillna(math.inf)
    means = drops.groupby(table["layer"]).mean()

    def key(layer: int) -> tuple[float, int]:
        mean = float(means[layer])
        return (round(mean / _TIE) * _TIE if math.isfinite(mean) else math.inf, layer)

    return sorted((int(layer) for layer in means.index), key=key)


@dataclass
class SensitivityResult:
    """The scan's table (one row per layer, ratio and fine-tuning epochs) and the layer order.

    `drop` is `baseline_metric - metric` when higher is better and `metric - baseline_metric`
    otherwise, so a positive drop always means worse.
    """

    table: pd.DataFrame
    order: list[int]
    metric: str
    higher_is_better: bool
    criterion: str

    def label(self, layer: int) -> str:
        """How group `layer` reads in tables and plots: its name and width."""
        row = self.table[self.table["layer"] == layer].iloc[0]
        name = (
            row["group"] if "group" in row and isinstance(row["group"], str) else f"layer {layer}"
        )
        return f"{name} ({int(row['width'])})"

    @property
    def ratios(self) -> list[float]:
        return sorted(self.table["ratio"].unique().tolist())

    @property
    def epochs(self) -> list[int]:
        return sorted(int(e) for e in self.table["epochs"].unique())

    def pivot(self, epochs: int) -> pd.DataFrame:
        """Drops after `epochs` fine-tuning epochs: rows = layers, columns = ratios."""
        part = self.table[self.table["epochs"] == epochs]
        return part.pivot(index="layer", columns="ratio", values="drop")

    def format_table(self) -> str:
        """The drops as text: one layer x ratio block per fine-tuning budget."""
        baseline = float(self.table["baseline_metric"].iloc[0])
        blocks = []
        for epoch in self.epochs:
            grid = self.pivot(epoch)
            grid.index = [self.label(i) for i in grid.index]
            grid.columns = [f"{r:g}" for r in grid.columns]
            grid.columns.name = "removed"
            blocks.append(
                f"drop in val {self.metric} after {epoch} fine-tuning epoch"
                f"{'' if epoch == 1 else 's'} (baseline {baseline:.4f}; positive = worse)\n"
                + grid.to_string(float_format=lambda v: f"{v:+.4f}")
            )
        return "\n\n".join(blocks)

    def heatmap_png(self, path: str | Path, *, title: str | None = None, dpi: int = 150) -> Path:
        """A heatmap per fine-tuning epochs: rows = layers, columns = ratios, cells = drop.

        Red is worse than the baseline, blue better; the colour scale is centred at 0 and shared
        by the panels so that they compare.
        """
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        epochs = self.epochs
        widths = self.table.groupby("layer")["width"].first()
        finite = self.table["drop"].to_numpy(dtype=float)
        finite = finite[np.isfinite(finite)]
        limit = float(np.abs(finite).max()) if len(finite) else 0.0
        limit = limit if limit > 0 else 1e-6
        norm = TwoSlopeNorm(vcenter=0.0, vmin=-limit, vmax=limit)
        n_layers, n_ratios = len(widths), len(self.ratios)
        # A bare Figure renders with Agg on savefig and leaves pyplot's global state alone.
        fig = Figure(
            figsize=(2.2 + 1.1 * n_ratios * len(epochs), max(3.0, 1.6 + 0.5 * n_layers)),
            layout="constrained",
        )
        axes = fig.subplots(1, len(epochs), squeeze=False, sharey=True)[0]
        image = None
        for ax, epoch in zip(axes, epochs, strict=True):
            grid = self.pivot(epoch).reindex(index=widths.index, columns=self.ratios)
            values = grid.to_numpy(dtype=float)  # (layers, ratios)
            image = ax.imshow(values, cmap="RdBu_r", norm=norm, aspect="auto")
            for (row, col), value in np.ndenumerate(values):
                strong = np.isfinite(value) and abs(value) > 0.6 * limit
                ax.text(
                    col,
                    row,
                    f"{value:+.3f}" if np.isfinite(value) else "nan",
                    ha="center",
                    va="center",
                    fontsize=8,
                    color="white" if strong else "black",
                )
            ax.set_xticks(range(n_ratios), [f"{r:g}" for r in self.ratios])
            ax.set_xlabel("share of neurons removed")
            ax.set_title(f"{epoch} fine-tuning epoch{'' if epoch == 1 else 's'}")
        axes[0].set_yticks(range(n_layers), [self.label(int(i)) for i in widths.index])
        assert image is not None
        fig.colorbar(image, ax=list(axes), label=f"val {self.metric} drop")
        fig.suptitle(
            f"{title or f'layer sensitivity ({self.criterion})'}: "
            f"drop in val {self.metric}, positive = worse"
        )
        fig.savefig(path, dpi=dpi)
        return path


def scan(
    network: Any,
    data: TabularDataModule,
    *,
    ratios: Sequence[float] = DEFAULT_RATIOS,
    criterion: str = DEFAULT_CRITERION,
    fine_tune_epochs: Sequence[int] = DEFAULT_EPOCHS,
    fit_settings: FitSettings,
    seed: int = 0,
) -> SensitivityResult:
    """Prune each hidden layer of `network` alone at each ratio; record the validation drop.

    Every (layer, ratio) starts from the unpruned network, and each fine-tuning budget starts
    from the same pruned copy. Importance is scored once on the unpruned network, since only one
    layer is pruned at a time. The weights of `network` are never modified (evaluating it
    leaves it on the CPU in eval mode).

    Args:
        ratios: shares of a layer's neurons to remove, each in (0, 1).
        fine_tune_epochs: fine-tuning budgets to try after pruning; 0 evaluates as pruned.
    """
    ratios = check_ratios(ratios)
    epochs = check_epochs(fine_tune_epochs)
    check_criterion(criterion)
    metric, higher_is_better = data.task.metric, data.task.higher_is_better
    baseline = evaluate_network(network, data, "val")[metric]
    scores = _unpruned_scores(network, data, criterion, fit_settings, seed)
    widths = network.spec.group_sizes()
    names = network.spec.group_names()
    rows = []
    for layer, width in enumerate(widths):
        for ratio in ratios:
            kept = keep_top(scores[layer], 1.0 - ratio)
            after = _metrics_with_layer_pruned(network, data, layer, kept, epochs, fit_settings)
            for epoch, metrics in zip(epochs, after, strict=True):
                value = metrics[metric]
                rows.append(
                    {
                        "layer": layer,
                        "group": names[layer],
                        "width": width,
                        "ratio": ratio,
                        "kept": len(kept),
                        "epochs": epoch,
                        "metric": value,
                        "baseline_metric": baseline,
                        "drop": _drop(value, baseline, higher_is_better),
                    }
                )
    table = pd.DataFrame(rows, columns=COLUMNS)
    return SensitivityResult(
        table=table,
        order=layer_order(table),
        metric=metric,
        higher_is_better=higher_is_better,
        criterion=criterion,
    )


def _unpruned_scores(
    network: Any,
    data: TabularDataModule,
    criterion: str,
    fit_settings: FitSettings,
    seed: int,
) -> list[torch.Tensor]:
    """`layer_scores` of the unpruned network, with a calibration batch drawn from `data`."""
    return layer_scores(
        network,
        criterion,
        calibration=calibration_batch(data, seed=seed),
        seed=seed,
        data=data,
        fit_settings=fit_settings,
    )


def _metrics_with_layer_pruned(
    network: Any,
    data: TabularDataModule,
    layer: int,
    kept: list[int],
    epochs: Sequence[int],
    fit_settings: FitSettings,
) -> list[dict[str, float]]:
    """Validation metrics of `network` with only `layer` cut to `kept`, one per fine-tuning
    budget; every budget starts from the same pruned copy."""
    keep: list[list[int] | None] = [None] * len(network.spec.group_sizes())
    keep[layer] = kept
    pruned = remove_units(network, keep)
    recalibrate_batch_norm(pruned, data)
    return [fine_tune(pruned, data, epoch, fit_settings)[1] for epoch in epochs]
