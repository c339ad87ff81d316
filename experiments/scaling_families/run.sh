#!/usr/bin/env bash
# Generative families side by side on CPU: each family's `cpu` sweep on the
# 16 px embedded shapes (class-conditional), every point scored at its end
# by the shape classifier (eval_fd_shapes, eval_accuracy_shapes on 512
# samples), then one comparison on eval_fd_shapes.
#
#   bash experiments/scaling_families/run.sh [--set=dataset.data_dir=DIR]
#
# OUT=DIR writes the logs and results elsewhere (default: the committed ones
# here), WORK=DIR the runs, PYTHON=... picks the interpreter.
set -euo pipefail
cd "$(dirname "$0")/../.."
WORK=${WORK:-workdirs/scaling_families}
OUT=${OUT:-experiments/scaling_families}
mkdir -p "$OUT"
PY=${PYTHON:-python}
FAMILIES=${FAMILIES:-"simple_diffusion r3gan pyramidal_flow flow_matching"}
export JAX_PLATFORMS=cpu TF_CPP_MIN_LOG_LEVEL=2
mkdir -p "$WORK"
data_dir=""
for a in "$@"; do [[ $a == --set=dataset.data_dir=* ]] && data_dir=${a#--set=dataset.data_dir=}; done
CLF="$WORK/shapes16.msgpack"
if [[ ! -f $CLF ]]; then
  "$PY" -m jaxgen.eval.classifier --image_size=16 --out="$CLF" \
      --steps=4000 ${data_dir:+--data_dir="$data_dir"} | tee "$OUT/classifier.log"
fi
METRICS=(--set=eval.sample_metrics.enabled=True
         --set=eval.sample_metrics.features=shape_classifier
         --set=eval.sample_metrics.classifier_weights="$(realpath "$CLF")"
         --set=eval.sample_metrics.num_samples=512
         --set=eval.sample_metrics.batch_size=128)
results=()
for f in $FAMILIES; do
  start=$(date +%s)
  "$PY" -m scaling.run --sweep=configs/scaling/$f.py:cpu --workdir="$WORK/$f" \
      --parallel=2 "${METRICS[@]}" "$@" | tee "$OUT/sweep_$f.log"
  # One line per family: a rerun replaces its family's line.
  { grep -v "^$f sweep wall time:" "$OUT/times.txt" 2>/dev/null || true
    echo "$f sweep wall time: $(( $(date +%s) - start )) s"; } > "$OUT/times.txt.tmp"
  mv "$OUT/times.txt.tmp" "$OUT/times.txt"
  grep "^$f sweep wall time:" "$OUT/times.txt"
  cp "$WORK/$f/results.jsonl" "$OUT/results_$f.jsonl"
  results+=("$OUT/results_$f.jsonl")
done
"$PY" -m scaling.compare --results="$(IFS=,; echo "${results[*]}")" \
    --metric=eval_fd_shapes --out="$OUT/compare" | tee "$OUT/compare.log"
