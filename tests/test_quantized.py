"""INT8 front members: quantized copies measured like trials, on the front, in MLflow, served."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import onnx
import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient

from search.commands import main
from search.config import PRECISIONS
from search.front import has_vnni, pareto
from search.measure import ort_session
from search.study import searched_trials

TINY = yaml.safe_load((Path(__file__).parent / "tiny_search.yaml").read_text())


@pytest.fixture(scope="module")
def searched(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    root = tmp_path_factory.mktemp("quantized")
    raw = yaml.safe_load(yaml.safe_dump(TINY))
    raw["data"] = {"dataset": "digits"}
    raw["model"] = {"hidden": [128, 64]}
    # Every trial's model is logged: since the latency objective times the served graph, the
    # preprocessing inside it, an INT8 copy of a small network is rarely faster, nor on the front.
    raw["search"] |= {"quantize": list(PRECISIONS), "n_trials": 5, "approaches": ["scratch"],
                      "max_metric_drop": 0.05, "keep_models": "all"}  # fmt: skip
    raw["search"]["latency"] = {"runtime": "onnxruntime", "batch_size": 256}
    config = root / "config.yaml"
    config.write_text(yaml.safe_dump(raw))
    journal, uri = str(root / "optuna.journal"), f"sqlite:///{root / 'mlflow.db'}"
    args = ["search", "--config", str(config), "--study", "q", "--storage", journal,
            "--tracking-uri", uri, "--quiet"]  # fmt: skip
    assert main(args) == 0
    storage = optuna.storages.JournalStorage(optuna.storages.journal.JournalFileBackend(journal))
    return {"args": args, "uri": uri, "root": root,
            "study": optuna.load_study(study_name="q", storage=storage)}  # fmt: skip


def _variants(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    return [t for t in study.trials if "variant_of" in t.user_attrs]


def test_every_fp32_front_member_gets_each_int8_variant(searched: dict[str, object]) -> None:
    study = searched["study"]
    assert isinstance(study, optuna.Study)
    variants = _variants(study)
    sources = {t.user_attrs["variant_of"] for t in variants}
    assert sources, "no variant was made"
    for source in sources:
        made = sorted(
            t.user_attrs["precision"] for t in variants if t.user_attrs["variant_of"] == source
        )
        assert made == sorted(PRECISIONS)
    for variant in variants:
        original = study.trials[variant.user_attrs["variant_of"]]
        metrics, base = variant.user_attrs["metrics"], original.user_attrs["metrics"]
        # Measured like any trial: both splits, paired deltas, size and the latency objective.
        for key in ("val_accuracy", "test_accuracy", "val_delta_ci_low", "test_delta",
                    "parameters", "size_bytes", "latency_onnxruntime_b256_median_ms"):  # fmt: skip
            assert key in metrics, key
        assert metrics["parameters"] == base["parameters"]
        assert variant.user_attrs["hidden"] == original.user_attrs["hidden"]
        # Quantization costs little accuracy here: within 3 of 270 validation rows.
        assert abs(metrics["val_accuracy"] - base["val_accuracy"]) <= 3 / 270 + 1e-9


def test_variants_do_not_count_as_searched_trials(searched: dict[str, object]) -> None:
    study = searched["study"]
    assert isinstance(study, optuna.Study)
    before = len(study.trials)
    assert searched_trials(study) == 5
    # The same command again trains nothing and makes no variant twice.
    args = searched["args"]
    assert isinstance(args, list) and main(args) == 0
    again = optuna.load_study(study_name="q", storage=study._storage)
    assert len(again.trials) == before


def test_variants_are_in_mlflow_and_the_report(
    searched: dict[str, object], capsys: pytest.CaptureFixture[str]
) -> None:
    study = searched["study"]
    assert isinstance(study, optuna.Study)
    mlflow.set_tracking_uri(str(searched["uri"]))
    client = MlflowClient()
    runs = client.search_runs(
        [e.experiment_id for e in client.search_experiments()],
        "tags.`tabslim.approach` = 'quantize'",
    )
    assert {r.data.tags["tabslim.precision"] for r in runs} == set(PRECISIONS)
    assert all("variant_of" in r.data.params for r in runs)
    capsys.readouterr()
    assert (
        main(["report", "--study", "q", "--storage", str(searched["root"] / "optuna.journal")]) == 0
    )
    out = capsys.readouterr().out
    assert "precision" in out.splitlines()[1]
    front = {t.number for t in pareto.front(study)}
    for variant in (t for t in _variants(study) if t.number in front):
        cells = [str(variant.number), "quantize", variant.user_attrs["precision"]]
        assert any(line.split()[:3] == cells for line in out.splitlines())


def test_a_logged_variant_serves_its_int8_graph(searched: dict[str, object]) -> None:
    study = searched["study"]
    assert isinstance(study, optuna.Study)
    mlflow.set_tracking_uri(str(searched["uri"]))
    client = MlflowClient()
    logged = [
        r for r in client.search_runs(
            [e.experiment_id for e in client.search_experiments()],
            "tags.`tabslim.approach` = 'quantize'",
        ) if "tabslim.model_uri" in r.data.tags
    ]  # fmt: skip
    assert logged, "no front variant had its model logged"
    run = logged[0]
    files = Path(mlflow.artifacts.download_artifacts(run.data.tags["tabslim.model_uri"]))
    graph = onnx.load(str(next(files.rglob("model.onnx"))))
    ops = {node.op_type for node in graph.graph.node}
    assert ops & {"DynamicQuantizeLinear", "QuantizeLinear", "MatMulInteger", "QLinearMatMul"}
    from lightning_modules.datasets import load_bundled

    rows = load_bundled("digits").drop(columns=["target"]).head(4)
    predicted = mlflow.pyfunc.load_model(run.data.tags["tabslim.model_uri"]).predict(rows)
    assert len(predicted) == 4


def test_dynamic_int8_depends_on_the_batch_and_static_does_not(searched: dict[str, object]) -> None:
    """The documented gotcha: dynamic quantization takes each call's activation range."""
    study = searched["study"]
    assert isinstance(study, optuna.Study)
    root = Path(str(searched["root"]))
    by_precision = {t.user_attrs["precision"]: t for t in _variants(study)}
    rng = np.random.default_rng(0)
    batch = rng.normal(size=(64, 64)).astype(np.float32)
    batch[0] *= 20  # one extreme row widens the batch's range
    differences = {}
    for precision, trial in by_precision.items():
        session = ort_session(next(root.rglob(f"trial-{trial.number}/model.onnx")), 1)
        name = session.get_inputs()[0].name
        together = session.run(None, {name: batch})[0][1:]
        alone = np.concatenate(
            [session.run(None, {name: batch[i : i + 1]})[0] for i in range(1, 64)]
        )
        differences[precision] = float(np.abs(together - alone).max())
    assert differences["int8_static"] < 1e-5
    assert differences["int8_dynamic"] > 1e-3


def test_reduce_range_follows_the_cpu() -> None:
    assert has_vnni("flags\t\t: fpu sse2 avx2 avx_vnni") is True
    assert has_vnni("flags\t\t: fpu sse2 avx512f avx512_vnni") is True
    assert has_vnni("flags\t\t: fpu sse2 avx2 fma") is False
    assert has_vnni("processor : 0\nFeatures : fp asimd") is True  # ARM: no flags line
