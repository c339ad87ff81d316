"""Starting a fresh run from the weights of another run (`config.init_from`).

Used by staged recipes (DC-AE's phases start from the previous phase's
checkpoint) and fine-tuning. Only parameters (the EMA copy, and non-trained
variables such as BatchNorm statistics) are taken; the optimizer state and
the step start fresh. Networks the other run does not have (the
discriminator a GAN phase adds) keep their fresh initialisation.
"""

from typing import List, Optional, Sequence

from absl import logging
import jax
import ml_collections

from jaxgen.parallel import sharding as sharding_lib
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
  from jaxgen.train import run_state  # pylint: disable=g-import-not-at-top  (via the trainer, it imports this module)
  _, step, src = run_state.restore(provenance.load_config(init_from),
                                   init_from)
  shared = _check_params(state, src, init_from)
  params = dict(state.params)
  for k in shared:
    params[k] = _placed(src.params[k], state.params[k], shardings.params[k])
  ema = dict(state.ema_params)
  for k in ema:
    if k in shared:
      ema[k] = _placed(src.params[k], state.ema_params[k],
                       shardings.ema_params[k])
  model_state = _placed(src.model_state, state.model_state,
                        shardings.model_state)
  fresh = sorted(set(state.params) - set(shared))
  logging.info("Started from the weights of %s (step %d)%s.", init_from, step,
               f"; {', '.join(fresh)} initialised fresh" if fresh else "")
  return state.replace(params=params, ema_params=ema,
                       model_state=model_state)


def _placed(src, like, shardings):
  """`src`'s arrays in the dtypes of `like` (this run's param_dtype, which
  the compiled step expects; the other run may have another), laid out as
  `shardings`."""
  return sharding_lib.placed_as(
      src, jax.tree.map(lambda t: t.dtype, like), shardings)


def check_compatible(abstract, init_from: str,
                     config: Optional[ml_collections.ConfigDict] = None
                     ) -> None:
  """Refuses, before compiling, a run whose weights cannot be taken.

  Compares this run's abstract state with the one `init_from`'s config
  describes (both traced, nothing compiled or read from the checkpoint).

  Args:
    abstract: this run's abstract train state.
    init_from: the other run's workdir.
    config: this run's config: the error then also names the model fields
      that differ (as a resume's does), not only the first array.

  Raises:
    ValueError: one line if no network is shared or a shared one differs in
      parameter names or shapes.
  """
  from jaxgen.train import run_state  # pylint: disable=g-import-not-at-top  (via the trainer, it imports this module)
  fields = (provenance.model_differences(init_from, config)
            if config is not None else [])
  _check_params(abstract, run_state.abstract_of(provenance.load_config(
      init_from)), init_from, fields)


def _check_params(state, src, init_from: str,
                  fields: Sequence[str] = ()) -> List[str]:
  """The networks both states have; raises unless they match (naming the
  config `fields` that differ, if any, before the first array)."""
  shared = [k for k in state.params if k in src.params]
  if not shared:
    raise ValueError(f"config.init_from={init_from} has networks "
                     f"{sorted(src.params)}, this run {sorted(state.params)};"
                     " start from a run of the same family.")
  _check_same("params", {k: state.params[k] for k in shared},
              {k: src.params[k] for k in shared}, init_from, fields)
  _check_same("model_state", state.model_state, src.model_state, init_from,
              fields)
  return shared


def _check_same(what: str, mine, theirs, init_from: str,
                fields: Sequence[str] = ()) -> None:
  """One-line error unless two trees have the same paths and shapes."""
  def shapes(tree):
    return {k: tuple(x.shape)
            for k, x in state_lib.named_leaves(tree).items()}
  want, have = shapes(mine), shapes(theirs)
  if want == have:
    return
  name = next((k for k in want if have.get(k) != want[k]), None)
  if name is None:
    extra = sorted(set(have) - set(want))
    detail = f"{extra[0]} is not in this run's model"
  elif name not in have:
    detail = f"{name} is not in that run's model"
  else:
    detail = f"{name} is {have[name]} there, {want[name]} here"
  named = provenance.first_changes(fields, 3)
  raise ValueError(f"config.init_from={init_from} holds another model "
                   f"({named + '; ' if named else ''}{what}: {detail}); "
                   "start from a run of the same architecture.")
