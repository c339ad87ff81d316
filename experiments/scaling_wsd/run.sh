#!/usr/bin/env bash
# Warmup-stable-decay against cosine on the committed CPU simple-diffusion
# sweep: the same 12 points (configs/scaling/simple_diffusion.py:cpu) with
# --sweep.schedule=wsd, fitted like the cosine sweep of
# experiments/scaling_simple_diffusion (its fit/ is the cosine side).
set -euo pipefail
cd "$(dirname "$0")/../.."
WORK=${WORK:-workdirs/scaling_sd_wsd}
OUT=experiments/scaling_wsd
export JAX_PLATFORMS=cpu TF_CPP_MIN_LOG_LEVEL=2
start=$(date +%s)
python -m scaling.run --sweep=configs/scaling/simple_diffusion.py:cpu \
    --sweep.schedule=wsd --workdir="$WORK" --parallel=2 "$@" | tee "$OUT/sweep.log"
echo "sweep wall time: $(( $(date +%s) - start )) s" | tee -a "$OUT/sweep.log"
cp "$WORK/results.jsonl" "$OUT/results.jsonl"
python -m scaling.fit --results="$OUT/results.jsonl" --out="$OUT/fit" \
    --target_flops=4e12,1.6e13 | tee "$OUT/fit.log"
