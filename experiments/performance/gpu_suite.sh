#!/usr/bin/env bash
# The GPU suite on a lent device (README "GPU suite"), as one command:
#   bash experiments/performance/gpu_suite.sh OUT_DIR [bench_suite flags...]
# Installs the wheels the device image lacks from .whl/ (no network there),
# runs `python -m jaxgen.bench_suite` (one entry after another) and
# writes OUT_DIR/suite.md, suite.md.json (rewritten after every entry, so a
# lease that ends mid-suite keeps the finished rows) and log.txt.
set -euo pipefail
out="${1:?usage: gpu_suite.sh OUT_DIR}"
mkdir -p "$out"
start=$(date +%s)
wheels="${WHEELS_DIR:-.whl}"
if compgen -G "$wheels/*.whl" > /dev/null; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir \
    --upgrade --target /tmp/site "$wheels"/*.whl
  export PYTHONPATH="/tmp/site:$PWD"
fi
export XLA_PYTHON_CLIENT_MEM_FRACTION=0.95 TF_CPP_MIN_LOG_LEVEL=2
python3 -c "import jax, flax; print('jax', jax.__version__, 'flax', flax.__version__, jax.devices())"
# XLA's slow-compile alarms are noise here: the compile time is in the table.
set +e
timeout "${SUITE_TIMEOUT_S:-540}" python3 -m jaxgen.bench_suite --steps=5 \
  --budget_s="${SUITE_BUDGET_S:-400}" \
  --out="$out/suite.md" "${@:2}" 2>&1 \
  | grep --line-buffered -v -e slow_operation_alarm -e '^\*\+$' \
      -e 'Very slow compile' -e '^$' | tee "$out/log.txt"
rc=${PIPESTATUS[0]}
echo "suite exit $rc after $(( $(date +%s) - start )) s" | tee -a "$out/log.txt"
exit "$rc"
