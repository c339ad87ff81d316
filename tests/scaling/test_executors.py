"""Sweep specs of every family (dry runs, device-hours) and the executors:
printed commands and submitit jobs whose rows `--collect` gathers.
"""

import glob
import importlib.util
import json
import os
import shlex
import subprocess
import sys
import types
import warnings

import pytest

from jaxgen.train import flops as flops_lib
from scaling import executors
from scaling import run as run_lib
from scaling import sweep as sweep_lib
from scaling import workers
from tests.train import common

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
SPEC = "configs/scaling/simple_diffusion.py:tiny"
SETS = [f"dataset.data_dir={common.DATA_DIR}"]
SPEC_FILES = sorted(glob.glob(os.path.join(ROOT, "configs/scaling/*.py")))


def _spec_args():
  """Every preset of every spec file, as `configs/scaling/x.py:preset`."""
  out = []
  for path in SPEC_FILES:
    if path.endswith("__init__.py"):
      continue
    mod_spec = importlib.util.spec_from_file_location("spec", path)
    module = importlib.util.module_from_spec(mod_spec)
    mod_spec.loader.exec_module(module)
    out += [f"{os.path.relpath(path, ROOT)}:{p}" for p in module.PRESETS]
  return out


def test_every_family_has_a_spec_with_cpu_tiny_and_paper_presets():
  args = _spec_args()
  families = {a.split("/")[-1].split(".")[0] for a in args}
  assert families >= {"simple_diffusion", "r3gan", "autoencoder",
                      "flow_matching", "pyramidal_flow"}
  for family in families:
    for preset in ("cpu", "tiny", "paper"):
      assert f"configs/scaling/{family}.py:{preset}" in args


def test_every_spec_loads_from_outside_the_repository(tmp_path):
  # flow_matching.py imported `configs.scaling`, found only from the root.
  code = ("import sys\n"
          "from jaxgen import config_lib\n"
          "for spec in sys.argv[1:]:\n"
          "  config_lib.load_config_file(spec)\n"
          "print('ok')")
  specs = [os.path.join(os.path.abspath(ROOT), a) for a in _spec_args()]
  out = subprocess.run(
      [sys.executable, "-c", code, *specs],
      cwd=tmp_path, capture_output=True, text=True, timeout=120,
      env=dict(os.environ, PYTHONPATH=""))
  assert out.returncode == 0 and out.stdout.strip() == "ok", out.stderr[-800:]


@pytest.mark.parametrize("arg", _spec_args())
def test_every_spec_plans(arg):
  spec = sweep_lib.load_config_file(arg)
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    points = sweep_lib.plan(spec)
  preset = arg.rsplit(":", 1)[1]
  budgets = {p.budget for p in points}
  sizes = {p.size for p in points}
  if preset != "tiny":
    # >= 3 budgets x >= 3 sizes, and no point shorter than min_steps.
    assert len(budgets) >= 3 and len(points) >= 3 * len(budgets)
    assert not [w for w in caught
                if issubclass(w.category, sweep_lib.SweepWarning)], [
                    str(w.message) for w in caught]
  assert len(sizes) >= 2
  for p in points:
    assert p.params > 0 and p.steps >= 1
    # Every point spends its budget to within one step.
    assert p.budget <= p.planned_flops < p.budget + (
        p.flops_per_example * p.batch_size)
  hours = [sweep_lib.device_hours(spec, p) for p in points]
  if preset == "paper":
    assert spec.cluster.device_kind and all(hours)
    # Paper plans train on real data (the autoencoder's read the embedded
    # shapes, its base preset's default).
    config, _ = sweep_lib.point_config(spec, points[0].budget,
                                       points[0].size, {})
    assert not config.dataset.name.startswith("jaxgen_shapes"), (
        config.dataset.name)
  else:
    assert not any(hours)  # CPU sweeps have no device-hour estimate.


def test_device_hours_are_flops_over_peak_times_mfu():
  spec = sweep_lib.load_config_file("configs/scaling/r3gan.py:paper")
  point = sweep_lib.plan(spec)[0]
  device, wall = sweep_lib.device_hours(spec, point)
  peak = 459e12  # TPU v5p dense bf16, by hand.
  assert flops_lib.peak_flops_for_kind(spec.cluster.device_kind) == peak
  assert device == pytest.approx(
      point.planned_flops / (peak * spec.cluster.mfu) / 3600)
  assert wall == pytest.approx(device / spec.cluster.devices_per_point)
  spec.cluster.device_kind = "abacus"
  with pytest.raises(ValueError, match="device_kind='abacus'"):
    sweep_lib.device_hours(spec, point)
  spec.cluster.device_kind = "H100"
  spec.cluster.mfu = 1.5
  with pytest.raises(ValueError, match="cluster.mfu"):
    sweep_lib.device_hours(spec, point)


def test_dry_run_prints_the_device_hour_total(tmp_path):
  spec = sweep_lib.load_config_file("configs/scaling/autoencoder.py:paper")
  lines = []
  out = run_lib.run_sweep(spec, sweep_arg="configs/scaling/autoencoder.py:"
                          "paper", workdir=str(tmp_path / "s"), dry_run=True,
                          out=lines.append)
  total = sum(sweep_lib.device_hours(spec, p)[0] for p in out["points"])
  last = [ln for ln in lines if ln.startswith("# total")]
  assert last and f"{total:,.0f} H100 device-hours" in last[0]


def _sweep(workdir, lines, **kwargs):
  return run_lib.run_sweep(sweep_lib.load_config_file(SPEC), sweep_arg=SPEC,
                           workdir=str(workdir), sets=SETS, out=lines.append,
                           **kwargs)


def test_print_executor_then_collect(tmp_path, monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", "")
  workdir = tmp_path / "sweep"
  lines = []
  out = _sweep(workdir, lines, executor="print")
  commands = [ln for ln in lines if "--point=" in ln]
  assert len(commands) == 4 and not (workdir / "results.jsonl").exists()
  # Run one printed line elsewhere (here: a shell), then collect.
  first = next(c for c in commands if c.endswith(out["points"][0].id))
  subprocess.run(["bash", "-c", first.rsplit("  #", 1)[0]], cwd=ROOT,
                 check=True, capture_output=True)
  lines = []
  got = _sweep(workdir, lines, collect=True)
  assert list(got["rows"]) == [out["points"][0].id]
  assert sorted(got["missing"]) == sorted(p.id for p in out["points"][1:])
  assert "1 of 4 points finished" in lines[-1]
  row = json.loads((workdir / "results.jsonl").read_text())
  # Provenance: code version, library versions and the device kind.
  prov = row["provenance"]
  assert {"jax", "jaxlib", "flax", "git_commit"} <= set(prov)
  assert prov["device_kind"]
  # Collecting from a typo'd workdir is refused and creates nothing.
  typo = tmp_path / "swep"
  with pytest.raises(ValueError, match="no sweep in --workdir=.*swep"):
    _sweep(typo, [], collect=True)
  assert not typo.exists()


def test_slurm_executor_through_submitit_local_collects_rows(
    tmp_path, monkeypatch):
  pytest.importorskip("submitit")
  monkeypatch.setenv("XLA_FLAGS", "")
  workdir = tmp_path / "sweep"
  lines = []
  out = _sweep(workdir, lines, executor="slurm", slurm_cluster="local")
  jobs = out["jobs"]
  assert sorted(jobs) == sorted(p.id for p in out["points"])
  assert any(ln.startswith("submitted 4 jobs") for ln in lines)
  for job in jobs.values():
    job.result()  # Raises if the worker failed.
  # Submitting again skips the submitted points (their jobs may be queued).
  lines = []
  again = _sweep(workdir, lines, executor="slurm", slurm_cluster="local",
                 budgets=[3e8], sizes=["w16d1"], resubmit=False)
  assert again["rows"]  # Collected first: nothing left to submit.
  assert not again["jobs"]
  assert lines[-1].startswith("simple_diffusion_tiny: 1 of 1 points "
                              "finished, nothing to submit; results in ")
  lines = []
  got = _sweep(workdir, lines, collect=True)
  assert sorted(got["rows"]) == sorted(jobs) and got["missing"] == []
  rows = [json.loads(ln) for ln in
          (workdir / "results.jsonl").read_text().splitlines()]
  assert len(rows) == 4 and all(r["status"] == "ok" for r in rows)
  for pid, job in jobs.items():
    record = executors.submitted(str(workdir), pid)
    assert record["job_id"] == str(job.job_id)


def test_submitted_points_are_not_submitted_twice(tmp_path):
  lines = []

  class FakeExecutor:
    folder = str(tmp_path / "submitit")

    def batch(self):
      import contextlib  # pylint: disable=g-import-not-at-top
      return contextlib.nullcontext()

    def submit(self, fn):
      lines.append(("submit", fn.command))
      return type("Job", (), {"job_id": "123"})()

  pytest.importorskip("submitit")
  points = sweep_lib.plan(sweep_lib.load_config_file(SPEC))
  commands = {p.id: ["python", "-m", "scaling.run", f"--point={p.id}"]
              for p in points}
  local = str(tmp_path)
  jobs = executors.submit(FakeExecutor(), points[:2], commands, {"A": "1"},
                          local, ROOT, multihost=True, out=lines.append)
  assert sorted(jobs) == sorted(p.id for p in points[:2])
  submitted = [c for kind, c in (x for x in lines if isinstance(x, tuple))]
  # `env K=V` keeps the node's environment; several hosts add --multihost.
  assert submitted[0][:2] == ["env", "A=1"]
  assert submitted[0][-1] == "--multihost"
  lines.clear()
  jobs = executors.submit(FakeExecutor(), points, commands, {}, local, ROOT,
                          out=lines.append)
  assert sorted(jobs) == sorted(p.id for p in points[2:])
  assert sum("skipped" in str(x) for x in lines) == 2
  # A wsd chain submitted with fewer branches than it now has goes again.
  chain = executors.Unit("stable_w16d1", points[:1], True)
  commands["stable_w16d1"] = ["python"]
  assert executors.submit(FakeExecutor(), [chain], commands, {}, local, ROOT,
                          out=lines.append)
  assert not executors.submit(FakeExecutor(), [chain], commands, {}, local,
                              ROOT, out=lines.append)
  chain = executors.Unit("stable_w16d1", points[:2], True)
  assert executors.submit(FakeExecutor(), [chain], commands, {}, local, ROOT,
                          out=lines.append)



def test_points_whose_jobs_ended_without_a_result_are_submitted_again(
    tmp_path):
  # A failed, timed-out, cancelled or preempted job (a preempted worker
  # saves and exits 0: COMPLETED) left its point without a row: it goes
  # again; pending and running ones, or a state sacct cannot give, do not.
  pytest.importorskip("submitit")
  states = {}
  submitted = []

  class Job:
    def __init__(self, folder, job_id):
      self.job_id = job_id
      if states.get(job_id) is None:
        raise RuntimeError("sacct: command not found")
      self.state = states[job_id]

  class FakeExecutor:
    folder = str(tmp_path / "submitit")
    job_class = Job

    def batch(self):
      import contextlib  # pylint: disable=g-import-not-at-top
      return contextlib.nullcontext()

    def submit(self, fn):
      submitted.append(fn.command[-1])
      return types.SimpleNamespace(job_id=str(100 + len(submitted)))

  points = sweep_lib.plan(sweep_lib.load_config_file(SPEC))
  commands = {p.id: ["python", p.id] for p in points}
  local = str(tmp_path)
  executors.submit(FakeExecutor(), points, commands, {}, local, ROOT,
                   out=lambda _: None)
  ids = {p.id: executors.submitted(local, p.id)["job_id"] for p in points}
  states.update({ids[points[0].id]: "FAILED",
                 ids[points[1].id]: "CANCELLED by 1234",
                 ids[points[2].id]: "PENDING"})  # points[3]: no sacct.
  submitted.clear()
  lines = []
  jobs = executors.submit(FakeExecutor(), points, commands, {}, local, ROOT,
                          out=lines.append)
  assert sorted(jobs) == sorted(submitted) == sorted(
      p.id for p in points[:2])
  assert (f"{points[0].id}: job {ids[points[0].id]} ended (FAILED) without "
          "a result; submitted again") in lines
  assert (f"{points[2].id}: submitted earlier as job {ids[points[2].id]} "
          "(PENDING, no result yet); skipped (--resubmit submits it "
          "again)") in lines
  assert any(ln.startswith(f"{points[3].id}: submitted earlier as job") and
             "(UNKNOWN, no result yet)" in ln for ln in lines)
  # The new job ids replace the ended ones.
  assert executors.submitted(local, points[0].id)["job_id"] == jobs[
      points[0].id].job_id


def test_slurm_jobs_ask_for_the_specs_cpus_per_task(tmp_path, monkeypatch):
  # Without it a job got the site's default (often 1 CPU) for its input
  # pipeline and XLA's compiles.
  pytest.importorskip("submitit")
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  for name in ("srun", "sbatch"):
    (bin_dir / name).write_text("#!/bin/sh\n")
    (bin_dir / name).chmod(0o755)
  monkeypatch.setenv("PATH", f"{bin_dir}:{os.environ['PATH']}")
  spec = sweep_lib.load_config_file(SPEC)
  spec.cluster.partition = "gpu"
  params = lambda ex: ex._executor.parameters  # noqa: E731  pylint: disable=protected-access
  ex = executors.slurm_executor(spec, str(tmp_path / "a"))
  assert "cpus_per_task" not in params(ex)  # 0: the site's default.
  spec.cluster.cpus_per_task = 12
  ex = executors.slurm_executor(spec, str(tmp_path / "b"))
  assert params(ex)["cpus_per_task"] == 12
  assert params(ex)["partition"] == "gpu"
  spec.cluster.cpus_per_task = -1
  with pytest.raises(ValueError, match="sweep.cluster.cpus_per_task=-1"):
    sweep_lib.plan(spec)


def test_bad_slurm_setups_fail_in_one_line(tmp_path, monkeypatch):
  spec = sweep_lib.load_config_file(SPEC)
  pytest.importorskip("submitit")
  # Off a cluster: one line naming the ways on (submitit's own check is a
  # RuntimeError traceback from its constructor), before the partition
  # (which was asked for first, then this said).
  assert not spec.cluster.partition
  with monkeypatch.context() as m:
    m.setenv("PATH", str(tmp_path))
    with pytest.raises(ValueError, match=r"no SLURM here \(srun / sbatch "
                       r"not on PATH\).*--slurm_cluster=local"):
      executors.slurm_executor(spec, str(tmp_path))
    # The sweep command refuses before creating its directory (a typo'd
    # --workdir was left behind, holding a lock file).
    with pytest.raises(ValueError, match=r"no SLURM here"):
      run_lib.run_sweep(spec, sweep_arg=SPEC, workdir=str(tmp_path / "new"),
                        local=str(tmp_path / "new_local"), sets=SETS,
                        executor="slurm", out=lambda _: None)
    assert not (tmp_path / "new").exists()
    assert not (tmp_path / "new_local").exists()
  # On a cluster (stand-in srun / sbatch), without a partition.
  bin_dir = tmp_path / "bin"
  bin_dir.mkdir()
  for name in ("srun", "sbatch"):
    (bin_dir / name).write_text("#!/bin/sh\n")
    (bin_dir / name).chmod(0o755)
  with monkeypatch.context() as m:
    m.setenv("PATH", str(bin_dir))
    with pytest.raises(ValueError, match="needs a partition: set "
                       "--sweep.cluster.partition"):
      executors.slurm_executor(spec, str(tmp_path))
  spec.cluster.partition = "gpu"
  monkeypatch.setitem(sys.modules, "submitit", None)
  with pytest.raises(ValueError, match="needs submitit: pip install"):
    executors.slurm_executor(spec, str(tmp_path), cluster="local")
  # Points of several hosts do not run as local processes.
  spec.cluster.hosts_per_point = 2
  with pytest.raises(ValueError, match="hosts_per_point=2"):
    run_lib.run_sweep(spec, sweep_arg=SPEC, workdir=str(tmp_path / "w"),
                      sets=SETS, out=lambda _: None)
  # The printed commands then carry --multihost.
  lines = []
  run_lib.run_sweep(spec, sweep_arg=SPEC, workdir=str(tmp_path / "w"),
                    sets=SETS, executor="print", out=lines.append)
  assert all(shlex.split(ln.rsplit("  #", 1)[0])[-1] == "--multihost"
             for ln in lines if "--point=" in ln)
  # ... after a line that says what to set off a cluster.
  assert lines[0] == (
      "# each line runs on all 2 hosts of its point; off SLURM / Cloud TPU "
      "prefix it with JAXGEN_COORDINATOR=host:port JAXGEN_NUM_PROCESSES=2 "
      "JAXGEN_PROCESS_ID=<0...1>"), lines[:2]


def test_points_carry_sampling_flops_per_image():
  # Simple diffusion: sample_steps U-ViT forwards (training is 3 forwards).
  spec = sweep_lib.load_config_file(SPEC)
  point = sweep_lib.plan(spec)[0]
  config, _ = sweep_lib.point_config(spec, point.budget, point.size)
  steps = config.diffusion.sample_steps
  assert point.sampling_flops_per_example == pytest.approx(
      steps * point.flops_per_example / 3, rel=1e-9)
  # R3GAN: one generator forward; autoencoders do not sample.
  spec = sweep_lib.load_config_file("configs/scaling/r3gan.py:tiny")
  point = sweep_lib.plan(spec)[0]
  config, _ = sweep_lib.point_config(spec, point.budget, point.size)
  g_flops, _ = sweep_lib._objective(config).forward_flops()
  assert point.sampling_flops_per_example == g_flops > 0
  spec = sweep_lib.load_config_file("configs/scaling/autoencoder.py:tiny")
  assert sweep_lib.plan(spec)[0].sampling_flops_per_example is None


def test_a_second_ctrl_c_kills_the_workers_without_waiting(
    tmp_path, monkeypatch):
  # Workers that ignore SIGINT: the first Ctrl-C waits for them (up to a
  # minute each), a second one kills them at once.
  stubborn = [sys.executable, "-c", "import signal, time; "
              "signal.signal(signal.SIGINT, signal.SIG_IGN); time.sleep(120)"]
  monkeypatch.setattr(executors, "worker_command",
                      lambda *args, **kwargs: list(stubborn))
  started = []
  real_popen, real_sleep = subprocess.Popen, run_lib.time.sleep

  def popen(*args, **kwargs):
    started.append(real_popen(*args, **kwargs))
    return started[-1]

  def sleep(seconds):
    # Ctrl-C once workers run: in the runner's poll loop, then again in
    # Popen.wait's (both sleep through the time module).
    if started:
      raise KeyboardInterrupt
    real_sleep(seconds)

  monkeypatch.setattr(subprocess, "Popen", popen)
  monkeypatch.setattr(run_lib.time, "sleep", sleep)
  lines = []
  with pytest.raises(KeyboardInterrupt):
    _sweep(tmp_path / "sweep", lines, parallel=2, pin_cores=False)
  assert len(started) == 2
  assert all(p.poll() is not None for p in started)  # Killed, not orphaned.
  assert lines[-1].startswith("interrupted again: workers killed")


def test_a_point_finished_while_the_runner_stops_gets_its_row_now(
    tmp_path, monkeypatch):
  # A worker that completes its point as Ctrl-C arrives writes result.json;
  # the runner said "interrupted" without appending its row, so a fit right
  # after missed the point until the next scaling.run.
  finishing = ("import json, os, signal, sys, time\n"
               "def done(*_):\n"
               "  json.dump({{'point': {uid!r}, 'status': 'ok', "
               "'eval_loss': 0.5, 'final_train_loss': 0.6}}, "
               "open(os.path.join({rundir!r}, 'result.json'), 'w'))\n"
               "  sys.exit(0)\n"
               "signal.signal(signal.SIGINT, done)\n"
               "time.sleep(120)\n")

  def worker(sweep_arg, workdir, uid, *args, **kwargs):
    rundir = os.path.join(workdir, "runs", uid)
    os.makedirs(rundir, exist_ok=True)
    return [sys.executable, "-c", finishing.format(uid=uid, rundir=rundir)]

  monkeypatch.setattr(executors, "worker_command", worker)
  real_sleep, polls = run_lib.time.sleep, []

  def sleep(seconds):
    polls.append(seconds)
    if len(polls) == 10:  # Workers started and sleeping: Ctrl-C.
      raise KeyboardInterrupt
    real_sleep(seconds)

  monkeypatch.setattr(run_lib.time, "sleep", sleep)
  lines = []
  workdir = tmp_path / "sweep"
  with pytest.raises(KeyboardInterrupt):
    _sweep(workdir, lines, parallel=2, pin_cores=False)
  rows = [json.loads(ln) for ln in
          (workdir / "results.jsonl").read_text().splitlines()]
  started = [ln.split()[1].rstrip(":") for ln in lines
             if ln.startswith("start ")]
  assert len(started) == 2 and sorted(r["point"] for r in rows) == sorted(
      started), lines
  assert lines[-1].startswith("interrupted; run the same command again")


def test_a_point_still_running_is_not_submitted_again(tmp_path):
  # --resubmit while its job still trained: the new job failed on the lock
  # and its id replaced the live one's in job.json.
  pytest.importorskip("submitit")
  point = types.SimpleNamespace(id="C3e8_w16d1")
  lock = tmp_path / "runs" / point.id
  lock.mkdir(parents=True)
  lines = []
  with workers.exclusive(str(lock / "lock"), "busy"):
    got = executors.submit(None, [point], {}, {}, str(tmp_path),
                           str(tmp_path), resubmit=True, out=lines.append)
  assert got == {}
  assert lines == [f"{point.id}: still running (pid {os.getpid()} holds its "
                   "lock); not submitted again"]
