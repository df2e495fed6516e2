#!/usr/bin/env bash
# A GPU node checked in one run (issue 23), sized to finish in under 5 minutes on one GPU once
# installed:
#   1. the GPU-marked tests (`pytest -m gpu`);
#   2. `tabslim train --max-epochs 2` on a generated 1M-row table: its training throughput;
#   3. a search with `--devices 0 --workers-per-device 4`: CUDA latency recorded on its trials,
#      and every process that used CUDA saw exactly one device.
# GPU utilisation and memory are sampled with nvidia-smi in the background during 2 and 3.
# Without a GPU (no nvidia-smi, or torch without CUDA) it runs the same steps on the CPU at a
# smaller size, and says so. Assumes a fresh machine: `make install` creates .venv first
# (GPU_CHECK_SKIP_INSTALL=1 uses the .venv as it is).
#
# Sizes: ROWS (train table), SEARCH_ROWS, TRIALS, EPOCHS; GPU_CHECK_KEEP=1 keeps the tables.
# Exit code: 0 when every check passed, 1 otherwise.
set -euo pipefail
cd "$(dirname "$0")/.."

started=$(date +%s)
if [[ "${GPU_CHECK_SKIP_INSTALL:-0}" != 1 ]]; then
    make install
fi
installed=$(date +%s)
PY=.venv/bin/python
TABSLIM=.venv/bin/tabslim
WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
failures=()
samplers=()

fail() { failures+=("$1"); echo "FAIL: $1"; }
stop_samplers() {
    for pid in "${samplers[@]}"; do kill "$pid" 2>/dev/null || true; done
    for pid in "${samplers[@]}"; do wait "$pid" 2>/dev/null || true; done
    samplers=()
}
finish() {
    stop_samplers
    [[ "${GPU_CHECK_KEEP:-0}" == 1 ]] || rm -f "$WORK"/*.parquet
}
trap finish EXIT

if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1 &&
    "$PY" -c 'import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)'; then
    MODE=gpu
    ROWS=${ROWS:-1000000} SEARCH_ROWS=${SEARCH_ROWS:-200000} TRIALS=${TRIALS:-12}
    DEVICES=0 PER_DEVICE=4
else
    MODE=cpu
    ROWS=${ROWS:-50000} SEARCH_ROWS=${SEARCH_ROWS:-20000} TRIALS=${TRIALS:-8}
    DEVICES=cpu PER_DEVICE=2
fi
EPOCHS=${EPOCHS:-2}
# The rows that train: the data module holds out 15% for validation and 15% for test.
train_rows() { "$PY" -c "n = $1; print(n - 2 * round(n * 0.15))"; }

echo "== gpu_check: $MODE run; work folder $WORK"
if [[ $MODE == gpu ]]; then
    nvidia-smi -L
    "$PY" -c 'import torch; print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, "
          f"{torch.cuda.device_count()} visible, bf16: {torch.cuda.is_bf16_supported()}")'
else
    echo "NO GPU: nvidia-smi or torch.cuda is unavailable; everything below runs on the CPU"
    echo "at a smaller size (train $ROWS rows, search $SEARCH_ROWS rows, $TRIALS trials,"
    echo "--devices cpu --workers-per-device $PER_DEVICE). It proves the script, not a GPU."
fi

# Background samples, twice a second, of each GPU's utilisation and memory, and of which GPU
# each compute process is on; summarised per phase.
sample() {
    [[ $MODE == gpu ]] || return 0
    nvidia-smi --query-gpu=index,utilization.gpu,memory.used,memory.total \
        --format=csv,noheader,nounits -lms 500 >"$WORK/$1.gpu.csv" 2>/dev/null &
    samplers+=($!)
    while true; do
        nvidia-smi --query-compute-apps=pid,gpu_uuid,used_memory \
            --format=csv,noheader,nounits 2>/dev/null || true
        sleep 1
    done >"$WORK/$1.apps.csv" &
    samplers+=($!)
}
gpu_summary() {
    [[ $MODE == gpu ]] || { echo "  GPU: none (CPU run)"; return 0; }
    "$PY" - "$WORK/$1.gpu.csv" "$WORK/$1.apps.csv" <<'EOF'
import sys
from collections import defaultdict

rows = defaultdict(list)
for line in open(sys.argv[1]):
    parts = [p.strip() for p in line.split(",")]
    if len(parts) == 4 and all(p.replace(".", "").isdigit() for p in parts):
        rows[parts[0]].append([float(p) for p in parts[1:]])
for index, samples in sorted(rows.items()):
    util = [s[0] for s in samples]
    busy = [u for u in util if u > 0]
    print(
        f"  GPU {index}: utilisation mean {sum(util) / len(util):.0f}% (max {max(util):.0f}%, "
        f"{len(busy)}/{len(util)} samples busy), memory peak {max(s[1] for s in samples):.0f} "
        f"of {samples[0][2]:.0f} MiB"
    )
apps = defaultdict(set)
for line in open(sys.argv[2]):
    parts = [p.strip() for p in line.split(",")]
    if len(parts) == 3 and parts[0].isdigit():
        apps[parts[0]].add(parts[1])
if apps:
    many = {pid: gpus for pid, gpus in apps.items() if len(gpus) > 1}
    print(f"  nvidia-smi: {len(apps)} compute processes, "
          + (f"ON SEVERAL GPUS: {many}" if many else "each on one GPU"))
    if many:
        sys.exit(1)
else:
    print("  nvidia-smi: no compute process listed (a container hides their PIDs)")
EOF
}

# 1. The GPU-marked tests (all of them skip without CUDA).
phase_start=$(date +%s)
echo
echo "== 1. GPU-marked tests: pytest -m gpu"
if "$PY" -m pytest -m gpu -q -rs -p no:cacheprovider >"$WORK/pytest.log" 2>&1; then
    tail -n 4 "$WORK/pytest.log"
else
    tail -n 30 "$WORK/pytest.log"
    fail "pytest -m gpu (log: $WORK/pytest.log)"
fi
if [[ $MODE == gpu ]] && ! grep -q " passed" "$WORK/pytest.log"; then
    fail "the GPU tests were all skipped on a GPU machine"
fi
echo "  ($(($(date +%s) - phase_start)) s)"

# 2. A 1M-row table (a generated one: numeric with gaps, 4 categorical up to 1,000 levels).
phase_start=$(date +%s)
echo
echo "== 2. tabslim train on $ROWS rows, $EPOCHS epochs"
"$PY" bench/make_table.py --rows "$ROWS" --out "$WORK/train.parquet" --seed 0
sample train
if "$TABSLIM" train --data "$WORK/train.parquet" --target target --max-epochs "$EPOCHS" \
    --tracking-uri "sqlite:///$WORK/mlflow.db" --experiment gpu-check --quiet \
    >"$WORK/train.log" 2>&1; then
    stop_samplers
    seconds=$(awk '$1 == "train_seconds" {print $2}' "$WORK/train.log")
    epochs=$(awk '$1 == "epochs" {print $2}' "$WORK/train.log")
    n=$(train_rows "$ROWS")
    "$PY" -c "print(f'  training: {$n} rows x {$epochs} epochs in {$seconds:.1f} s: '
              f'{$n * $epochs / $seconds:,.0f} rows/s (validation included)')" ||
        fail "no train_seconds or epochs in the train output ($WORK/train.log)"
    grep -E "^  (val_accuracy|latency_torch_b1024_median_ms) " "$WORK/train.log" || true
else
    stop_samplers
    tail -n 30 "$WORK/train.log"
    fail "tabslim train (log: $WORK/train.log)"
fi
gpu_summary train || fail "a train process used several GPUs"
echo "  wall $(($(date +%s) - phase_start)) s, table generation included"

# 3. A search, K processes on one device. Each Python process of it records, at exit, the
# devices it saw: a sitecustomize on PYTHONPATH (this run only) registers the hook.
phase_start=$(date +%s)
echo
echo "== 3. tabslim search: $TRIALS trials on $SEARCH_ROWS rows," \
    "--devices $DEVICES --workers-per-device $PER_DEVICE"
"$PY" bench/make_table.py --rows "$SEARCH_ROWS" --out "$WORK/search.parquet" --seed 1
mkdir -p "$WORK/probe"
cat >"$WORK/probe/sitecustomize.py" <<'EOF'
import atexit, json, os, sys

def _devices_seen() -> None:
    torch = sys.modules.get("torch")
    if torch is None:
        return
    record = {"pid": os.getpid(), "visible": os.environ.get("CUDA_VISIBLE_DEVICES")}
    try:
        used = bool(torch.cuda.is_initialized())
        record |= {"cuda_used": used, "devices": torch.cuda.device_count() if used else None}
        if used:
            record["peak_reserved_mib"] = round(torch.cuda.max_memory_reserved() / 2**20)
    except Exception as error:  # the check reports it; the search's exit must not change
        record["error"] = repr(error)
    with open(os.environ["GPU_CHECK_PROBE"], "a") as out:
        out.write(json.dumps(record) + "\n")

atexit.register(_devices_seen)
EOF
cat >"$WORK/search.yaml" <<EOF
data: {path: $WORK/search.parquet, target: target}
training: {max_epochs: $EPOCHS}
measure: {batch_sizes: [1024], runtimes: [onnxruntime]}
search:
  n_trials: $TRIALS
  quantize: []
  confirm: 0
  max_epochs_factor: 1.0
  prune: {criteria: [l1], schedules: [one_shot], fine_tune_epochs: [0, 1]}
EOF
sample search
search_started=$(date +%s.%N)
if PYTHONPATH="$WORK/probe" GPU_CHECK_PROBE="$WORK/processes.jsonl" "$TABSLIM" search \
    --config "$WORK/search.yaml" --study gpu-check --storage "$WORK/optuna.journal" \
    --tracking-uri "sqlite:///$WORK/mlflow.db" --experiment gpu-check \
    --devices "$DEVICES" --workers-per-device "$PER_DEVICE" --quiet >"$WORK/search.log" 2>&1; then
    stop_samplers
    search_seconds=$("$PY" -c "import time; print(time.time() - $search_started)")
    search_rows=$(train_rows "$SEARCH_ROWS")
    "$PY" - "$WORK" "$MODE" "$search_rows" "$search_seconds" "$PER_DEVICE" <<'EOF' ||
import json, sys
from pathlib import Path

import optuna
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend

work, mode = Path(sys.argv[1]), sys.argv[2]
rows, wall, per_device = int(sys.argv[3]), float(sys.argv[4]), int(sys.argv[5])
optuna.logging.set_verbosity(optuna.logging.WARNING)
storage = JournalStorage(JournalFileBackend(str(work / "optuna.journal")))
trials = optuna.load_study(study_name="gpu-check", storage=storage).get_trials(deepcopy=False)
done = [t for t in trials if t.state == optuna.trial.TrialState.COMPLETE]
trained = [t for t in done if "metrics" in t.user_attrs and "repeat_of" not in t.user_attrs]
owners = {t.user_attrs.get("tabslim_owner") for t in done}
print(f"  trials: {len(done)} complete of {len(trials)}, run by {len(owners)} processes")
ok = bool(done)
row_epochs = sum(rows * t.user_attrs["metrics"].get("epochs", 0) for t in trained)
seconds = sum(t.user_attrs["metrics"].get("train_seconds", 0) for t in trained)
if seconds:
    print(f"  training: {row_epochs / seconds:,.0f} rows/s per process (validation included); "
          f"{row_epochs / wall:,.0f} rows/s over the search's {wall:.0f} s wall time")
cuda = [
    v for t in trained for k, v in t.user_attrs["metrics"].items() if k.startswith("latency_cuda_")
]
gpus = {t.user_attrs.get("gpu") for t in trained}
if mode == "gpu":
    print(f"  CUDA latency recorded on {len(cuda)} of {len(trained)} trained trials"
          + (f", median {sorted(cuda)[len(cuda) // 2]:.3f} ms; GPU {gpus}" if cuda else ""))
    ok &= len(cuda) == len(trained) > 0
else:
    print(f"  CUDA latency: none recorded (CPU run; {len(cuda)} trials have one)")
    ok &= not cuda
probe = work / "processes.jsonl"
seen = [json.loads(line) for line in open(probe)] if probe.exists() else []
on_cuda = [p for p in seen if p.get("cuda_used")]
errors = [p for p in seen if "error" in p]
print(f"  processes with torch: {len(seen)}; used CUDA: {len(on_cuda)}")
for p in on_cuda:
    print(f"    pid {p['pid']}: CUDA_VISIBLE_DEVICES={p['visible']!r}, saw {p['devices']} "
          f"device(s), peak reserved {p['peak_reserved_mib']} MiB")
if mode == "gpu":
    one_each = bool(on_cuda) and all(p["devices"] == 1 for p in on_cuda)
    print("  each process saw exactly one device: " + ("yes" if one_each else "NO"))
    if len(on_cuda) < per_device:
        print(f"  note: {per_device} processes were asked for, {len(on_cuda)} used CUDA "
              "(too few trials for all of them?)")
    ok &= one_each
else:
    print("  each process saw exactly one device: not applicable, no process used CUDA (CPU run)")
    ok &= not on_cuda
if errors:
    print(f"  the probe failed in: {errors}")
ok &= not errors and len(seen) >= per_device
sys.exit(0 if ok else 1)
EOF
        fail "search checks (log: $WORK/search.log, processes: $WORK/processes.jsonl)"
else
    stop_samplers
    tail -n 30 "$WORK/search.log"
    fail "tabslim search (log: $WORK/search.log)"
fi
gpu_summary search || fail "a search process used several GPUs"
echo "  wall $(($(date +%s) - phase_start)) s, table generation included"

total=$(($(date +%s) - installed))
echo
echo "== gpu_check ($MODE): ${total} s after install ($((installed - started)) s install)"
if [[ $MODE == gpu && $total -gt 300 ]]; then
    echo "  over the 5-minute goal on one GPU"
fi
[[ $MODE == cpu ]] && echo "  RAN ON CPU: no GPU was checked"
if ((${#failures[@]})); then
    printf 'FAILED: %s\n' "${failures[@]}"
    exit 1
fi
echo "all checks passed; logs in $WORK"
