"""Where a sweep's points run: local processes, slurm jobs, or printed commands.

`python -m scaling.run --executor=...`:

  local  (default) the runner starts the worker processes itself, K at a
         time, and waits for them (scaling/run.py).
  slurm  each point that has no row yet becomes one job, submitted through
         submitit (partition, account, time limit, hosts and GPUs per point
         from the spec's `cluster` section or --sweep.cluster.* flags); the
         runner returns at once. Points of more than one host run their
         worker on every host with --multihost (jax.distributed finds the
         slurm job's coordinator). The job ids go to
         <local_dir>/runs/<id>/job.json.
  print  prints one shell line per point that has no row yet, to run on any
         scheduler.

Workers write WORKDIR/runs/<id>/result.json; `--collect` (or any later run of
the same sweep) appends those to results.jsonl without running anything.
"""

import json
import os
import shlex
import shutil
import sys
import time
from typing import Any, Callable, Dict, List, Optional, Sequence

import ml_collections

from jaxgen import jsonl
from jaxgen.train import workdir as workdir_lib
from scaling import sweep as sweep_lib
from scaling import workers
from scaling import wsd

EXECUTORS = ("local", "slurm", "print")


# The repository root: workers and jobs run from here.
REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def command_line(env: Dict[str, str], argv: Sequence[str]) -> str:
  """One shell line: `K=V ... argv`, quoted."""
  return " ".join([f"{k}={shlex.quote(v)}" for k, v in env.items()]
                  + [shlex.quote(a) for a in argv])


def _submitit():
  try:
    import submitit  # pylint: disable=g-import-not-at-top
  except ImportError:
    raise ValueError("--executor=slurm needs submitit: pip install "
                     "'jaxgen[cluster]' (or pip install submitit)") from None
  return submitit


def check_slurm(spec: ml_collections.ConfigDict, cluster: str = "slurm"):
  """Refuses a SLURM submission this machine cannot make, in one line.

  Called before the sweep directory is created, so a refused submission
  leaves nothing behind.

  Args:
    spec: a sweep spec (its `cluster.partition`).
    cluster: "slurm" or "local" (see `slurm_executor`).

  Returns:
    The submitit module.

  Raises:
    ValueError: submitit is missing, no SLURM on this machine (srun /
      sbatch not on PATH), or slurm without a partition.
  """
  submitit = _submitit()
  # No SLURM at all first: a partition would not help.
  if cluster == "slurm" and not (shutil.which("srun") and
                                 shutil.which("sbatch")):
    # submitit's own check is a RuntimeError deep in its constructor.
    raise ValueError("--executor=slurm: no SLURM here (srun / sbatch not on "
                     "PATH); submit from a login node of the cluster, or "
                     "use --slurm_cluster=local to run the same jobs on "
                     "this machine, --executor=print for the commands, or "
                     "--collect to gather finished points' results")
  if cluster == "slurm" and not spec.cluster.partition:
    raise ValueError("--executor=slurm needs a partition: set "
                     "--sweep.cluster.partition=NAME (or cluster.partition "
                     "in the spec)")
  return submitit


def slurm_executor(spec: ml_collections.ConfigDict, folder: str,
                   cluster: str = "slurm"):
  """A submitit executor for the spec's points.

  Args:
    spec: a sweep spec (its `cluster` section and name).
    folder: submitit's folder (job scripts, pickles, logs).
    cluster: "slurm", or "local" (submitit's local executor: the same jobs
      as local processes; for tests and trying a sweep out).

  Returns:
    The executor, parameters set.

  Raises:
    ValueError: submitit is missing, slurm without a partition, or no
      SLURM on this machine (srun / sbatch not on PATH).
  """
  submitit = check_slurm(spec, cluster)
  c = spec.cluster
  executor = submitit.AutoExecutor(folder=folder, cluster=cluster)
  hosts = max(1, int(c.hosts_per_point))
  params = dict(name=spec.name, timeout_min=int(c.time_limit_min),
                nodes=hosts, tasks_per_node=1)
  kind = str(c.device_kind).lower()
  if kind and "tpu" not in kind:
    params["gpus_per_node"] = max(1, int(c.devices_per_point) // hosts)
  if int(c.get("cpus_per_task", 0)) > 0:
    params["cpus_per_task"] = int(c.cpus_per_task)
  if cluster == "slurm":
    params["slurm_partition"] = c.partition
    if c.account:
      params["slurm_account"] = c.account
  executor.update_parameters(**params)
  return executor


def _point_ids(unit) -> List[str]:
  """The points a unit trains (a point: itself; a wsd chain: its own)."""
  return [q.id for q in getattr(unit, "points", None) or [unit]]


def job_file(local: str, point_id: str) -> str:
  """Where the job id of a submitted point is recorded."""
  return os.path.join(local, "runs", point_id, "job.json")


def submitted(local: str, point_id: str) -> Optional[Dict[str, Any]]:
  """The job.json record of a point, or None if it was never submitted."""
  path = job_file(local, point_id)
  if not os.path.exists(path):
    return None
  with open(path, encoding="utf-8") as f:
    return json.load(f)


# Job states (sacct's; submitit's local jobs') of a job that will not run
# again: its point, without a result, is submitted again. A worker stopped
# by preemption saves and exits 0, so even COMPLETED may lack a result.
_ENDED = ("BOOT_FAIL", "CANCELLED", "COMPLETED", "DEADLINE", "FAILED",
          "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED", "TIMEOUT", "FINISHED",
          "INTERRUPTED", "NO PROCESS AND NO RESULT")


def job_state(executor, record: Dict[str, Any]) -> str:
  """The scheduler's state of a recorded job ("UNKNOWN" if it cannot say).

  Args:
    executor: from `slurm_executor` (its job class asks sacct, or the local
      job's files).
    record: the point's job.json.

  Returns:
    The state in capitals ("CANCELLED by 12" is "CANCELLED").
  """
  job_class = getattr(getattr(executor, "_executor", executor), "job_class",
                      None)
  try:
    state = str(job_class(folder=record["folder"],
                          job_id=record["job_id"]).state)
  except Exception:  # pylint: disable=broad-except
    return "UNKNOWN"  # No job class (a fake), no sacct, a removed folder.
  state = state.strip().upper()
  return state if state in _ENDED else (state.split() or ["UNKNOWN"])[0]


def submit(executor, points: Sequence[Any], commands: Dict[str, List[str]],
           env: Dict[str, str], local: str, cwd: str, *,
           resubmit: bool = False, multihost: bool = False,
           out: Callable[[str], None] = print) -> Dict[str, Any]:
  """Submits one job per point and records its id.

  A point submitted earlier (it has a job.json) is skipped while its job
  may still run (pending, running, or a state the scheduler cannot give):
  two jobs would train the same run directory. One whose job ended
  without a result (failed, timed out, cancelled, preempted) is submitted
  again, and so is any with `resubmit` whose worker is not running.

  Args:
    executor: from `slurm_executor`.
    points: what to submit, one job each: points without a row, or wsd
      chains (`scaling.run.Unit`); anything with an `id`.
    commands: point id -> worker argv.
    env: environment variables of every worker.
    local: the sweep's local directory.
    cwd: directory the workers run from (the repository root).
    resubmit: submit points that have a job.json again.
    multihost: add --multihost to the workers (more than one host).
    out: printer.

  Returns:
    point id -> submitit job, for the points submitted now.
  """
  submitit = _submitit()
  todo, skipped = [], []
  for p in points:
    old = submitted(local, p.id)
    pid = workers.holder(os.path.join(local, "runs", p.id, "lock"))
    if pid is not None:
      # Even with --resubmit: a second job would find the run locked and
      # fail, and its id would replace the live one's in job.json.
      job = f" as job {old['job_id']}" if old else ""
      out(f"{p.id}: still running{job} (pid {pid} holds its lock); not "
          "submitted again")
      continue
    # A wsd chain submitted for fewer budgets than it has now is submitted
    # again (its job would not train the new branches).
    covered = old and set(_point_ids(p)) <= set(old.get("points", [p.id]))
    if covered and not resubmit:
      state = job_state(executor, old)
      if state in _ENDED:
        out(f"{p.id}: job {old['job_id']} ended ({state}) without a "
            "result; submitted again")
        covered = False
      else:
        old = dict(old, state=state)
    (skipped if covered and not resubmit else todo).append((p, old))
  for p, old in skipped:
    out(f"{p.id}: submitted earlier as job {old['job_id']} ({old['state']}, "
        "no result yet); skipped (--resubmit submits it again)")
  if not todo:
    return {}
  functions = []
  for p, _ in todo:
    argv = list(commands[p.id]) + (["--multihost"] if multihost else [])
    # `env K=V ...` keeps the node's own environment (PATH, CUDA devices)
    # and adds the sweep's.
    functions.append(submitit.helpers.CommandFunction(
        ["env"] + [f"{k}={v}" for k, v in env.items()] + argv, cwd=cwd,
        verbose=False))
  with executor.batch():
    jobs = [executor.submit(f) for f in functions]
  out_jobs = {}
  for (p, _), job in zip(todo, jobs):
    os.makedirs(os.path.dirname(job_file(local, p.id)), exist_ok=True)
    jsonl.write_atomic(job_file(local, p.id), json.dumps(
        {"job_id": str(job.job_id), "submitted": time.time(),
         "folder": str(executor.folder), "points": _point_ids(p)}))
    out_jobs[p.id] = job
  out(f"submitted {len(jobs)} jobs ({jobs[0].job_id} ...); collect the "
      "finished points later with the same command and --collect")
  return out_jobs


def worker_command(sweep_arg: str, workdir: str, point_id: str,
                   sets: Sequence[str] = (),
                   sweep_flags: Sequence[str] = (),
                   local: Optional[str] = None,
                   chain: Optional[Sequence[sweep_lib.Point]] = None
                   ) -> List[str]:
  """argv of the worker process of one point, or of one wsd chain (the
  points of a size: `--chain=<size> --chain_budgets=...`)."""
  # Workers run from the repository root: pass absolute local paths.
  path, colon, arg = sweep_arg.partition(":")
  sweep_arg = os.path.abspath(path) + colon + arg
  remote = not workdir_lib.is_local(workdir)
  workdir = workdir if remote else os.path.abspath(workdir)
  extra = [f"--local_dir={local}"] if remote and local else []
  what = [f"--point={point_id}"]
  if chain:
    what = [f"--chain={chain[0].size}", "--chain_budgets=" + ",".join(
        sweep_lib.budget_tag(p.budget) for p in chain)]
  return ([sys.executable, "-m", "scaling.run", f"--sweep={sweep_arg}",
           *sweep_flags, f"--workdir={workdir}", *extra, *what]
          + [f"--set={s}" for s in sets])


class Unit:
  """What one worker process (or job) runs: a point, or a wsd chain."""

  def __init__(self, uid: str, points: Sequence[sweep_lib.Point],
               chain: bool):
    self.id, self.points, self.chain = uid, list(points), chain
    self.budget = sum(p.budget for p in points)

  def describe(self) -> str:
    """What the runner prints when it starts the unit."""
    p = self.points[0]
    if not self.chain:
      return f"N={p.params:,}, {p.steps} steps"
    return (f"N={p.params:,}, stable run + {len(self.points)} branches "
            f"({', '.join(q.id for q in self.points)})")


def make_units(spec, points: Sequence[sweep_lib.Point]) -> List[Unit]:
  """One unit per point, or per size for a wsd spec (largest first)."""
  if not wsd.enabled(spec):
    return [Unit(p.id, [p], False) for p in points]
  return sorted((Unit(f"{wsd.STABLE_PREFIX}{size}", chain, True)
                 for size, chain in wsd.chains(points).items()),
                key=lambda u: -u.budget)


def hand_off(spec, points, rows, todo, units, commands, printable, env,
              local, *, results_path, executor, collect, slurm_cluster,
              resubmit, multihost, out):
  """--collect, --executor=print and --executor=slurm: nothing runs here."""
  result = {"points": points, "rows": rows, "failed": [], "jobs": {}}
  if not collect and not todo:
    verb = "print" if executor == "print" else "submit"
    out(f"{spec.name}: {len(points)} of {len(points)} points finished, "
        f"nothing to {verb}; results in {results_path}")
  elif collect:
    unit_of = {p.id: u.id for u in units for p in u.points}
    waiting = [f"{p.id} (job {j['job_id']})" if (j := submitted(
        local, unit_of[p.id])) else p.id for p in todo]
    out(f"collected: {len(rows)} of {len(points)} points finished"
        + (f"; {len(todo)} without a result: {', '.join(waiting)}"
           if todo else ""))
    result["missing"] = [p.id for p in todo]
  elif executor == "print":
    if multihost:
      # Off SLURM and Cloud TPU, JAX finds no cluster to join by itself.
      out(f"# each line runs on all {spec.cluster.hosts_per_point} hosts of "
          "its point; off SLURM / Cloud TPU prefix it with "
          "JAXGEN_COORDINATOR=host:port JAXGEN_NUM_PROCESSES="
          f"{spec.cluster.hosts_per_point} JAXGEN_PROCESS_ID=<0..."
          f"{int(spec.cluster.hosts_per_point) - 1}>")
    for u in units:
      line = printable[u.id] + (" --multihost" if multihost else "")
      out(f"{line}  # {u.id}")
  else:
    ex = slurm_executor(
        spec, os.path.join(local, "submitit"), cluster=slurm_cluster)
    result["jobs"] = submit(
        ex, units, commands, env, local, REPO, resubmit=resubmit,
        multihost=multihost, out=out)
  return result


def print_plan(spec: ml_collections.ConfigDict,
               points: Sequence[sweep_lib.Point], printable: Sequence[str],
               out: Callable[[str], None]) -> None:
  """--dry_run: each point's size, steps, FLOPs (and device-hours), then
  the worker command lines.

  Args:
    spec: the sweep spec.
    points: its planned points.
    printable: the worker command lines.
    out: where the lines go.
  """
  out(f"# {len(points)} points of {spec.name}; run from {REPO}")
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
  if wsd.enabled(spec):
    out("# " + wsd.savings_line(spec, points))
  for line in printable:
    out(line)
