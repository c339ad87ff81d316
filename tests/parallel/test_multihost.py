"""Two real processes on 127.0.0.1 (gloo) train exactly like one process.

Each process has 4 fake CPU devices and reads its own rows of every global
batch; the global batch is assembled with
`jax.make_array_from_process_local_data`. The losses must equal a 1-process
run on 8 devices.
"""

import os
import signal
import socket
import subprocess
import sys
import time

import numpy as np
import pytest

from jaxgen.train import trainer
from scaling import specs
from tests.train import common

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))


def _env(devices, **extra):
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2",
             XLA_FLAGS=(f"{specs.CPU_FAST_COMPILE} "
                        f"--xla_force_host_platform_device_count={devices}"),
             PYTHONPATH=ROOT)
  env.update({k: str(v) for k, v in extra.items()})
  return env


def _free_port():
  with socket.socket() as s:
    s.bind(("127.0.0.1", 0))
    return s.getsockname()[1]


def _two_processes(overrides, workdir, stderr):
  """Starts `jaxgen.main` as processes 0 and 1 of one job (4 devices each)."""
  cmd = [sys.executable, "-m", "jaxgen.main"] + common.cli_flags(**overrides)
  port = _free_port()
  return [subprocess.Popen(
      cmd + [f"--workdir={workdir}", "--multihost"],
      env=_env(4, JAXGEN_COORDINATOR=f"127.0.0.1:{port}",
               JAXGEN_NUM_PROCESSES=2, JAXGEN_PROCESS_ID=i),
      cwd=ROOT, stdout=subprocess.PIPE, stderr=stderr, text=True)
          for i in range(2)]


@pytest.mark.multihost
def test_two_processes_match_one_process(tmp_path):
  overrides = {"total_steps": 3, "mesh.data": 4, "mesh.fsdp": 2}
  # The 1-process reference runs here, on this process's 8 devices.
  trainer.train_and_evaluate(common.tiny_config(**overrides),
                             str(tmp_path / "one"))
  procs = _two_processes(overrides, tmp_path / "two",
                         stderr=subprocess.STDOUT)
  outs = [p.communicate(timeout=300)[0] for p in procs]
  for p, out in zip(procs, outs):
    assert p.returncode == 0, out[-3000:]

  one = common.read_losses(tmp_path / "one")
  two = common.read_losses(tmp_path / "two")
  assert [s for s, _ in two] == [1, 2, 3]
  np.testing.assert_allclose([l for _, l in two], [l for _, l in one],
                             rtol=1e-5)
  # Both processes took part in the checkpoint of the last step.
  assert "3" in os.listdir(tmp_path / "two" / "checkpoints")


@pytest.mark.multihost
def test_sigterm_to_one_process_stops_both_at_the_same_saved_step(tmp_path):
  # JAX's preemption service spreads the notice; orbax's reached_preemption
  # picks one step for all processes.
  overrides = {"total_steps": 2000, "mesh.data": 4, "mesh.fsdp": 2,
               "checkpoint_every_steps": 1000}
  workdir = tmp_path / "two"
  procs = _two_processes(overrides, workdir, stderr=subprocess.PIPE)
  metrics = workdir / "metrics.jsonl"
  deadline = time.time() + 300
  while time.time() < deadline and all(p.poll() is None for p in procs):
    if metrics.exists() and len(metrics.read_text().splitlines()) >= 3:
      break
    time.sleep(0.05)
  procs[1].send_signal(signal.SIGTERM)
  outs = [p.communicate(timeout=300)[1] for p in procs]
  lasts = []
  for p, err in zip(procs, outs):
    assert p.returncode == 0, err[-3000:]
    lasts.append(err.strip().splitlines()[-1])
  assert lasts[0] == lasts[1], lasts
  assert lasts[0].startswith("preempted by SIGTERM at step "), lasts
  step = int(lasts[0].split("at step ")[1].split(":")[0])
  assert step < 2000 and str(step) in os.listdir(workdir / "checkpoints")
