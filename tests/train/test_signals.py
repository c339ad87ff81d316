"""Signals a trusted trainer survives: SIGTERM / SIGINT save the step and a
rerun continues with identical losses, a second Ctrl-C stops at once, and
kill -9 at random steps loses nothing committed.

Each test sends the signal for real (to this process or to a `jaxgen.main`
it started) and checks the one-line outcome and the checkpoints left.
"""

import gc
import os
import re
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from jaxgen.parallel import multihost
from jaxgen.train import evaluation
from jaxgen.train import preemption
from jaxgen.train import trainer
from tests.train import common

ROOT = common.ROOT
_rows = common.metrics_rows
_env = common.process_env


def _reference(tmp_path_factory, **overrides):
  """Losses of an uninterrupted run (one per config, shared by tests)."""
  workdir = tmp_path_factory.mktemp("reference")
  trainer.train_and_evaluate(common.tiny_config(**overrides), str(workdir))
  return [(r["step"], r["loss"]) for r in _rows(workdir)]


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT])
def test_signal_saves_the_step_and_a_rerun_continues_identically(
    tmp_path, tmp_path_factory, monkeypatch, sig):
  # Off the logging and checkpoint grids: step 5 is neither, so the rows
  # averaged since step 3 must travel with the checkpoint.
  cfg = dict(total_steps=8, log_every_steps=3, checkpoint_every_steps=6)
  ref = _reference(tmp_path_factory, **cfg)
  real = common.signal_at_batch(monkeypatch, 5, sig)
  with pytest.raises(preemption.Preempted) as e:
    trainer.train_and_evaluate(common.tiny_config(**cfg), str(tmp_path))
  name = signal.Signals(sig).name
  assert str(e.value).startswith(f"preempted by {name} at step 5: "
                                 "checkpoint 5 saved")
  assert "\n" not in str(e.value)
  assert "5" in os.listdir(tmp_path / "checkpoints")
  assert signal.getsignal(sig) is not None  # Handlers were restored.
  monkeypatch.setattr(multihost, "global_batch", real)
  trainer.train_and_evaluate(common.tiny_config(**cfg), str(tmp_path))
  got = [(r["step"], r["loss"]) for r in _rows(tmp_path)]
  # Exactly: the row at step 6 averages steps 4-5 restored from the
  # checkpoint's JSON with step 6 fetched from the device.
  assert got == ref


def test_a_signal_at_an_evaluation_step_saves_before_evaluating(
    tmp_path, monkeypatch):
  # The held-out evaluation (or FID) ran before the save: minutes, while a
  # preemption notice gives ~30 s before SIGKILL takes the unsaved steps.
  cfg = dict(total_steps=8, log_every_steps=1, checkpoint_every_steps=100,
             eval_batches=1, eval_every_steps=4)
  make_eval = evaluation.make_eval
  committed_at_eval = {}

  def spying(*args):
    eval_fn = make_eval(*args)

    def run(state, step):
      committed_at_eval[step] = str(step) in os.listdir(
          tmp_path / "checkpoints")
      return eval_fn(state, step)
    return run

  monkeypatch.setattr(evaluation, "make_eval", spying)
  common.signal_at_batch(monkeypatch, 4, signal.SIGTERM)
  with pytest.raises(preemption.Preempted, match="^preempted by SIGTERM at "
                     "step 4: checkpoint 4 saved"):
    trainer.train_and_evaluate(common.tiny_config(**cfg), str(tmp_path))
  assert committed_at_eval == {4: True}
  # The row saved first was completed by the evaluation after it.
  (row,) = [r for r in _rows(tmp_path) if r["step"] == 4]
  assert np.isfinite(row["eval_loss"]) and np.isfinite(row["loss"])


def _start(workdir, **overrides):
  cmd = [sys.executable, "-m", "jaxgen.main", f"--workdir={workdir}"]
  return subprocess.Popen(cmd + common.cli_flags(**overrides), cwd=ROOT,
                          env=_env(), stdout=subprocess.PIPE,
                          stderr=subprocess.PIPE, text=True)


def _wait_for_rows(proc, workdir, n, timeout=240):
  path = os.path.join(workdir, "metrics.jsonl")
  deadline = time.time() + timeout
  while time.time() < deadline and proc.poll() is None:
    try:
      with open(path) as f:
        if sum(1 for _ in f) >= n:
          return True
    except FileNotFoundError:
      # Not written yet, or moved aside for a moment: a restart without a
      # checkpoint rotates the rows to metrics.jsonl.1 (kept, not lost).
      pass
    time.sleep(0.01)
  return False


def _wait_for_checkpoint(proc, workdir, timeout=240):
  """Waits until a committed (step-named) checkpoint exists."""
  path = os.path.join(workdir, "checkpoints")
  deadline = time.time() + timeout
  while time.time() < deadline and proc.poll() is None:
    if os.path.isdir(path) and any(d.isdigit() for d in os.listdir(path)):
      return True
    time.sleep(0.01)
  return False


@pytest.mark.slow
def test_sigterm_to_the_process_during_saves_exits_cleanly(
    tmp_path, tmp_path_factory):
  # A checkpoint every step: a save is in flight when SIGTERM arrives.
  cfg = dict(total_steps=12, checkpoint_every_steps=1, keep_checkpoints=2)
  ref = _reference(tmp_path_factory, **cfg)
  proc = _start(tmp_path, **cfg)
  assert _wait_for_rows(proc, tmp_path, 4), proc.communicate()
  proc.send_signal(signal.SIGTERM)
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == 0, err[-2000:]
  last = err.strip().splitlines()[-1]
  assert last.startswith("preempted by SIGTERM at step "), err[-2000:]
  step = int(last.split("at step ")[1].split(":")[0])
  assert 4 <= step < 12
  assert str(step) in os.listdir(tmp_path / "checkpoints")
  assert [r["step"] for r in _rows(tmp_path)] == list(range(1, step + 1))
  proc = _start(tmp_path, **cfg)
  _, err = proc.communicate(timeout=240)
  assert proc.returncode == 0, err[-2000:]
  got = [(r["step"], r["loss"]) for r in _rows(tmp_path)]
  assert [s for s, _ in got] == list(range(1, 13))
  np.testing.assert_allclose([l for _, l in got], [l for _, l in ref],
                             rtol=1e-6)


def test_a_second_sigint_in_a_gc_callback_stops_at_the_step_end():
  # A KeyboardInterrupt raised in a GC callback (JAX registers one) is
  # printed as "Exception ignored" and dropped (seen in CI): there the
  # handler only records it, and the loop raises it before the step's save.
  frames = []

  def callback(phase, info):
    del phase, info
    if not frames:
      frames.append(sys._getframe())  # pylint: disable=protected-access

  gc.callbacks.append(callback)
  try:
    gc.collect()
    with preemption.Watcher() as watcher:
      watcher._on_signal(signal.SIGINT, None)  # pylint: disable=protected-access
      assert watcher.should_stop(1)
      watcher._on_signal(signal.SIGINT, frames[0])  # pylint: disable=protected-access
      with pytest.raises(KeyboardInterrupt, match="second SIGINT: stopping "
                         "without saving"):
        watcher.should_stop(2)
      # Anywhere else it raises at once.
      with pytest.raises(KeyboardInterrupt):
        watcher._on_signal(signal.SIGINT, sys._getframe())  # pylint: disable=protected-access
  finally:
    gc.callbacks.remove(callback)


# jaxgen.main with every batch 0.3 s late: a signal lands mid-step.
_SLOW_MAIN = """
import sys, time
from absl import app
from jaxgen import config_lib, main
from jaxgen.parallel import multihost
real = multihost.global_batch
def slow(*args, **kwargs):
  time.sleep(0.3)
  return real(*args, **kwargs)
multihost.global_batch = slow
app.run(main.main, flags_parser=config_lib.parse_flags)
"""


@pytest.mark.slow
def test_a_second_ctrl_c_stops_at_once_in_one_line(tmp_path):
  cfg = dict(total_steps=200, checkpoint_every_steps=2)
  proc = subprocess.Popen(
      [sys.executable, "-c", _SLOW_MAIN, f"--workdir={tmp_path}"]
      + common.cli_flags(**cfg), cwd=ROOT, env=_env(),
      stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
  assert _wait_for_rows(proc, tmp_path, 3), proc.communicate()
  # Saves are asynchronous: on a loaded machine the step-2 checkpoint can
  # still be in flight after the third row (the run then says, rightly,
  # that none was committed). The message under test names a kept one.
  assert _wait_for_checkpoint(proc, tmp_path), proc.communicate()
  proc.send_signal(signal.SIGINT)
  time.sleep(0.1)
  proc.send_signal(signal.SIGINT)
  _, err = proc.communicate(timeout=120)
  assert proc.returncode == 130, err[-2000:]
  assert "Traceback" not in err, err[-2000:]
  last = err.strip().splitlines()[-1]
  named = re.fullmatch(
      r"second SIGINT: stopping without saving; checkpoint (\d+) in "
      + re.escape(str(tmp_path / "checkpoints")) + r" is kept: rerun the "
      r"same command to continue from it\.", last)
  assert named, last
  # What was committed restores: the rerun continues from it.
  committed = {int(d) for d in os.listdir(tmp_path / "checkpoints")
               if d.isdigit()}
  assert int(named.group(1)) in committed and max(committed) >= 2


@pytest.mark.slow
def test_kill_9_at_random_steps_loses_nothing(tmp_path, tmp_path_factory):
  # JAXGEN_FAULT_TRIALS=10 for the figures in the README; 2 in CI.
  trials = int(os.environ.get("JAXGEN_FAULT_TRIALS", "2"))
  cfg = dict(total_steps=40, checkpoint_every_steps=3)
  ref = _reference(tmp_path_factory, **cfg)
  rng = np.random.default_rng(int(time.time()))
  killed_at = []
  for _ in range(trials):
    before = len(_rows(tmp_path)) if (tmp_path / "metrics.jsonl").exists() \
        else 0
    proc = _start(tmp_path, **cfg)
    if not _wait_for_rows(proc, tmp_path, min(39, before +
                                              int(rng.integers(1, 8)))):
      proc.communicate()
      break  # Finished before the kill.
    proc.send_signal(signal.SIGKILL)
    proc.communicate()
    # (last step logged, newest committed checkpoint): what a rerun redoes.
    committed = [int(d) for d in os.listdir(tmp_path / "checkpoints")
                 if d.isdigit()]
    killed_at.append((_rows(tmp_path)[-1]["step"], max(committed, default=0)))
  proc = _start(tmp_path, **cfg)
  _, err = proc.communicate(timeout=300)
  assert proc.returncode == 0, err[-2000:]
  got = [(r["step"], r["loss"]) for r in _rows(tmp_path)]
  assert [s for s, _ in got] == list(range(1, 41)), killed_at
  np.testing.assert_allclose([l for _, l in got], [l for _, l in ref],
                             rtol=1e-6)
  print(f"kill -9 at (step, committed checkpoint): {killed_at}")
