"""The trainer's held-out evaluation: the eval split's loss at eval steps.

`make_eval` compiles the family's `eval_step` over the mesh and averages it
over `config.eval_batches` batches, the same batches and noise each time.
An evaluation that fails in a one-process run leaves a sound trained state
behind: the trainer saves it and `saved_after_failure` says so on the
error. When that was the last step (whose state the trainer saves before
evaluating it), a rerun evaluates it (`at_end`, `complete_row`) instead of
reporting the run finished. It also rescores a finished run whose sample
metrics were scored with other files or counts than the rerun's config asks
for (`SCORED_FILE` records the settings that scored the last row).
"""

import json
import os
from typing import (Any, Callable, Dict, Iterator, Optional, Sequence,
                    Tuple)

from absl import logging
import jax
import etils.epath as epath
import ml_collections
import numpy as np

from jaxgen import config_lib
from jaxgen import jsonl
from jaxgen.data import pipeline as data_pipeline
from jaxgen.eval import sample_metrics
from jaxgen.parallel import mesh as mesh_lib
from jaxgen.parallel import multihost
from jaxgen.train import checkpoint as checkpoint_lib
from jaxgen.train import run_record


def held_out_input(config: ml_collections.ConfigDict) -> Iterator[Any]:
  """A fresh iterator over this process's share of the eval split.

  Args:
    config: the run config (its dataset, batch size and seed).

  Returns:
    A repeating grain iterator of per-process batches, in the same order on
    every call.
  """
  it, _ = data_pipeline.build_input(
      config.dataset, global_batch_size=config.batch_size, seed=config.seed,
      process_index=jax.process_index(), process_count=jax.process_count(),
      split=config.dataset.eval_split, train=False, repeat=True)
  return it


def held_out_images(config: ml_collections.ConfigDict) -> int:
  """The images (frames, for clips) `every_held_out_image` yields."""
  _, info = data_pipeline.build_input(
      config.dataset, global_batch_size=config.batch_size, seed=config.seed,
      process_index=jax.process_index(), process_count=jax.process_count(),
      split=config.dataset.eval_split, train=False, repeat=False)
  return info.num_examples * (info.num_frames or 1)


def every_held_out_image(config: ml_collections.ConfigDict
                         ) -> Iterator[Any]:
  """This process's share of every eval-split example, once, in order.

  The pipeline's whole batches, then one batch of the rows they leave over,
  padded at its end (global positions past the split repeat the last row):
  a consumer that takes the first N rows of the global batches in order
  reads examples 0..N-1 of the split, each once.

  Args:
    config: the run config (its dataset and batch size).

  Yields:
    Per-process batches, as `held_out_input`'s.
  """
  # In the calling process: grain's workers each take every W-th row and
  # interleave their batches, so "whole batches, then the rest" would skip
  # rows and repeat others.
  dataset = config.dataset.copy_and_resolve_references()
  dataset.worker_count = 0
  it, info = data_pipeline.build_input(
      dataset, global_batch_size=config.batch_size, seed=config.seed,
      process_index=jax.process_index(), process_count=jax.process_count(),
      split=config.dataset.eval_split, train=False, repeat=False)
  yield from it
  n, full = info.num_examples, info.batches_per_epoch * config.batch_size
  if full == n:
    return
  per_process = int(config.batch_size) // jax.process_count()
  first = full + jax.process_index() * per_process
  start = min(first, n - 1)
  stop = max(min(first + per_process, n), start + 1)
  rows = data_pipeline.read_examples(config.dataset,
                                     split=config.dataset.eval_split,
                                     start=start, stop=stop)
  pad = per_process - (stop - start)
  yield {k: np.concatenate([v, np.repeat(v[-1:], pad, axis=0)])
         for k, v in rows.items()}


def make_eval(config: ml_collections.ConfigDict, s: Any, shardings: Any
              ) -> Optional[Callable[[Any, int], Dict[str, float]]]:
  """The held-out evaluation of a run.

  Args:
    config: the run config (`eval_batches` of them; 0 disables it).
    s: the trainer's `Setup` (objective, mesh, batch spec).
    shardings: the train state's shardings.

  Returns:
    eval(state, step) -> {"eval_loss": ..., ...}, or None when disabled.
  """
  if not config.get("eval_batches"):
    return None
  eval_step = jax.jit(
      lambda st, b, r: s.objective.eval_step(st, b, r),
      in_shardings=(shardings, {k: mesh_lib.batch_sharding(s.mesh, len(v.shape))
                                for k, v in s.batch_spec.items()}, None),
      out_shardings=mesh_lib.replicated(s.mesh))
  eval_rng = jax.random.key(config.seed + 1)

  def run(state, step):
    del step
    # A fresh eval iterator each time: the same held-out batches and noise.
    it = held_out_input(config)
    totals = {}
    for i in range(int(config.eval_batches)):
      batch = multihost.global_batch(s.mesh, next(it))
      out = jax.device_get(eval_step(state, batch,
                                     jax.random.fold_in(eval_rng, i)))
      for k, v in out.items():
        totals[k] = totals.get(k, 0.0) + float(v) / int(config.eval_batches)
    return {f"eval_{k}": v for k, v in totals.items()}

  return run


def saved_after_failure(error: Exception, step: int, total_steps: int,
                        ckpt_dir: str) -> Exception:
  """Notes on `error` that the state it could not evaluate is saved.

  Args:
    error: what the evaluation (or in-training sample metrics) raised.
    step: the step being evaluated, whose checkpoint was just saved.
    total_steps: the run's length (the last step gets its own advice).
    ckpt_dir: the checkpoint directory.

  Returns:
    `error`, with the note added (`jaxgen.main` prints notes on its line).
  """
  then = ("a rerun continues from it (without evaluating this step again)"
          if step < total_steps else
          "training is complete; a rerun evaluates it without training")
  error.add_note(f"The evaluation at step {step} failed; checkpoint {step} "
                 f"is saved in {ckpt_dir}: {then}.")
  return error


def at_end(config: ml_collections.ConfigDict, workdir: str,
           committed: Sequence[int], total_steps: int
           ) -> Tuple[Optional[Dict[str, Any]], Optional[Dict[str, Any]]]:
  """Whether a run is already trained to its end, evaluated or not.

  Args:
    config: the run config.
    workdir: the run directory.
    committed: its committed checkpoint steps.
    total_steps: the run's length.

  Returns:
    (the last row of a finished run, or None; the last row of a run
    trained to the end whose evaluation or final sample grid there is
    missing, or None).

  Raises:
    ValueError: the newest checkpoint is of an unfinished run and past
      `total_steps` (a rerun with a shorter length).
  """
  if not committed or max(committed) < total_steps:
    return None, None
  step = max(committed)
  own = checkpoint_lib.saved_extra(os.path.join(workdir, "checkpoints"),
                                   step).get("total_steps")
  if own is not None and step < own:
    # A run stopped part-way, rerun shorter: reporting it finished gave a
    # result without its final evaluation or annealed learning rate.
    if step > total_steps:
      raise ValueError(
          f"{workdir} stopped at checkpoint {step} of a {own}-step run, "
          f"past the {total_steps} steps this config asks for; train it on "
          f"with a run length of at least {step} steps (it was {own}), or "
          "pass another --workdir.")
    logging.warning("%s stopped at checkpoint %d of a %d-step run; this "
                    "config ends it there, before its learning rate fell "
                    "to the end of its schedule.", workdir, step, own)
  last = run_record.last_row(os.path.join(workdir, "metrics.jsonl"))
  unevaluated = missing_at_end(config, last, step, workdir)
  # A kill while the final grid was drawn (after the row and the save).
  no_grid = (last.get("step") == step and bool(config.get("num_samples"))
             and not run_record.has_grid(workdir, step))
  if not unevaluated and not no_grid:
    logging.info("%s already finished at step %d (of %d); nothing to do. "
                 "Raise the run length to train further.", workdir,
                 step, total_steps)
    if last.get("step") != step:
      # Its metrics.jsonl lost that row (removed, or restored from an older
      # copy): the result still names the step ("done: step ?" before).
      logging.warning("%s/metrics.jsonl has no row for step %d; the result "
                      "names the step alone.", workdir, step)
      return {"step": step}, None
    return last, None
  stale = unevaluated and stale_scores(config, workdir, step)
  if stale:
    logging.info("%s trained to step %d; its sample metrics there were "
                 "scored with other settings (%s): rescoring it now.",
                 workdir, step, stale)
  else:
    logging.info("%s trained to step %d, but its %s is missing: %s it now.",
                 workdir, step,
                 "evaluation there" if unevaluated else "final sample grid",
                 "evaluating" if unevaluated else "drawing")
  return None, last


SCORED_FILE = run_record.SCORED_FILE
# Fields of config.eval.sample_metrics that do not change the scores.
_SCHEDULE_ONLY = ("enabled", "every_steps")
# Sections whose fields decide what is sampled (steps, guidance, renoising).
_SAMPLER_SECTIONS = ("diffusion", "flow", "pyramid")
# Files whose contents (not only their paths) make the scores.
_SCORE_FILES = ("classifier_weights", "inception_weights", "reference_stats",
                "lpips_weights")


def _file_stamp(path: str) -> Optional[str]:
  """"size:mtime" of a local file (a file rewritten at the same path is
  another file), else None."""
  try:
    st = os.stat(path)
  except (OSError, TypeError, ValueError):
    return None
  return f"{st.st_size}:{int(st.st_mtime)}"


def _score_settings(config: ml_collections.ConfigDict) -> Dict[str, Any]:
  """Everything that decides a row's sample metrics: the metric settings,
  the sampler's (steps, guidance, the seed that draws the noise) and the
  files the features and references come from, JSON-ready."""
  cfg = config.eval.sample_metrics
  out = {f"eval.sample_metrics.{k}": v
         for k, v in config_lib.flatten(cfg.to_dict()).items()
         if k not in _SCHEDULE_ONLY}
  for section in _SAMPLER_SECTIONS:
    if section in config:
      out.update({f"{section}.{k}": v for k, v in
                  config_lib.flatten(config[section].to_dict()).items()})
  out["seed"] = config.get("seed")
  for name in _SCORE_FILES:
    if cfg.get(name):
      out[f"eval.sample_metrics.{name} file"] = _file_stamp(str(cfg[name]))
  # Tuples as JSON lists: what a record read back holds.
  return json.loads(json.dumps(out))


def note_scored(workdir: str, config: ml_collections.ConfigDict, step: int,
                row: Dict[str, Any], score: Any) -> None:
  """Records the settings that scored `row` (call after writing it).

  Args:
    workdir: the run directory.
    config: the run config.
    step: the row's step.
    row: the row as written; nothing is recorded unless it holds the sample
      metrics the config asks for.
    score: the `SampleMetrics` that scored it (its `last_keys`), or None.
  """
  # `last_keys` is empty when nothing was scored in this process (a rerun
  # that only drew the final grid): the row's scores are not of `config`.
  if (score is not None and score.last_keys and jax.process_index() == 0
      and sample_metrics.scored(config, row)):
    jsonl.write_atomic(os.path.join(workdir, SCORED_FILE), json.dumps(
        {"step": int(step), "settings": _score_settings(config),
         "keys": list(score.last_keys)}))


def _scored_record(workdir: str) -> Dict[str, Any]:
  path = epath.Path(workdir) / SCORED_FILE
  return json.loads(path.read_text()) if path.exists() else {}


def stale_scores(config: ml_collections.ConfigDict, workdir: str,
                 step: int) -> str:
  """How the sample-metric settings of `step`'s row differ from `config`'s.

  Args:
    config: the run config (what a rerun asks for).
    workdir: the run directory.
    step: the step of the last row.

  Returns:
    "field old -> new; ..." for the fields that changed, or "" (the same
    settings, metrics off, or no record of that row's).
  """
  if not sample_metrics.enabled(config):
    return ""
  record = _scored_record(workdir)
  if record.get("step") != step:
    return ""
  old, new = record.get("settings", {}), _score_settings(config)
  return "; ".join(f"{k} {old.get(k)!r} -> {new[k]!r}" for k in new
                   if old.get(k) != new[k])


def missing_at_end(config: ml_collections.ConfigDict, last_row: Dict[str, Any],
                   step: int, workdir: Optional[str] = None) -> bool:
  """Whether a run trained to `step` lacks the evaluation logged there.

  Args:
    config: the run config (what it evaluates).
    last_row: the last row of its metrics.jsonl.
    step: its newest checkpoint's step.
    workdir: the run directory, to also count sample metrics scored with
      other settings (`stale_scores`) as missing.

  Returns:
    True when the row of `step` is logged without the held-out loss or the
    sample metrics the config asks for (their evaluation failed), or with
    sample metrics of other settings.
  """
  if last_row.get("step") != step:
    return False  # No row of that step to complete.
  if config.get("eval_batches") and "eval_loss" not in last_row:
    return True
  if workdir and stale_scores(config, workdir, step):
    return True
  return not sample_metrics.scored(config, last_row)


def complete_row(row: Dict[str, Any], state: Any, step: int,
                 eval_fn: Optional[Callable[[Any, int], Dict[str, float]]],
                 score: Optional[Callable[[Any, int], Dict[str, float]]],
                 workdir: Optional[str] = None) -> Dict[str, Any]:
  """The logged row of `step` with its evaluation, computed now.

  Args:
    row: the row as logged (without the evaluation, or with sample metrics
      of other settings).
    state: the train state of `step`, restored.
    eval_fn: the held-out evaluation (`make_eval`), or None.
    score: the sample metrics, or None.
    workdir: the run directory: sample metrics it records for `step` are
      replaced, not mixed with the new ones.

  Returns:
    The row with the evaluation's fields.
  """
  row = dict(row)
  if eval_fn:
    row.update(eval_fn(state, step))
  if score:
    record = _scored_record(workdir) if workdir else {}
    if record.get("step") == step:
      row = {k: v for k, v in row.items() if k not in record.get("keys", ())}
    row.update(score(state, step))
  return row
