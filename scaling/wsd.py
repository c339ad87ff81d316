"""Warmup-stable-decay sweeps: one constant-rate run per size, and a short
cooldown branch from it for each budget (Hägele et al. 2024).

With `spec.schedule = "wsd"` every point's learning rate is warmup (a fixed
number of steps per size), then the peak, then a linear decay over the last
`decay_fraction` of its own run (`jaxgen.train.state`, schedule "wsd"). Up
to the start of its decay, S = T - round(decay_fraction x T), a point of T
steps is step for step the size's constant-rate run, data order included.
So a size's points run as one *chain* (one worker process, one job):

  runs/stable_<size>/   the constant-rate run, trained up to each S in turn
  runs/<point id>/      starts from a copy of the stable run's checkpoint S
                        and trains only its cooldown, steps S+1 .. T

The stable run costs max S steps and the branches sum(T - S), instead of
sum(T) for one full run per point; `savings` says how much that is.
"""

import os
from typing import Any, Callable, Dict, List, Optional, Sequence

import etils.epath as epath

from scaling import rows as rows_lib
from scaling import sweep as sweep_lib
from scaling import workers

STABLE_PREFIX = "stable_"


def enabled(spec) -> bool:
  """Whether the spec's points use warmup-stable-decay schedules."""
  return spec.get("schedule", "cosine") == "wsd"


def decay_start(spec, point: sweep_lib.Point) -> int:
  """The step where `point`'s cooldown starts (its branch point S)."""
  return point.steps - sweep_lib.cooldown_steps(spec.decay_fraction,
                                                point.steps)


def chains(points: Sequence[sweep_lib.Point]
           ) -> Dict[str, List[sweep_lib.Point]]:
  """Points by size, each chain in order of steps (its branch order)."""
  out: Dict[str, List[sweep_lib.Point]] = {}
  for p in sorted(points, key=lambda p: p.steps):
    out.setdefault(p.size, []).append(p)
  return out


def savings(spec, points: Sequence[sweep_lib.Point]) -> Dict[str, float]:
  """Training steps and FLOPs of the plan with and without branching.

  Args:
    spec: a wsd sweep spec.
    points: its points (all of them, or those still to run).

  Returns:
    {"full_flops", "wsd_flops", "saved_fraction", "full_steps",
     "wsd_steps"}: one full run per point against one stable run per size
    (its longest branch point) plus every cooldown.
  """
  full = wsd = full_steps = wsd_steps = 0.0
  for chain in chains(points).values():
    step_flops = chain[0].flops_per_example * chain[0].batch_size
    stable = max(decay_start(spec, p) for p in chain)
    branches = sum(p.steps - decay_start(spec, p) for p in chain)
    full_steps += sum(p.steps for p in chain)
    wsd_steps += stable + branches
    full += sum(p.steps for p in chain) * step_flops
    wsd += (stable + branches) * step_flops
  return {"full_flops": full, "wsd_flops": wsd,
          "saved_fraction": 1 - wsd / full if full else 0.0,
          "full_steps": full_steps, "wsd_steps": wsd_steps}


def work(spec, points: Sequence[sweep_lib.Point]) -> Dict[str, float]:
  """The FLOPs each point adds to its chain (for the runner's ETA).

  A branch costs its cooldown plus the stable steps from the previous
  branch point to its own, not its whole budget.

  Args:
    spec: a wsd sweep spec.
    points: the points to run.

  Returns:
    {point id: FLOPs}; they sum to `savings(...)["wsd_flops"]`.
  """
  out = {}
  for chain in chains(points).values():
    stable = 0
    for p in chain:
      start = decay_start(spec, p)
      steps = max(start - stable, 0) + (p.steps - start)
      stable = max(stable, start)
      out[p.id] = steps * p.flops_per_example * p.batch_size
  return out


def stable_config(spec, point: sweep_lib.Point, steps: int,
                  sets: Optional[Dict[str, str]] = None):
  """The run config of a size's stable run, trained up to `steps`.

  The point's config with no cooldown (decay_fraction 0: the peak rate to
  the end) and no evaluation; everything else, warmup and seed included, is
  the branches'.
  """
  config, _ = sweep_lib.point_config(spec, point.budget, point.size, sets)
  config.total_steps = int(steps)
  config.optimizer.decay_fraction = 0.0
  # Nothing is measured on the stable run itself: no eval, no samples.
  config.eval_batches = 0
  config.eval_every_steps = int(steps)
  config.num_samples = 0
  if "eval" in config and "sample_metrics" in config.eval:
    config.eval.sample_metrics.enabled = False
  return config


def _copy_tree(src: epath.Path, dst: epath.Path) -> None:
  """Copies a directory tree (local or object store; iterdir, not rglob,
  which object stores refuse)."""
  dst.mkdir(parents=True, exist_ok=True)
  for path in src.iterdir():
    if path.is_dir():
      _copy_tree(path, dst / path.name)
    else:
      (dst / path.name).write_bytes(path.read_bytes())


BRANCHED = "branched.json"


def branch_from(stable_dir: str, step: int, rundir: str) -> None:
  """Puts the stable run's checkpoint `step` into a branch's run directory.

  Copied into checkpoints.partial/, renamed to checkpoints/, and then
  `branched.json` is written. A branch without that file never started
  training (the chain trains it only after), so whatever copy it has is
  redone: on an object store a rename is a copy that can be cut short.

  Args:
    stable_dir: the stable run's directory.
    step: the checkpoint to branch from.
    rundir: the branch's run directory.
  """
  import json  # pylint: disable=g-import-not-at-top
  src = epath.Path(stable_dir) / "checkpoints" / str(step)
  if not src.exists():
    raise ValueError(f"{stable_dir} has no checkpoint {step} to branch from")
  root = epath.Path(rundir)
  for stale in (root / "checkpoints.partial", root / "checkpoints"):
    if stale.exists():
      stale.rmtree()
  _copy_tree(src, root / "checkpoints.partial" / str(step))
  (root / "checkpoints.partial").rename(root / "checkpoints")
  (root / BRANCHED).write_text(json.dumps({"stable_run": stable_dir,
                                           "step": step}))


def run_chain(spec, chain: Sequence[sweep_lib.Point], workdir: str,
              sets: Optional[Dict[str, str]], command: str, local: str,
              run_point: Callable[..., Dict[str, Any]]
              ) -> List[Dict[str, Any]]:
  """Trains one size's stable run and its branches, shortest first.

  Restartable at any point: finished branches (result.json) are skipped,
  a branch with checkpoints of its own resumes from them, the stable run
  resumes from its newest checkpoint. A stable run already past a branch's
  start (budgets added after it ran on) is an error naming the fix.

  Args:
    spec: the sweep spec (schedule "wsd").
    chain: the points of one size.
    workdir: the sweep directory.
    sets: --set overrides.
    command: the worker command line, recorded in the rows.
    local: the sweep's local directory (locks).
    run_point: `scaling.run.run_point` (passed in: scaling.run imports this
      module).

  Returns:
    The rows of the branches trained now.
  """
  import jax  # pylint: disable=g-import-not-at-top
  from jaxgen.train import trainer  # pylint: disable=g-import-not-at-top
  chain = sorted(chain, key=lambda p: p.steps)
  size = chain[0].size
  runs = epath.Path(workdir) / "runs"
  stable_dir = str(runs / f"{STABLE_PREFIX}{size}")
  # The runner watches this lock to adopt a chain left running (the same
  # name as a point's).
  lock = os.path.join(local, "runs", f"{STABLE_PREFIX}{size}")
  os.makedirs(lock, exist_ok=True)
  rows = []
  # One lock per process of a chain over several hosts (see
  # run.run_point): process 0's is the one the runner reads.
  pidx = jax.process_index()
  with workers.exclusive(os.path.join(lock, "lock" if not pidx
                                      else f"lock.{pidx}"),
                         f"the stable run of {size} is already running"):
    for i, p in enumerate(chain):
      rundir = str(runs / p.id)
      if (epath.Path(rundir) / "result.json").exists():
        continue
      start = decay_start(spec, p)
      cpu_start = rows_lib.cpu_seconds()
      if start and not (epath.Path(rundir) / BRANCHED).exists():
        at = rows_lib.latest_checkpoint(stable_dir)
        if at > start and not (epath.Path(stable_dir) / "checkpoints"
                               / str(start)).exists():
          raise ValueError(
              f"{stable_dir} is at step {at}, past the cooldown start "
              f"{start} of {p.id}; delete it to retrain the stable run")
        if at < start:
          config = stable_config(spec, p, start, sets)
          rows_lib.check_resumed_config(
              stable_dir, config, f"delete {stable_dir} (the stable run of "
              f"{size}) to train it afresh, or rerun with the spec and --set "
              "flags it started with")
          try:
            trainer.train_and_evaluate(config, stable_dir)
          except FloatingPointError as e:
            # Every branch still to come starts past this point: all of
            # them are diverged, with the stable run's message.
            return rows + [_diverged(spec, q, str(runs / q.id), str(e),
                                     command) for q in chain[i:]]
        _on_process_zero(lambda: branch_from(stable_dir, start, rundir),
                         f"branch {p.id}")
      rows.append(run_point(
          spec, p, workdir, sets, command, local, cpu_start=cpu_start,
          extra={"wsd": {"stable_run": stable_dir, "branched_at_step": start,
                         "steps_run": p.steps - start}},
          first_loss=_first_loss(stable_dir) if start else None))
  return rows


def _on_process_zero(fn: Callable[[], None], name: str) -> None:
  """Runs `fn` on process 0 only; with several hosts the others wait."""
  import jax  # pylint: disable=g-import-not-at-top
  if jax.process_index() == 0:
    fn()
  if jax.process_count() > 1:
    from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
    multihost_utils.sync_global_devices(name)


def _diverged(spec, point: sweep_lib.Point, rundir: str, error: str,
              command: str) -> Dict[str, Any]:
  """The row of a branch whose stable run diverged before its start."""
  import json  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  from jaxgen import jsonl  # pylint: disable=g-import-not-at-top
  row = rows_lib.make_row(spec, point, [], error=f"stable run: {error}",
                          wall_time_s=0.0, resumed_from=0, command=command)
  if jax.process_index() == 0:
    epath.Path(rundir).mkdir(parents=True, exist_ok=True)
    jsonl.write_atomic(epath.Path(rundir) / "result.json", json.dumps(row))
  return row


def _first_loss(rundir: str) -> Optional[float]:
  """The first logged train loss of a run (what a branch started from)."""
  from jaxgen import jsonl  # pylint: disable=g-import-not-at-top
  for r in jsonl.read(epath.Path(rundir) / "metrics.jsonl", missing_ok=True):
    if "loss" in r:
      return float(r["loss"])
  return None


def savings_line(spec, points) -> str:
  """What branching saves (`savings`), in one line for the runner's log."""
  s = savings(spec, points)
  return (f"wsd: one stable run per size + cooldowns of "
          f"{spec.decay_fraction:g} x each run: {s['wsd_steps']:.0f} "
          f"training steps instead of {s['full_steps']:.0f}, "
          f"{s['wsd_flops']:.3g} FLOPs instead of {s['full_flops']:.3g} "
          f"({s['saved_fraction']:.0%} saved)")
