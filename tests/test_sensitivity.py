from __future__ import annotations

import copy
import math
import re
from collections.abc import Callable
from pathlib import Path

import mlflow
import numpy as np
import optuna
import pandas as pd
import pytest
import torch
import yaml
from mlflow.tracking import MlflowClient
from sklearn.datasets import make_classification

from lightning_modules.data import TabularDataModule
from lightning_modules.errors import TabslimInputError
from lightning_modules.evaluation import evaluate_network
from lightning_modules.networks import MLP, Block, MLPSpec, build
from lightning_modules.training import FitSettings, fit
from pruning.sensitivity import COLUMNS, SensitivityResult, check_ratios, layer_order, scan
from search.commands import build_parser, main, run_search
from search.config import validate
from search.study import StudyKey

CONFIG = FitSettings(max_epochs=8, lr=1e-2, patience=8, accelerator="cpu")


@pytest.fixture(scope="module")
def data() -> TabularDataModule:
    x, y = make_classification(
        n_samples=300, n_features=8, n_informative=6, n_classes=3, random_state=0, class_sep=1.5
    )
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(8)]).assign(label=y)
    return TabularDataModule.from_frame(frame, "label", batch_size=64)


@pytest.fixture(scope="module")
def trained(data: TabularDataModule) -> MLP:
    spec = MLPSpec(hidden=(16, 12), dropout=0.0, **data.network_inputs())
    network = fit(build(spec, seed=0), data, CONFIG, evaluate_test=False).network
    assert isinstance(network, MLP)
    return network


@pytest.fixture(scope="module")
def crafted(data: TabularDataModule, trained: MLP) -> SensitivityResult:
    """Layer 1 keeps 4 live neurons of 12; the other 8 have no incoming or outgoing weights.

    l1 scores the dead ones 0, so removing up to 8 of them changes nothing, while layer 0 is
    left trained and whole: layer 1 is the less sensitive one.
    """
    network = copy.deepcopy(trained)
    block = network.blocks[1]
    assert isinstance(block, Block)
    with torch.no_grad():
        block.linear.weight[4:] = 0
        network.head.weight[:, 4:] = 0
    return scan(network, data, ratios=(0.25, 0.5, 0.6), fine_tune_epochs=(0,), fit_settings=CONFIG)


def test_scan_table_has_a_row_per_layer_ratio_and_epochs(
    data: TabularDataModule, trained: MLP
) -> None:
    before = {k: v.clone() for k, v in trained.state_dict().items()}
    result = scan(trained, data, ratios=(0.5, 0.9), fine_tune_epochs=(0, 1), fit_settings=CONFIG)
    table = result.table
    assert list(table.columns) == COLUMNS
    assert len(table) == 2 * 2 * 2
    assert result.metric == "accuracy" and result.higher_is_better
    # round((1 - ratio) x width), at least one neuron.
    kept = {(r.layer, r.ratio): r.kept for r in table.itertuples()}
    assert kept == {(0, 0.5): 8, (0, 0.9): 2, (1, 0.5): 6, (1, 0.9): 1}
    baseline = evaluate_network(trained, data)["accuracy"]
    assert (table["baseline_metric"] == baseline).all()
    assert (table["drop"] == table["baseline_metric"] - table["metric"]).all()
    assert sorted(result.order) == [0, 1]
    assert all(torch.equal(v, before[k]) for k, v in trained.state_dict().items())
    text = result.format_table()
    assert "after 0 fine-tuning epochs" in text and "after 1 fine-tuning epoch " in text
    assert "layer1 (12)" in text


def test_removing_neurons_without_weights_drops_nothing(crafted: SensitivityResult) -> None:
    layer1 = crafted.table[crafted.table["layer"] == 1]
    assert list(layer1["kept"]) == [9, 6, 5]
    assert (layer1["drop"] == 0).all()


def test_order_puts_the_less_sensitive_layer_first(crafted: SensitivityResult) -> None:
    layer0 = crafted.table[crafted.table["layer"] == 0]
    assert layer0["drop"].mean() > 0  # removing live neurons costs something
    assert crafted.order == [1, 0]


def test_layer_order_ties_by_index_and_puts_a_diverged_layer_last() -> None:
    drops = {0: [float("nan"), 0.0], 1: [0.1, 0.1], 2: [0.0, 0.2], 3: [0.3 - 0.2, 0.1]}
    table = pd.DataFrame(
        [{"layer": layer, "drop": d} for layer, values in drops.items() for d in values]
    )
    assert layer_order(table) == [1, 2, 3, 0]


def test_drop_is_positive_when_worse_for_a_lower_is_better_metric() -> None:
    x, y = make_classification(n_samples=200, n_features=5, random_state=1)
    frame = pd.DataFrame(x, columns=[f"f{i}" for i in range(5)]).assign(amount=10 * x[:, 0] + y)
    data = TabularDataModule.from_frame(frame, "amount", batch_size=64)
    network = build(MLPSpec(hidden=(8,), **data.network_inputs()), seed=0)
    result = scan(network, data, ratios=(0.9,), fine_tune_epochs=(0,), fit_settings=CONFIG)
    assert result.metric == "rmse" and not result.higher_is_better
    row = result.table.iloc[0]
    assert row["drop"] == pytest.approx(row["metric"] - row["baseline_metric"])


@pytest.mark.parametrize("ratios", [(0.0,), (1.0,), (1.5,), (0.5, -0.1), (math.nan,)])
def test_ratios_outside_0_1_are_refused_naming_the_value(ratios: tuple[float, ...]) -> None:
    with pytest.raises(TabslimInputError, match=f"ratio={ratios[-1]:g}"):
        check_ratios(ratios)


def test_empty_or_repeated_ratios_are_refused(data: TabularDataModule, trained: MLP) -> None:
    with pytest.raises(TabslimInputError, match="at least one ratio"):
        check_ratios(())
    with pytest.raises(TabslimInputError, match="must not repeat"):
        scan(trained, data, ratios=(0.5, 0.5), fit_settings=CONFIG)
    with pytest.raises(TabslimInputError, match="unknown pruning criterion 'nope'"):
        scan(trained, data, criterion="nope", fit_settings=CONFIG)


@pytest.mark.parametrize(
    ("epochs", "width"), [((0,), 825), ((0, 1), 1320)], ids=["one-budget", "two-budgets"]
)
def test_heatmap_has_a_panel_per_fine_tuning_budget(
    crafted: SensitivityResult,
    tmp_path: Path,
    read_png: Callable[[Path], np.ndarray],
    epochs: tuple[int, ...],
    width: int,
) -> None:
    table = pd.concat([crafted.table.assign(epochs=e) for e in epochs], ignore_index=True)
    result = SensitivityResult(table, crafted.order, "accuracy", True, "l1")
    image = read_png(result.heatmap_png(tmp_path / "plots" / "sensitivity.png"))
    # At 150 dpi: 3 inches high for 2 layers; 2.2 inches plus 1.1 per ratio in every panel.
    assert image.shape[:2] == (450, width)


# --- the CLI on a tiny real study ----------------------------------------------------------


@pytest.fixture(scope="module")
def study(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    """A real study that has run only its baseline, in a temporary folder."""
    root = tmp_path_factory.mktemp("sensitivity")
    raw = yaml.safe_load((Path(__file__).parent / "tiny_search.yaml").read_text())
    raw["search"] |= {"n_trials": 1, "study": "tiny", "storage": str(root / "optuna.journal")}
    raw["tracking"] = {"uri": f"sqlite:///{root / 'mlruns' / 'mlflow.db'}"}
    outcome = run_search(validate(raw, "test"), progress=False)
    return {"root": root, "uri": raw["tracking"]["uri"], "parent": outcome.parent_run_id}


def _sensitivity_runs(uri: str) -> list[mlflow.entities.Run]:
    mlflow.set_tracking_uri(uri)
    runs = mlflow.search_runs(experiment_names=["tabslim"], output_format="list")
    return [r for r in runs if r.data.tags.get("tabslim.kind") == "sensitivity"]


def test_cli_scans_the_baseline_and_logs_a_nested_run(
    study: dict[str, object],
    capsys: pytest.CaptureFixture[str],
    read_png: Callable[[str | Path], np.ndarray],
) -> None:
    root, uri = study["root"], study["uri"]
    assert isinstance(root, Path) and isinstance(uri, str)
    journal = str(root / "optuna.journal")
    code = main(["sensitivity", "--study", "tiny", "--storage", journal, "--ratios", "0.5,0.9"])
    out = capsys.readouterr().out
    assert code == 0
    (run,) = _sensitivity_runs(uri)
    order = run.data.tags["layer_order"]
    assert sorted(order.split(",")) == ["0", "1"]
    assert f"layer order, least to most sensitive: {order}" in out
    assert "layer0 (32)" in out and "after 1 fine-tuning epoch" in out
    assert run.data.tags["mlflow.parentRunId"] == study["parent"]
    assert run.data.tags["tabslim.study"] == "tiny"
    assert run.data.params["ratios"] == "0.5,0.9"
    assert run.data.params["fine_tune_epochs"] == "0,1"
    assert run.data.params["criterion"] == "l1"
    assert run.data.params["layer_order"] == order
    assert {"drop_layer0_r0.5_e0", "drop_layer1_r0.9_e1"} <= set(run.data.metrics)
    client = MlflowClient()
    assert {a.path for a in client.list_artifacts(run.info.run_id)} >= {
        "sensitivity.csv",
        "sensitivity.png",
    }
    table = pd.read_csv(client.download_artifacts(run.info.run_id, "sensitivity.csv"))
    assert list(table.columns) == COLUMNS and len(table) == 2 * 2 * 2
    png = read_png(client.download_artifacts(run.info.run_id, "sensitivity.png"))
    assert png.shape[:2] == (450, 990)  # two panels (0 and 1 epochs) of two ratios


def test_cli_defaults_are_four_ratios_l1_and_zero_and_one_epoch() -> None:
    args = build_parser().parse_args(["sensitivity", "--study", "x"])
    assert (args.ratios, args.criterion, args.epochs) == ("0.25,0.5,0.75,0.9", "l1", "0,1")


def _unfinished_studies(journal: Path, root: Path) -> None:
    """Studies whose baseline never finished, or whose network files are gone."""
    storage = optuna.storages.JournalStorage(
        optuna.storages.journal.JournalFileBackend(str(journal))
    )
    tiny = optuna.load_study(study_name="tiny", storage=storage).user_attrs[StudyKey.SETTINGS]
    names = [s.study_name for s in optuna.get_all_study_summaries(storage)]
    if "early" in names:
        return
    early = optuna.create_study(study_name="early", storage=storage, directions=["maximize"])
    early.set_user_attr(StudyKey.SETTINGS, {k: v for k, v in tiny.items() if k != "baseline_trial"})
    moved = optuna.create_study(study_name="moved", storage=storage, directions=["maximize"])
    moved.add_trial(optuna.trial.create_trial(value=1.0))
    moved.set_user_attr(
        StudyKey.SETTINGS, tiny | {"baseline_trial": 0, "trials_dir": str(root / "gone")}
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--study", "nope"], "no study 'nope' in .*; studies there: "),
        (["--study", "tiny", "--storage", "{root}/missing.journal"],
         "no study 'tiny': the storage .*missing.journal does not exist"),
        (["--study", "tiny", "--ratios", "0.5,1.5"], "must be in \\(0, 1\\), but got ratio=1.5"),
        (["--study", "tiny", "--ratios", "0"], "but got ratio=0$"),
        (["--study", "tiny", "--ratios", "half"], "comma-separated numbers"),
        (["--study", "tiny", "--criterion", "nope"], "unknown pruning criterion 'nope'"),
        (["--study", "early"], "the baseline of study 'early' has not finished"),
        (["--study", "moved"], "baseline network of study 'moved' is missing: .*gone"),
    ],
)  # fmt: skip
def test_bad_input_exits_2_with_one_line(
    study: dict[str, object], capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    root, uri = study["root"], study["uri"]
    assert isinstance(root, Path) and isinstance(uri, str)
    journal = root / "optuna.journal"
    _unfinished_studies(journal, root)
    args = [a.replace("{root}", str(root)) for a in args]
    if "--storage" not in args:
        args += ["--storage", str(journal)]
    before = len(_sensitivity_runs(uri))
    assert main(["sensitivity", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and err.startswith("tabslim: error: "), err
    assert re.search(message, err), err
    assert len(_sensitivity_runs(uri)) == before
    assert not (root / "missing.journal").exists()
