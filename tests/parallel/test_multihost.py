"""Two real processes on 127.0.0.1 (gloo) train exactly like one process.

Each process has 4 fake CPU devices and reads its own rows of every global
batch; the global batch is assembled with
`jax.make_array_from_process_local_data`. The losses must equal a 1-process
run on 8 devices.
"""

import dataclasses
import logging
import os
import signal
import socket
import subprocess
import sys
import time

import jax
import numpy as np
import pytest

from jaxgen.parallel import multihost
from jaxgen.train import run_state
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
def test_two_processes_match_one_process(tmp_path, caplog):
  # Both start from the weights of a 1-step run (config.init_from) that
  # shards them 8 ways: restored over both processes' devices, they are
  # not readable on one host (a warm start read them there and failed).
  source = str(tmp_path / "source")
  trainer.train_and_evaluate(common.tiny_config(
      total_steps=1, **{"mesh.data": 1, "mesh.fsdp": 8}), source)
  overrides = {"total_steps": 3, "mesh.data": 4, "mesh.fsdp": 2,
               "init_from": source}
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
  # Both processes took part in the checkpoint of the last step, and it
  # restores on this one process's 8 devices with the 1-process run's state.
  assert "3" in os.listdir(tmp_path / "two" / "checkpoints")
  config = common.tiny_config(**overrides)
  _, step_one, state_one = run_state.restore(config, str(tmp_path / "one"))
  _, step_two, state_two = run_state.restore(config, str(tmp_path / "two"))
  assert step_one == step_two == 3
  for name in ("params", "opt_state", "ema_params"):
    a, b = (jax.tree.leaves(getattr(s, name)) for s in (state_one, state_two))
    assert len(a) == len(b) > 0
    for x, y in zip(a, b):
      # Adam's first updates are ~lr·sign(g): a gradient within rounding
      # of zero moves one weight by up to 1e-6; a wrong restore is off by
      # the learning rate (~1e-3).
      np.testing.assert_allclose(np.asarray(y), np.asarray(x), rtol=1e-4,
                                 atol=1e-5)
  # Resumed by one process, it carries on with the batches it would have
  # drawn (the per-process data position is carried to the new count).
  longer = common.tiny_config(**dict(overrides, total_steps=4))
  for run in ("one", "two"):
    with caplog.at_level(logging.INFO):
      trainer.train_and_evaluate(longer, str(tmp_path / run))
  # Said once (the pre-check before compiling reads it silently).
  assert sum("data position carried to 1" in r.getMessage()
             for r in caplog.records) == 1
  one, two = (common.read_losses(tmp_path / run) for run in ("one", "two"))
  assert [s for s, _ in two] == [1, 2, 3, 4]
  np.testing.assert_allclose(two[-1][1], one[-1][1], rtol=1e-4)


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


@pytest.mark.multihost
def test_processes_started_with_other_flags_are_refused(tmp_path):
  # Process 1 with another run length hung in the last save; with another
  # batch size both trained wrong and exited 0.
  cmd = [sys.executable, "-m", "jaxgen.main", f"--workdir={tmp_path}",
         "--multihost"]
  port = _free_port()
  procs = [subprocess.Popen(
      cmd + common.cli_flags(total_steps=3 + i, **{"mesh.data": 4,
                                                   "mesh.fsdp": 2}),
      env=_env(4, JAXGEN_COORDINATOR=f"127.0.0.1:{port}",
               JAXGEN_NUM_PROCESSES=2, JAXGEN_PROCESS_ID=i),
      cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
           for i in range(2)]
  errors = [p.communicate(timeout=300)[1] for p in procs]
  lines = [err.strip().splitlines()[-1] for err in errors]
  assert [p.returncode for p in procs] == [1, 1], errors
  assert lines == [
      "error: process(es) 1 were started with another config than this "
      "process 0 (their error names the fields); start every process with "
      "the same flags.",
      "error: process 1 was started with another config than process 0 "
      "(total_steps: 3 on process 0, 4 here); start every process with the "
      "same flags."], errors
  assert not (tmp_path / "checkpoints").exists()  # Refused before training.


_SAMPLE_METRICS_SCRIPT = """
import sys
import numpy as np
from jaxgen.parallel import multihost
multihost.initialize()
import jax
from jaxgen.eval import features, inception, sample_metrics
inception.INPUT_SIZE = 75  # Its smallest input: plumbing, not FID.
mesh = jax.make_mesh((4, 2, 1), ("data", "fsdp", "tensor"),
                     axis_types=(jax.sharding.AxisType.Auto,) * 3)
ex = features.FeatureExtractor(inception.random_params(0), mesh=mesh,
                               batch_size=8)
images = np.random.default_rng(0).integers(0, 256, (12, 16, 16, 3), np.uint8)
feats, _ = ex.of_batches(iter([images[:8], images[8:]]), 12, "x",
                         progress=False)
split = jax.make_array_from_callback(
    (8, 3), jax.sharding.NamedSharding(mesh, jax.P("data")),
    lambda index: np.arange(24.0).reshape(8, 3)[index])
np.savez(sys.argv[1] + f"/{jax.process_index()}.npz", feats=feats,
         split=sample_metrics._to_host({"a": split})["a"])
"""


@pytest.mark.multihost
def test_sample_metrics_gather_features_on_every_process(tmp_path,
                                                         monkeypatch):
  # In-training FID on two processes: jit refused the host batch for the
  # split Inception input, and a reconstruction's per-example metrics span
  # the other process's devices.
  port = _free_port()
  procs = [subprocess.Popen(
      [sys.executable, "-c", _SAMPLE_METRICS_SCRIPT, str(tmp_path)],
      env=_env(4, JAXGEN_COORDINATOR=f"127.0.0.1:{port}",
               JAXGEN_NUM_PROCESSES=2, JAXGEN_PROCESS_ID=i),
      cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
           for i in range(2)]
  for p in procs:
    out = p.communicate(timeout=300)[0]
    assert p.returncode == 0, out[-3000:]
  # The same features as one process's 8 devices, on both processes.
  from jaxgen.eval import features, inception  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(inception, "INPUT_SIZE", 75)
  images = np.random.default_rng(0).integers(0, 256, (12, 16, 16, 3),
                                             np.uint8)
  want, _ = features.FeatureExtractor(
      inception.random_params(0), batch_size=8).of_batches(
          iter([images[:8], images[8:]]), 12, "x", progress=False)
  for i in range(2):
    with np.load(tmp_path / f"{i}.npz") as got:
      np.testing.assert_allclose(got["feats"], want, rtol=1e-5, atol=1e-5)
      np.testing.assert_array_equal(got["split"],
                                    np.arange(24.0).reshape(8, 3))


@pytest.mark.parametrize("env,match", [
    ({"JAXGEN_NUM_PROCESSES": "2", "JAXGEN_PROCESS_ID": "0"},
     "JAXGEN_NUM_PROCESSES / JAXGEN_PROCESS_ID are set but "
     "JAXGEN_COORDINATOR is not"),
    ({"JAXGEN_COORDINATOR": "127.0.0.1", "JAXGEN_NUM_PROCESSES": "2",
      "JAXGEN_PROCESS_ID": "0"}, "'127.0.0.1' is not host:port"),
    ({"JAXGEN_COORDINATOR": "h:1", "JAXGEN_NUM_PROCESSES": "two",
      "JAXGEN_PROCESS_ID": "0"}, "JAXGEN_NUM_PROCESSES='two' is not an "
                                 "integer"),
    ({"JAXGEN_COORDINATOR": "h:1", "JAXGEN_NUM_PROCESSES": "2",
      "JAXGEN_PROCESS_ID": "2"}, r"JAXGEN_PROCESS_ID in 0..JAXGEN_NUM_"
                                 r"PROCESSES-1 \(got 2 and 2\)"),
    ({"JAXGEN_COORDINATOR": "h:1"}, r"\(got None and None\)"),
])
def test_launch_settings_that_cannot_work_are_one_line(monkeypatch, env,
                                                       match):
  for name in ("JAXGEN_COORDINATOR", "JAXGEN_NUM_PROCESSES",
               "JAXGEN_PROCESS_ID"):
    monkeypatch.delenv(name, raising=False)
  for name, value in env.items():
    monkeypatch.setenv(name, value)
  assert multihost.want_distributed(False)
  with pytest.raises(ValueError, match=match) as e:
    multihost.launch_settings()
  assert "\n" not in str(e.value)


def test_launch_settings_of_a_good_launch_and_none(monkeypatch):
  for name in ("JAXGEN_COORDINATOR", "JAXGEN_NUM_PROCESSES",
               "JAXGEN_PROCESS_ID"):
    monkeypatch.delenv(name, raising=False)
  assert multihost.launch_settings("10.0.0.1:1234", 4, 3) == dict(
      coordinator_address="10.0.0.1:1234", num_processes=4, process_id=3)
  # Nothing set: JAX detects the cluster (Cloud TPU, SLURM).
  assert multihost.launch_settings() == {}
  assert not multihost.want_distributed(False)


def test_multihost_without_a_cluster_is_one_line(tmp_path):
  env = {k: v for k, v in _env(8).items() if not k.startswith("JAXGEN_")
         or k in ("JAXGEN_COMPILATION_CACHE_DIR", "JAXGEN_MALLOC")}
  out = subprocess.run(
      [sys.executable, "-m", "jaxgen.main", f"--workdir={tmp_path}",
       "--multihost"] + common.cli_flags(), env=env, cwd=ROOT,
      capture_output=True, text=True, timeout=300)
  assert out.returncode == 1, out.stderr[-3000:]
  assert "Traceback" not in out.stderr, out.stderr[-3000:]
  assert out.stderr.strip().splitlines()[-1].startswith(
      "error: --multihost found no cluster to join ("), out.stderr[-3000:]


def test_processes_reading_different_data_are_refused(monkeypatch):
  # A host whose copy of the dataset is short trained another number of
  # epochs' steps, schedule and shuffle (and hung at the end).
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  from jaxgen.data import pipeline  # pylint: disable=g-import-not-at-top
  info = pipeline.DatasetInfo.synthetic(common.tiny_config().dataset)
  short = dataclasses.replace(info, num_examples=3_000_000_000)
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  for other, fails in ((info, False), (short, True)):
    def gather(own, other=other):
      # Process 1's values, sent the way check_same_data sends its own.
      theirs = [int(getattr(other, f) or 0)
                for f in multihost._SAME_DATA_FIELDS]  # pylint: disable=protected-access
      halves = np.array([[v >> 31, v & (2**31 - 1)] for v in theirs],
                        np.int32)
      return np.stack([own, halves])
    monkeypatch.setattr(multihost_utils, "process_allgather", gather)
    if not fails:
      multihost.check_same_data(info)
      continue
    with pytest.raises(ValueError) as e:
      multihost.check_same_data(info)
    assert str(e.value) == (
        f"the processes read different training data (num_examples: "
        f"{info.num_examples} on process 0, 3000000000 on process 1); point "
        "every host's config.dataset.data_dir at the same, complete copy.")
