"""Results rows of a sweep: one per finished point, and the checks that
keep results.jsonl consistent across restarts (torn lines, changed configs,
other families).
"""

import json
import math
import resource
from typing import Any, Dict, List, Optional

import etils.epath as epath

from jaxgen import jsonl
from scaling import sweep as sweep_lib

OK, DIVERGED = "ok", "diverged"
FINISHED = (OK, DIVERGED)


def latest_checkpoint(rundir: str) -> int:
  """The newest committed checkpoint step in `rundir`/checkpoints (0:
  none)."""
  from jaxgen.train import checks  # pylint: disable=g-import-not-at-top
  return max(checks.committed_steps(str(epath.Path(rundir) / "checkpoints")),
             default=0)


def cpu_seconds() -> float:
  """CPU seconds (user + system) this process has used so far."""
  usage = resource.getrusage(resource.RUSAGE_SELF)
  return usage.ru_utime + usage.ru_stime


def _finite(x) -> bool:
  return isinstance(x, (int, float)) and math.isfinite(x)


def make_row(spec, point: sweep_lib.Point, metrics: List[Dict[str, Any]], *,
             error: Optional[str], wall_time_s: float, resumed_from: int,
             command: str, first_loss: Optional[float] = None,
             cpu_start: float = 0.0) -> Dict[str, Any]:
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
    first_loss: the loss the run started from, for the divergence test
      (default: its first logged loss; a wsd branch passes its stable
      run's, since its own first logged loss is already trained).
    cpu_start: process CPU seconds not counted in the row's cpu_time_s
      (a wsd chain's worker trains several points; each counts its own).

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
      first_loss or losses[0]):
    status = DIVERGED
    error = (f"final train loss {final:.4g} > {spec.diverged_loss_ratio} x "
             f"the first logged loss {first_loss or losses[0]:.4g}: the run "
             "did not train")
  ok = status == OK
  # Sample metrics (config.eval.sample_metrics: eval_fid, eval_psnr, ...):
  # the last logged value of each; `scaling.fit --metric=eval_fid` fits them.
  sample = {}
  for r in metrics:
    sample.update({k: v for k, v in r.items()
                   if k.startswith("eval_") and k != "eval_loss"})
  return dict({
      "family": spec.family, "sweep": spec.name, "point": point.id,
      # The field scaling.fit fits by default (the spec's metric).
      "metric": spec.metric,
      "size": point.size, "budget_flops": point.budget,
      "params": point.params,
      "params_non_embedding": point.params_non_embedding,
      "params_embedding": point.params_embedding,
      "flops_per_example": point.flops_per_example,
      "sampling_flops_per_example": point.sampling_flops_per_example,
      "batch_size": point.batch_size, "steps": point.steps,
      "steps_done": last.get("step", 0),
      "examples_seen": last.get("examples_seen"),
      "epochs": last.get("epochs"),
      "flops": last.get("flops_seen"),
      "final_train_loss": final if ok else None,
      "final_train_loss_window": k,
      "eval_loss": eval_loss if ok else None,
      "status": status, "error": error,
      "wall_time_s": wall_time_s, "resumed_from_step": resumed_from,
      # CPU seconds of the worker process (imports and compiles included;
      # a wsd branch: since its chain got to it): unlike wall time, this
      # does not grow when other jobs share the cores.
      "cpu_time_s": cpu_seconds() - cpu_start,
      "config": {"base": spec.base, "overrides": point.overrides},
      "command": command,
      # Code version, library versions and devices of the worker.
      "provenance": provenance.provenance(),
  }, **(sample if ok else {}))


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


def load_finished(workdir: str, spec, points,
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
      check_same_config(p, r, f"{workdir}/results.jsonl")
      done[p.id] = r
    elif p is None and points:
      # A point outside this plan (other budgets or sizes): the fit reads
      # it beside this plan's rows, so what every point shares must agree.
      check_same_spec(points[0], r, spec, f"{workdir}/results.jsonl")
  return done


def check_same_spec(point, row, spec, where: str) -> None:
  """Raises if a row of another point ran under another spec than `point`:
  another base config, or other values of the run fields every point
  shares (all but the per-point length and schedule and the size's model
  fields).

  Args:
    point: a point of this plan.
    row: a results.jsonl row of another point.
    spec: this sweep's spec.
    where: the results file, for the message.

  Raises:
    ValueError: one line naming the differing fields.
  """
  from scaling import spec_check  # pylint: disable=g-import-not-at-top
  config = row.get("config", {})
  old = config.get("overrides") or {}
  new = _normalise(point.overrides)

  def shared(k):
    return not (k in spec_check.DERIVED or k.startswith("model.")
                or k in _NO_EFFECT)

  diff = sorted(k for k in set(old) | set(new)
                if shared(k) and old.get(k) != new.get(k))
  if config.get("base", spec.base) != spec.base:
    diff.insert(0, f"base {config.get('base')}")
  if diff:
    raise ValueError(f"{where} holds point {row.get('point')} of another "
                     f"sweep config ({', '.join(diff)}), which a fit would "
                     "mix with this one's; use another --workdir")


def check_resumed_config(rundir: str, config, fix: str) -> None:
  """Refuses to resume a run's checkpoints under another config.

  The trainer itself only refuses a changed model (a learning rate changed
  on resume is a warning there); a sweep point resumed under another spec
  would record the new spec for a run that is partly the old one.

  Args:
    rundir: the run directory (its config.json and checkpoints).
    config: the config the run would resume with.
    fix: what to delete or change, for the message.

  Raises:
    ValueError: one line naming the first changed fields.
  """
  from jaxgen.train import provenance  # pylint: disable=g-import-not-at-top
  if not latest_checkpoint(rundir):
    return
  changes = [c for c in sum(provenance.differences(rundir, config), [])
             if not c.startswith(_NO_EFFECT)]
  if changes:
    raise ValueError(f"{rundir} holds checkpoints of another config "
                     f"({provenance.first_changes(changes, 3)}); {fix}")


# Fields that change what a run writes, not what it computes: rows that
# differ only in these are the same point.
_NO_EFFECT = ("tensorboard", "checkpoint_every_steps", "keep_checkpoints")


def check_same_config(point, row, where: str) -> None:
  """Raises if a finished row ran with other overrides than `point`."""
  old = row.get("config", {}).get("overrides") or {}
  new = _normalise(point.overrides)
  diff = sorted(k for k in set(old) | set(new)
                if old.get(k) != new.get(k) and k not in _NO_EFFECT)
  if diff:
    raise ValueError(f"point {point.id} in {where} ran with a different "
                     f"config ({', '.join(diff)}); use another --workdir or "
                     "delete its row and runs/ directory")
