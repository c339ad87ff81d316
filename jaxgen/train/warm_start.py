"""Starting a fresh run from the weights of another run (`config.init_from`).

Used by staged recipes (DC-AE's phases start from the previous phase's
checkpoint) and fine-tuning. Only parameters (and the EMA copy) are taken;
the optimizer state and the step start fresh.
"""

from absl import logging
import jax

from jaxgen.train import provenance
from jaxgen.train import state as state_lib


def warm_start(state, shardings, init_from: str):
  """`state` with the parameters (and EMA) of another run's newest checkpoint.

  The optimizer state stays fresh: a new run (e.g. the next DC-AE phase)
  starts from the weights only.

  Args:
    state: the freshly initialised train state.
    shardings: its shardings.
    init_from: the other run's workdir (its config.json and checkpoints).

  Returns:
    The new state.

  Raises:
    ValueError: one line if the other run's parameters have other names or
      shapes.
  """
  from jaxgen.train import trainer  # pylint: disable=g-import-not-at-top  (it imports this module)
  _, step, src = trainer.restore(provenance.load_config(init_from),
                                 init_from)
  want = jax.tree_util.tree_flatten_with_path(
      jax.tree.map(lambda x: x.shape, state.params))[0]
  have = dict(jax.tree_util.tree_flatten_with_path(
      jax.tree.map(lambda x: x.shape, src.params))[0])
  bad = [p for p, shape in want if have.get(p) != shape]
  if bad or len(have) != len(want):
    name = "/".join(state_lib.key_name(k) for k in bad[0]) if bad else "?"
    raise ValueError(f"config.init_from={init_from} holds another model "
                     f"(e.g. {name} differs); start from a run of the same "
                     "architecture.")
  params = jax.device_put(jax.device_get(src.params), shardings.params)
  ema = (jax.device_put(jax.device_get(src.params), shardings.ema_params)
         if state.ema_params else state.ema_params)
  logging.info("Started from the weights of %s (step %d).", init_from, step)
  return state.replace(params=params, ema_params=ema)
