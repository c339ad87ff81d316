#!/usr/bin/env bash
# Reruns the CPU isoFLOP sweep of simple diffusion from scratch, fits it and
# checks the extrapolation with one run at 4x and one at 16x the largest
# budget.
#
#   experiments/scaling_simple_diffusion/run.sh [WORKDIR]
#
# WORKDIR (default workdirs/scaling_simple_diffusion, git-ignored) holds the
# runs and checkpoints; a rerun with the same WORKDIR skips finished points
# and resumes interrupted ones. Writes, next to this script: results.jsonl,
# sweep.log, fit/ (fit.json, report.md, plots), check.json, check_results.jsonl
# and check.log (4x), check16.json, check16_results.jsonl and check16.log
# (16x). report.md (the write-up) is not regenerated.
set -euo pipefail
cd "$(dirname "$0")/../.."
EXP=experiments/scaling_simple_diffusion
WORKDIR=${1:-workdirs/scaling_simple_diffusion}
PY=${PYTHON:-python}
SWEEP=configs/scaling/simple_diffusion.py:cpu

# 1. The sweep: 3 budgets x 4 sizes, two single-threaded points at a time.
start=$(date +%s)
$PY -m scaling.run --sweep=$SWEEP --workdir="$WORKDIR" --parallel=2 \
  | tee $EXP/sweep.log
echo "sweep wall time: $(( $(date +%s) - start )) s" | tee -a $EXP/sweep.log
cp "$WORKDIR/results.jsonl" $EXP/results.jsonl

# 2. Fit approaches 2 and 3, extrapolated to 4x the largest budget.
CHECK=$($PY -c "from scaling import sweep
print(4 * max(sweep.load_config_file('$SWEEP').budgets))")
CHECK16=$($PY -c "print(4 * $CHECK)")
$PY -m scaling.fit --results=$EXP/results.jsonl --out=$EXP/fit \
  --target_flops="$CHECK,$CHECK16"

# 3. One run at 4x the largest budget, at the ladder size nearest the
#    predicted compute-optimal N; check.json compares the losses.
$PY -m scaling.run --sweep=$SWEEP --workdir="$WORKDIR/check" \
  --only_budgets="$CHECK" --optimal_from=$EXP/fit/fit.json | tee $EXP/check.log
cp "$WORKDIR/check/results.jsonl" $EXP/check_results.jsonl
cp "$WORKDIR/check/check.json" $EXP/check.json

# 4. The same at 16x (the ladder's largest rung is nearest approach 2's
#    N_opt there).
$PY -m scaling.run --sweep=$SWEEP --workdir="$WORKDIR/check16" \
  --only_budgets="$CHECK16" --optimal_from=$EXP/fit/fit.json \
  | tee $EXP/check16.log
cp "$WORKDIR/check16/results.jsonl" $EXP/check16_results.jsonl
cp "$WORKDIR/check16/check.json" $EXP/check16.json
