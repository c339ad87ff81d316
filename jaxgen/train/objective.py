"""The interface every model family implements for the trainer (DESIGN §3).

An objective owns everything family-specific (networks, losses, optimizers,
samplers, FLOP counts) and nothing about devices: the trainer jit's its pure
methods with shardings it derives from the logical axis names carried by the
parameters that `init` creates.
"""

import abc
import contextlib
from typing import Any, Dict, Optional, Tuple

import jax
import jax.numpy as jnp
import ml_collections
import optax

from jaxgen import config_lib
from jaxgen.train import accumulate
from jaxgen.train import state as state_lib

State = Any  # A pytree, usually a `jaxgen.train.state.TrainState`.
Batch = Dict[str, jax.Array]  # e.g. {"image": f32[B,H,W,C] in [-1,1], "label": i32[B]}
Metrics = Dict[str, jax.Array]


class Objective(abc.ABC):
  """Base class of a family's training objective.

  Subclasses are registered with `jaxgen.registry.OBJECTIVES.register(name)` and
  built as `cls(config)`. All methods except `flops_per_example` and
  `validate` must be pure and traceable: the trainer calls them under `jax.jit`.
  """

  # Whether the train step splits a batch into `config.grad_accum_steps`
  # micro-batches (`SingleOptimizer.model_step` does); the trainer refuses
  # grad_accum_steps > 1 for a family whose step would ignore it.
  accumulates_micro_batches = False
  # Whether the family also models clips ("video" batches), when
  # `config.dataset.num_frames` > 0; image-only families refuse video data.
  models_video = False

  @classmethod
  def follows_run_length(cls, config: ml_collections.ConfigDict) -> bool:
    """Whether `config`'s schedules span the run, as scaling sweeps need.

    True when the learning rate follows `config.optimizer`'s run-length
    schedule (warmup + cosine to the end of the run, set per sweep point).
    Families with schedules of their own override it (R3GAN: only when its
    burn-in is a fraction of the run).

    Args:
      config: a run config of this family.

    Returns:
      Whether each run's schedules end with the run.
    """
    del config
    return True

  # How many batches of `config.batch_size` real examples one train step
  # reads. The trainer's train pipeline yields batches of
  # `batches_per_step * batch_size` examples (eval batches stay
  # `batch_size`); the objective splits them with `split_batch`. Example and
  # FLOP accounting stay per `batch_size` (e.g. R3GAN's G phase reads its own
  # reals, and the paper's images-seen counts D's batch only).
  batches_per_step: int = 1

  def __init__(self, config: ml_collections.ConfigDict,
               total_steps: Optional[int] = None):
    """Builds the objective.

    Args:
      config: the full run config.
      total_steps: run length, for learning-rate and other schedules. May be
        None until `set_total_steps` (the trainer first asks this same
        object for its FLOPs to resolve a FLOP budget into steps).
    """
    self.config = config
    self.total_steps = total_steps

  def set_total_steps(self, total_steps: int) -> None:
    """Sets the run length, once known; schedules are built from it lazily.

    Args:
      total_steps: the number of training steps.
    """
    self.total_steps = int(total_steps)

  _traced_run_length = None

  @contextlib.contextmanager
  def runtime_run_length(self, total_steps: jax.Array):
    """Schedules read the run length from `total_steps` inside this block.

    The trainer traces its step in here with `total_steps` a traced int32
    argument, so the compiled step does not depend on the run length: every
    budget of a size shares one program (and one compilation cache entry).

    Args:
      total_steps: int32 scalar (usually a tracer).

    Yields:
      Nothing.
    """
    previous, self._traced_run_length = self._traced_run_length, total_steps
    try:
      yield
    finally:
      self._traced_run_length = previous

  def run_length(self):
    """The run length schedules use: the runtime value while tracing the
    trainer's step, else `total_steps` (which must be set)."""
    if self._traced_run_length is not None:
      return self._traced_run_length
    if self.total_steps is None:
      raise ValueError("the run length is not set: construct the objective "
                       "with total_steps or call set_total_steps first.")
    return self.total_steps

  def validate(self, num_devices_data_parallel: int) -> None:
    """Raises ValueError (one line, says what to change) on a bad config.

    Called before anything is compiled. The default checks nothing.

    Args:
      num_devices_data_parallel: devices the batch is split over.
    """
    del num_devices_data_parallel

  def split_batch(self, batch: Batch) -> Tuple[Batch, ...]:
    """The `batches_per_step` batches of one train step's batch.

    The batch is laid out so that every device's rows hold its share of each
    part: example `i * k + j` belongs to part `j` (k = batches_per_step), and
    the split is a reshape, local to each device under data parallelism.

    Args:
      batch: a train batch of `batches_per_step * batch_size` examples.

    Returns:
      A tuple of `batches_per_step` batches of `batch_size` examples.
    """
    k = self.batches_per_step
    parts = jax.tree.map(
        lambda x: x.reshape((x.shape[0] // k, k) + x.shape[1:]), batch)
    return tuple(jax.tree.map(lambda x, j=j: x[:, j], parts)
                 for j in range(k))

  @abc.abstractmethod
  def init(self, rng: jax.Array, batch: Batch) -> State:
    """Creates the full train state (params, optimizer states, EMA, step).

    Parameters must be boxed with logical axis names
    (`nn.with_logical_partitioning`); the trainer reads the names through
    `jax.eval_shape` and then unboxes the created state.

    Args:
      rng: PRNG key.
      batch: an example batch (shapes and dtypes only matter).

    Returns:
      The train state pytree.
    """

  @abc.abstractmethod
  def train_step(self, state: State, batch: Batch,
                 rng: jax.Array) -> Tuple[State, Metrics]:
    """One optimisation step.

    Args:
      state: the (unboxed) train state.
      batch: the global batch.
      rng: `fold_in(base_rng, step)`, computed by the trainer.

    Returns:
      (new_state, metrics); metrics are scalars and include "loss",
      "grad_norm" and "learning_rate" (the trainer checks all of them for
      non-finite values and logs them).
    """

  def eval_step(self, state: State, batch: Batch, rng: jax.Array) -> Metrics:
    """Held-out metrics for one batch (scalars). Default: not provided."""
    raise NotImplementedError(f"{type(self).__name__} has no eval_step.")

  @abc.abstractmethod
  def sample(self, state: State, rng: jax.Array, num: int) -> jax.Array:
    """Draws `num` samples in [-1, 1] (NHWC images or NTHWC videos)."""

  @abc.abstractmethod
  def flops_per_example(self) -> float:
    """Analytic training FLOPs per example (forward + backward + extras)."""

  def sampling_flops_per_example(self) -> Optional[float]:
    """Analytic FLOPs to sample one image or clip with the configured
    sampler (None: the family does not sample, e.g. autoencoders)."""
    return None

  def num_params(self, state: State) -> Dict[str, int]:
    """Parameter counts to report, by name; default counts `state.params`."""
    leaves = jax.tree.leaves(state.params)
    return {"params": int(sum(x.size for x in leaves))}


class SingleOptimizer:
  """Mixin for objectives with one AdamW over `config.optimizer`.

  Builds the optimizer and its learning-rate schedule once; the schedule
  reads the run length (`Objective.run_length`) each time it is evaluated,
  since a FLOP budget fixes it only after the objective has reported its
  FLOPs, and the trainer's step takes it as a runtime value.
  """

  accumulates_micro_batches = True

  _tx = None
  _lr = None

  @property
  def tx(self) -> optax.GradientTransformation:
    """The optimizer, built once from the run length."""
    if self._tx is None:
      # The run length is read when the schedule is evaluated: at trace
      # time, a runtime value inside the trainer's step.
      self._tx = state_lib.make_optimizer(self.config.optimizer,
                                          self.run_length)
    return self._tx

  @property
  def lr_schedule(self):
    """step -> learning rate (the one inside `tx`), built once."""
    if self._lr is None:
      self._lr = state_lib.learning_rate_schedule(self.config.optimizer,
                                                  self.run_length)
    return self._lr

  def new_state(self, params):
    """The train state of fresh `params` (step 0, optimizer, EMA copy).

    Args:
      params: the network's parameter tree (boxed with logical names).

    Returns:
      TrainState with params / opt_state / ema_params under "model" (no EMA
      when `config.ema_decay` is 0).
    """
    params = state_lib.cast_floating(params,
                                     config_lib.param_dtype(self.config))
    ema = ({"model": state_lib.ema_init(params)}
           if self.config.ema_decay else {})
    return state_lib.TrainState(
        step=jnp.zeros((), jnp.int32), params={"model": params},
        opt_state={"model": self.tx.init(params)}, ema_params=ema)

  def model_step(self, state, loss_fn, draws, rng):
    """One update of `state.params["model"]` (and its EMA) on a batch.

    Args:
      state: the train state.
      loss_fn: (params, draws, rng) -> (mean loss, scalar metrics).
      draws: per-example arrays with all randomness of the step drawn
        (split into `config.grad_accum_steps` micro-batches).
      rng: key for what remains (dropout).

    Returns:
      (new state, metrics): loss_fn's metrics plus loss, grad_norm,
      update_norm (of the optimizer's step: the parameters' change),
      param_norm and learning_rate.
    """
    params = state.params["model"]
    grad_fn = jax.value_and_grad(loss_fn, has_aux=True)
    (loss, aux), grads = accumulate.accumulated(
        grad_fn, params, draws, rng,
        int(self.config.get("grad_accum_steps", 1)),
        unroll=accumulate.unrolls(self.config.get("grad_accum_loop", "auto")))
    updates, opt_state = self.tx.update(grads, state.opt_state["model"],
                                        params)
    new_params = optax.apply_updates(params, updates)
    ema = state.ema_params
    if ema:
      ema = {"model": state_lib.ema_update(ema["model"], new_params,
                                           self.config.ema_decay)}
    metrics = dict(aux, loss=loss, grad_norm=state_lib.global_norm(grads),
                   update_norm=state_lib.global_norm(updates),
                   param_norm=state_lib.global_norm(new_params),
                   learning_rate=self.lr_schedule(state.step))
    return state.replace(step=state.step + 1, params={"model": new_params},
                         opt_state={"model": opt_state},
                         ema_params=ema), metrics
