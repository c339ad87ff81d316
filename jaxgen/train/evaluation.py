"""The trainer's held-out evaluation: the eval split's loss at eval steps.

`make_eval` compiles the family's `eval_step` over the mesh and averages it
over `config.eval_batches` batches, the same batches and noise each time.
An evaluation that fails leaves a sound trained state behind: the trainer
saves it and `saved_after_failure` says so on the error.
"""

from typing import Any, Callable, Dict, Iterator, Optional

import jax
import ml_collections

from jaxgen.data import pipeline as data_pipeline
from jaxgen.parallel import mesh as mesh_lib
from jaxgen.parallel import multihost


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
          "training is complete and a rerun does not evaluate again "
          "(`jaxgen.sample` then `jaxgen.eval.fid` score it offline)")
  error.add_note(f"The evaluation at step {step} failed; checkpoint {step} "
                 f"is saved in {ckpt_dir}: {then}.")
  return error
