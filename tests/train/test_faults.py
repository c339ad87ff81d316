"""Faults a trusted trainer survives: nothing committed is lost, nothing fails
silently.

Each test reproduces one fault for real (a corrupted file, a second
process, a full tmpfs, a kill during the final evaluation; signals and
kill -9 during training: test_signals.py) and checks the one-line outcome,
the checkpoints left behind and, where the run goes on, identical losses.
"""

import json
import logging
import os
import signal
import subprocess
import sys

import numpy as np
from PIL import Image
import pytest

from jaxgen import config_lib
from jaxgen.train import checkpoint as checkpoint_lib
from jaxgen.train import checks
from jaxgen.train import data_position
from jaxgen.train import evaluation
from jaxgen.train import preemption
from jaxgen.train import run_record
from jaxgen.train import trainer
from jaxgen.train import workdir as workdir_lib
from tests.train import common

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
# The rows of a run's metrics.jsonl (or another JSON-lines file).
_rows = common.metrics_rows
_env = common.process_env


# -- the workdir ----------------------------------------------------------------


def test_fresh_start_keeps_earlier_metrics(tmp_path):
  config = common.tiny_config(total_steps=2, num_samples=4)
  trainer.train_and_evaluate(config, str(tmp_path))
  first = _rows(tmp_path)
  events = sorted(n for n in os.listdir(tmp_path) if n.startswith("events"))
  grids = sorted(os.listdir(tmp_path / "samples"))
  assert events and grids
  with open(tmp_path / "config.json") as f:
    first_config = f.read()
  os.system(f"rm -rf {tmp_path / 'checkpoints'}")
  config.seed = 7  # Another run: its config and grids differ.
  trainer.train_and_evaluate(config, str(tmp_path))
  assert _rows(tmp_path, "metrics.jsonl.1") == first
  # Its TensorBoard events (one curve per run, not both runs' steps drawn
  # as one), config.json and sample grids went aside too, not overwritten.
  (aside,) = os.listdir(tmp_path / "earlier_runs")
  aside = tmp_path / "earlier_runs" / aside
  assert sorted(os.listdir(aside)) == sorted(events + ["config.json",
                                                       "samples"])
  assert sorted(os.listdir(aside / "samples")) == grids
  with open(aside / "config.json") as f:
    assert f.read() == first_config
  assert not set(events) & set(os.listdir(tmp_path))
  assert [r["step"] for r in _rows(tmp_path)] == [1, 2]
  with open(tmp_path / "config.json") as f:
    assert json.load(f)["config"]["seed"] == 7


def test_no_checkpoint_restoring_keeps_the_new_runs_config(tmp_path):
  # Checkpoints that all fail to restore start the run from 0 after it
  # wrote its config.json: the rows, events and grids go aside, its config
  # stays (it was moved aside, leaving the run without one).
  (tmp_path / "samples").mkdir()
  for name, text in (("metrics.jsonl", '{"step": 1}\n'),
                     ("config.json", "new"), ("events.out.x", "e"),
                     ("samples/step_1.png", "png")):
    (tmp_path / name).write_text(text)
  run_record.reconcile_metrics(str(tmp_path / "metrics.jsonl"), 0)
  (aside,) = os.listdir(tmp_path / "earlier_runs")
  aside = tmp_path / "earlier_runs" / aside
  assert sorted(os.listdir(aside)) == ["events.out.x", "samples"]
  assert (tmp_path / "config.json").read_text() == "new"
  assert (tmp_path / "metrics.jsonl.1").read_text() == '{"step": 1}\n'


def test_a_second_trainer_on_the_workdir_is_refused(tmp_path, monkeypatch):
  # Another process holds the workdir.
  holder = subprocess.Popen(
      [sys.executable, "-c",
       "import sys, time; from jaxgen.train import workdir as w\n"
       f"with w.Lock({str(tmp_path)!r}):\n"
       "  print('locked', flush=True); time.sleep(120)"],
      cwd=ROOT, env=_env(), stdout=subprocess.PIPE, text=True)
  try:
    assert holder.stdout.readline().strip() == "locked"
    monkeypatch.setattr(trainer, "compile_step", common.no_compile)
    with pytest.raises(ValueError, match=(
        f"in use by another trainer, pid {holder.pid} on host ")) as e:
      trainer.train_and_evaluate(common.tiny_config(), str(tmp_path))
    assert "\n" not in str(e.value)
  finally:
    holder.kill()
    holder.wait()
  # The holder died without unlocking: its lock is taken over.
  with workdir_lib.Lock(str(tmp_path)) as lock:
    assert json.load(open(lock.path))["pid"] == os.getpid()


def _mount(path, options):
  os.makedirs(path, exist_ok=True)
  result = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs",
                           str(path)], capture_output=True, text=True)
  if result.returncode:
    pytest.skip(f"cannot mount a tmpfs here: {result.stderr.strip()}")


def test_unusable_workdirs_are_one_line_errors(tmp_path, monkeypatch):
  monkeypatch.setattr(trainer, "compile_step", common.no_compile)
  (tmp_path / "file").write_text("x")
  cases = [(tmp_path / "file", "is a file"),
           (tmp_path / "file" / "sub", "cannot create workdir")]
  readonly = tmp_path / "ro"
  _mount(readonly, "size=1m,ro")
  try:
    cases.append((readonly, "is not writable: Read-only file system"))
    for workdir, match in cases:
      with pytest.raises(ValueError, match=match) as e:
        trainer.train_and_evaluate(common.tiny_config(), str(workdir))
      assert "\n" not in str(e.value)
  finally:
    subprocess.run(["umount", "-l", str(readonly)], check=False)


def test_full_disk_is_one_line_at_the_next_step_and_keeps_the_last_good(
    tmp_path, monkeypatch):
  mnt = tmp_path / "disk"
  _mount(mnt, "size=24m")
  try:
    workdir = mnt / "run"
    real_save = checkpoint_lib.Checkpointer.save
    saved = []

    def save_then_fill_disk(self, step, *args, **kwargs):
      started = real_save(self, step, *args, **kwargs)
      if started and not saved:
        self.wait()
        # Leave room for metrics, not for another checkpoint.
        stat = os.statvfs(mnt)
        with open(mnt / "filler", "wb") as f:
          f.write(b"\0" * (stat.f_bavail * stat.f_frsize - 600_000))
      saved.append(step)
      return started

    monkeypatch.setattr(checkpoint_lib.Checkpointer, "save",
                        save_then_fill_disk)
    config = common.tiny_config(total_steps=45, checkpoint_every_steps=15)
    with pytest.raises(checkpoint_lib.CheckpointWriteError) as e:
      trainer.train_and_evaluate(config, str(workdir))
    msg = str(e.value)
    assert msg.startswith("checkpoint 30 could not be written: No space "
                          "left on device; the last good checkpoint is "
                          "step 15"), msg
    assert "\n" not in msg
    # Noticed at the first step after the background save ended, not at the
    # next save; the partial step directory is gone.
    assert _rows(workdir)[-1]["step"] < 45
    assert os.listdir(workdir / "checkpoints") == ["15"]
    # With space again, the run resumes from step 15.
    os.remove(mnt / "filler")
    monkeypatch.setattr(checkpoint_lib.Checkpointer, "save", real_save)
    trainer.train_and_evaluate(common.tiny_config(
        total_steps=16, checkpoint_every_steps=15), str(workdir))
    assert [r["step"] for r in _rows(workdir)] == list(range(1, 17))
  finally:
    subprocess.run(["umount", "-l", str(mnt)], check=False)


def test_a_failing_evaluation_saves_the_state_it_could_not_evaluate(
    tmp_path, monkeypatch):
  real = evaluation.make_eval

  failing = {"step": 2}

  def failing_at_step_2(config, s, shardings):
    run = real(config, s, shardings)

    def evaluate(state, step):
      if step == failing["step"]:  # Say, out of memory in the evaluation.
        raise RuntimeError("evaluation broke")
      return run(state, step)
    return evaluate

  monkeypatch.setattr(evaluation, "make_eval", failing_at_step_2)
  evals = {"eval_batches": 1, "eval_every_steps": 2}
  for total, then in [(4, "a rerun continues from it"),
                      (2, "training is complete")]:
    workdir = tmp_path / str(total)
    with pytest.raises(RuntimeError, match="evaluation broke") as e:
      trainer.train_and_evaluate(
          common.tiny_config(total_steps=total, **evals), str(workdir))
    note, = e.value.__notes__
    assert note.startswith(
        f"The evaluation at step 2 failed; checkpoint 2 is saved in "
        f"{workdir / 'checkpoints'}: {then}"), note
    # Step 2 trained and logged; only its evaluation is missing.
    assert os.listdir(workdir / "checkpoints") == ["2"]
    assert [r["step"] for r in _rows(workdir)] == [1, 2]
    assert "eval_loss" not in _rows(workdir)[-1]
  # The rerun continues from the saved step and evaluates the next one.
  trainer.train_and_evaluate(common.tiny_config(total_steps=4, **evals),
                             str(tmp_path / "4"))
  rows = _rows(tmp_path / "4")
  assert [r["step"] for r in rows] == [1, 2, 3, 4]
  assert "eval_loss" in rows[-1]
  # A run whose last step went unevaluated is not "finished": the rerun
  # evaluates that step (trains nothing) and completes its row.
  before = _rows(tmp_path / "2")[-1]
  failing["step"] = None
  last = trainer.train_and_evaluate(
      common.tiny_config(total_steps=2, **evals), str(tmp_path / "2"))
  rows = _rows(tmp_path / "2")
  assert [r["step"] for r in rows] == [1, 2]
  assert rows[-1] == last and "eval_loss" in last
  assert {k: v for k, v in last.items() if not k.startswith("eval_")} == before
  assert os.listdir(tmp_path / "2" / "checkpoints") == ["2"]
  # A preemption at a step whose evaluation failed is still a preemption.
  failing["step"] = 2
  # Fetches: step 1's batch, its eval batch, step 2's batch.
  common.signal_at_batch(monkeypatch, 3, signal.SIGTERM)
  with pytest.raises(preemption.Preempted, match="at step 2"):
    trainer.train_and_evaluate(
        common.tiny_config(total_steps=6, **dict(evals, eval_every_steps=1)),
        str(tmp_path / "6"))


def test_a_kill_during_the_final_evaluation_keeps_the_trained_state(
    tmp_path, monkeypatch, caplog):
  # The last checkpoint was written after the end-of-run evaluation: a
  # kill -9 (or the OOM killer) during a long final FID lost every step
  # since the last periodic save.
  class Killed(BaseException):
    pass

  real = evaluation.make_eval
  kill = {"at": 3}

  def killed_at_the_end(config, s, shardings):
    run = real(config, s, shardings)

    def evaluate(state, step):
      if step == kill["at"]:
        raise Killed()
      return run(state, step)
    return evaluate

  monkeypatch.setattr(evaluation, "make_eval", killed_at_the_end)
  config = common.tiny_config(total_steps=3, eval_batches=1,
                              eval_every_steps=1)
  with pytest.raises(Killed):
    trainer.train_and_evaluate(config, str(tmp_path))
  assert os.listdir(tmp_path / "checkpoints") == ["3"]
  rows = _rows(tmp_path)
  assert [r["step"] for r in rows] == [1, 2, 3]
  assert "eval_loss" in rows[1] and "eval_loss" not in rows[2]
  # A rerun stopped while it evaluates keeps the row it was completing (it
  # was dropped first, and the next rerun took step 2's row for the end).
  with pytest.raises(Killed):
    trainer.train_and_evaluate(config, str(tmp_path))
  assert _rows(tmp_path) == rows
  # The rerun evaluates step 3, trains nothing, and completes its row.
  kill["at"] = None
  last = trainer.train_and_evaluate(config, str(tmp_path))
  rows = _rows(tmp_path)
  assert [r["step"] for r in rows] == [1, 2, 3] and rows[-1] == last
  assert "eval_loss" in last
  # An uninterrupted run logs its last row once, evaluated: in
  # metrics.jsonl and in the log (the row saved before the evaluation is
  # not printed).
  caplog.clear()
  with caplog.at_level(logging.INFO):
    trainer.train_and_evaluate(config, str(tmp_path / "whole"))
  rows = _rows(tmp_path / "whole")
  assert [r["step"] for r in rows] == [1, 2, 3] and "eval_loss" in rows[-1]
  logged = [r.getMessage() for r in caplog.records
            if r.getMessage().startswith("[3] ")]
  assert len(logged) == 1 and "eval_loss=" in logged[0], logged
  np.testing.assert_allclose(rows[-1]["eval_loss"], last["eval_loss"],
                             rtol=1e-6)


def test_a_row_to_complete_is_not_put_under_an_older_restored_step(
    tmp_path, monkeypatch):
  # Step 3's row lacks its evaluation, its checkpoint is corrupt, and the
  # rerun asks for 2 steps: it restored step 2 and wrote step 3's row
  # (with step 2's evaluation) in place of step 2's.
  from tests.train import test_checkpoint_faults  # pylint: disable=g-import-not-at-top
  real = evaluation.make_eval

  def failing_at_3(config, s, shardings):
    run = real(config, s, shardings)
    return lambda state, step: (_ for _ in ()).throw(
        RuntimeError("out of memory")) if step == 3 else run(state, step)

  monkeypatch.setattr(evaluation, "make_eval", failing_at_3)
  config = common.tiny_config(total_steps=3, eval_batches=1,
                              eval_every_steps=1, checkpoint_every_steps=1)
  with pytest.raises(RuntimeError, match="out of memory"):
    trainer.train_and_evaluate(config, str(tmp_path))
  rows = _rows(tmp_path)
  assert [r["step"] for r in rows] == [1, 2, 3]
  test_checkpoint_faults._truncate(  # pylint: disable=protected-access
      str(tmp_path / "checkpoints" / "3"))
  monkeypatch.setattr(evaluation, "make_eval", real)
  config.total_steps = 2
  trainer.train_and_evaluate(config, str(tmp_path))
  assert _rows(tmp_path) == rows[:2]


def test_a_kill_while_the_final_grid_is_drawn_draws_it_on_rerun(
    tmp_path, monkeypatch):
  # The final row and checkpoint are written before the grid: a kill while
  # sampling left a run the rerun called finished, with no final samples.
  class Killed(BaseException):
    pass

  real = run_record.write_samples
  kill = {"at": 2}

  def killed_at(sample_fn, state, base_rng, step, workdir, writer):
    if step == kill["at"]:
      raise Killed()
    return real(sample_fn, state, base_rng, step, workdir, writer)

  monkeypatch.setattr(run_record, "write_samples", killed_at)
  config = common.tiny_config(total_steps=2, num_samples=4,
                              sample_every_steps=1)
  with pytest.raises(Killed):
    trainer.train_and_evaluate(config, str(tmp_path))
  assert os.listdir(tmp_path / "checkpoints") == ["2"]
  assert sorted(os.listdir(tmp_path / "samples")) == ["step_0000001.png"]
  before = _rows(tmp_path)
  kill["at"] = None
  last = trainer.train_and_evaluate(config, str(tmp_path))
  # Trains nothing, keeps the row, and draws the missing grid.
  assert sorted(os.listdir(tmp_path / "samples")) == [
      "step_0000001.png", "step_0000002.png"]
  assert _rows(tmp_path) == before and last == before[-1]
  # Now finished: a third run draws nothing.
  kill["at"] = 2
  assert trainer.train_and_evaluate(config, str(tmp_path)) == last


def test_the_held_out_loss_parts_are_not_taken_for_sample_metrics():
  # An autoencoder's row of a failed end-of-run FID held eval_l1 and
  # eval_reconstruction: the run counted as evaluated, and the rerun the
  # error promised ("a rerun evaluates it") did nothing.
  config = common.tiny_config(eval_batches=1, **{
      "eval.sample_metrics.enabled": True,
      "eval.sample_metrics.inception_weights": "inception.npz"})
  row = {"step": 5, "loss": 0.1, "eval_loss": 0.2, "eval_l1": 0.1,
         "eval_reconstruction": 0.2}
  assert evaluation.missing_at_end(config, row, 5)
  for logged in ("eval_fid", "eval_rfid"):
    assert not evaluation.missing_at_end(config, dict(row, **{logged: 1.0}),
                                         5)
  # A row scored without Inception files (PSNR / SSIM alone) is not the
  # rFID a rerun with them asks for; without them it is complete.
  psnr_row = dict(row, eval_psnr=20.0, eval_ssim=0.5)
  assert evaluation.missing_at_end(config, psnr_row, 5)
  config.eval.sample_metrics.inception_weights = ""
  assert not evaluation.missing_at_end(config, psnr_row, 5)
  assert evaluation.missing_at_end(config, row, 5)
  config.eval.sample_metrics.features = "shape_classifier"
  assert evaluation.missing_at_end(config, psnr_row, 5)
  assert not evaluation.missing_at_end(
      config, dict(row, eval_fd_shapes=1.0), 5)
  assert not evaluation.missing_at_end(config, row, 4)  # Not its row.
  config.eval.sample_metrics.enabled = False
  assert not evaluation.missing_at_end(config, row, 5)


def test_error_lines_carry_one_line_notes_only():
  e = ValueError("cannot decode image x.png: truncated")
  e.add_note("--------------------\nFor simplicity, Grain has removed its "
             "internal frames from the traceback.")  # Grain's, two lines.
  e.add_note("The evaluation at step 2 failed; checkpoint 2 is saved.")
  assert config_lib.with_notes(e) == (
      "cannot decode image x.png: truncated The evaluation at step 2 "
      "failed; checkpoint 2 is saved.")
  assert config_lib.with_notes(OSError(28, "full"), "disk full.") == (
      "disk full.")


@pytest.mark.parametrize("overrides,match", [
    ({"total_steps": -5}, "total_steps=-5 must be positive"),
    ({"checkpoint_every_steps": 0}, "checkpoint_every_steps=0 must be"),
    ({"log_every_steps": 0}, "log_every_steps=0 must be"),
    ({"eval_every_steps": 0}, "eval_every_steps=0 must be"),
    # Evaluations run at log steps; step 15 is not one of them.
    ({"eval_batches": 1, "eval_every_steps": 15, "log_every_steps": 10,
      "total_steps": 40}, "eval_every_steps=15 must be a multiple of "
                          "log_every_steps=10"),
    ({"keep_checkpoints": 0}, "keep_checkpoints=0 must be"),
    ({"model.num_heads": 3}, "transformer_width=32 is not divisible by "
                             "num_heads=3"),
    ({"diffusion.guidance_interval": (1.0,)},
     r"guidance_interval=\(1.0,\) must be \(\) \(guide everywhere\) or "
     r"\(lo, hi\)"),
    ({"diffusion.guidance_interval": (5.0, -5.0)},
     r"guidance_interval=\(5.0, -5.0\) is empty \(lo >= hi"),
    ({"ema_decay": 1.5}, r"config.ema_decay=1.5 must be a number in \[0, 1\)"),
    ({"optimizer.schedule": "cosin"},
     "unknown config.optimizer.schedule 'cosin'; use 'constant', 'cosine'"),
    ({"optimizer.name": "adamm"},
     "unknown config.optimizer.name 'adamm'; choose one of: adam, adamw"),
])
def test_bad_values_are_one_line_errors_before_compilation(
    tmp_path, monkeypatch, overrides, match):
  monkeypatch.setattr(trainer, "compile_step", common.no_compile)
  with pytest.raises(ValueError, match=match) as e:
    trainer.train_and_evaluate(common.tiny_config(**overrides),
                               str(tmp_path))
  assert "\n" not in str(e.value)


def _image_folder(root, bad):
  rng = np.random.default_rng(0)
  for c in range(8):
    os.makedirs(root / f"class{c}")
    for i in range(2):
      pixels = rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)
      Image.fromarray(pixels).save(root / f"class{c}" / f"{i}.png")
  (root / bad).write_bytes(rng.bytes(300))
  return str(root / bad)


def test_a_corrupt_image_is_skipped_or_named(tmp_path, caplog):
  bad = _image_folder(tmp_path / "images", "class3/1.png")
  folder = {"dataset.name": f"folder:{tmp_path / 'images'}",
            "total_steps": 4}
  # Two epochs (16 images, batch 8): the file is warned about once and
  # counted in the epoch and run summaries.
  trainer.train_and_evaluate(common.tiny_config(**folder),
                             str(tmp_path / "skip"))
  assert [r["step"] for r in _rows(tmp_path / "skip")] == [1, 2, 3, 4]
  messages = [r.getMessage() for r in caplog.records]
  assert sum("Skipping unreadable image" in m for m in messages) == 1
  assert any(m.startswith("run: 1 unreadable image files skipped") and bad
             in m for m in messages)
  with pytest.raises(ValueError, match=f"cannot decode image {bad}") as e:
    trainer.train_and_evaluate(
        common.tiny_config(**folder, **{"dataset.skip_bad_files": False}),
        str(tmp_path / "strict"))
  assert "\n" not in str(e.value)


def test_a_worker_count_change_on_resume_is_refused_before_compiling(
    tmp_path, monkeypatch):
  # The saved data position is grain's state for the old count: another
  # count could not restore it, every checkpoint was set aside as
  # unreadable and the run restarted from step 0.
  trainer.train_and_evaluate(common.tiny_config(total_steps=1),
                             str(tmp_path))
  monkeypatch.setattr(trainer, "compile_step", common.no_compile)
  with pytest.raises(ValueError, match=r"^dataset.worker_count: 0 -> 2 on "
                     r"resume: .*; keep dataset.worker_count"):
    trainer.train_and_evaluate(common.tiny_config(
        total_steps=2, **{"dataset.worker_count": 2}), str(tmp_path))
  assert os.listdir(tmp_path / "checkpoints") == ["1"]
  # Hosts of a multi-host run set their own count, which config.json does
  # not hold: the saved position's form is compared with the new
  # iterator's instead (it was restored, failed in grain, and every
  # checkpoint was set aside), ...
  ckpts = tmp_path / "checkpoints"
  workers = {"iterators_in_use_states": [{"next_index": 0}] * 2}
  with pytest.raises(ValueError) as e:
    data_position.check_form(ckpts, 1, workers)
  assert str(e.value) == (
      f"checkpoint 1 in {ckpts} holds the data position of 0 grain "
      "worker(s) and this run reads with 2 (dataset.worker_count, which "
      "each host sets): set it back to 0, or start a new run in another "
      "workdir.")
  data_position.check_form(ckpts, 1, {"next_index": 0})
  # ... and one process's refusal is every process's (not a hang).
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(multihost_utils, "process_allgather",
                      lambda flag: np.array([int(flag), 1]))
  monkeypatch.setattr(data_position.jax, "process_count", lambda: 2)
  with pytest.raises(ValueError, match=r"^process\(es\) 1 cannot restore "
                     "the data position of checkpoint 1 with their "
                     r"dataset.worker_count \(their error says which\)"):
    data_position.check_form(ckpts, 1, {"next_index": 0})
  # config.json's count (process 0's) is not compared there.
  checks.check_resumed_workers(["dataset.worker_count: 0 -> 8"])
