"""What a training run records: metric rows, progress accounting, the
one-line result and sample grids.

The trainer's loop calls these; they touch only the host side (fetched
metrics, files under the workdir, the writer), never the compiled step.
"""

import os
import time
from typing import Any, Dict, Optional

from absl import logging
import etils.epath as epath
import jax
import numpy as np

from jaxgen.eval import grids
from jaxgen.train import flops as flops_lib
from jaxgen.train import metrics as metrics_lib


class MetricBuffer:
  """Host-side accumulation of per-step metrics with a one-step lag.

  The step's metrics are fetched only after the next step has been dispatched,
  so checking every step for NaNs does not stall the device pipeline.
  """

  def __init__(self, rows=()):
    self.pending = None
    self.rows = [dict(r) for r in rows]

  def push(self, step: int, metrics: Any):
    self.flush()
    self.pending = (step, metrics)

  def flush(self):
    """Fetches the pending step's metrics; raises on non-finite values."""
    if self.pending is None:
      return
    step, metrics = self.pending
    self.pending = None
    values = jax.device_get(metrics)
    bad = metrics_lib.first_non_finite(values)
    if bad is not None:
      raise FloatingPointError(
          f"Non-finite {bad} ({values[bad]}) at step {step}; stopping.")
    self.rows.append(values)

  def rows_for_json(self):
    """The fetched rows not yet logged, as JSON-ready floats."""
    return [{k: float(v) for k, v in r.items()} for r in self.rows]

  def mean_and_reset(self) -> Dict[str, float]:
    keys = self.rows[0].keys() if self.rows else []
    # In float64: rows restored from a checkpoint's JSON are float64, fresh
    # ones float32 (exactly representable in float64), so a run resumed off
    # the logging grid logs the very same means.
    out = {k: float(np.mean(np.asarray([r[k] for r in self.rows],
                                       np.float64))) for k in keys}
    self.rows = []
    return out


def last_row(path: str) -> Dict[str, Any]:
  """The last row of a metrics.jsonl ({} when it has none)."""
  rows = metrics_lib.read_rows(path)
  return rows[-1] if rows else {}


def summary_line(result: Dict[str, Any], workdir: str,
                 samples: bool = True) -> str:
  """The one-line result of a run: step, losses and where things are.

  Args:
    result: the last logged metrics (`train_and_evaluate`'s result).
    workdir: the run directory.
    samples: the run writes sample grids (config.num_samples > 0).

  Returns:
    "done: step N, loss ..., eval_...; checkpoints in ..., [samples in ...,]
    metrics in ...".
  """
  metrics = ", ".join(f"{k} {result[k]:.4g}" for k in sorted(result)
                      if k == "loss" or k.startswith("eval_"))
  where = [f"checkpoints in {os.path.join(workdir, 'checkpoints')}"]
  if samples and epath.Path(workdir, "samples").exists():
    # Not when the run failed before its first grid.
    where.append(f"samples in {os.path.join(workdir, 'samples')}")
  where.append(f"metrics in {os.path.join(workdir, 'metrics.jsonl')}")
  return (f"done: step {result.get('step', '?')}"
          f"{', ' + metrics if metrics else ''}; " + ", ".join(where))


def report_skipped(info, when: str, reported: int = 0) -> int:
  """Warns if the input pipeline skipped more unreadable files than before.

  Args:
    info: the pipeline's `DatasetInfo`.
    when: what the count covers ("epoch 3", "run"), for the message.
    reported: the count an earlier call warned about (0: warn of any).

  Returns:
    The count warned about now (or `reported`, when nothing was new).
  """
  skipped = info.skipped_files()
  if len(skipped) <= reported:
    return reported
  first = sorted(skipped)[0]
  logging.warning("%s: %d unreadable image files skipped so far (first: "
                  "%s: %s).", when, len(skipped), first, skipped[first])
  return len(skipped)


def reconcile_metrics(path: str, start: int) -> None:
  """Makes metrics.jsonl describe the run that starts at `start`."""
  if start:
    # Rows past the checkpoint belong to a run that died; they are
    # recomputed identically now.
    dropped = metrics_lib.truncate_jsonl(path, start)
    if dropped:
      logging.info("Dropped %d metric rows past checkpoint %d (recomputed "
                   "now).", dropped, start)
    return
  # No checkpoint restored: this run has written its config.json already
  # (the trainer set the earlier one aside when there was no checkpoint).
  set_aside(os.path.dirname(path), with_config=False)


# {"step", "settings", "keys"} of the last row scored with sample metrics
# (jaxgen.train.evaluation.note_scored), written after that row.
SCORED_FILE = "sample_metrics_scored.json"
# What `set_aside` moves into earlier_runs/<time>/ besides the rows.
_ASIDE = ("config.json", "samples", SCORED_FILE)


def set_aside(workdir: str, with_config: bool = True) -> None:
  """Keeps the records of a run abandoned without a checkpoint.

  A fresh run in its workdir would append to its rows, draw its TensorBoard
  curves on top of the old ones and overwrite its config.json and sample
  grids. Its rows move to metrics.jsonl.1 (older copies up to .2, ...); its
  event files, config.json and samples/ to WORKDIR/earlier_runs/<time>/ (a
  run of its own in TensorBoard). Nothing moves when it logged no row.

  Args:
    workdir: the run directory.
    with_config: move config.json too (False once the new run wrote its
      own).
  """
  path = os.path.join(workdir, "metrics.jsonl")
  moved = metrics_lib.rotate_jsonl(path)
  if not moved:
    return
  aside = None
  if "://" not in workdir:  # Object stores: left where they are.
    names = [n for n in os.listdir(workdir)
             if n.startswith("events.out.")
             or (n in _ASIDE and (with_config or n != "config.json"))]
    if names:
      aside = os.path.join(workdir, "earlier_runs",
                           time.strftime("%Y%m%d-%H%M%S"))
      os.makedirs(aside, exist_ok=True)
      for name in names:
        os.replace(os.path.join(workdir, name), os.path.join(aside, name))
  logging.warning("No checkpoint to resume from, but %s has rows: kept them "
                  "in %s%s; this run starts from step 0.", path, moved,
                  f" (TensorBoard events, {'config.json, ' * with_config}"
                  f"sample grids in {aside})" if aside else "")


class Seen:
  """Examples and FLOPs trained on so far, carried through checkpoints.

  `step x batch_size` would rewrite the past of a run resumed with another
  batch size; the counts at a checkpoint are saved with it and continue
  from there.
  """

  def __init__(self, config, s, start: int,
               saved: Optional[Dict[str, float]] = None):
    """The counts at `start`.

    Args:
      config: the run config (its batch_size, from `start` on).
      s: the trainer's `Setup` (its flops_per_example).
      start: the step the run (re)starts from.
      saved: `at(start)` as saved with that checkpoint; None for a fresh
        run or a checkpoint written before the counts were saved (then
        `start x batch_size`).
    """
    self.batch, self.per_example = int(config.batch_size), s.flops_per_example
    self.start = start
    if saved:
      self.examples, self.flops = saved["examples"], saved["flops"]
    else:
      self.examples = start * self.batch
      self.flops = self.examples * self.per_example

  def at(self, step: int) -> Dict[str, float]:
    """{"examples", "flops"} after `step` (>= the start step)."""
    new = (step - self.start) * self.batch
    return {"examples": self.examples + new,
            "flops": self.flops + new * self.per_example}


def progress(config, s, seen: Seen, step: int, steps_per_sec: float,
             peak: Optional[float],
             num_examples: Optional[int] = None) -> Dict[str, Any]:
  """Compute accounting logged with every row.

  Args:
    config: the run config (its batch_size).
    s: the trainer's `Setup` (its flops_per_example).
    seen: the run's `Seen` counts.
    step: steps done so far.
    steps_per_sec: the measured rate since the last row.
    peak: the device's peak FLOP/s, or None where unknown (no MFU then).
    num_examples: the training split's size, for `epochs` (None: not
      logged).

  Returns:
    examples_seen, epochs (passes over the training split), flops_seen,
    steps_per_sec, tflops_per_device (and mfu).
  """
  now = seen.at(step)
  tput = flops_lib.throughput(s.flops_per_example,
                              steps_per_sec * config.batch_size,
                              s.mesh.devices.size, peak)
  row = {"examples_seen": now["examples"],
         "flops_seen": now["flops"],
         # D of the scaling fits counts examples seen; beyond one epoch
         # they repeat (scaling.fit warns).
         **({"epochs": now["examples"] / num_examples} if num_examples
            else {}),
         "steps_per_sec": steps_per_sec,
         "tflops_per_device": tput["tflops_per_device"]}
  if tput["mfu"] != "unknown":
    row["mfu"] = tput["mfu"]
  return row


def grid_path(workdir: str, step: int) -> str:
  """Where the sample grid of `step` is written."""
  return os.path.join(workdir, "samples", f"step_{step:07d}.png")


def has_grid(workdir: str, step: int) -> bool:
  """Whether the sample grid of `step` is written (local or gs://)."""
  return epath.Path(grid_path(workdir, step)).exists()


def write_samples(sample_fn, state, base_rng, step, workdir, writer):
  """Draws samples (same noise every time) and writes them as a grid.

  Args:
    sample_fn: `(state, rng) -> images` (NHWC).
    state: the train state.
    base_rng: the run's key; the samples' key is folded from it.
    step: the step, for the file name.
    workdir: the run directory (grids go to samples/step_N.png).
    writer: the metric writer (the grid also goes to TensorBoard).
  """
  t0 = time.time()
  samples = jax.device_get(
      sample_fn(state, jax.random.fold_in(base_rng, 10**9)))
  if jax.process_index() == 0:
    scale = max(1, 128 // int(samples.shape[-2]))
    path = grid_path(workdir, step)
    grids.save_grid(np.asarray(samples), path, scale=scale)
    # The first grid compiles the sampler: a long silent gap otherwise.
    logging.info("Sample grid of step %d in %.1f s: %s", step,
                 time.time() - t0, path)
    writer.write_images(step, {"samples": grids.make_grid(
        np.asarray(samples))[None]})
