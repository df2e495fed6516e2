"""The label-free estimate against the realized accuracy, and against NannyML's CBPE on the
same model's outputs.

Per table: `tabslim train` on a seeded sample (its CBPE calibrated on the certification rows),
then the logged model serves two sets of rows the training never saw: **reference** rows of the
same distribution, and **shifted** rows, the rest of the table above one feature's median (a
shift of the features alone; the rule from features to target is the table's own). On the
shifted rows it reports tabslim's estimate, the realized accuracy, and NannyML's CBPE fitted
on the reference rows' outputs and labels (as NannyML is meant to be used).

NannyML is not a dependency: it runs in an environment of its own (`--nannyml-python`, a venv
with `pip install nannyml`), fed the model's outputs through a Parquet file.

Run: `.venv/bin/python bench/cbpe_nannyml.py --tables tv16.csv:votetrump:age,mpls.csv:
personSearch:lat --nannyml-python /tmp/nm/bin/python`. A table is `FILE:TARGET:SHIFT_COLUMN`.
It prints one line per table; it asserts nothing.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

import numpy as np
import pandas as pd

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from lightning_modules.tables import read_table  # noqa: E402
from search.commands import run_train  # noqa: E402
from search.config import validate  # noqa: E402
from search.monitor.estimated import estimated_metric  # noqa: E402
from search.monitor.realized import served_frame  # noqa: E402
from search.serving import read_profile  # noqa: E402

# Run in NannyML's environment: CBPE fitted on the reference rows, estimated on the shifted.
_NANNYML = """
import json, sys, warnings
import pandas as pd
import nannyml as nml
warnings.filterwarnings("ignore")
reference = pd.read_parquet(sys.argv[1]); shifted = pd.read_parquet(sys.argv[2])
probas = [c for c in reference.columns if c.startswith("proba_")]
binary = len(probas) == 2
kwargs = dict(y_pred="y_pred", y_true="y_true", metrics=["accuracy"], chunk_number=1)
if binary:
    kwargs |= dict(y_pred_proba=probas[1], problem_type="classification_binary")
else:
    kwargs |= dict(y_pred_proba={c.removeprefix("proba_"): c for c in probas},
                   problem_type="classification_multiclass")
cbpe = nml.CBPE(**kwargs).fit(reference)
result = cbpe.estimate(shifted).to_df()
value = float(result[("accuracy", "value")].iloc[-1])
print(json.dumps({"nannyml": value}))
"""


def _outputs(served: pd.DataFrame, labels: pd.Series, positive: object) -> pd.DataFrame:
    frame = served[[c for c in served.columns if str(c).startswith("proba_")]].copy()
    frame["y_pred"] = served["prediction"].astype(str).to_numpy()
    frame["y_true"] = labels.astype(str).to_numpy()
    if positive is not None and frame.shape[1] == 4:  # binary: NannyML wants 0/1
        frame["y_pred"] = (frame["y_pred"] == str(positive)).astype(int)
        frame["y_true"] = (frame["y_true"] == str(positive)).astype(int)
    return frame


def run_table(spec: str, sample: int, reference_rows: int, nannyml: str | None) -> dict:
    file, target, shift = spec.rsplit(":", 2)
    frame = read_table(file)
    frame = frame[frame[target].notna()].reset_index(drop=True)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(frame))
    train, rest = frame.iloc[order[:sample]], frame.iloc[order[sample:]]
    reference = rest.iloc[:reference_rows]
    pool = rest.iloc[reference_rows:]
    shifted = pool[pool[shift] > pool[shift].median()]
    with tempfile.TemporaryDirectory() as tmp_name:
        tmp = Path(tmp_name)
        train.to_csv(tmp / "train.csv", index=False)
        raw = {
            "data": {"path": str(tmp / "train.csv"), "target": target},
            "tracking": {"uri": f"sqlite:///{tmp / 'mlflow.db'}"},
        }
        outcome = run_train(validate(raw, "bench"), progress_bar=False)
        import mlflow

        mlflow.set_tracking_uri(raw["tracking"]["uri"])
        local = Path(mlflow.artifacts.download_artifacts(artifact_uri=outcome.model_uri))
        network_dir = local / "artifacts" / "network"
        profile = read_profile(network_dir, outcome.model_uri)
        served = {
            name: served_frame(network_dir, rows.drop(columns=[target]))
            for name, rows in (("reference", reference), ("shifted", shifted))
        }
        estimate = estimated_metric(
            profile, network_dir, shifted.drop(columns=[target]), served["shifted"]
        )
        on_reference = estimated_metric(
            profile, network_dir, reference.drop(columns=[target]), served["reference"]
        )
        realized = float(np.mean(
            served["shifted"]["prediction"].astype(str).to_numpy()
            == shifted[target].astype(str).to_numpy()
        ))  # fmt: skip
        result = {
            "table": Path(file).stem,
            "shift": f"{shift} above its median",
            "rows": len(shifted),
            "realized": realized,
            "tabslim": None if estimate is None else estimate.value,
            "tabslim_reference": None if on_reference is None else on_reference.value,
            "calibration_rows": int(profile["validation"]["rows"]),
            "reference_rows_accuracy": float(
                np.mean(
                    served["reference"]["prediction"].astype(str).to_numpy()
                    == reference[target].astype(str).to_numpy()
                )  # fmt: skip
            ),
        }
        if nannyml:
            positive = profile.get("positive_class") or (
                sorted(reference[target].astype(str).unique())[-1]
                if reference[target].nunique() == 2
                else None
            )
            for name, rows in (("reference", reference), ("shifted", shifted)):
                _outputs(served[name], rows[target], positive).to_parquet(tmp / f"{name}.parquet")
            done = subprocess.run(
                [nannyml, "-c", _NANNYML, str(tmp / "reference.parquet"),
                 str(tmp / "shifted.parquet")],
                capture_output=True, text=True, check=False,
            )  # fmt: skip
            if done.returncode == 0:
                result |= json.loads(done.stdout.strip().splitlines()[-1])
            else:
                result["nannyml_error"] = done.stderr.strip().splitlines()[-1]
    return result


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--tables", required=True, help="FILE:TARGET:SHIFT_COLUMN,...")
    parser.add_argument("--sample", type=int, default=6000)
    parser.add_argument("--reference-rows", type=int, default=5000)
    parser.add_argument("--nannyml-python", help="a python with nannyml installed")
    args = parser.parse_args(argv)
    warnings.filterwarnings("ignore")
    for spec in args.tables.split(","):
        r = run_table(spec, args.sample, args.reference_rows, args.nannyml_python)
        nannyml = f"{r['nannyml']:.4f}" if "nannyml" in r else r.get("nannyml_error", "-")
        tabslim = f"{r['tabslim']:.4f}" if r["tabslim"] is not None else "-"
        print(
            f"{r['table']} ({r['shift']}, {r['rows']} rows): realized {r['realized']:.4f}, "
            f"tabslim CBPE {tabslim}, NannyML CBPE {nannyml}; on the reference rows realized "
            f"{r['reference_rows_accuracy']:.4f}, tabslim CBPE {r['tabslim_reference']:.4f} "
            f"(calibrated on {r['calibration_rows']} rows)",
            flush=True,
        )


if __name__ == "__main__":
    main()
