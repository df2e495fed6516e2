"""One end-to-end `tabslim search` per network kind, then its sensitivity scan and its champion.

Each kind's search mixes scratch trials (narrower shapes) and prune trials (the trained
baseline pruned group by group, then fine-tuned), on a small bundled table.
"""

from __future__ import annotations

from pathlib import Path

import mlflow
import optuna
import pandas as pd
import pytest
import yaml

from lightning_modules.datasets import load_bundled
from lightning_modules.networks import spec_from_dict
from search.commands import main
from search.serving import load_network, predict_frame
from search.study import searched_trials

TINY = yaml.safe_load((Path(__file__).parent / "tiny_search.yaml").read_text())
MODELS = {
    "resnet": {"kind": "resnet", "d_main": 16, "hidden": [24, 16]},
    "ft_transformer": {
        "kind": "ft_transformer", "d_token": 16, "n_blocks": 2, "n_heads": 4, "ffn_hidden": 24
    },
    "cnn1d": {"kind": "cnn1d", "dense": 64, "length": 8, "skip": [8], "middle": [8]},
}  # fmt: skip


def _config(root: Path, model: dict[str, object]) -> Path:
    raw = yaml.safe_load(yaml.safe_dump(TINY))
    raw["model"] = model
    raw["search"]["n_trials"] = 5
    raw["search"]["prune"] = {"criteria": ["l1", "taylor"], "fine_tune_epochs": [1],
                              "keep_ratio": {"low": 0.25, "high": 1.0, "step": 0.25}}  # fmt: skip
    path = root / "config.yaml"
    path.write_text(yaml.safe_dump(raw))
    return path


@pytest.mark.parametrize("kind", list(MODELS))
def test_a_search_of_each_kind_runs_end_to_end(
    kind: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = _config(tmp_path, MODELS[kind])
    journal = str(tmp_path / "optuna.journal")
    uri = f"sqlite:///{tmp_path / 'mlruns' / 'mlflow.db'}"
    common = ["--storage", journal, "--tracking-uri", uri]
    assert main(["search", "--config", str(config), "--study", kind, *common, "--quiet"]) == 0

    study = optuna.load_study(
        study_name=kind,
        storage=optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(journal)),
    )
    done = [t for t in study.trials if t.state == optuna.trial.TrialState.COMPLETE]
    assert len(done) == 5
    baseline = next(t for t in done if t.user_attrs.get("baseline"))
    sizes = baseline.user_attrs["hidden"]
    for trial in done:
        spec = spec_from_dict(trial.user_attrs["spec"])
        assert spec.kind == kind and list(spec.group_sizes()) == trial.user_attrs["hidden"]
        assert all(w <= b for w, b in zip(trial.user_attrs["hidden"], sizes, strict=True))
    # Both approaches ran, and at least one trial is smaller than the baseline.
    assert {t.user_attrs["approach"] for t in done} == {"scratch", "prune"}
    assert min(t.values[0] for t in done) < baseline.values[0]

    capsys.readouterr()
    code = main(["sensitivity", "--study", kind, *common, "--ratios", "0.5", "--epochs", "0"])
    assert code == 0
    table = capsys.readouterr().out
    for name in spec_from_dict(baseline.user_attrs["spec"]).group_names():
        assert f"{name} (" in table

    mlflow.set_tracking_uri(uri)
    rows = load_bundled("wine").drop(columns=["target"]).head(7)
    served = mlflow.pyfunc.load_model(f"models:/{kind}@champion").predict(rows)
    files = Path(mlflow.artifacts.download_artifacts(f"models:/{kind}@champion"))
    spec, network, preprocessor = load_network(files / "artifacts" / "network")
    assert spec.kind == kind
    local = predict_frame(network, preprocessor, rows)
    assert served["prediction"].tolist() == local["prediction"].tolist()
    probabilities = [c for c in served.columns if c.startswith("proba_")]
    pd.testing.assert_frame_equal(served[probabilities], local[probabilities], atol=1e-5)

    # Retraining works for the kind: both challengers train at the champion's widths.
    new_rows = tmp_path / "new.csv"
    load_bundled("wine").to_csv(new_rows, index=False)
    capsys.readouterr()
    code = main(["retrain", "--model", kind, "--data", str(new_rows), "--target", "target",
                 "--config", str(config), "--tracking-uri", uri, "--force"])  # fmt: skip
    out = capsys.readouterr().out
    assert code == 0 and "scratch" in out and "fine_tune" in out, out


FT = MODELS["ft_transformer"]


@pytest.mark.parametrize(
    ("model", "search", "message"),
    [
        (
            {"kind": "transformer"},
            {},
            "model.kind must be one of ['accordion', 'cnn1d', 'ft_transformer', 'mlp', 'resnet']",
        ),
        (FT | {"n_heads": 5}, {}, "model.n_heads must divide model.d_token, but got n_heads=5"),
        (MODELS["cnn1d"] | {"dense": 60}, {}, "model.dense must be a whole number of channels"),
        (FT | {"hidden": [8]}, {}, "unknown key 'model.hidden' for model.kind 'ft_transformer'"),
        (
            FT,
            {"prune": {"order": ["token", "block7.ffn"]}},
            "search.prune.order names group 'block7.ffn', which the ft_transformer baseline does "
            "not have",
        ),
        (
            FT,
            {"prune": {"keep_ratio": {"low": 0.1, "high": 1.0}}},
            "keep_ratio low=0.1 would leave group block0.heads (width 4) empty",
        ),
        (
            MODELS["resnet"],
            {"prune": {"criteria": ["bn_scale"]}},
            "'bn_scale', but the resnet baseline has groups without BatchNorm",
        ),
        (MODELS["resnet"], {"space": {"remove_layers": True}}, "a resnet keeps its blocks"),
    ],  # fmt: skip
)
def test_bad_kind_input_is_one_line_and_exit_2(
    model: dict[str, object],
    search: dict[str, object],
    message: str,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    raw = yaml.safe_load(yaml.safe_dump(TINY))
    raw["model"] = model
    for key, value in search.items():
        raw["search"][key] = (
            raw["search"].get(key, {}) | value if isinstance(value, dict) else value
        )
    path = tmp_path / "bad.yaml"
    path.write_text(yaml.safe_dump(raw))
    journal = tmp_path / "optuna.journal"
    code = main(["search", "--config", str(path), "--storage", str(journal), "--quiet"])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and message in err[0], err
    assert not journal.exists()


CONFIGS = Path(__file__).resolve().parent.parent / "configs"


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["resnet", "ft_transformer", "cnn1d"])
def test_the_example_baseline_of_the_seeds_size_runs_a_search_on_cpu(
    kind: str, tmp_path: Path
) -> None:
    """configs/<kind>.yaml as it stands (1.5M+ parameters), cut to 3 trials of 1 epoch."""
    journal = str(tmp_path / "optuna.journal")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    args = ["search", "--config", str(CONFIGS / f"{kind}.yaml"), "--study", kind,
            "--storage", journal, "--tracking-uri", uri, "--n-trials", "3", "--max-epochs", "1",
            "--quiet"]  # fmt: skip
    assert main(args) == 0
    study = optuna.load_study(
        study_name=kind,
        storage=optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(journal)),
    )
    baseline = next(t for t in study.trials if t.user_attrs.get("baseline"))
    assert spec_from_dict(baseline.user_attrs["spec"]).kind == kind
    assert baseline.user_attrs["metrics"]["parameters"] >= 1_500_000
    assert searched_trials(study) == 3
    # The example configs keep INT8 copies of the front on: each fp32 member got both.
    variants = [t for t in study.trials if "variant_of" in t.user_attrs]
    assert len(variants) == 2 * len({t.user_attrs["variant_of"] for t in variants}) >= 2
