#!/usr/bin/env bash
# Everything this project measures on a GPU machine, in one go (how the H200 figures of
# docs/performance.md and docs/results.md were made):
#   1. ViT-B/16 training throughput and model-FLOP utilisation (bf16),
#   2. the Fashion-MNIST-LT recipe sweep, ranked on val (benchmarks/sweep.py),
#   3. the study (benchmarks/study.py) with the chosen recipe for IF 100, archived into $OUT.
# Small models leave a GPU mostly idle, so sweep and study run JOBS trainings side by side with
# WORKERS loader processes each (JOBS x (WORKERS + 1) should not exceed the CPU cores).
#
#   OUT=runs/gpu-out bash benchmarks/gpu_session.sh
set -uo pipefail
OUT=${OUT:-runs/gpu-out}
RUNS=${RUNS:-runs/gpu}
GRID=${GRID:-benchmarks/sweeps/fashion-mnist-lt.yaml}
JOBS=${JOBS:-8}
WORKERS=${WORKERS:-1}
DEVICE=${DEVICE:-cuda}
PY=${PY:-python3}
BENCH_ARGS=${BENCH_ARGS:---batch-size 128 --steps 20 --precision bf16}
# Seconds allowed to the sweep and to the study, so that a lease's limit ends the script cleanly.
SWEEP_S=${SWEEP_S:-100000}
STUDY_S=${STUDY_S:-100000}
export PYTHONUNBUFFERED=1
mkdir -p "$OUT" "$RUNS/study"
log() { echo "[$(date +%T)] $*" | tee -a "$OUT/session.log"; }
finish() { tar czf "$OUT/runs.tar.gz" --exclude=checkpoints "$RUNS" 2>/dev/null; log "done"; }
trap finish EXIT

{ nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>/dev/null || echo "no nvidia-smi"
  nproc; $PY -c "import torch, timm; print('torch', torch.__version__, 'timm', timm.__version__)"; } >"$OUT/machine.txt"

if [ "$DEVICE" != "cpu" ] && [ -z "${SKIP_BENCH:-}" ]; then
  log "bench_train ViT-B/16 224 px: $BENCH_ARGS"
  $PY benchmarks/bench_train.py $BENCH_ARGS >"$OUT/bench_train_vitb16.json" 2>>"$OUT/session.log" ||
    log "bench_train failed"
fi

log "sweep $GRID"
timeout "$SWEEP_S" $PY benchmarks/sweep.py --grid "$GRID" --runs "$RUNS/sweep" --jobs "$JOBS" --workers "$WORKERS" \
  --device "$DEVICE" --precision fp32 --best-recipe "$RUNS/best.yaml" --report "$OUT/sweep.json" \
  >"$OUT/sweep.log" 2>&1 ||
  { log "sweep failed"; exit 1; }
cp "$RUNS/best.yaml" "$OUT/best.yaml"
log "chosen: $(head -1 "$RUNS/best.yaml")"

log "study"
timeout "$STUDY_S" $PY benchmarks/study.py --recipe "if100=$RUNS/best.yaml" --runs "$RUNS/study" --jobs "$JOBS" \
  --workers "$WORKERS" --device "$DEVICE" --precision fp32 --archive "$OUT/study-archive" \
  --results "$RUNS/results/study.md" >"$OUT/study.log" 2>&1 ||
  log "study failed"
