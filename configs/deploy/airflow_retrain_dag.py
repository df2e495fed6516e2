"""An Airflow DAG that retrains the champion every night with `tabslim retrain`.

Copy it into the DAGs folder of an Airflow 2.x installation that can run tabslim (the same
image, or a virtualenv with it on PATH). The task fails only on exit code 1 (a bug) or 2 (bad
input); "promoted", "champion kept" and "no retrain" all exit 0 and are in the task's log.

When the labels come late, the day's file holds the rows whose target is still empty: the
champion is judged on them by its estimated metric (CBPE or DLE, stored with the model) and its
drift, and challengers train on the labelled rows. "retrain needed, too few labels" (exit 0)
says a retrain was called for before enough labels arrived; the DAG's next run, with them,
does it.
"""

from __future__ import annotations

from datetime import datetime

from airflow import DAG
from airflow.operators.bash import BashOperator

RETRAIN = (
    "tabslim retrain --model churn --data /data/new/{{ ds }}.csv --target churned "
    "--time-column signup --tracking-uri http://mlflow:5000"
)

with DAG(
    dag_id="tabslim_retrain",
    schedule="30 2 * * *",
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,  # one retrain at a time, as the registry expects
    tags=["tabslim"],
) as dag:
    BashOperator(task_id="retrain", bash_command=RETRAIN)
