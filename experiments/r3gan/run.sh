#!/usr/bin/env bash
# Reruns the R3GAN experiments from scratch (CPU; see report.md for timings).
#   bash experiments/r3gan/run.sh            # from the repository root
# Outputs: experiments/r3gan/figures/*.png, experiments/r3gan/results/*.json
# (OUT=DIR writes them elsewhere). Everything is written to a staging folder
# first and replaces the previous figures and results only when both
# experiments finished: an interrupted rerun leaves them as they were.
set -euo pipefail
cd "$(dirname "$0")/../.."
PY=${PYTHON:-python}
OUT=${OUT:-experiments/r3gan}
mkdir -p "$OUT"
export JAX_PLATFORMS=${JAX_PLATFORMS:-cpu}
STAGE=$(mktemp -d "${OUT%/}/.rerun.XXXXXX")
trap 'rm -rf "$STAGE"' EXIT
# (a) DiracRpGAN + 2-D mixture of 8 Gaussians.
"$PY" -m experiments.r3gan.toy --out="$STAGE" --mixture=ring8 --steps=3000 \
    --seeds=2 --gamma=0.1 2>&1 | tee "$STAGE/toy.log"
# (b) Stacked digits, 1000 modes: RpGAN + R1 + R2 vs GAN + R1 + R2.
"$PY" -m experiments.r3gan.stacked_digits --out="$STAGE" --size=8 --arch=mlp \
    --batch=128 --steps=1500 --lr=5e-4 --seeds=2 2>&1 \
    | tee "$STAGE/stacked_digits.log"
rm -rf "$OUT/figures" "$OUT/results"
mv "$STAGE/figures" "$STAGE/results" "$STAGE/toy.log" \
    "$STAGE/stacked_digits.log" "$OUT/"
echo "R3GAN experiments written to $OUT"
