#!/usr/bin/env bash
# The imagenet suite of experiments.bench_vs_torch (ResNet-34 → ResNet-18, 224×224, bfloat16;
# KD, KD + CutMix-pick, backward-pass KD; JAX against PyTorch eager and torch.compile, with
# MFU) on one lent GPU (H100 or H200), in one command of at most 9 minutes. It writes
# results/bench_vs_torch_imagenet_gpu.md (+ .png) from the repository's root, as the earlier
# GPU tables were written, so that the report's Command line names that file, and copies it
# to $OUT/results/, with a log and each attempt's output in $OUT/, for the device tool to
# bring back.
#
# The machine gets a copy of the working tree without .venv and cannot reach the internet.
# Its python3 has JAX (CUDA), PyTorch, Flax, optax, orbax, chex, absl and matplotlib, but
# not ml_collections, which kd_jax's configs import: carry it as a wheel. Once, on the
# machine that calls the tool, in the repository's root:
#
#   echo /.whl/ >> .git/info/exclude
#   .venv/bin/python -m pip download --no-deps --only-binary=:all: -d .whl ml_collections==1.1.0
#
# then run (device tool): command "bash experiments/gpu_imagenet_bench.sh", carry [".whl"],
# timeout_s 600.
#
# Batch 256 (the imagenet config's); if that runs out of GPU memory, 128 in the time left.
# Both frameworks share the GPU, so JAX allocates as it goes instead of taking 75 % of the
# memory up front (XLA_PYTHON_CLIENT_PREALLOCATE=false).
#
# Overrides, for a dry run elsewhere: PYTHON (default python3), BATCHES (default "256 128"),
# LIMIT_S (default 540: the whole script's budget), ALLOW_CPU=1 (run without a GPU),
# BENCH_FLAGS (more flags for the benchmark, e.g. --imagenet_image_size=32 --repeats=1).

set -uo pipefail
cd "$(dirname "$0")/.." || exit 1
OUT=${OUT:-$PWD/gpu_out}
PYTHON=${PYTHON:-python3}
BATCHES=${BATCHES:-256 128}
LIMIT_S=${LIMIT_S:-540}
REPORT=results/bench_vs_torch_imagenet_gpu.md
LOG=$OUT/gpu_imagenet_bench.log
mkdir -p "$OUT/results" results
: > "$LOG"
say() { echo "$*" | tee -a "$LOG"; }
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
unset XLA_FLAGS

# ml_collections from the carried wheel(s), if this python3 lacks it.
if ! "$PYTHON" -c "import ml_collections" 2>/dev/null; then
  if ! compgen -G ".whl/*.whl" > /dev/null; then
    say "ml_collections is missing and no .whl/ was carried: see this script's header."
    exit 1
  fi
  "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
      --target /tmp/kd_site .whl/*.whl 2>&1 | tee -a "$LOG" || exit 1
  export PYTHONPATH=/tmp/kd_site${PYTHONPATH:+:$PYTHONPATH}
fi

# Both frameworks must see the GPU: a fall-back to the CPU would run for hours.
"$PYTHON" - <<'EOF' 2>&1 | tee -a "$LOG"
import os, jax, torch
gpu = jax.default_backend() == "gpu" and torch.cuda.is_available()
print(f"JAX {jax.__version__} on {jax.devices()[0].device_kind}, PyTorch {torch.__version__}, "
      f"CUDA for PyTorch: {torch.cuda.is_available()}")
if not gpu and os.environ.get("ALLOW_CPU") != "1":
  raise SystemExit("no GPU for both JAX and PyTorch: stopping")
EOF
[ "${PIPESTATUS[0]}" -eq 0 ] || exit 1
command -v nvidia-smi > /dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version \
    --format=csv,noheader | tee -a "$LOG"

status=1
for batch in $BATCHES; do
  left=$((LIMIT_S - SECONDS))
  if [ "$left" -lt 60 ]; then
    say "batch $batch: only ${left} s left of ${LIMIT_S} s, not started"
    break
  fi
  say "batch $batch: up to ${left} s"
  attempt=$OUT/attempt_$batch.log
  # shellcheck disable=SC2086  # BENCH_FLAGS is a list of flags
  timeout --kill-after=10 "$left" "$PYTHON" -m experiments.bench_vs_torch --suites=imagenet \
      --imagenet_batch="$batch" --imagenet_image_size=224 --repeats=20 --warmup=3 \
      --torch_compile=true --gpu_precision=tf32 ${BENCH_FLAGS:-} --out="$REPORT" \
      > "$attempt" 2>&1
  status=$?
  grep -v '^USDT' "$attempt" | tail -n 60 >> "$LOG"
  if [ "$status" -eq 0 ]; then
    say "batch $batch: done in $SECONDS s"
    break
  fi
  if grep -qiE "out of memory|RESOURCE_EXHAUSTED|OutOfMemoryError" "$attempt"; then
    say "batch $batch: out of GPU memory (exit $status)"
    continue
  fi
  say "batch $batch: failed (exit $status$([ "$status" -eq 124 ] && echo ', time limit'))"
  break
done

if [ "$status" -eq 0 ]; then
  cp "$REPORT" "${REPORT%.md}.png" "$OUT/results/"
  say "written: $REPORT and ${REPORT%.md}.png (copies in \$OUT/results/)"
fi
exit "$status"
