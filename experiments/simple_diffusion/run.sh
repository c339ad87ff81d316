#!/bin/bash
# Reruns every simple-diffusion experiment from scratch (~65 min in one
# process): shape classifier, seven training arms, samples, metrics, figures.
# Outputs: experiments/simple_diffusion/{results.json,*.png}; checkpoints and
# samples in experiments/simple_diffusion/workdirs/ (git-ignored).
#   PYTHON=/path/to/venv/bin/python experiments/simple_diffusion/run.sh
set -euo pipefail
cd "$(dirname "$0")/../.."
PYTHON="${PYTHON:-python}"
export TF_CPP_MIN_LOG_LEVEL=2
# One XLA thread: on an oversubscribed machine Eigen's two-thread pool spent
# more CPU per step and ran ~25% slower in wall time than one thread.
export XLA_FLAGS="${XLA_FLAGS:---xla_cpu_multi_thread_eigen=false}"
exec "$PYTHON" -m experiments.simple_diffusion.run --fresh "$@"
