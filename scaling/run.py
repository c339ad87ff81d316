r"""Runs a scaling sweep: one trainer process per point, one results row each.

Usage:
  python -m scaling.run --sweep=configs/scaling/simple_diffusion.py:cpu \
      --workdir=DIR [--parallel=K] [--dry-run] [--only_budgets=C1,C2]
      [--only_sizes=NAME,...] [--nearest_params=N | --optimal_from=FIT_JSON]
      [--set=dataset.data_dir=/data ...] [--sweep.batch_size=64 ...]
      [--executor=local|slurm|print] [--collect] [--sweep.schedule=wsd]

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

`--executor=slurm` submits the points as jobs and `--executor=print` prints
their command lines (scaling/executors.py); `--collect` gathers what they
finished. A spec with `schedule = "wsd"` runs each size as one chain: a
stable constant-rate run and a cooldown branch per budget (scaling/wsd.py).
Rows, locks and the extrapolation check live in scaling/rows.py,
scaling/workers.py and scaling/check.py.

`--optimal_from=fit.json --only_budgets=C` runs the ladder size nearest the
fitted compute-optimal N at C (approach 2, else 3) and writes check.json
with the predicted and measured losses and their relative errors.
"""

import json
import os
import shlex
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
from jaxgen.train import host_malloc
from jaxgen.train import logs
from scaling import check
from scaling import executors
from scaling import results as results_lib
from scaling import rows as rows_lib
from scaling import spec_check
from scaling import sweep as sweep_lib
from scaling import workers
from scaling import wsd



# -- worker: one point, in this process ----------------------------------------


def run_point(spec, point: sweep_lib.Point, workdir: str,
              sets: Optional[Dict[str, str]] = None,
              command: str = "", local: Optional[str] = None,
              extra: Optional[Dict[str, Any]] = None,
              first_loss: Optional[float] = None,
              cpu_start: float = 0.0) -> Dict[str, Any]:
  """Trains one point here and writes runs/<id>/result.json.

  Args:
    spec: the sweep spec.
    point: the point (from `sweep.plan` or `sweep.make_point`).
    workdir: the sweep directory.
    sets: --set overrides, as for the plan.
    command: the command line, recorded in the row.
    local: the sweep's local directory (`workers.local_dir(workdir)` if None).
    extra: fields added to the row (a wsd branch's).
    first_loss: the loss the run started from (see `rows.make_row`).
    cpu_start: process CPU seconds not to count (see `rows.make_row`).

  Returns:
    The row.

  Raises:
    ValueError: a configuration error (no row is written).
  """
  import jax  # pylint: disable=g-import-not-at-top
  from jaxgen import families  # pylint: disable=g-import-not-at-top,unused-import
  from jaxgen.train import trainer  # pylint: disable=g-import-not-at-top
  config, _ = sweep_lib.point_config(spec, point.budget, point.size, sets)
  rundir = str(epath.Path(workdir) / "runs" / point.id)
  epath.Path(rundir).mkdir(parents=True, exist_ok=True)
  lockdir = os.path.join(local or workers.local_dir(workdir), "runs", point.id)
  os.makedirs(lockdir, exist_ok=True)
  resumed_from = rows_lib.latest_checkpoint(rundir)
  rows_lib.check_resumed_config(
      rundir, config, f"delete {rundir} to train point {point.id} afresh, "
      "or rerun with the spec and --set flags it started with")
  start, error = time.time(), None
  # One lock per process of a point spread over several hosts (as the
  # trainer's own): they share the directory when its disk is shared (or
  # the hosts are one machine), and a single lock let only one of them in.
  # Process 0's is the one the runner reads to adopt a live worker.
  pidx = jax.process_index()
  with workers.exclusive(os.path.join(lockdir,
                                      "lock" if not pidx else f"lock.{pidx}"),
                         f"point {point.id} is already running in {rundir}"):
    try:
      trainer.train_and_evaluate(config, rundir)
    except FloatingPointError as e:
      error = str(e)
    # preemption.Preempted propagates: an unfinished point has no row.
  metrics = jsonl.read(epath.Path(rundir) / "metrics.jsonl",
                       missing_ok=True)
  row = rows_lib.make_row(spec, point, metrics,
                 error=error, wall_time_s=time.time() - start,
                 resumed_from=resumed_from, command=command,
                 first_loss=first_loss, cpu_start=cpu_start)
  row.update(extra or {})
  if pidx == 0:  # One writer for a point of several hosts.
    jsonl.write_atomic(epath.Path(rundir) / "result.json", json.dumps(row))
  return row


# -- the sweep -----------------------------------------------------------------


class _Progress:
  """Prints one line per finished point with elapsed time and an ETA.

  The ETA scales the elapsed time by remaining / finished FLOPs of this
  session's points (their budgets; for wsd chains, what each branch adds to
  its chain). A failed point leaves the remaining work without adding to
  the finished (a burst of fast crashes would make the ETA collapse): until
  a point finishes the ETA is unknown. Small points cost more per FLOP on
  CPU, so early estimates are rough.
  """

  def __init__(self, total: int, done: int, out):
    self.total, self.done, self.out = total, done, out
    self.start = time.time()
    self.flops_done = 0.0

  def finished(self, point, row, seconds, remaining_flops, running,
               flops=None):
    self.done += 1
    if row is not None:
      self.flops_done += point.budget if flops is None else flops
    elapsed = time.time() - self.start
    fmt = logs.format_duration
    eta = ("0m00s" if not remaining_flops else "unknown"
           if not self.flops_done else
           fmt(elapsed * remaining_flops / self.flops_done))
    status = row["status"] if row else "FAILED"
    loss = ""
    if row and row["status"] == rows_lib.OK:
      # The spec's metric first (R3GAN's is a sample metric, its eval_loss
      # an adversarial loss), then the losses; None when not logged.
      names = dict.fromkeys([row.get("metric") or "eval_loss", "eval_loss",
                             "final_train_loss"])
      loss = "".join(f" {n.replace('final_train_loss', 'train')} "
                     f"{row[n]:.4f}" for n in names
                     if isinstance(row.get(n), (int, float)))
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
    local: the local directory for locks and logs
      (`workers.local_dir(workdir)` if None).
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

  Raises:
    ValueError: bad sweep input, or `collect` in a workdir with no sweep.
  """
  if collect and not (epath.Path(workdir) / "runs").exists():
    # Collecting from a typo'd path would create it and report 0 points.
    raise ValueError(f"--collect: no sweep in --workdir={workdir} (it has "
                     "no runs/ folder); pass the workdir the points were "
                     "started in")
  parsed = spec_check.parse_sets(sets)
  points = sweep_lib.plan(spec, budgets=budgets, sizes=sizes, sets=parsed)
  check.check_metric_logged(spec, sweep_lib.point_config(
      spec, points[0].budget, points[0].size, parsed)[0])
  env = {k: str(v) for k, v in spec.env.items()}
  local = workers.local_dir(workdir, local)
  # One persistent compilation cache for every point: the programs of a size
  # are the same at every budget (the run length is a runtime value), and a
  # rerun or a resumed point recompiles nothing.
  env.setdefault(compile_cache.ENV_VAR, compile_cache.default_dir()
                 if compilation_cache is None else compilation_cache)
  slots = workers.core_slots(parallel) if pin_cores and not in_process else None

  def commands_of(units):
    argv = {u.id: executors.worker_command(
        sweep_arg, workdir, u.id, sets, sweep_flags, local,
        u.points if u.chain else None) for u in units}
    return argv, {i: executors.command_line(env, c) for i, c in argv.items()}

  commands, printable = commands_of(executors.make_units(spec, points))
  if executor not in executors.EXECUTORS:
    raise ValueError(f"--executor={executor!r}: use one of "
                     + ", ".join(executors.EXECUTORS))
  multihost = int(spec.get("cluster", {}).get("hosts_per_point", 1)) > 1
  if executor == "local" and multihost and not dry_run and not collect:
    raise ValueError(f"spec.cluster.hosts_per_point="
                     f"{spec.cluster.hosts_per_point}: points of several "
                     "hosts run with --executor=slurm or print")
  if dry_run:
    executors.print_plan(spec, points, printable.values(), out)
    return {"points": points, "rows": {}, "failed": []}

  if executor == "slurm" and not collect:
    # Before the sweep directory exists: a refused submission leaves none.
    executors.check_slurm(spec, slurm_cluster)
  runs = epath.Path(workdir) / "runs"
  runs.mkdir(parents=True, exist_ok=True)
  os.makedirs(os.path.join(local, "runs"), exist_ok=True)
  # One runner per sweep directory: two would run the same points in the
  # same run directories and append duplicate rows.
  with workers.exclusive(os.path.join(local, "lock"),
                  f"another scaling.run is running the sweep in {workdir}"):
    results_path = str(epath.Path(workdir) / "results.jsonl")
    rows = rows_lib.load_finished(workdir, spec, points, out)

    def append(row):
      jsonl.append(results_path, [row])
      rows[row["point"]] = row

    # Points finished elsewhere (e.g. by --dry-run commands on a cluster).
    for p in points:
      result = runs / p.id / "result.json"
      if p.id not in rows and result.exists():
        row = json.loads(result.read_text())
        if row.get("status") in rows_lib.FINISHED:
          rows_lib.check_same_config(p, row, result)
          append(row)
    # Largest budgets first: with K at a time, the sweep then ends on short
    # points instead of one long point running alone.
    todo = sorted((p for p in points if p.id not in rows),
                  key=lambda p: -p.budget)
    units = executors.make_units(spec, todo)
    commands, printable = commands_of(units)
    if collect or executor != "local":
      return executors.hand_off(
          spec, points, rows, todo, units, commands, printable, env, local,
          results_path=results_path, executor=executor, collect=collect,
          slurm_cluster=slurm_cluster, resubmit=resubmit,
          multihost=multihost, out=out)
    out(f"{spec.name}: {len(points)} points, {len(points) - len(todo)} "
        f"finished, {len(todo)} to run ({sum(p.budget for p in todo):.3g} "
        f"FLOPs), {parallel} at a time; results in {results_path}")
    if wsd.enabled(spec) and todo:
      out(wsd.savings_line(spec, todo))
    progress = _Progress(len(points), len(points) - len(todo), out)
    work = (wsd.work(spec, todo) if wsd.enabled(spec)
            else {p.id: p.budget for p in todo})
    failed: List[str] = []
    queue = list(units)
    running: Dict[str, Any] = {}

    def finish(p, row, seconds, uid, returncode=None):
      if row is not None and row.get("status") in rows_lib.FINISHED:
        append(row)
      else:
        failed.append(p.id)
        log = os.path.join(local, "runs", uid, "log.txt")
        reason = workers.failure_reason(log, returncode)
        out(f"{p.id} failed: {reason} (see {log})")
        row = None
      remaining = sum(work[q.id] for u in queue + [r[0] for r in
                                                  running.values()]
                      for q in u.points if q.id not in reported)
      progress.finished(p, row, seconds, remaining, len(running), work[p.id])

    reported = set()
    scan_at = 0.0

    def finish_unit(u, seconds, only_done=False, returncode=None):
      # A chain's branches are reported as they finish (only_done), the
      # rest when its worker exits.
      for p in u.points:
        result = runs / p.id / "result.json"
        if p.id in reported or (only_done and not result.exists()):
          continue
        reported.add(p.id)
        row = json.loads(result.read_text()) if result.exists() else None
        finish(p, row, seconds / len(u.points), u.id, returncode)

    try:
      if in_process:
        while queue:
          u = queue.pop(0)
          start = time.time()
          try:
            if u.chain:
              wsd.run_chain(spec, u.points, workdir, parsed, printable[u.id],
                            local, run_point)
            else:
              run_point(spec, u.points[0], workdir, parsed, printable[u.id],
                        local)
          except ValueError as e:
            out(f"error: {e}")
          finish_unit(u, time.time() - start)
      while queue or running:
        while queue and len(running) < max(1, parallel):
          u = queue.pop(0)
          rundir = os.path.join(local, "runs", u.id)
          os.makedirs(rundir, exist_ok=True)
          log = open(os.path.join(rundir, "log.txt"), "a", encoding="utf-8")
          orphan = workers.holder(os.path.join(rundir, "lock"))
          if orphan is not None:
            # A worker of an earlier runner is still at it: wait for it
            # instead of starting a second one on the same directory.
            running[u.id] = (u, workers.Adopted(os.path.join(rundir,
                                                             "lock")),
                             log, time.time(),
                             workers.slot_of(orphan, slots))
            out(f"adopt {u.id}: still running as pid {orphan} from an "
                "earlier runner")
            continue
          log.write(f"$ {printable[u.id]}\n")
          log.flush()
          cores = None
          if slots:
            busy = [r[4] for r in running.values()]
            cores = next(c for c in slots if c not in busy)
          # taskset rather than a preexec_fn: the runner has JAX loaded,
          # and a Python callback between fork and exec is unsafe there.
          pin = (["taskset", "-c", ",".join(map(str, sorted(cores)))]
                 if cores else [])
          proc = subprocess.Popen(pin + commands[u.id], cwd=executors.REPO,
                                  stdout=log, stderr=subprocess.STDOUT,
                                  env=dict(os.environ, **env,
                                           JAXGEN_RUNNER_PID=str(os.getpid())),
                                  # Own process group: a terminal's Ctrl-C
                                  # reaches workers only through the runner.
                                  start_new_session=True)
          running[u.id] = (u, proc, log, time.time(), cores)
          out(f"start {u.id}: {u.describe()}"
              + (f", cores {workers.fmt_cores(cores)}" if cores else ""))
        time.sleep(0.2)
        scan = time.time() > scan_at
        if scan:
          scan_at = time.time() + 5.0
        for uid, (u, proc, log, start, _) in list(running.items()):
          if proc.poll() is None:
            if u.chain and scan:
              # Branches report as they finish (a few file checks every
              # 5 s, not every poll: the workdir may be an object store).
              finish_unit(u, time.time() - start, only_done=True)
            continue
          log.close()
          del running[uid]
          finish_unit(u, time.time() - start, returncode=proc.returncode)
    except BaseException:
      # Ctrl-C or a runner error: interrupt the workers (SIGINT lets the trainer
      # flush its metrics and finish writing its checkpoint), then wait; kill
      # only those that do not stop within a minute.
      for p, proc, log, *_ in running.values():
        if proc.poll() is None:
          proc.send_signal(signal.SIGINT)
      try:
        for p, proc, log, *_ in running.values():
          try:
            proc.wait(timeout=60)
          except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
      except KeyboardInterrupt:
        # A second Ctrl-C: stop waiting. Killed workers keep their last
        # committed checkpoint (saves are atomic).
        for p, proc, log, *_ in running.values():
          if proc.poll() is None:
            proc.kill()
            proc.wait()
        out("interrupted again: workers killed; run the same command again "
            "to resume from their last checkpoints")
        raise
      finally:
        for p, proc, log, *_ in running.values():
          log.close()
      # A worker that finished its point while being stopped wrote its
      # result: its row goes in now (a fit right after must not miss it).
      for u, _, _, start, _ in list(running.values()):
        finish_unit(u, time.time() - start, only_done=True)
      out("interrupted; run the same command again to resume")
      raise
    if failed:
      out(f"{len(failed)} points failed: {', '.join(failed)}; rerun to retry")
    else:
      out(f"done: {len(rows)} rows in {results_path}")
    return {"points": points, "rows": rows, "failed": failed}


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
flags.DEFINE_integer("parallel", 1, "Points run at once.", lower_bound=1)
flags.DEFINE_bool("dry_run", False, "Print the plan and one worker command "
                  "per point (per size for wsd sweeps).")
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
flags.DEFINE_string("chain", None, "Worker mode (wsd sweeps): train this "
                    "size's stable run and its branches at --chain_budgets.")
flags.DEFINE_list("chain_budgets", [], "Worker mode: the chain's budgets.")
for _name in ("only_budgets", "chain_budgets"):
  flags.register_validator(
      _name, lambda v: results_lib.are_numbers(v, positive=True),
      "must be positive finite FLOP counts, e.g. 1e15,3e15.")
flags.register_validator(
    "nearest_params",
    lambda v: v is None or results_lib.are_numbers([v], positive=True),
    "must be a positive parameter count, e.g. 1e6.")
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
  config_lib.check_no_arguments(argv)
  if not FLAGS.workdir:
    config_lib.usage_error("pass --workdir, the sweep directory")
  logs.quiet_libraries(FLAGS.verbosity)
  spec = FLAGS.sweep
  # `--sweep.x=y` overrides travel to the workers unchanged.
  sweep_flags = [a for a in sys.argv[1:] if a.startswith("--sweep.")]
  # SIGTERM (scancel, kill) stops the runner like Ctrl-C: its workers are
  # interrupted, save their checkpoints and a rerun resumes them.
  signal.signal(signal.SIGTERM, signal.default_int_handler)
  if FLAGS.dry_run and (FLAGS.point or FLAGS.chain):
    # --point / --chain are the worker's mode: it trains, so a plan-only
    # flag beside it would be silently ignored.
    config_lib.usage_error(
        "--dry-run plans a sweep; --point / --chain train one point (the "
        "workers' mode): drop --point/--chain to see the plan (with "
        "--only_budgets / --only_sizes to narrow it)")
  if FLAGS.optimal_from and FLAGS.nearest_params:
    config_lib.usage_error("pass --nearest_params or --optimal_from, not both")
  try:
    if FLAGS.point or FLAGS.chain:
      # A worker trains: as jaxgen.main, before JAX starts its backend.
      host_malloc.configure()
      workers.die_with_runner()
      # The runner passes the shared directory in the environment.
      compile_cache.enable(FLAGS.compilation_cache)
      if FLAGS.multihost:
        from jaxgen.parallel import multihost  # pylint: disable=g-import-not-at-top
        multihost.initialize()
      sets = spec_check.parse_sets(FLAGS.set)
      command = " ".join(shlex.quote(a) for a in [sys.executable, "-m",
                                                  "scaling.run"]
                         + sys.argv[1:])
      from jaxgen.train import preemption  # pylint: disable=g-import-not-at-top
      try:
        if FLAGS.chain:
          chain = [sweep_lib.make_point(spec, float(b), FLAGS.chain, sets)
                   for b in FLAGS.chain_budgets]
          wsd.run_chain(spec, chain, FLAGS.workdir, sets, command,
                        workers.local_dir(FLAGS.workdir, FLAGS.local_dir),
                        run_point)
        else:
          budget, size = sweep_lib.parse_point_id(FLAGS.point)
          point = sweep_lib.make_point(spec, budget, size, sets)
          run_point(spec, point, FLAGS.workdir, sets, command,
                    FLAGS.local_dir)
      except preemption.Preempted as e:
        print(str(e), file=sys.stderr)
        sys.exit(0)
      return
    spec_check.check_spec(spec)
    budgets = [float(b) for b in FLAGS.only_budgets] or None
    sizes = FLAGS.only_sizes or None
    fit, param_key = None, "params"
    nearest = FLAGS.nearest_params
    if FLAGS.optimal_from:
      fit, nearest, param_key = check.load_optimum(FLAGS.optimal_from, spec,
                                                   budgets)
    if nearest:
      name, n = sweep_lib.nearest_size(spec, nearest,
                                       spec_check.parse_sets(FLAGS.set),
                                       param_key)
      print(f"size nearest N={nearest:.4g}: {name} (N={n:,})")
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
      report = check.check_report(fit, row)
      path = str(epath.Path(FLAGS.workdir) / "check.json")
      jsonl.write_atomic(path, json.dumps(report, indent=1))
      print(f"measured {report['metric']} {report['measured_loss']:.4g}; "
            "relative errors "
            + ", ".join(f"{k} {v:+.2%}" for k, v in report["errors"].items()
                        if v is not None) + f"; wrote {path}")
  except (ValueError, OSError) as e:
    # One line (a missing sweep file is a multi-line message from
    # ml_collections).
    print(f"error: {config_lib.error_line(e)}", file=sys.stderr)
    sys.exit(1)
  except KeyboardInterrupt:
    sys.exit(130)
  if result["failed"]:
    sys.exit(1)


if __name__ == "__main__":
  flags.mark_flags_as_required(["sweep"])
  app.run(main, flags_parser=config_lib.parse_flags)
