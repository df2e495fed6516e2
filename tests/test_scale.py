"""Work that scans rows stays in proportion on large tables: it reads a seeded sample.

Checked by what the work is given (row counts), never by timing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import torch
from mlflow.data import pandas_dataset
from mlflow.data.pandas_dataset import from_pandas
from torch import nn

from lightning_modules import preprocessing
from lightning_modules.data import TabularDataModule
from lightning_modules.networks import build
from lightning_modules.tables import read_table
from search.config import Config, DataConfig
from search.inputs import baseline_spec
from search.serving import build_profile
from search.serving import profile as profile_module
from search.tracking import store

# MLflow's own schema inference (the reference here) warns about integer columns.
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def _mixed_table(rows: int, seed: int = 0) -> pd.DataFrame:
    """Numeric (with gaps), integer, boolean and string columns, and a binary target."""
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame(
        {
            "amount": rng.normal(size=rows),
            "count": rng.integers(0, 50, size=rows),
            "flag": rng.random(rows) < 0.3,
            "shop": rng.choice(["north", "south", "east"], size=rows),
        }
    )
    frame.loc[rng.random(rows) < 0.05, "amount"] = np.nan
    frame["label"] = np.where(frame["amount"].fillna(0) + rng.normal(size=rows) > 0, "y", "n")
    return frame


def _mlflow_dataset(frame: pd.DataFrame) -> Any:
    """The dataset entity MLflow itself builds from every row (what tabslim logged before)."""
    return from_pandas(frame, targets="label", name="t")._to_mlflow_entity()


def test_a_large_logged_dataset_has_mlflows_schema_but_is_inferred_from_a_sample(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    data = TabularDataModule.from_frame(_mixed_table(20_000), "label")
    assert len(data.train_frame) > store._SCHEMA_ROWS
    inferred_rows: list[int] = []
    infer = pandas_dataset._infer_schema

    def counting_infer(frame: pd.DataFrame) -> Any:
        inferred_rows.append(len(frame))
        return infer(frame)

    monkeypatch.setattr(pandas_dataset, "_infer_schema", counting_infer)
    logged = store.training_dataset(data, DataConfig(path="t.csv", target="label")).dataset
    assert inferred_rows and max(inferred_rows) <= store._SCHEMA_ROWS
    monkeypatch.setattr(pandas_dataset, "_infer_schema", infer)
    whole = _mlflow_dataset(data.train_frame)
    assert json.loads(logged.schema) == json.loads(whole.schema)
    assert json.loads(logged.profile) == {
        "num_rows": len(data.train_frame),
        "num_elements": int(data.train_frame.size),
    }


def test_a_small_logged_dataset_is_the_one_mlflow_would_log() -> None:
    data = TabularDataModule.from_frame(_mixed_table(2_000), "label")
    logged = store.training_dataset(data, DataConfig(path="t.csv", target="label")).dataset
    whole = _mlflow_dataset(data.train_frame)
    assert (logged.digest, logged.schema, logged.profile) == (
        whole.digest,
        whole.schema,
        whole.profile,
    )


def test_the_digest_tells_tables_apart_beyond_the_rows_it_hashes() -> None:
    frame = _mixed_table(12_000)
    longer = pd.concat([frame, frame.tail(1)], ignore_index=True)
    renamed = frame.rename(columns={"count": "visits"})
    digests = {store._digest(f) for f in (frame, longer, renamed)}
    assert len(digests) == 3


class _RowCounter(nn.Module):
    """Wraps a network and records how many rows each forward pass receives."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network
        self.rows: list[int] = []

    def forward(self, x_num: torch.Tensor, x_cat: torch.Tensor) -> torch.Tensor:
        self.rows.append(len(x_num))
        return self.network(x_num, x_cat)


def test_the_profiles_importance_shuffles_at_most_its_sample_of_validation_rows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from search.config import Config

    data = TabularDataModule.from_frame(_mixed_table(2_000), "label")
    monkeypatch.setattr(profile_module, "IMPORTANCE_ROWS", 100)
    network = _RowCounter(build(baseline_spec(Config(), data), seed=0))
    profile = build_profile(data, network)
    columns = data.preprocessor.feature_columns
    # The validation metric reads every validation row once; each shuffled column, the sample.
    assert network.rows[0] == len(data.val_frame) > 100
    # The base metric on the sample, then three shuffles of each column (averaged).
    assert network.rows[1:] == [100] * (3 * len(columns) + 1)
    assert set(profile["importance"]) == set(columns)
    assert profile["validation"]["rows"] == len(data.val_frame)


def test_the_profiles_distributions_read_a_sample_of_training_rows(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from search.config import Config

    data = TabularDataModule.from_frame(_mixed_table(2_000), "label")
    monkeypatch.setattr(profile_module, "PROFILE_ROWS", 200)
    profile = build_profile(data, build(baseline_spec(Config(), data), seed=0))
    assert profile["training_rows"] == len(data.train_frame) > 200
    # "count" has no gaps: its bins hold exactly the sampled rows.
    assert sum(profile["columns"]["count"]["bin_counts"]) == 200


def test_parquet_is_read_column_by_column_into_the_frame_pandas_reads(tmp_path: Path) -> None:
    frame = _mixed_table(300)
    frame["kind"] = pd.Categorical(frame["shop"])
    frame.index = pd.Index([f"row{i}" for i in range(len(frame))], name="id")
    frame.to_parquet(tmp_path / "t.parquet")
    expected = pd.read_parquet(tmp_path / "t.parquet").reset_index(drop=True)
    pd.testing.assert_frame_equal(read_table(tmp_path / "t.parquet"), expected)


@pytest.mark.parametrize("suffix", ["parquet", "csv"])
def test_sample_rows_reads_the_same_seeded_rows_in_the_files_order(
    tmp_path: Path, suffix: str
) -> None:
    frame = _mixed_table(1000)
    frame["order"] = np.arange(len(frame))
    path = tmp_path / f"t.{suffix}"
    frame.to_parquet(path) if suffix == "parquet" else frame.to_csv(path, index=False)
    sample = read_table(path, sample_rows=200, seed=3)
    assert len(sample) == 200 and sample.attrs["rows_in_file"] == 1000
    assert sample["order"].is_monotonic_increasing and sample["order"].is_unique
    # The rows are the file's rows, whole: every column comes from the same row.
    original = frame.set_index("order").loc[sample["order"], "amount"].to_numpy()
    np.testing.assert_array_equal(sample["amount"].to_numpy(), original)
    # Every worker reads the same rows; another seed reads others; a short file reads whole.
    assert read_table(path, sample_rows=200, seed=3)["order"].tolist() == sample["order"].tolist()
    assert read_table(path, sample_rows=200, seed=4)["order"].tolist() != sample["order"].tolist()
    assert len(read_table(path, sample_rows=5000)) == 1000


def test_a_sampled_table_trains_on_its_sample_and_says_so(tmp_path: Path) -> None:
    from search.config import validate
    from search.inputs import load_data

    _mixed_table(2000).to_parquet(tmp_path / "t.parquet")
    raw = {"data": {"path": str(tmp_path / "t.parquet"), "target": "label", "sample_rows": 500}}
    data = load_data(validate(raw, "test"))
    parts = [data.train_frame, data.val_frame, data.certify_frame, data.test_frame]
    assert sum(len(part) for part in parts) == 500
    assert any("sample of 500 of the 2000 rows" in note for note in data.notes)
    with pytest.raises(ValueError, match="samples a data.path table"):
        validate({"data": {"dataset": "wine", "sample_rows": 500}}, "test")


def test_rows_are_preprocessed_in_blocks_with_the_same_result(
    monkeypatch: pytest.MonkeyPatch, small_table: pd.DataFrame
) -> None:
    prep = TabularDataModule.from_frame(small_table, "label").preprocessor
    whole = prep.transform_arrays(small_table)
    monkeypatch.setattr(preprocessing, "_BLOCK_ROWS", 7)
    blocks = prep.transform_arrays(small_table)
    for name in ("x_num", "x_cat"):
        np.testing.assert_array_equal(blocks[name], whole[name])
    assert blocks["x_num"].shape == (len(small_table), prep.d_num)


def test_whole_splits_are_scored_in_chunks_with_the_outputs_of_one_pass(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from lightning_modules.networks import base as networks_base
    from lightning_modules.networks import infer

    data = TabularDataModule.from_frame(_mixed_table(500), "label", batch_size=32)
    network = build(baseline_spec(Config(), data), seed=0)
    x_num, x_cat = data.tensors["train"]["x_num"], data.tensors["train"]["x_cat"]
    with torch.inference_mode():
        whole = network.eval()(x_num, x_cat)
    seen: list[int] = []
    network.register_forward_pre_hook(lambda _, args: seen.append(len(args[0])))
    monkeypatch.setattr(networks_base, "INFERENCE_ROWS", 64)
    chunked = infer(network, x_num, x_cat)
    assert max(seen) == 64 and sum(seen) == len(x_num)
    torch.testing.assert_close(chunked, whole, rtol=1e-6, atol=1e-6)


def test_the_sample_rows_flag_reaches_the_config_and_bad_use_is_one_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from search.commands import main

    code = main(["train", "--dataset", "wine", "--sample-rows", "500", "--tracking-uri",
                 f"sqlite:///{tmp_path / 'm.db'}"])  # fmt: skip
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1
    assert "data.sample_rows samples a data.path table, not a bundled dataset" in err[0]
    assert not (tmp_path / "m.db").exists()
