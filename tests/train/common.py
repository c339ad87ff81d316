"""Shared helpers for trainer tests: a very small simple-diffusion config."""

import json
import os
import subprocess
import sys
import tempfile

import flax.linen as nn
import jax
import numpy as np
import pytest

from jaxgen import config_lib
from configs import simple_diffusion
from jaxgen.data.pipeline import DatasetInfo
from jaxgen.parallel import multihost
from jaxgen.parallel import sharding as sharding_lib
from jaxgen.train import trainer

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))


def no_compile(*args, **kwargs):
  """Stands for `trainer.compile_step` where a check must come first."""
  del args, kwargs
  raise AssertionError("compiled before validating")


def run_module(module, *args, timeout=300):
  """`python -m module args...` from the repository root, on the CPU.

  Args:
    module: e.g. "jaxgen.sample".
    *args: its command-line arguments.
    timeout: seconds.

  Returns:
    The finished `subprocess.CompletedProcess` (text stdout / stderr).
  """
  return subprocess.run(
      [sys.executable, "-m", module, *args], capture_output=True, text=True,
      cwd=ROOT, timeout=timeout, check=False,
      env=dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu"))


def error_lines(module, *args, timeout=300):
  """Runs a command that must fail on bad input; its `error:` lines.

  Asserts exit status 1 and no traceback (the bad-input convention).

  Args:
    module: e.g. "jaxgen.autoencoders.encode".
    *args: its command-line arguments.
    timeout: seconds.

  Returns:
    The stderr lines starting with "error:".
  """
  proc = run_module(module, *args, timeout=timeout)
  assert proc.returncode == 1, proc.stderr[-2000:]
  assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
  return [l for l in proc.stderr.splitlines() if l.startswith("error:")]


# One prepared copy of the embedded dataset for all test processes (the
# builder guards concurrent preparation with a lock).
DATA_DIR = os.environ.get(
    "JAXGEN_TEST_DATA_DIR", os.path.join(tempfile.gettempdir(),
                                         "jaxgen_test_tfds"))


def tiny_config(**overrides):
  """simple_diffusion:tiny shrunk further: 16px, widths divisible by 8.

  Args:
    **overrides: dotted config keys ("mesh.fsdp") and values.

  Returns:
    An unlocked ConfigDict.
  """
  c = simple_diffusion.get_config("tiny")
  config_lib.apply_overrides(c, dict(TINY_OVERRIDES, **overrides))
  return c


# simple_diffusion:tiny at 16 px, with every model dim divisible by 8.
TINY_OVERRIDES = {
    "dataset.image_size": 16,
    "dataset.data_dir": DATA_DIR,
    "batch_size": 8,
    "total_steps": 3,
    "log_every_steps": 1,
    "num_samples": 0,
    "eval_batches": 0,
    "checkpoint_every_steps": 1000,
    # A smaller U-ViT than `tiny` (compile time dominates CPU tests).
    "model.channels": (16, 32),
    "model.transformer_width": 32,
    "model.transformer_depth": 1,
    "model.num_heads": 2,
    "model.cond_dim": 32,
    "model.freq_dim": 32,
    "model.num_groups": 8,
}


def cli_flags(**overrides):
  """The same config as `tiny_config(**overrides)`, as jaxgen.main flags."""
  return ["--config=configs/simple_diffusion.py:tiny"] + [
      f"--config.{k}={_flag(v)}"
      for k, v in dict(TINY_OVERRIDES, **overrides).items()]


def _flag(value):
  # config_flags parses tuples written without spaces, e.g. (16,32).
  return str(value).replace(" ", "") if isinstance(value, tuple) else value


def metrics_rows(workdir, name="metrics.jsonl"):
  """The JSON rows of WORKDIR/NAME."""
  with open(os.path.join(workdir, name)) as f:
    return [json.loads(line) for line in f]


def read_losses(workdir):
  """[(step, loss)] from WORKDIR/metrics.jsonl."""
  return [(r["step"], r["loss"]) for r in metrics_rows(workdir)]


def process_env(**extra):
  """The environment of a jaxgen command a test starts as a process: on the
  CPU, importing this checkout, with one compilation cache for all of them
  (a restarted run then recompiles nothing), plus `extra`."""
  env = dict(os.environ, JAX_PLATFORMS="cpu", TF_CPP_MIN_LOG_LEVEL="2",
             PYTHONPATH=ROOT, JAX_COMPILATION_CACHE_DIR=os.path.join(
                 DATA_DIR, "..", "jaxgen_test_jax_cache"),
             JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS="0")
  env.update({k: str(v) for k, v in extra.items()})
  return env


def at_batch(monkeypatch, n, action):
  """Calls `action()` while the trainer fetches its n-th (1-based) batch.

  Args:
    monkeypatch: pytest's monkeypatch fixture.
    n: the fetch.
    action: e.g. a signal to this process, or an exception.

  Returns:
    The unpatched `multihost.global_batch`.
  """
  real = multihost.global_batch
  calls = {"n": 0}

  def fetch(mesh, batch):
    calls["n"] += 1
    if calls["n"] == n:
      action()
    return real(mesh, batch)

  monkeypatch.setattr(multihost, "global_batch", fetch)
  return real


def signal_at_batch(monkeypatch, n, sig):
  """Sends `sig` to this process while the n-th batch is fetched (see
  `at_batch`)."""
  return at_batch(monkeypatch, n, lambda: os.kill(os.getpid(), sig))


def preempted_then_resumed(config, workdir, monkeypatch, devices=None,
                           preempt_at_batch=3):
  """Trains `config` in `workdir`, "preempted" while fetching a batch, then
  resumed in the same workdir (the automatic resume path).

  Args:
    config: a run config whose checkpoint interval lands before the preemption.
    workdir: run directory (str or path).
    monkeypatch: pytest's monkeypatch fixture.
    devices: devices for the trainer (None: all).
    preempt_at_batch: 1-based global batch whose fetch raises KeyboardInterrupt.

  Returns:
    The checkpoint step directories present after the preemption (sorted).
  """
  def preempt():
    raise KeyboardInterrupt("preempted")

  real = at_batch(monkeypatch, preempt_at_batch, preempt)
  with pytest.raises(KeyboardInterrupt):
    trainer.train_and_evaluate(config, str(workdir), devices=devices)
  kept = sorted(os.listdir(os.path.join(str(workdir), "checkpoints")))
  monkeypatch.setattr(multihost, "global_batch", real)
  trainer.train_and_evaluate(config, str(workdir), devices=devices)
  return kept


def random_batches(config, n, batch_size=None):
  """`n` global batches of uniform images in [-1, 1] and labels in 0..7.

  Args:
    config: a run config (`batch_size`, `dataset.image_size`).
    n: number of batches.
    batch_size: rows per batch (default `config.batch_size`).

  Returns:
    A list of {"image": f32[B, H, W, 3], "label": i32[B]} (seeded, so every
    call gives the same batches).
  """
  rng = np.random.default_rng(0)
  size, b = config.dataset.image_size, batch_size or config.batch_size
  return [{"image": rng.uniform(-1, 1, (b, size, size, 3)).astype(np.float32),
           "label": rng.integers(0, 8, (b,)).astype(np.int32)}
          for _ in range(n)]


def losses_on(config, devices, batches):
  """Losses of len(batches) steps run with the trainer's compiled step.

  Args:
    config: the run config (its mesh is used).
    devices: devices of the mesh (None: all).
    batches: global batches (host numpy).

  Returns:
    (losses as a numpy array, the final state, the setup).
  """
  s = trainer.setup(config, data_info=DatasetInfo.synthetic(config.dataset),
                    devices=devices)
  init_rng, base_rng = jax.random.split(jax.random.key(config.seed))
  with jax.set_mesh(s.mesh), nn.logical_axis_rules(s.rules):
    init_fn, _, shardings, step, _ = trainer.compile_step(s, base_rng)
    state = sharding_lib.create_sharded(init_fn, shardings, init_rng)
    out = []
    for b in batches:
      state, metrics = step(state, multihost.global_batch(s.mesh, b))
      out.append(float(metrics["loss"]))
  return np.array(out), state, s
