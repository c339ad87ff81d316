"""The sweep runner under faults: a second runner, a torn results line, an
orphaned worker, a killed runner, an object-store workdir, killed workers.
"""

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from jaxgen.train import workdir as workdir_lib
from scaling import executors
from scaling import workers
from tests.scaling.test_sweep_runner import ROOT
from tests.scaling.test_sweep_runner import SETS
from tests.scaling.test_sweep_runner import SPEC
from tests.scaling.test_sweep_runner import _rows
from tests.scaling.test_sweep_runner import _sweep


def test_a_second_runner_on_the_same_workdir_is_refused(tmp_path):
  # Two runners would train the same points in the same directories and
  # append duplicate rows; the second one stops before running anything.
  workdir = tmp_path / "sweep"
  (workdir / "runs").mkdir(parents=True)
  with workers.exclusive(str(workdir / "lock"), "held"):
    with pytest.raises(ValueError, match="another scaling.run is running"):
      _sweep(workdir, in_process=True)
  assert not (workdir / "results.jsonl").exists()


def _finished_row(point):
  return {"family": "simple_diffusion", "point": point.id, "status": "ok",
          "eval_loss": 0.5, "final_train_loss": 0.5,
          "config": {"overrides": json.loads(json.dumps(point.overrides))}}


def test_a_torn_last_line_is_repaired_from_result_json(tmp_path):
  workdir = tmp_path / "sweep"
  points = _sweep(workdir, dry_run=True)["points"]
  rows = [json.dumps(_finished_row(p)) for p in points]
  # The runner was killed while appending the last row.
  (workdir / "runs" / points[-1].id).mkdir(parents=True)
  (workdir / "runs" / points[-1].id / "result.json").write_text(rows[-1])
  (workdir / "results.jsonl").write_text("\n".join(rows[:-1]) + "\n" +
                                         rows[-1][:25])
  lines = []
  _sweep(workdir, lines, in_process=True)
  assert any(ln.startswith("warning:") and "torn last line" in ln
             for ln in lines)
  assert not any(ln.startswith("start ") for ln in lines)
  assert sorted(r["point"] for r in _rows(workdir)) == sorted(
      p.id for p in points)


def test_a_probe_of_the_lock_does_not_refuse_its_worker(tmp_path,
                                                        monkeypatch):
  # `holder` takes the lock for an instant to test it; a worker starting
  # then was refused as "already running". And a worker that ends between
  # the probe and the signal is not an error.
  import fcntl  # pylint: disable=g-import-not-at-top
  import threading  # pylint: disable=g-import-not-at-top
  lock = str(tmp_path / "lock")
  probing = threading.Event()

  def probe():
    with open(lock, "a+", encoding="utf-8") as f:
      fcntl.flock(f, fcntl.LOCK_EX)
      probing.set()
      time.sleep(0.06)
      fcntl.flock(f, fcntl.LOCK_UN)

  prober = threading.Thread(target=probe)
  prober.start()
  probing.wait()
  with workers.exclusive(lock, "busy"):
    assert workers.holder(lock) == os.getpid()
  prober.join()
  monkeypatch.setattr(workers, "holder", lambda path: 2**22 + 12345)
  workers.Adopted(lock).send_signal(signal.SIGTERM)  # No such process.


def test_a_live_worker_of_an_earlier_runner_is_adopted(tmp_path):
  workdir = tmp_path / "sweep"
  out = _sweep(workdir, dry_run=True, budgets=[3e8], sizes=["w16d1"])
  (point,) = out["points"]
  rundir = workdir / "runs" / point.id
  rundir.mkdir(parents=True)
  # The orphan: holds the point's lock until the runner has adopted it
  # (however loaded the machine), then writes its result and exits.
  go = tmp_path / "go"
  orphan = subprocess.Popen(
      [sys.executable, "-c",
       "import os, sys, time; from scaling import workers\n"
       f"with workers.exclusive({str(rundir / 'lock')!r}, 'busy'):\n"
       "  print('locked', flush=True)\n"
       "  deadline = time.time() + 120\n"
       f"  while not os.path.exists({str(go)!r}) and time.time() < deadline:\n"
       "    time.sleep(0.05)\n"
       f"  open({str(rundir / 'result.json')!r}, 'w').write(sys.argv[1])",
       json.dumps(_finished_row(point))],
      cwd=ROOT, stdout=subprocess.PIPE, text=True)
  assert orphan.stdout.readline().strip() == "locked"

  class Lines(list):
    def append(self, line):
      super().append(line)
      if line.startswith("adopt "):
        go.write_text("")

  lines = Lines()
  result = _sweep(workdir, lines, budgets=[3e8], sizes=["w16d1"])
  orphan.wait()
  assert any(ln.startswith(f"adopt {point.id}: still running as pid "
                           f"{orphan.pid}") for ln in lines), lines
  assert not any(ln.startswith("start ") for ln in lines)
  assert result["failed"] == [] and [r["point"] for r in _rows(workdir)] == [
      point.id]


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGKILL, signal.SIGTERM])
def test_workers_do_not_outlive_a_killed_runner(tmp_path, sig):
  workdir = tmp_path / "sweep"
  runner = subprocess.Popen(
      [sys.executable, "-m", "scaling.run", f"--sweep={SPEC}",
       f"--workdir={workdir}", f"--set={SETS[0]}", "--only_budgets=2.5e12",
       "--only_sizes=w32d1"], cwd=ROOT,
      env=dict(os.environ, XLA_FLAGS="", PYTHONPATH=ROOT),
      stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
  (point,) = _sweep(workdir, dry_run=True, budgets=[2.5e12],
                    sizes=["w32d1"])["points"]
  rundir = workdir / "runs" / point.id
  deadline = time.time() + 240
  worker = None
  # Wait until the worker trains (it has written metrics).
  while time.time() < deadline and runner.poll() is None:
    if (rundir / "metrics.jsonl").exists() and (rundir / "lock").exists():
      worker = int((rundir / "lock").read_text() or 0) or None
      if worker:
        break
    time.sleep(0.1)
  assert worker, runner.communicate()[0][-3000:]
  runner.send_signal(sig)
  runner.communicate(timeout=120)
  deadline = time.time() + 120
  while time.time() < deadline and _alive(worker):
    time.sleep(0.2)
  assert not _alive(worker), "the worker outlived its runner"
  # It was stopped by a signal it could handle: it saved and said so.
  log = (rundir / "log.txt").read_text()
  assert "preempted by SIG" in log, log[-3000:]
  assert os.listdir(rundir / "checkpoints")


def _alive(pid):
  try:
    with open(f"/proc/{pid}/status") as f:
      return "\nState:\tZ" not in f.read()
  except FileNotFoundError:
    return False


def test_an_object_store_workdir_keeps_locks_and_logs_local(tmp_path,
                                                            monkeypatch):
  """A gs:// sweep: outputs go through epath, locks and logs stay local.

  The "bucket" is a local directory that is_local() reports as remote, so
  every remote code path (whole-object rewrites, no flock) runs here.
  """
  bucket, local = tmp_path / "bucket", tmp_path / "local"
  real = workdir_lib.is_local
  monkeypatch.setattr(workdir_lib, "is_local",
                      lambda p: real(p) and not str(p).startswith(str(bucket)))
  assert workers.local_dir("gs://b/sweep 1").endswith(
      os.path.join(".cache", "jaxgen", "sweeps", "gs_b_sweep_1"))
  cmd = executors.worker_command(SPEC, "gs://b/s", "p", local=str(local))
  assert "--workdir=gs://b/s" in cmd and f"--local_dir={local}" in cmd
  out = _sweep(bucket, budgets=[3e8], sizes=["w16d1"], in_process=True,
               local=str(local))
  assert out["failed"] == []
  (row,) = _rows(bucket)
  assert row["status"] == "ok"
  run = bucket / "runs" / row["point"]
  assert (run / "result.json").exists() and (run / "metrics.jsonl").exists()
  assert (local / "lock").exists() and (local / "runs" / row["point"] /
                                        "lock").exists()
  assert not (bucket / "lock").exists() and not (run / "lock").exists()
  # A rerun reads the rows back through the same path and skips the point.
  lines = []
  _sweep(bucket, lines, budgets=[3e8], sizes=["w16d1"], in_process=True,
         local=str(local))
  assert not any(ln.startswith("start ") for ln in lines)
  assert len(_rows(bucket)) == 1


def test_a_worker_killed_by_a_signal_is_reported_as_killed(tmp_path):
  # Its last log line is only where it was (a metrics line said "failed:
  # [110] eps_mse=..." after a kill -9); an exit status names the error.
  log = tmp_path / "log.txt"
  log.write_text("$ python -m scaling.run ...\n[110] eps_mse=0.3841\n")
  assert workers.failure_reason(str(log), -signal.SIGKILL) == (
      "killed by SIGKILL (often the out-of-memory killer: see dmesg)")
  assert workers.failure_reason(str(log), -signal.SIGSEGV) == (
      "killed by SIGSEGV")
  assert workers.failure_reason(str(log), 1) == "[110] eps_mse=0.3841"
  log.write_text("[3] loss=1\nerror: config.x=0 must be >= 1\n[4] tail\n")
  assert workers.failure_reason(str(log), 1) == (
      "error: config.x=0 must be >= 1")
  assert workers.failure_reason(str(tmp_path / "none.txt")) == "no output"


def test_each_process_of_a_point_takes_its_own_lock(tmp_path, monkeypatch):
  # A point over several hosts sharing a disk (or one machine's processes):
  # all took runs/<id>/lock, and the second one was refused as "already
  # running" while the first waited for it in a collective.
  import jax  # pylint: disable=g-import-not-at-top
  from jaxgen.train import trainer  # pylint: disable=g-import-not-at-top
  from scaling import run as run_lib  # pylint: disable=g-import-not-at-top
  from scaling import sweep as sweep_lib  # pylint: disable=g-import-not-at-top
  workdir = tmp_path / "sweep"
  (point,) = _sweep(workdir, dry_run=True, budgets=[3e8],
                    sizes=["w16d1"])["points"]
  lockdir = workdir / "runs" / point.id
  lockdir.mkdir(parents=True)
  trained = []
  monkeypatch.setattr(trainer, "train_and_evaluate",
                      lambda config, rundir: trained.append(rundir))
  monkeypatch.setattr(jax, "process_index", lambda: 1)
  with workers.exclusive(str(lockdir / "lock"), "held by process 0"):
    run_lib.run_point(sweep_lib.load_config_file(SPEC), point, str(workdir),
                      dict(s.split("=", 1) for s in SETS),
                      local=str(workdir))
  assert trained == [str(lockdir)]
  # Process 0 alone writes the point's result.
  assert not (lockdir / "result.json").exists()
