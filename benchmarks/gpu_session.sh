#!/usr/bin/env bash
# Every GPU figure of the README in one run on a lent GPU (at most 9.5
# minutes, within the device's 10-minute command limit): the quickstart from
# a cold cache, the start-up of cold, warm and resumed runs, the speed table.
#
#   bash benchmarks/gpu_session.sh "$OUT"      # OUT: where results go
#
# The machine's image has JAX with CUDA, Flax, Optax, Orbax, torch,
# torchvision, scikit-learn and scikit-image but no TensorFlow and no
# ml_collections: the ml_collections wheel is carried in .whl/ (pip download
# --no-deps ml-collections -d .whl/) and the project runs from PYTHONPATH.
# Each step has its own time limit, so one that hangs leaves time to the rest.
# QUICKSTART_ARGS, STARTUP_ARGS and SPEED_ARGS add arguments (a dry run on a CPU with tiny
# shapes: SPEED_ARGS='--resolution 32 --batch 4 --repeats 1').
set -uo pipefail
cd "$(dirname "$0")/.."
OUT=${1:-${OUT:-/tmp/gpu_session}}
mkdir -p "$OUT"
export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
export TF_CPP_MIN_LOG_LEVEL=2
CACHE="$OUT/jax_cache"
# The targets this session's figures are read against (docs/performance.md
# cites them). The script records the times and does not fail a run that
# misses one.
QUICKSTART_TARGET_S=60  # the digits quickstart from a cold cache: <= 60 s wall
FIRST_STEP_TARGET_S=10  # benchmarks/startup.py: first step <= 10 s, warm and resumed
log() { echo "=== $(date -u +%H:%M:%S) $*" | tee -a "$OUT/session.log"; }

log "setup"
python -c 'import ml_collections' 2>/dev/null || \
  python -m pip install -q --no-deps .whl/ml_collections-*.whl 2>&1 | tail -1
nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv \
  | tee -a "$OUT/session.log"
python - <<'EOF' 2>&1 | tee -a "$OUT/session.log"
import importlib.metadata as m
for p in ('jax', 'jaxlib', 'jax-cuda12-plugin', 'jax-cuda13-plugin', 'flax',
          'optax', 'orbax-checkpoint', 'torch', 'torchvision'):
  try:
    print(p, m.version(p))
  except m.PackageNotFoundError:
    pass
import jax
print('devices', jax.devices(), 'default matmul precision',
      jax.config.jax_default_matmul_precision)
EOF

# 1. The whole quickstart from a cold compilation cache (wall time), then
# the start-up of a cold, a warm and a resumed run (benchmarks/startup.py).
log "quickstart cold"
start=$(date +%s.%N)
timeout 120 python -m mnv2_jax.main --config configs/quickstart.py \
    --workdir "$OUT/quickstart_cold" --config.compilation_cache_dir="$CACHE" \
    ${QUICKSTART_ARGS:-} > "$OUT/quickstart_cold.log" 2>&1
status=$?
end=$(date +%s.%N)
grep -E 'First step|\[test\]' "$OUT/quickstart_cold.log" | tee -a "$OUT/session.log"
echo "quickstart cold: exit $status, wall $(python -c "print(round($end - $start, 1))") s" \
  | tee -a "$OUT/session.log"
log "startup"
timeout 120 python benchmarks/startup.py --out_dir "$OUT" ${STARTUP_ARGS:-} \
  2>&1 | tail -6 | tee -a "$OUT/session.log"

# 2. The speed table: every framework and dtype in its own process (the
# table is rewritten after each one, so a cut-short run keeps its rows).
log "speed"
timeout 330 python benchmarks/speed.py --mode gpu --out_dir "$OUT" \
    ${SPEED_ARGS:-} > "$OUT/speed.log" 2>&1
echo "speed: exit $?" | tee -a "$OUT/session.log"
tail -45 "$OUT/speed.log"
log "done"
