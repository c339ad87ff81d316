r"""Runs a scaling sweep: one trainer process per point, one results row each.

Usage:
  python -m scaling.run --sweep=configs/scaling/simple_diffusion.py:cpu \
      --workdir=DIR [--parallel=K] [--dry-run] [--only_budgets=C1,C2]
      [--only_sizes=NAME,...] [--nearest_params=N | --optimal_from=FIT_JSON]
      [--set=dataset.data_dir=/data ...] [--sweep.batch_size=64 ...]

DIR layout:
  results.jsonl   one row per finished point (schema: scaling/results.py),
                  appended by this process only
  runs/<id>/      the point's trainer workdir (checkpoints/, metrics.jsonl),
                  log.txt (its output) and result.json (its row)
  check.json      with --optimal_from: the extrapolation check

DIR may be an object store (--workdir=gs://bucket/sweep): rows, run
directories and result.json files go through etils.epath. What must be local
-- the runner's and workers' locks and the workers' log.txt -- then lives in
--local_dir (default ~/.cache/jaxgen/sweeps/<DIR>); for a local DIR it is DIR
itself, the layout above. All points (of every sweep) share one persistent
compilation cache, --compilation_cache (default ~/.cache/jaxgen/xla): the
points of a size compile one train step whatever their budget, and a rerun
compiles nothing. With --parallel=K, each worker is pinned to its own 1/K of
the cores (--nopin_cores turns that off).

Every point runs as its own process, `python -m scaling.run ... --point=<id>`
(a worker: it trains that point with jaxgen.train.trainer in-process and
writes runs/<id>/result.json). `--dry-run` prints these commands, one per
point, so they can be submitted elsewhere; running the sweep again later
collects their result.json files. On restart, points with a row (status ok
or diverged) are skipped and interrupted ones resume from their checkpoints.
A non-finite loss (the trainer's FloatingPointError) or a final train loss
above `diverged_loss_ratio` x the first logged one is recorded as
"diverged"; other failures (bad config, crash) write no row, are listed at
the end and make the exit status 1.

`--optimal_from=fit.json --only_budgets=C` runs the ladder size nearest the
fitted compute-optimal N at C (approach 2, else 3) and writes check.json
with the predicted and measured losses and their relative errors.
"""

import contextlib
import fcntl
import json
import math
import os
import resource
import shlex
import shutil
import signal
import subprocess
import sys
import time
import warnings
from typing import Any, Dict, List, Optional, Sequence

from absl import app
from absl import flags
import etils.epath as epath
from ml_collections import config_flags

from jaxgen import config_lib
from jaxgen import jsonl
from jaxgen.train import compile_cache
from jaxgen.train import logs
from jaxgen.train import workdir as workdir_lib
from scaling import executors
from scaling import sweep as sweep_lib

OK, DIVERGED = "ok", "diverged"
FINISHED = (OK, DIVERGED)
_REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


# -- worker: one point, in this process ----------------------------------------


@contextlib.contextmanager
def _exclusive(path: str, busy: str):
  """Holds an exclusive flock on `path`; ValueError(`busy`) if taken.

  The lock goes with the process (also when it is killed), so a stale lock
  file never blocks a restart. The holder's pid is written into the file (a
  restarted runner names the worker it adopts).
  """
  with open(path, "a+", encoding="utf-8") as f:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      raise ValueError(f"{busy}; wait for it or use another --workdir"
                       ) from None
    try:
      f.truncate(0)
      f.write(str(os.getpid()))
      f.flush()
      yield
    finally:
      fcntl.flock(f, fcntl.LOCK_UN)


def _holder(path: str) -> Optional[int]:
  """The pid holding the flock on `path`, or None if nobody holds it."""
  if not os.path.exists(path):
    return None
  with open(path, "a+", encoding="utf-8") as f:
    try:
      fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
      f.seek(0)
      text = f.read().strip()
      return int(text) if text.isdigit() else -1
    fcntl.flock(f, fcntl.LOCK_UN)
  return None


class _Adopted:
  """A worker left running by an earlier runner, watched through its lock.

  It has the two members of `subprocess.Popen` that the runner uses.
  """

  def __init__(self, lock: str):
    self.lock = lock
    self.returncode: Optional[int] = None

  def poll(self) -> Optional[int]:
    if self.returncode is None and _holder(self.lock) is None:
      self.returncode = 0  # Its result.json (if any) says how it ended.
    return self.returncode

  def send_signal(self, sig) -> None:
    pid = _holder(self.lock)
    if pid and pid > 0:
      os.kill(pid, sig)

  def wait(self, timeout=None):
    deadline = time.time() + (timeout or 1e9)
    while self.poll() is None:
      if time.time() > deadline:
        raise subprocess.TimeoutExpired("adopted worker", timeout)
      time.sleep(0.2)
    return self.returncode

  def kill(self) -> None:
    self.send_signal(signal.SIGKILL)


def _die_with_runner() -> None:
  """In a worker: SIGTERM when the runner that started it dies (Linux).

  So neither kill -9 nor a crash of the runner leaves orphans; the trainer
  turns the SIGTERM into a saved checkpoint. The runner passes its pid in
  $JAXGEN_RUNNER_PID; if it is already gone, the worker stops at once.
  """
  runner = os.environ.get("JAXGEN_RUNNER_PID")
  if not runner:
    return
  try:
    import ctypes  # pylint: disable=g-import-not-at-top
    ctypes.CDLL(None, use_errno=True).prctl(1, signal.SIGTERM)  # PDEATHSIG
  except (OSError, AttributeError):
    return
  if os.getppid() != int(runner):
    os.kill(os.getpid(), signal.SIGTERM)


def local_dir(workdir: str, given: Optional[str] = None) -> str:
  """Where a sweep keeps what must be local: locks, logs, compilation cache.

  Args:
    workdir: the sweep directory, local or e.g. gs://bucket/sweep.
    given: --local_dir, if passed.

  Returns:
    `given`, else `workdir` itself when it is local, else a directory under
    ~/.cache/jaxgen/sweeps named after `workdir`.
  """
  if given:
    return os.path.abspath(given)
  if workdir_lib.is_local(workdir):
    return os.path.abspath(workdir)
  name = "".join(c if c.isalnum() or c in "-_." else "_"
                 for c in str(workdir).replace("://", "_"))
  return os.path.join(os.path.expanduser("~"), ".cache", "jaxgen", "sweeps",
                      name)


def _latest_checkpoint(rundir: str) -> int:
  ckpt = epath.Path(rundir) / "checkpoints"
  steps = ([int(d.name) for d in ckpt.iterdir() if d.name.isdigit()]
           if ckpt.is_dir() else [])
  return max(steps, default=0)


def _cpu_seconds() -> float:
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


def _finite(x) -> bool:
  return isinstance(x, (int, float)) and math.isfinite(x)


def make_row(spec, point: sweep_lib.Point, metrics: List[Dict[str, Any]], *,
             error: Optional[str], wall_time_s: float, resumed_from: int,
             command: str) -> Dict[str, Any]:
  """The results.jsonl row of a finished point.

  Args:
    spec: the sweep spec.
    point: the point.
    metrics: its metrics.jsonl rows.
    error: the FloatingPointError message if the trainer stopped on a
      non-finite value, else None.
    wall_time_s: wall time of the attempt that finished it (with compile).
    resumed_from: checkpoint step that attempt started from (0 = scratch).
    command: the worker command line.

  Returns:
    A dict with the fields of scaling/results.py (and a few more).
  """
  from jaxgen.train import provenance  # pylint: disable=g-import-not-at-top
  losses = [r["loss"] for r in metrics if _finite(r.get("loss"))]
  evals = [r["eval_loss"] for r in metrics if "eval_loss" in r]
  last = metrics[-1] if metrics else {}
  k = int(spec.final_loss_window)
  final = sum(losses[-k:]) / len(losses[-k:]) if losses else None
  eval_loss = evals[-1] if evals else None
  status = OK
  if error is not None:
    status = DIVERGED
  elif not _finite(final) or (eval_loss is not None and
                              not _finite(eval_loss)):
    # Eval is optional (eval_batches = 0); the fit then uses the train loss.
    status, error = DIVERGED, "no finite final train or eval loss logged"
  elif spec.diverged_loss_ratio and final > spec.diverged_loss_ratio * (
      losses[0]):
    status = DIVERGED
    error = (f"final train loss {final:.4g} > {spec.diverged_loss_ratio} x "
             f"the first logged loss {losses[0]:.4g}: the run did not train")
  ok = status == OK
  # Sample metrics (config.eval.sample_metrics: eval_fid, eval_psnr, ...):
  # the last logged value of each; `scaling.fit --metric=eval_fid` fits them.
  sample = {}
  for r in metrics:
    sample.update({k: v for k, v in r.items()
                   if k.startswith("eval_") and k != "eval_loss"})
  return dict({
      "family": spec.family, "sweep": spec.name, "point": point.id,
      "size": point.size, "budget_flops": point.budget,
      "params": point.params,
      "params_non_embedding": point.params_non_embedding,
      "params_embedding": point.params_embedding,
      "flops_per_example": point.flops_per_example,
      "sampling_flops_per_example": point.sampling_flops_per_example,
      "batch_size": point.batch_size, "steps": point.steps,
      "steps_done": last.get("step", 0),
      "examples_seen": last.get("examples_seen"),
      "flops": last.get("flops_seen"),
      "final_train_loss": final if ok else None,
      "final_train_loss_window": k,
      "eval_loss": eval_loss if ok else None,
      "status": status, "error": error,
      "wall_time_s": wall_time_s, "resumed_from_step": resumed_from,
      # CPU seconds of the worker process (imports and compiles included):
      # unlike wall time, this does not grow when other jobs share the cores.
      "cpu_time_s": _cpu_seconds(),
      "config": {"base": spec.base, "overrides": point.overrides},
      "command": command,
      # Code version, library versions and devices of the worker.
      "provenance": provenance.provenance(),
  }, **(sample if ok else {}))


def run_point(spec, point: sweep_lib.Point, workdir: str,
              sets: Optional[Dict[str, str]] = None,
              command: str = "", local: Optional[str] = None
              ) -> Dict[str, Any]:
  """Trains one point here and writes runs/<id>/result.json.

  Args:
    spec: the sweep spec.
    point: the point (from `sweep.plan` or `sweep.make_point`).
    workdir: the sweep directory.
    sets: --set overrides, as for the plan.
    command: the command line, recorded in the row.
    local: the sweep's local directory (`local_dir(workdir)` if None).

  Returns:
    The row.

  Raises:
    ValueError: a configuration error (no row is written).
  """
  from jaxgen import families  # pylint: disable=g-import-not-at-top,unused-import
  from jaxgen.train import trainer  # pylint: disable=g-import-not-at-top
  config, _ = sweep_lib.point_config(spec, point.budget, point.size, sets)
  rundir = str(epath.Path(workdir) / "runs" / point.id)
  epath.Path(rundir).mkdir(parents=True, exist_ok=True)
  lockdir = os.path.join(local or local_dir(workdir), "runs", point.id)
  os.makedirs(lockdir, exist_ok=True)
  resumed_from = _latest_checkpoint(rundir)
  start, error = time.time(), None
  with _exclusive(os.path.join(lockdir, "lock"),
                  f"point {point.id} is already running in {rundir}"):
    try:
      trainer.train_and_evaluate(config, rundir)
    except FloatingPointError as e:
      error = str(e)
    # preemption.Preempted propagates: an unfinished point has no row.
  metrics = jsonl.read(epath.Path(rundir) / "metrics.jsonl",
                       missing_ok=True)
  row = make_row(spec, point, metrics,
                 error=error, wall_time_s=time.time() - start,
                 resumed_from=resumed_from, command=command)
  import jax  # pylint: disable=g-import-not-at-top
  if jax.process_index() == 0:  # One writer for a point of several hosts.
    jsonl.write_atomic(epath.Path(rundir) / "result.json", json.dumps(row))
  return row


# -- the sweep -----------------------------------------------------------------


def core_slots(parallel: int) -> Optional[List[frozenset]]:
  """Disjoint core sets for `parallel` workers, or None if there are fewer
  cores than workers (or a single worker: it gets them all anyway).

  Args:
    parallel: workers running at once.

  Returns:
    `parallel` frozensets of this process's allowed cores, as equal as they
    can be, or None.
  """
  cores = sorted(os.sched_getaffinity(0))
  if parallel < 2 or len(cores) < parallel or not shutil.which("taskset"):
    return None
  per, extra = divmod(len(cores), parallel)
  slots, i = [], 0
  for k in range(parallel):
    n = per + (k < extra)
    slots.append(frozenset(cores[i:i + n]))
    i += n
  return slots


def _fmt_cores(cores) -> str:
  c = sorted(cores)
  return f"{c[0]}-{c[-1]}" if len(c) > 1 else str(c[0])


def worker_command(sweep_arg: str, workdir: str, point_id: str,
                   sets: Sequence[str] = (),
                   sweep_flags: Sequence[str] = (),
                   local: Optional[str] = None) -> List[str]:
  """argv of the worker process of one point."""
  # Workers run from the repository root: pass absolute local paths.
  path, colon, arg = sweep_arg.partition(":")
  sweep_arg = os.path.abspath(path) + colon + arg
  remote = not workdir_lib.is_local(workdir)
  workdir = workdir if remote else os.path.abspath(workdir)
  extra = [f"--local_dir={local}"] if remote and local else []
  return ([sys.executable, "-m", "scaling.run", f"--sweep={sweep_arg}",
           *sweep_flags, f"--workdir={workdir}", *extra,
           f"--point={point_id}"] + [f"--set={s}" for s in sets])


def _normalise(obj):
  return json.loads(json.dumps(obj))


def _repair_torn_tail(path: str, out) -> None:
  """Drops a torn last line (a runner killed mid-append) from results.jsonl.

  The row is not lost: the point's runs/<id>/result.json holds it and is
  collected again.
  """
  path = epath.Path(path)
  if not path.exists():
    return
  data = path.read_bytes()
  head, _, last = data.rstrip(b"\n").rpartition(b"\n")
  if not last.strip():
    return
  try:
    json.loads(last)
    if not data.endswith(b"\n"):  # A whole row whose newline was cut.
      jsonl.write_atomic(path, data.decode("utf-8") + "\n")
    return
  except ValueError:
    pass
  jsonl.write_atomic(path, (head + b"\n").decode("utf-8") if head else "")
  out(f"warning: {path}: removed a torn last line ({len(last)} bytes); its "
      "point is restored from its result.json")


def _load_finished(workdir: str, spec, points,
                   out=print) -> Dict[str, Dict[str, Any]]:
  """Finished rows by point id; checks family and config of the old rows."""
  _repair_torn_tail(str(epath.Path(workdir) / "results.jsonl"), out)
  rows = jsonl.read(epath.Path(workdir) / "results.jsonl", missing_ok=True)
  families = sorted({r.get("family") for r in rows} - {spec.family})
  if families:
    raise ValueError(f"{workdir}/results.jsonl holds runs of family "
                     f"{', '.join(map(repr, families))}, this sweep is "
                     f"{spec.family!r}; use another --workdir")
  by_id = {p.id: p for p in points}
  done = {}
  for r in rows:
    p = by_id.get(r.get("point"))
    if p is not None and r.get("status") in FINISHED:
      _check_same_config(p, r, f"{workdir}/results.jsonl")
      done[p.id] = r
  return done


# Fields that change what a run writes, not what it computes: rows that
# differ only in these are the same point.
_NO_EFFECT = ("tensorboard", "checkpoint_every_steps", "keep_checkpoints")


def _check_same_config(point, row, where: str) -> None:
  """Raises if a finished row ran with other overrides than `point`."""
  old = row.get("config", {}).get("overrides") or {}
  new = _normalise(point.overrides)
  diff = sorted(k for k in set(old) | set(new)
                if old.get(k) != new.get(k) and k not in _NO_EFFECT)
  if diff:
    raise ValueError(f"point {point.id} in {where} ran with a different "
                     f"config ({', '.join(diff)}); use another --workdir or "
                     "delete its row and runs/ directory")


class _Progress:
  """Prints one line per finished point with elapsed time and an ETA.

  The ETA scales the elapsed time by remaining / finished budget FLOPs of
  this session's points (small points cost more per FLOP on CPU, so early
  estimates are rough).
  """

  def __init__(self, total: int, done: int, out):
    self.total, self.done, self.out = total, done, out
    self.start = time.time()
    self.flops_done = 0.0

  def finished(self, point, row, seconds, remaining_flops, running):
    self.done += 1
    self.flops_done += point.budget
    elapsed = time.time() - self.start
    fmt = logs.format_duration
    eta = (fmt(elapsed * remaining_flops / self.flops_done)
           if remaining_flops else "0m00s")
    status = row["status"] if row else "FAILED"
    loss = (f" eval_loss {row['eval_loss']:.4f} train "
            f"{row['final_train_loss']:.4f}"
            if row and row["status"] == OK else "")
    self.out(f"[{self.done:>3}/{self.total}] {point.id} {status}{loss} "
             f"({fmt(seconds)}) | elapsed {fmt(elapsed)}, "
             f"ETA {eta}, {running} running")


def run_sweep(spec, *, sweep_arg: str, workdir: str, parallel: int = 1,
              dry_run: bool = False, budgets: Optional[Sequence[float]] = None,
              sizes: Optional[Sequence[str]] = None, sets: Sequence[str] = (),
              sweep_flags: Sequence[str] = (), in_process: bool = False,
              local: Optional[str] = None,
              compilation_cache: Optional[str] = None, pin_cores: bool = True,
              executor: str = "local", collect: bool = False,
              slurm_cluster: str = "slurm", resubmit: bool = False,
              out=print) -> Dict[str, Any]:
  """Runs, submits or prints every point of a sweep that has no row yet.

  Args:
    spec: the sweep spec.
    sweep_arg: the spec as `path.py:preset`, passed to the workers.
    workdir: the sweep directory.
    parallel: points run at once.
    dry_run: only print the worker commands.
    budgets: budgets instead of the spec's.
    sizes: sizes (at every budget) instead of the spec's windows.
    sets: "key=value" run-config overrides for every point.
    sweep_flags: `--sweep.x=y` flags, passed on to the workers.
    in_process: run points one by one in this process (debugging, tests).
    local: the local directory for locks and logs (`local_dir(workdir)` if
      None).
    compilation_cache: the workers' persistent compilation cache directory
      (None: `compile_cache.default_dir()`; "none" turns it off).
    pin_cores: pin each of the `parallel` workers to its own cores.
    executor: "local" (run the workers here), "slurm" (submit one job per
      point and return) or "print" (print their command lines).
    collect: only collect finished points' result.json files into
      results.jsonl and say which points are still missing.
    slurm_cluster: submitit's cluster for executor "slurm" ("local" runs
      the jobs as local processes).
    resubmit: submit points that were submitted before and have no result.
    out: where progress lines go.

  Returns:
    {"points": [...], "rows": {id: row}, "failed": [ids]}.
  """
  parsed = sweep_lib.parse_sets(sets)
  points = sweep_lib.plan(spec, budgets=budgets, sizes=sizes, sets=parsed)
  env = {k: str(v) for k, v in spec.env.items()}
  local = local_dir(workdir, local)
  # One persistent compilation cache for every point: the programs of a size
  # are the same at every budget (the run length is a runtime value), and a
  # rerun or a resumed point recompiles nothing.
  env.setdefault(compile_cache.ENV_VAR, compile_cache.default_dir()
                 if compilation_cache is None else compilation_cache)
  slots = core_slots(parallel) if pin_cores and not in_process else None
  commands = {p.id: worker_command(sweep_arg, workdir, p.id, sets,
                                   sweep_flags, local) for p in points}
  printable = {i: executors.command_line(env, c)
               for i, c in commands.items()}
  if executor not in executors.EXECUTORS:
    raise ValueError(f"--executor={executor!r}: use one of "
                     + ", ".join(executors.EXECUTORS))
  multihost = int(spec.get("cluster", {}).get("hosts_per_point", 1)) > 1
  if executor == "local" and multihost and not dry_run and not collect:
    raise ValueError(f"spec.cluster.hosts_per_point="
                     f"{spec.cluster.hosts_per_point}: points of several "
                     "hosts run with --executor=slurm or print")
  if dry_run:
    out(f"# {len(points)} points of {spec.name}; run from {_REPO}")
    total_hours = 0.0
    for p in points:
      hours = sweep_lib.device_hours(spec, p)
      cost = ""
      if hours:
        total_hours += hours[0]
        cost = (f", {hours[0]:,.1f} device-hours ({hours[1]:,.2f} h on "
                f"{spec.cluster.devices_per_point} devices)")
      out(f"# {p.id}: N={p.params:,} ({p.params_non_embedding:,} "
          f"non-embedding), {p.steps} steps x {p.batch_size}, "
          f"{p.planned_flops:.3g} FLOPs{cost}")
    if total_hours:
      out(f"# total {sum(p.planned_flops for p in points):.3g} FLOPs, "
          f"{total_hours:,.0f} {spec.cluster.device_kind} device-hours at "
          f"MFU {spec.cluster.mfu:g} (--sweep.cluster.mfu to change)")
    for p in points:
      out(printable[p.id])
    return {"points": points, "rows": {}, "failed": []}

  runs = epath.Path(workdir) / "runs"
  runs.mkdir(parents=True, exist_ok=True)
  os.makedirs(os.path.join(local, "runs"), exist_ok=True)
  # One runner per sweep directory: two would run the same points in the
  # same run directories and append duplicate rows.
  with _exclusive(os.path.join(local, "lock"),
                  f"another scaling.run is running the sweep in {workdir}"):
    results_path = str(epath.Path(workdir) / "results.jsonl")
    rows = _load_finished(workdir, spec, points, out)

    def append(row):
      jsonl.append(results_path, [row])
      rows[row["point"]] = row

    # Points finished elsewhere (e.g. by --dry-run commands on a cluster).
    for p in points:
      result = runs / p.id / "result.json"
      if p.id not in rows and result.exists():
        row = json.loads(result.read_text())
        if row.get("status") in FINISHED:
          _check_same_config(p, row, result)
          append(row)
    # Largest budgets first: with K at a time, the sweep then ends on short
    # points instead of one long point running alone.
    todo = sorted((p for p in points if p.id not in rows),
                  key=lambda p: -p.budget)
    if collect or executor != "local":
      return _hand_off(spec, points, rows, todo, commands, printable, env,
                       local, executor=executor, collect=collect,
                       slurm_cluster=slurm_cluster, resubmit=resubmit,
                       multihost=multihost, out=out)
    out(f"{spec.name}: {len(points)} points, {len(points) - len(todo)} "
        f"finished, {len(todo)} to run ({sum(p.budget for p in todo):.3g} "
        f"FLOPs), {parallel} at a time; results in {results_path}")
    progress = _Progress(len(points), len(points) - len(todo), out)
    failed: List[str] = []
    queue = list(todo)
    running: Dict[str, Any] = {}

    def finish(p, row, seconds):
      if row is not None and row.get("status") in FINISHED:
        append(row)
      else:
        failed.append(p.id)
        log = os.path.join(local, "runs", p.id, "log.txt")
        tail = ""
        if os.path.exists(log):
          with open(log, encoding="utf-8", errors="replace") as f:
            lines = [ln.rstrip() for ln in f if ln.strip()]
          tail = next((ln for ln in reversed(lines) if ln.startswith("error")),
                      lines[-1] if lines else "")
        out(f"{p.id} failed: {tail or 'no output'} (see {log})")
        row = None
      remaining = sum(q.budget for q in queue) + sum(
          r[0].budget for r in running.values())
      progress.finished(p, row, seconds, remaining, len(running))

    try:
      if in_process:
        while queue:
          p = queue.pop(0)
          start = time.time()
          try:
            row = run_point(spec, p, workdir, parsed, printable[p.id],
                            local)
          except ValueError as e:
            out(f"error: {e}")
            row = None
          finish(p, row, time.time() - start)
      while queue or running:
        while queue and len(running) < max(1, parallel):
          p = queue.pop(0)
          rundir = os.path.join(local, "runs", p.id)
          os.makedirs(rundir, exist_ok=True)
          log = open(os.path.join(rundir, "log.txt"), "a", encoding="utf-8")
          orphan = _holder(os.path.join(rundir, "lock"))
          if orphan is not None:
            # A worker of an earlier runner is still at it: wait for it
            # instead of starting a second one on the same directory.
            running[p.id] = (p, _Adopted(os.path.join(rundir, "lock")), log,
                             time.time(), None)
            out(f"adopt {p.id}: still running as pid {orphan} from an "
                "earlier runner")
            continue
          log.write(f"$ {printable[p.id]}\n")
          log.flush()
          cores = None
          if slots:
            busy = [r[4] for r in running.values()]
            cores = next(c for c in slots if c not in busy)
          # taskset rather than a preexec_fn: the runner has JAX loaded,
          # and a Python callback between fork and exec is unsafe there.
          pin = (["taskset", "-c", ",".join(map(str, sorted(cores)))]
                 if cores else [])
          proc = subprocess.Popen(pin + commands[p.id], cwd=_REPO, stdout=log,
                                  stderr=subprocess.STDOUT,
                                  env=dict(os.environ, **env,
                                           JAXGEN_RUNNER_PID=str(os.getpid())),
                                  # Own process group: a terminal's Ctrl-C
                                  # reaches workers only through the runner.
                                  start_new_session=True)
          running[p.id] = (p, proc, log, time.time(), cores)
          out(f"start {p.id}: N={p.params:,}, {p.steps} steps"
              + (f", cores {_fmt_cores(cores)}" if cores else ""))
        time.sleep(0.2)
        for pid, (p, proc, log, start, _) in list(running.items()):
          if proc.poll() is None:
            continue
          log.close()
          del running[pid]
          result = runs / pid / "result.json"
          row = None
          if proc.returncode == 0 and result.exists():
            row = json.loads(result.read_text())
          finish(p, row, time.time() - start)
    except BaseException:
      # Ctrl-C or a runner error: interrupt the workers (SIGINT lets the trainer
      # flush its metrics and finish writing its checkpoint), then wait; kill
      # only those that do not stop within a minute.
      for p, proc, log, *_ in running.values():
        if proc.poll() is None:
          proc.send_signal(signal.SIGINT)
      for p, proc, log, *_ in running.values():
        try:
          proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
          proc.kill()
          proc.wait()
        log.close()
      out("interrupted; run the same command again to resume")
      raise
    if failed:
      out(f"{len(failed)} points failed: {', '.join(failed)}; rerun to retry")
    else:
      out(f"done: {len(rows)} rows in {results_path}")
    return {"points": points, "rows": rows, "failed": failed}


def _hand_off(spec, points, rows, todo, commands, printable, env, local, *,
              executor, collect, slurm_cluster, resubmit, multihost, out):
  """--collect, --executor=print and --executor=slurm: nothing runs here."""
  result = {"points": points, "rows": rows, "failed": [], "jobs": {}}
  if collect:
    waiting = [f"{p.id} (job {j['job_id']})" if (j := executors.submitted(
        local, p.id)) else p.id for p in todo]
    out(f"collected: {len(rows)} of {len(points)} points finished"
        + (f"; {len(todo)} without a result: {', '.join(waiting)}"
           if todo else ""))
    result["missing"] = [p.id for p in todo]
  elif executor == "print":
    for p in todo:
      line = printable[p.id] + (" --multihost" if multihost else "")
      out(f"{line}  # {p.id}")
  else:
    ex = executors.slurm_executor(
        spec, os.path.join(local, "submitit"), cluster=slurm_cluster)
    result["jobs"] = executors.submit(
        ex, todo, commands, env, local, _REPO, resubmit=resubmit,
        multihost=multihost, out=out)
  return result


# -- extrapolation check -------------------------------------------------------


def predicted_optimum(fit: Dict[str, Any], budget: float) -> Dict[str, Any]:
  """N_opt and loss at `budget` from a fit.json (approaches 2 and 3)."""
  from scaling import bootstrap  # pylint: disable=g-import-not-at-top
  out = {}
  if fit.get("approach2"):
    out["approach2"] = {k: float(v) for k, v in bootstrap.approach2_predict(
        fit["approach2"], budget).items()}
  if fit.get("approach3"):
    out["approach3"] = {k: float(v) for k, v in bootstrap.approach3_predict(
        fit["approach3"], budget, fit["approach3"]["k"]).items()}
  if not out:
    raise ValueError("fit.json has neither an approach2 nor approach3 fit")
  return out


def check_report(fit: Dict[str, Any], row: Dict[str, Any]) -> Dict[str, Any]:
  """Predicted vs measured loss for a run at an extrapolated budget.

  Args:
    fit: a fit.json written by `python -m scaling.fit`.
    row: the results row of the check run.

  Returns:
    A JSON-ready dict: the run, the predictions and relative errors
    (predicted / measured - 1) of the loss the fit used (eval, else train).
  """
  if row["status"] != OK:
    raise ValueError(f"the check run {row['point']} is {row['status']} "
                     f"({row.get('error')}); nothing to compare the fit with")
  measured = row.get("eval_loss")
  if measured is None:
    measured = row.get("final_train_loss")
  pred = predicted_optimum(fit, row["budget_flops"])
  out = {"point": row["point"], "budget_flops": row["budget_flops"],
         "params": row["params"], "examples_seen": row["examples_seen"],
         "status": row["status"], "measured_loss": measured,
         "predictions": pred, "errors": {}}
  if "approach2" in pred:
    out["errors"]["approach2_loss_at_optimum"] = pred["approach2"]["loss"]
  if "approach3" in pred:
    p = fit["approach3"]
    n = row[fit.get("settings", {}).get("param_key", "params")]
    at_run = p["E"] + p["A"] / n**p["alpha"] + (
        p["B"] / row["examples_seen"]**p["beta"])
    pred["approach3"]["loss_at_run"] = at_run
    out["errors"]["approach3_loss_at_optimum"] = pred["approach3"]["loss"]
    out["errors"]["approach3_loss_at_run"] = at_run
  out["errors"] = {k: (v / measured - 1 if measured else None)
                   for k, v in out["errors"].items()}
  return out


# -- command line --------------------------------------------------------------

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file(
    "sweep", None, "Sweep spec, e.g. configs/scaling/simple_diffusion.py:cpu.",
    lock_config=True)
flags.DEFINE_string("workdir", None, "Sweep directory (results.jsonl, runs/);"
                    " local or e.g. gs://bucket/sweep.")
flags.DEFINE_string("local_dir", None, "Local directory for locks and logs "
                    "(default: --workdir if local, else "
                    "~/.cache/jaxgen/sweeps/<workdir>).")
flags.DEFINE_integer("parallel", 1, "Points run at once.")
flags.DEFINE_bool("dry_run", False, "Print one worker command per point.")
flags.DEFINE_alias("dry-run", "dry_run")
flags.DEFINE_list("only_budgets", [], "Budgets (FLOPs) instead of the spec's.")
flags.DEFINE_list("only_sizes", [], "Sizes (at every budget) instead of the "
                  "spec's windows.")
flags.DEFINE_float("nearest_params", None, "Run only the ladder size nearest "
                   "this parameter count.")
flags.DEFINE_string("optimal_from", None, "fit.json: run the size nearest the "
                    "predicted N_opt at --only_budgets and write check.json.")
flags.DEFINE_multi_string("set", [], "key=value run-config override for every"
                          " point, e.g. dataset.data_dir=/data.")
flags.DEFINE_string("point", None, "Worker mode: train this point id only.")
flags.DEFINE_bool("in_process", False, "Run points in this process, one by "
                  "one (debugging).")
compile_cache.define_flag()
flags.DEFINE_bool("pin_cores", True, "Pin each of the --parallel workers to "
                  "its own share of the cores.")
flags.DEFINE_enum("executor", "local", executors.EXECUTORS, "local: run the "
                  "points here; slurm: submit one job per point (submitit); "
                  "print: print one command line per point.")
flags.DEFINE_bool("collect", False, "Only collect finished points' "
                  "result.json into results.jsonl and list the missing ones.")
flags.DEFINE_bool("resubmit", False, "--executor=slurm: submit points "
                  "submitted before that have no result yet again.")
flags.DEFINE_enum("slurm_cluster", "slurm", ("slurm", "local"), "submitit "
                  "cluster of --executor=slurm (local: the same jobs as local "
                  "processes, for trying a sweep out).")
flags.DEFINE_bool("multihost", False, "Worker mode: initialise "
                  "jax.distributed first (points of several hosts).")


def _sweep_arg() -> str:
  return FLAGS["sweep"].config_filename


def main(argv):
  if len(argv) > 1:
    raise app.UsageError(f"Unexpected arguments: {argv[1:]}")
  if not FLAGS.workdir:
    raise app.UsageError("--workdir is required")
  spec = FLAGS.sweep
  # `--sweep.x=y` overrides travel to the workers unchanged.
  sweep_flags = [a for a in sys.argv[1:] if a.startswith("--sweep.")]
  # SIGTERM (scancel, kill) stops the runner like Ctrl-C: its workers are
  # interrupted, save their checkpoints and a rerun resumes them.
  signal.signal(signal.SIGTERM, signal.default_int_handler)
  try:
    if FLAGS.point:
      _die_with_runner()
      # The runner passes the shared directory in the environment.
      compile_cache.enable(FLAGS.compilation_cache)
      if FLAGS.multihost:
        from jaxgen.parallel import multihost  # pylint: disable=g-import-not-at-top
        multihost.initialize()
      budget, size = sweep_lib.parse_point_id(FLAGS.point)
      sets = sweep_lib.parse_sets(FLAGS.set)
      point = sweep_lib.make_point(spec, budget, size, sets)
      from jaxgen.train import preemption  # pylint: disable=g-import-not-at-top
      try:
        run_point(spec, point, FLAGS.workdir, sets,
                  " ".join(shlex.quote(a) for a in [sys.executable, "-m",
                                                    "scaling.run"]
                           + sys.argv[1:]), FLAGS.local_dir)
      except preemption.Preempted as e:
        print(str(e), file=sys.stderr)
        sys.exit(0)
      return
    budgets = [float(b) for b in FLAGS.only_budgets] or None
    sizes = FLAGS.only_sizes or None
    fit, param_key = None, "params"
    if FLAGS.optimal_from:
      if not budgets or len(budgets) != 1:
        raise ValueError(
            "--optimal_from needs exactly one --only_budgets value")
      fit = json.loads(epath.Path(FLAGS.optimal_from).read_text())
      pred = predicted_optimum(fit, budgets[0])
      n_opt = (pred.get("approach2") or pred["approach3"])["N_opt"]
      FLAGS.nearest_params = n_opt
      param_key = fit.get("settings", {}).get("param_key", "params")
    if FLAGS.nearest_params:
      name, n = sweep_lib.nearest_size(spec, FLAGS.nearest_params,
                                       sweep_lib.parse_sets(FLAGS.set),
                                       param_key)
      print(f"size nearest N={FLAGS.nearest_params:.4g}: {name} (N={n:,})")
      sizes = [name]
    if FLAGS.in_process and not FLAGS.dry_run:
      compile_cache.enable(FLAGS.compilation_cache)
    with warnings.catch_warnings():
      warnings.simplefilter("always", sweep_lib.SweepWarning)
      warnings.formatwarning = lambda msg, *_, **__: f"warning: {msg}\n"
      result = run_sweep(
          spec, sweep_arg=_sweep_arg(), workdir=FLAGS.workdir,
          parallel=FLAGS.parallel, dry_run=FLAGS.dry_run, budgets=budgets,
          sizes=sizes, sets=FLAGS.set, sweep_flags=sweep_flags,
          in_process=FLAGS.in_process, local=FLAGS.local_dir,
          compilation_cache=FLAGS.compilation_cache,
          pin_cores=FLAGS.pin_cores, executor=FLAGS.executor,
          collect=FLAGS.collect, slurm_cluster=FLAGS.slurm_cluster,
          resubmit=FLAGS.resubmit)
    if fit is not None and not FLAGS.dry_run and result["rows"]:
      row = result["rows"][result["points"][0].id]
      report = check_report(fit, row)
      path = str(epath.Path(FLAGS.workdir) / "check.json")
      jsonl.write_atomic(path, json.dumps(report, indent=1))
      print(f"measured loss {report['measured_loss']:.4f}; relative errors "
            + ", ".join(f"{k} {v:+.2%}" for k, v in report["errors"].items()
                        if v is not None) + f"; wrote {path}")
  except (ValueError, OSError) as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  except KeyboardInterrupt:
    sys.exit(130)
  if result["failed"]:
    sys.exit(1)


if __name__ == "__main__":
  flags.mark_flags_as_required(["sweep"])
  app.run(main, flags_parser=config_lib.parse_flags)
