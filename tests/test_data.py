from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch

from lightning_modules.data import (
    InMemoryBatches,
    TabularDataModule,
)
from lightning_modules.datasets import BUNDLED, TARGET, load_bundled
from lightning_modules.errors import TabslimInputError
from lightning_modules.preprocessing import Preprocessor, infer_task
from lightning_modules.splits import MIN_ROWS_PER_SPLIT
from lightning_modules.tables import read_table

# name: (rows, feature columns, task, network outputs)
BUNDLED_TABLES = {
    "breast_cancer": (569, 30, "binary", 2),
    "digits": (1797, 64, "multiclass", 10),
    "wine": (178, 13, "multiclass", 3),
    "diabetes": (442, 10, "regression", 1),
    "synthetic_classification": (2000, 15, "multiclass", 3),
    "synthetic_regression": (2000, 15, "regression", 1),
    # Binary when inferred: task anomaly is used only when asked (tests/test_anomaly.py).
    "synthetic_fraud": (6000, 17, "binary", 2),
}


def test_every_bundled_dataset_is_checked_below() -> None:
    assert set(BUNDLED_TABLES) == set(BUNDLED)


@pytest.mark.parametrize("name", list(BUNDLED_TABLES))
def test_bundled_dataset_loads_its_rows_target_and_task_into_disjoint_splits(name: str) -> None:
    rows, features, task, d_out = BUNDLED_TABLES[name]
    frame = load_bundled(name)
    assert frame.shape == (rows, features + 1)
    assert frame.columns[-1] == TARGET and frame[TARGET].notna().all()
    data = TabularDataModule.from_bundled(name)
    assert data.task == task
    assert data.network_inputs()["d_out"] == d_out
    assert data.preprocessor.feature_columns == list(frame.columns[:-1])
    parts = [data.train_frame, data.val_frame, data.test_frame]
    n_held_out = round(0.15 * rows)  # the default validation and test fractions
    assert [len(part) for part in parts] == [rows - 2 * n_held_out, n_held_out, n_held_out]
    # No row is in two splits, and together the splits are the table, row for row.
    train, val, test = (set(part.index) for part in parts)
    assert not (train & val or train & test or val & test)
    assert pd.concat(parts).sort_index().equals(frame)
    for split, part in zip(("train", "val", "test"), parts, strict=True):
        assert len(data.tensors[split]["y"]) == len(part)


def test_synthetic_table_has_categories_and_gaps_and_is_seeded() -> None:
    frame = load_bundled("synthetic_classification", seed=3)
    assert frame.isna().any().any()
    assert not pd.api.types.is_numeric_dtype(frame["color"])
    assert frame.equals(load_bundled("synthetic_classification", seed=3))
    assert not frame.equals(load_bundled("synthetic_classification", seed=4))


def test_preprocessing_is_fitted_on_the_training_split_only(small_table: pd.DataFrame) -> None:
    data = TabularDataModule.from_frame(small_table, "label", seed=1)
    prep = data.preprocessor
    train_f1 = data.train_frame["f1"]
    assert prep.means[prep.numeric.index("f1")] == pytest.approx(train_f1.mean())
    assert prep.means[prep.numeric.index("f1")] != pytest.approx(small_table["f1"].mean())
    x = data.tensors["train"]["x_num"][:, prep.numeric.index("f1")]
    assert float(x.mean()) == pytest.approx(0.0, abs=1e-5)
    assert float(x.std(unbiased=False)) == pytest.approx(1.0, abs=1e-4)


def test_missing_values_get_an_indicator_and_the_training_median(
    small_table: pd.DataFrame, small_data: TabularDataModule
) -> None:
    prep = small_data.preprocessor
    assert prep.indicators == ["f0"]
    rows = small_table.head(3).copy()
    rows.loc[0, "f0"] = np.nan
    x = prep.transform(rows)["x_num"]
    assert x.shape[1] == len(prep.numeric) + 1 == prep.d_num
    assert x[0, -1] == 1.0 and x[1, -1] == float(np.isnan(rows.loc[1, "f0"]))
    median = prep.medians[prep.numeric.index("f0")]
    expected = (median - prep.means[0]) / prep.stds[0]
    assert float(x[0, 0]) == pytest.approx(expected, abs=1e-5)


def test_unseen_category_maps_to_the_reserved_index(
    small_table: pd.DataFrame, small_data: TabularDataModule
) -> None:
    prep = small_data.preprocessor
    rows = small_table.head(2).copy()
    rows["shop"] = ["west", "north"]
    codes = prep.transform(rows)["x_cat"][:, 0]
    assert codes[0] == 0
    assert codes[1] == 1 + prep.categorical["shop"].index("north")
    assert prep.cat_cardinalities == (len(prep.categorical["shop"]) + 1,)


def test_preprocessor_round_trips_through_json(
    small_table: pd.DataFrame, small_data: TabularDataModule
) -> None:
    prep = small_data.preprocessor
    again = Preprocessor.from_dict(json.loads(json.dumps(prep.to_dict())))
    a, b = prep.transform(small_table), again.transform(small_table)
    assert torch.equal(a["x_num"], b["x_num"]) and torch.equal(a["x_cat"], b["x_cat"])
    assert again.classes == ["no", "yes"]


def test_split_is_seeded_and_stratified(small_table: pd.DataFrame) -> None:
    a = TabularDataModule.from_frame(small_table, "label", seed=5)
    b = TabularDataModule.from_frame(small_table, "label", seed=5)
    c = TabularDataModule.from_frame(small_table, "label", seed=6)
    assert a.test_frame.index.equals(b.test_frame.index)
    assert not a.test_frame.index.equals(c.test_frame.index)
    overall = (small_table["label"] == "yes").mean()
    for part in (a.train_frame, a.val_frame, a.test_frame):
        assert (part["label"] == "yes").mean() == pytest.approx(overall, abs=0.05)
    indices = set(a.train_frame.index) | set(a.val_frame.index) | set(a.test_frame.index)
    assert len(indices) == len(small_table)


@pytest.mark.parametrize("batch_size", [1, 7, 64, 1000])
def test_in_memory_batches_cover_every_row_once(batch_size: int) -> None:
    tensors = {"x": torch.arange(100).unsqueeze(1), "y": torch.arange(100)}
    batches = InMemoryBatches(tensors, batch_size, shuffle=True, seed=0)
    seen = torch.cat([batch["y"] for batch in batches])
    assert len(list(batches)) == len(batches) == -(-100 // batch_size)
    assert sorted(seen.tolist()) == list(range(100))
    # Features and targets are shuffled together, and the order is fixed by the seed.
    assert all(torch.equal(batch["x"][:, 0], batch["y"]) for batch in batches)
    again = InMemoryBatches(tensors, batch_size, shuffle=True, seed=0)
    assert torch.equal(seen, torch.cat([batch["y"] for batch in again]))


@pytest.mark.parametrize(("batch_size", "per_item"), [(7, 1), (16, 3), (64, 8)])
def test_device_resident_batches_are_the_rows_of_the_seeded_cpu_order(
    batch_size: int, per_item: int
) -> None:
    # The expected batches are computed here as the loader always sliced them: one CPU
    # generator, one randperm per epoch, slices of batch_size, grouped per_item at a time.
    rows = 100
    tensors = {"x_num": torch.randn(rows, 3), "y": torch.arange(rows)}
    loader = InMemoryBatches(
        tensors, batch_size, shuffle=True, seed=5, batches_per_item=per_item, device="cpu"
    )
    generator = torch.Generator().manual_seed(5)
    for _ in range(2):  # a second epoch draws the generator's next order
        order = torch.randperm(rows, generator=generator)
        expected = [order[i : i + batch_size] for i in range(0, rows, batch_size)]
        items = list(loader)
        got = [b for item in items for b in (item if per_item > 1 else [item])]
        assert len(items) == len(loader) == -(-len(expected) // per_item)
        assert len(got) == len(expected)
        for batch, index in zip(got, expected, strict=True):
            assert torch.equal(batch["y"], index)
            assert torch.equal(batch["x_num"], tensors["x_num"][index])
    # Evaluation loaders keep the rows in order.
    plain = InMemoryBatches(tensors, 30, shuffle=False, device="cpu")
    assert torch.equal(torch.cat([b["y"] for b in plain]), tensors["y"])


def test_loaders_stay_on_the_cpu_without_a_trainer(small_data: TabularDataModule) -> None:
    assert small_data.trainer is None
    for loader in (
        small_data.train_dataloader(),
        small_data.val_dataloader(),
        small_data.test_dataloader(),
    ):
        assert loader.device == torch.device("cpu")
    # No copy on the CPU: the evaluation loader slices the data module's own tensors.
    assert small_data.val_dataloader().tensors["x_num"] is small_data.tensors["val"]["x_num"]


@pytest.mark.parametrize(
    "values, task",
    [
        ([0, 1, 0, 1], "binary"),
        (["a", "b", "c", "a"], "multiclass"),
        ([1, 2, 3, 4, 5], "multiclass"),
        ([0.5, 1.25, 3.0, 2.2], "regression"),
        (list(range(100)), "regression"),
    ],
)
def test_task_is_inferred_from_the_target(values: list[object], task: str) -> None:
    assert infer_task(pd.Series(values)) == task


def test_parquet_is_read(tmp_path: Path, small_table: pd.DataFrame) -> None:
    path = tmp_path / "t.parquet"
    small_table.to_parquet(path)
    data = TabularDataModule.from_path(path, "label")
    assert data.task == "binary"
    assert len(read_table(path)) == len(small_table)


def test_regression_target_is_standardised_on_train(small_table: pd.DataFrame) -> None:
    frame = small_table.assign(amount=small_table["f1"] * 100 + 5000.5)
    data = TabularDataModule.from_frame(frame.drop(columns=["label"]), "amount")
    assert data.task == "regression"
    y = data.tensors["train"]["y"]
    assert y.shape[1] == 1 and float(y.mean()) == pytest.approx(0.0, abs=1e-4)
    decoded = data.preprocessor.decode(y)["prediction"]
    assert np.allclose(decoded, data.train_frame["amount"].to_numpy(), atol=1e-2)


def _write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "bad.csv"
    path.write_text(text)
    return path


def test_missing_file_names_the_file(tmp_path: Path) -> None:
    with pytest.raises(TabslimInputError, match="nope.csv' does not exist"):
        TabularDataModule.from_path(tmp_path / "nope.csv", "y")


def test_empty_csv_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(TabslimInputError, match="is empty"):
        read_table(_write(tmp_path, ""))
    with pytest.raises(TabslimInputError, match="no rows"):
        read_table(_write(tmp_path, "a,b,y\n"))


def test_unreadable_csv_is_a_clear_error(tmp_path: Path) -> None:
    path = tmp_path / "bin.csv"
    path.write_bytes(b"\xff\xfe\x00\x81garbage\x00\n\x92\x93")
    with pytest.raises(TabslimInputError, match="could not read"):
        read_table(path)


def test_bad_tables_are_clear_errors(small_table: pd.DataFrame) -> None:
    cases: list[tuple[pd.DataFrame, str, str | None, str]] = [
        (small_table, "price", None, "target column 'price' is not in"),
        (small_table.assign(label=np.nan), "label", None, "entirely missing"),
        (small_table.assign(label="yes"), "label", None, "single class"),
        (small_table, "label", "regression", "not numeric"),
        (small_table.assign(f3=np.nan), "label", None, "column 'f3' .* entirely missing"),
        (small_table.head(12), "label", None, "too few rows"),
    ]
    for frame, target, task, message in cases:
        with pytest.raises(TabslimInputError, match=message):
            TabularDataModule.from_frame(frame, target, task=task)


def test_rows_without_a_target_are_left_out(small_table: pd.DataFrame) -> None:
    frame = small_table.copy()
    frame.loc[:9, "label"] = np.nan
    data = TabularDataModule.from_frame(frame, "label")
    n = len(data.train_frame) + len(data.val_frame) + len(data.test_frame)
    assert n == len(frame) - 10


def test_unknown_bundled_dataset_names_the_known_ones() -> None:
    with pytest.raises(TabslimInputError, match="unknown bundled dataset 'iris'; .*'wine'"):
        load_bundled("iris")


def test_the_table_notes_say_what_trains_without_error_but_not_as_meant(
    small_table: pd.DataFrame,
) -> None:
    from lightning_modules.data import table_notes

    assert table_notes(small_table, "label") == []
    table = small_table.assign(
        customer=[f"c{i}" for i in range(len(small_table))],
        region="north",
        unit="kg",
        row_id=np.random.default_rng(0).permutation(len(small_table)) + 1000,
    )
    table.loc[:3, "label"] = None
    assert table_notes(table, "label") == [
        "4 rows have no target value and are left out",
        "2 columns ('region', 'unit') have a single value; it carries nothing, drop it",
    ]


def test_identifiers_and_dates_are_left_out_with_a_note(small_table: pd.DataFrame) -> None:
    # As a new user found it: an ID and a text timestamp, embedded as categories, tripled the
    # parameters of the first layer's input.
    days = pd.date_range("2024-01-01", periods=len(small_table), freq="D")
    table = small_table.assign(
        customer_id=[f"c{i:05d}" for i in range(len(small_table))],
        signup=days.strftime("%Y-%m-%d %H:%M"),
        row_id=np.random.default_rng(0).permutation(len(small_table)),
    )
    data = TabularDataModule.from_frame(table, "label")
    plain = TabularDataModule.from_frame(small_table, "label")
    assert set(data.dropped) == {"customer_id", "signup", "row_id"}
    assert data.network_inputs() == plain.network_inputs()
    assert "customer_id" not in data.preprocessor.feature_columns
    notes = "\n".join(data.notes)
    assert "column 'customer_id' is left out: nearly every row has its own value" in notes
    assert "column 'signup' is left out: it holds dates or times" in notes
    assert "column 'row_id' is left out: it counts rows" in notes


def test_a_time_column_splits_in_time_and_is_never_a_feature(small_table: pd.DataFrame) -> None:
    n = len(small_table)
    # `key` rises with time (as floats it is a feature, not an identifier); rows are shuffled.
    stamps = pd.date_range("2024-01-01", periods=n, freq="h").strftime("%Y-%m-%dT%H:%M")
    table = small_table.assign(key=np.arange(n) + 0.5, at=stamps)
    table = table.iloc[np.random.default_rng(1).permutation(n)].reset_index(drop=True)
    data = TabularDataModule.from_frame(table, "label", time_column="at", drop_columns=["f5"])
    assert data.dropped == {
        "f5": "named by --drop-columns",
        "at": "it is the time column, which orders the split",
    }
    # Every training row is older than every validation row, and those than the test rows.
    train, val, test = (part["key"] for part in (data.train_frame, data.val_frame, data.test_frame))
    assert train.max() < val.min() and val.max() < test.min()
    assert "at" not in data.preprocessor.feature_columns


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"drop_columns": ["nope"]}, "the table has no column 'nope'"),
        ({"time_column": "shop"}, "time column 'shop' cannot be parsed as dates or numbers"),
        ({"drop_columns": ["label"]}, "the target 'label' cannot be dropped"),
    ],
)
def test_bad_column_roles_are_one_line(
    small_table: pd.DataFrame, kwargs: dict[str, object], message: str
) -> None:
    with pytest.raises(TabslimInputError, match=message):
        TabularDataModule.from_frame(small_table, "label", **kwargs)


def test_a_metric_no_better_than_a_constant_guess_is_named_as_such() -> None:
    from lightning_modules.evaluation import constant_prediction_metric, no_better_than_constant

    classes = TabularDataModule.from_bundled("digits")
    chance = constant_prediction_metric(classes)
    assert no_better_than_constant(classes, chance) == (
        f"always predicting the most frequent class ({chance:.4g})"
    )
    assert no_better_than_constant(classes, chance + 0.01) is None
    values = TabularDataModule.from_bundled("diabetes")
    mean_rmse = constant_prediction_metric(values)
    assert "the training mean" in str(no_better_than_constant(values, mean_rmse * 1.01))
    assert no_better_than_constant(values, mean_rmse * 0.9) is None  # lower RMSE is better


def test_refolded_deals_training_and_validation_rows_into_disjoint_folds() -> None:
    data = TabularDataModule.from_bundled("wine")
    known = pd.concat([data.train_frame, data.val_frame], ignore_index=True)
    folds = [data.refolded(k, 3, seed=0) for k in range(3)]
    held_out = pd.concat([f.certify_frame for f in folds], ignore_index=True)
    # Each row is held out exactly once; a fold trains on the rest, less an inner split that
    # early-stops its networks; the test rows never move.
    key = list(known.columns)
    assert (
        held_out.sort_values(key)
        .reset_index(drop=True)
        .equals(known.sort_values(key).reset_index(drop=True))
    )
    for fold in folds:
        parts = [fold.train_frame, fold.val_frame, fold.certify_frame]
        assert sum(len(p) for p in parts) == len(known)
        # No row that stops a fold's networks is a row the fold scores them on.
        stopping = fold.val_frame.merge(fold.certify_frame, how="inner", on=key)
        assert len(stopping) == 0 and len(fold.val_frame) >= MIN_ROWS_PER_SPLIT
        assert fold.test_frame.equals(data.test_frame)
        assert fold.preprocessor.classes == data.preprocessor.classes
        assert len(fold.tensors["certify"]["y"]) == len(fold.certify_frame)
    # Refitted on each fold's own training rows.
    assert not np.allclose(folds[0].preprocessor.means, folds[1].preprocessor.means)
    assert data.refolded(1, 3, seed=0).certify_frame.equals(folds[1].certify_frame)
    with pytest.raises(ValueError, match="n_folds >= 2"):
        data.refolded(0, 1)
