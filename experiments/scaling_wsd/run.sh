#!/usr/bin/env bash
# Warmup-stable-decay against cosine on the committed CPU simple-diffusion
# sweep: the same 12 points (configs/scaling/simple_diffusion.py:cpu) with
# --sweep.schedule=wsd, fitted like the cosine sweep of
# experiments/scaling_simple_diffusion (its fit/ is the cosine side).
# OUT=DIR writes the results elsewhere (default: the committed ones here),
# WORK=DIR the runs, PYTHON=... picks the interpreter.
set -euo pipefail
cd "$(dirname "$0")/../.."
WORK=${WORK:-workdirs/scaling_sd_wsd}
OUT=${OUT:-experiments/scaling_wsd}
mkdir -p "$OUT"
PY=${PYTHON:-python}
export JAX_PLATFORMS=cpu TF_CPP_MIN_LOG_LEVEL=2
start=$(date +%s)
"$PY" -m scaling.run --sweep=configs/scaling/simple_diffusion.py:cpu \
    --sweep.schedule=wsd --workdir="$WORK" --parallel=2 "$@" | tee "$OUT/sweep.log"
echo "sweep wall time: $(( $(date +%s) - start )) s" | tee -a "$OUT/sweep.log"
cp "$WORK/results.jsonl" "$OUT/results.jsonl"
"$PY" -m scaling.fit --results="$OUT/results.jsonl" --out="$OUT/fit" \
    --target_flops=4e12,1.6e13 | tee "$OUT/fit.log"
