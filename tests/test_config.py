from __future__ import annotations

from pathlib import Path

import pytest

from lightning_modules.datasets import BUNDLED
from lightning_modules.errors import TabslimInputError
from search.config import Config, load_config, override, validate

DEFAULT_CONFIG = Path(__file__).resolve().parent.parent / "configs" / "default.yaml"


def test_without_a_file_the_config_is_the_built_in_defaults_wherever_it_runs(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # An installed wheel has no configs/ folder: the defaults must not be read from the tree.
    monkeypatch.chdir(tmp_path)
    config = load_config()
    assert config == Config()
    assert config.data.dataset in BUNDLED and config.data.path is None


def test_the_built_in_defaults_are_the_default_config() -> None:
    # A two-line config must not change what it does not name: the keys it omits take the
    # values of configs/default.yaml (a new user copies that file's keys one at a time).
    assert Config() == load_config(DEFAULT_CONFIG)
    partial = validate({"search": {"max_metric_drop": 0.5}}, "x")
    assert partial.training == load_config(DEFAULT_CONFIG).training


def test_omitted_sections_take_defaults() -> None:
    assert validate({}, "x") == Config()
    assert validate(None, "x").training.max_epochs == Config().training.max_epochs


@pytest.mark.parametrize(
    "raw, message",
    [
        ({"trainig": {}}, "unknown key 'trainig'; expected one of .*training"),
        (
            {"training": {"epochs": 3}},
            "unknown key 'training.epochs'; expected one of .*max_epochs",
        ),
        ({"training": {"max_epochs": "ten"}}, "training.max_epochs: .*integer, but got 'ten'"),
        ({"training": {"max_epochs": 0}}, "training.max_epochs: .*greater than or equal to 1"),
        ({"training": {"lr": -1.0}}, "training.lr: .*greater than 0"),
        (
            {"measure": {"served": "fast"}},
            "measure.served: input should be 'off', 'in_process' or 'http', but got 'fast'",
        ),
        ({"data": {"val_fraction": 0.7, "dataset": "wine"}}, "data.val_fraction: .*less than 0.5"),
        ({"data": {"dataset": "iris"}}, "data.dataset must be one of"),
        ({"data": {"dataset": "wine", "path": "a.csv"}}, "exactly one of"),
        ({"model": {"hidden": [64, 0]}}, "model.hidden widths must be at least 1"),
        ({"model": {"hidden": []}}, "model.hidden: "),
        ({"model": {"activation": "tanhh"}}, "model.activation must be one of"),
        ({"measure": {"runtimes": ["tensorrt"]}}, "measure.runtimes.0: .*'torch' or 'onnxruntime'"),
        ({"measure": {"batch_sizes": [0]}}, "measure.batch_sizes must be at least 1"),
        ({"model": {"batch_norm": "yes"}}, "model.batch_norm: .*boolean"),
        (["data"], "must be a mapping"),
        (
            {"search": {"fidelity": {"min_epochs": 3, "reduction": 1}}},
            "search.fidelity.reduction: .*greater than or equal to 2",
        ),
        ({"search": {"fidelity": {"rungs": 3}}}, "unknown key 'search.fidelity.rungs'"),
        ({"search": {"approaches": ["distil"]}}, "search.approaches.0: .*'distill'"),
        ({"search": {"distill": {"weight": 1.5}}}, "search.distill.weight: .*less than or equal"),
    ],
)
def test_bad_config_is_one_line_naming_the_key(raw: object, message: str) -> None:
    with pytest.raises(TabslimInputError, match=message) as caught:
        validate(raw, "'my.yaml'")
    assert "\n" not in str(caught.value)
    assert "my.yaml" in str(caught.value)


def test_missing_and_malformed_files(tmp_path: Path) -> None:
    with pytest.raises(TabslimInputError, match="does not exist"):
        load_config(tmp_path / "none.yaml")
    bad = tmp_path / "bad.yaml"
    bad.write_text("training:\n  max_epochs: [1,\n")
    with pytest.raises(TabslimInputError, match="not valid YAML at line"):
        load_config(bad)


def test_overrides_are_validated_and_switch_the_data_source() -> None:
    config = load_config()
    changed = override(config, "flags", **{"data.path": "t.csv", "training.max_epochs": 3})
    assert changed.data.path == "t.csv" and changed.data.dataset is None
    assert changed.training.max_epochs == 3
    assert override(config, "flags", **{"data.seed": None}) == config
    with pytest.raises(TabslimInputError, match="training.max_epochs"):
        override(config, "flags", **{"training.max_epochs": -2})


def test_training_threads_are_fixed_per_process() -> None:
    import os

    import torch

    from search.inputs import set_training_threads

    before = torch.get_num_threads()
    try:
        assert set_training_threads(validate({}, "x")) == 1 == torch.get_num_threads()
        everything = validate({"training": {"threads": 0}}, "x")
        assert set_training_threads(everything) == (os.cpu_count() or 1)
        assert set_training_threads(everything, workers=64) == 1
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("name", sorted(p.name for p in DEFAULT_CONFIG.parent.glob("*.yaml")))
def test_every_example_config_is_valid(name: str) -> None:
    assert load_config(DEFAULT_CONFIG.parent / name).model.kind


def test_the_s1_example_is_the_size_of_the_seeds_network() -> None:
    from lightning_modules.networks import MLPSpec, build
    from search.measure import count_parameters

    config = load_config(DEFAULT_CONFIG.parent / "s1.yaml")
    # The bench/make_table.py table: 41 numeric columns, 5 missing indicators, 4 categorical.
    spec = MLPSpec(
        hidden=tuple(config.model.group_sizes()),
        d_num=46,
        cat_cardinalities=(6, 41, 301, 1001),
        d_out=2,
        d_embedding=config.model.options.d_embedding,  # type: ignore[attr-defined]
    )
    assert 8.5e6 < count_parameters(build(spec)) < 10e6


def test_scratch_and_distill_share_per_layer_widths_for_any_sampler() -> None:
    # Both draw the same width parameters, so a sampler of shared parameters models them.
    both = {"sampler": "nsga2", "approaches": ["scratch", "distill"]}
    config = validate({"search": both | {"space": {"scheme": "per_layer"}}}, "x")
    assert config.search.approaches == ["scratch", "distill"]
    with pytest.raises(TabslimInputError, match="cannot model a study of both"):
        validate({"search": both | {"approaches": ["scratch", "distill", "prune"],
                                    "space": {"scheme": "per_layer"}}}, "x")  # fmt: skip
