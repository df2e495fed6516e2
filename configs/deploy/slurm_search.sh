#!/usr/bin/env bash
# A tabslim search over a SLURM job array: task 0 is the coordinator (`tabslim search`), the
# others are workers (`tabslim worker`) on whatever nodes SLURM gives them, one GPU each.
#
#   sbatch --export=ALL,TABSLIM_STORAGE,TABSLIM_TRACKING configs/deploy/slurm_search.sh
#
# Needs, reachable from every node (see the README, "Search across machines"):
#   TABSLIM_STORAGE   the study's PostgreSQL, e.g. postgresql+psycopg://tabslim@db-host/tabslim
#                     (its password in ~/.pgpass or PGPASSWORD, never on this line)
#   TABSLIM_TRACKING  the MLflow tracking server, e.g. http://mlflow-host:5000
# and this repository installed on a path every node sees (`make install`), or in the image.
#SBATCH --job-name=tabslim
#SBATCH --array=0-4
#SBATCH --gres=gpu:1
#SBATCH --cpus-per-task=4
#SBATCH --time=04:00:00
#SBATCH --output=tabslim-%A_%a.out
set -euo pipefail

TABSLIM="${TABSLIM:-.venv/bin/tabslim}"
CONFIG="${CONFIG:-configs/default.yaml}"
STUDY="${STUDY:-tabslim-${SLURM_ARRAY_JOB_ID}}"
: "${TABSLIM_STORAGE:?set TABSLIM_STORAGE to the PostgreSQL URL of the study}"
: "${TABSLIM_TRACKING:?set TABSLIM_TRACKING to the MLflow server, http://HOST:PORT}"

if [ "${SLURM_ARRAY_TASK_ID}" -eq 0 ]; then
  # SLURM already restricts CUDA_VISIBLE_DEVICES to this task's GPU; tabslim pins within it.
  exec "$TABSLIM" search --config "$CONFIG" --study "$STUDY" --quiet \
    --tracking-uri "$TABSLIM_TRACKING"
fi

# A worker refuses a study that does not exist yet: wait until the coordinator has made it.
for _ in $(seq 1 120); do
  if "$TABSLIM" report --study "$STUDY" >/dev/null 2>&1; then
    exec "$TABSLIM" worker --study "$STUDY" --tracking-uri "$TABSLIM_TRACKING" \
      --workers-per-device "${WORKERS_PER_GPU:-2}"
  fi
  sleep 10
done
echo "study $STUDY did not appear within 20 minutes; is task 0 running?" >&2
exit 1
