"""Train state and optimizers shared by every family.

A state holds any number of parameter groups and optimizers (the GAN needs two)
and optionally an EMA copy of some parameters. Training a named subset of
parameters (the autoencoder phases) is an optax `multi_transform` whose frozen
branch is `set_to_zero`, so frozen weights keep no optimizer moments.
"""

import re
from typing import Any, Callable, Dict, Optional, Sequence, Union

import flax
import jax
import jax.numpy as jnp
import ml_collections
import numpy as np
import optax

from jaxgen import registry


@flax.struct.dataclass
class TrainState:
  """The pytree every objective's `train_step` maps to a new one.

  Attributes:
    step: int32 scalar, number of updates applied.
    params: parameter trees by network name, e.g. {"model": ...} or
      {"generator": ..., "discriminator": ...}.
    opt_state: optax states by optimizer name.
    ema_params: EMA parameter trees by network name (may be empty).
    model_state: non-trained variables by collection name, e.g.
      {"batch_stats": ...} for BatchNorm's running statistics (may be empty).
  """
  step: jax.Array
  params: Dict[str, Any]
  opt_state: Dict[str, Any]
  ema_params: Dict[str, Any]
  model_state: Dict[str, Any] = flax.struct.field(default_factory=dict)


def fraction_of_steps(fraction: float, steps: int) -> int:
  """round(fraction x steps) as `learning_rate_schedule` rounds it: in
  float32, half to even (Python's float64 `round` disagrees for some
  fractions: 0.3 x 95 is 28 there, 29 here).

  Args:
    fraction: e.g. a warmup or cooldown fraction.
    steps: the run's length.

  Returns:
    The number of steps.
  """
  return int(np.round(np.float32(fraction) * np.float32(steps)))


def learning_rate_schedule(opt_config: ml_collections.ConfigDict,
                           total_steps: Union[int, Callable[[], Any]]
                           ) -> optax.Schedule:
  """Warmup then `constant`, `cosine` or `wsd` decay to the end of the run.

  The cosine horizon is the run's own length: Chinchilla (App. B) shows that a
  cycle much longer than the run under-trains, which matters for sweeps.

  The run length may be a runtime value (a traced int32 inside the trainer's
  step), so one compiled step serves every run length of a size; the values
  equal optax's `join_schedules([linear_schedule, cosine_decay_schedule])`.

  "wsd" (warmup-stable-decay, Hägele et al. 2024) holds the peak after the
  warmup and decays linearly to `end_lr_fraction` x peak over the last
  round(decay_fraction x run length) steps. A run of length T then equals,
  step for step, a constant-rate run up to T - round(decay_fraction x T):
  the scaling sweeps branch each budget's cooldown from one such run.

  Args:
    opt_config: fields `learning_rate`, `schedule` ("constant" | "cosine" |
      "wsd"), `warmup_steps` or `warmup_fraction`, `end_lr_fraction`,
      `decay_fraction` (wsd).
    total_steps: number of training steps, or a function returning it (an
      int or an int32 array), called each time the schedule is evaluated.

  Returns:
    An optax schedule, step -> learning rate.
  """
  peak = float(opt_config.learning_rate)
  kind = opt_config.get("schedule", "cosine")
  if kind not in ("constant", "cosine", "wsd"):
    raise ValueError(f"unknown config.optimizer.schedule {kind!r}; use "
                     "'constant', 'cosine' or 'wsd'.")
  decay_fraction = float(opt_config.get("decay_fraction", 0.2))
  if kind == "wsd" and not 0 <= decay_fraction <= 1:
    raise ValueError(f"config.optimizer.decay_fraction={decay_fraction}: "
                     "use a fraction of the run in [0, 1].")
  warmup_steps = int(opt_config.get("warmup_steps", 0) or 0)
  fraction = float(opt_config.get("warmup_fraction") or 0.0)
  alpha = float(opt_config.get("end_lr_fraction", 0.0))
  length = total_steps if callable(total_steps) else lambda: total_steps

  def schedule(step):
    total = jnp.asarray(length(), jnp.float32)
    warmup = (jnp.round(fraction * total) if fraction
              else jnp.float32(warmup_steps))
    warmup = jnp.minimum(warmup, jnp.maximum(total - 1.0, 0.0))
    step = jnp.asarray(step, jnp.float32)
    ramp = peak * jnp.minimum(step, warmup) / jnp.maximum(warmup, 1.0)
    if kind == "constant":
      decay = jnp.float32(peak)
    elif kind == "wsd":
      span = jnp.round(decay_fraction * total)
      start = total - span
      t = jnp.clip(step - start, 0.0, span) / jnp.maximum(span, 1.0)
      decay = peak * (1.0 - (1.0 - alpha) * t)
    else:
      span = jnp.maximum(total - warmup, 1.0)
      t = jnp.minimum(step - warmup, span) / span
      decay = peak * ((1.0 - alpha) * 0.5 * (1.0 + jnp.cos(jnp.pi * t))
                      + alpha)
    return jnp.where(step < warmup, ramp, decay)

  return schedule


# Optimizers by config name (config.optimizer.name), each
# `(schedule, opt_config, adam_kwargs) -> optax transformation`.
OPTIMIZERS = registry.Registry("config.optimizer.name")
OPTIMIZERS.register("adamw")(
    lambda schedule, o, kw: optax.adamw(
        schedule, weight_decay=float(o.get("weight_decay", 0.0)), **kw))
OPTIMIZERS.register("adam")(lambda schedule, o, kw: optax.adam(schedule,
                                                               **kw))


def make_optimizer(opt_config: ml_collections.ConfigDict,
                   total_steps: Union[int, Callable[[], Any]],
                   trainable: Optional[Sequence[str]] = None
                   ) -> optax.GradientTransformation:
  """Builds an Adam(W) optimizer with clipping and an optional frozen subset.

  Args:
    opt_config: fields `name` ("adamw" | "adam"), `learning_rate`, `b1`, `b2`,
      `eps`, `weight_decay`, `grad_clip` (global norm, 0 = off) and the
      schedule fields of `learning_rate_schedule`.
    total_steps: run length for the schedule (or a function returning it,
      see `learning_rate_schedule`).
    trainable: regexes over "/"-joined parameter paths; only matching
      parameters are updated (None = all).

  Returns:
    An optax transformation.
  """
  schedule = learning_rate_schedule(opt_config, total_steps)
  name = opt_config.get("name", "adamw")
  common = dict(b1=float(opt_config.get("b1", 0.9)),
                b2=float(opt_config.get("b2", 0.999)),
                eps=float(opt_config.get("eps", 1e-8)),
                # bfloat16 halves the first moment's memory.
                mu_dtype=jnp.dtype(opt_config.get("mu_dtype", "float32")))
  tx = OPTIMIZERS.get(name)(schedule, opt_config, common)
  if opt_config.get("grad_clip", 0.0):
    tx = optax.chain(optax.clip_by_global_norm(float(opt_config.grad_clip)), tx)
  if trainable:
    patterns = [re.compile(p) for p in trainable]

    def label(params):
      def one(path, _):
        name = path_name(path)
        return "train" if any(p.search(name) for p in patterns) else "freeze"
      return jax.tree_util.tree_map_with_path(one, params)

    tx = optax.multi_transform(
        {"train": tx, "freeze": optax.set_to_zero()}, label)
  return tx


def key_name(key) -> str:
  """The readable name of one pytree path entry (dict key, attribute,
  index)."""
  for attr in ("key", "name", "idx"):
    if hasattr(key, attr):
      return str(getattr(key, attr))
  return str(key)


def path_name(path) -> str:
  """A pytree path as messages and layer patterns name it ("a/b/kernel")."""
  return "/".join(key_name(k) for k in path)


def named_leaves(tree: Any) -> Dict[str, Any]:
  """{path name: leaf} of a pytree, in flattening order."""
  return {path_name(path): x
          for path, x in jax.tree_util.tree_flatten_with_path(tree)[0]}


# The EMA's storage dtype, whatever `config.param_dtype` is: at decay
# 0.9999 an update moves the average by 1e-4 of its distance to the
# parameters, below bfloat16's resolution (2^-8 relative), so a bfloat16
# EMA would never move from its initial copy.
EMA_DTYPE = jnp.float32


def ema_init(params: Any) -> Any:
  """The EMA of fresh parameters: a copy of them in `EMA_DTYPE`.

  Args:
    params: a parameter pytree (boxed leaves keep their names).

  Returns:
    A copy (never the same buffers: the train step donates both).
  """
  return jax.tree.map(jnp.copy, cast_floating(params, EMA_DTYPE))


def ema_update(ema: Any, params: Any, decay: jax.Array) -> Any:
  """Returns decay·ema + (1 − decay)·params, leaf by leaf, in ema's dtypes.

  Args:
    ema: the average (`ema_init`'s dtypes).
    params: the parameters just updated (any float dtype).
    decay: the weight of the old average (a float or traced scalar).

  Returns:
    The new average, in the dtypes of `ema` (a traced float32 decay would
    otherwise promote a lower-precision average, and the compiled step
    refused the state it returned).
  """
  def update(e, p):
    return (e * decay + (1.0 - decay) * p.astype(e.dtype)).astype(e.dtype)
  return jax.tree.map(update, ema, params)


def global_norm(tree: Any) -> jax.Array:
  """L2 norm over all leaves (float32)."""
  return optax.global_norm(jax.tree.map(
      lambda x: x.astype(jnp.float32), tree))


def cast_floating(tree: Any, dtype) -> Any:
  """`tree` with its floating leaves cast to `dtype` (others unchanged).

  Args:
    tree: a parameter pytree (boxed leaves keep their names).
    dtype: the parameter storage dtype (`config.param_dtype`).

  Returns:
    The cast tree.
  """
  def cast(x):
    if jnp.issubdtype(x.dtype, jnp.floating) and x.dtype != dtype:
      return x.astype(dtype)
    return x
  return jax.tree.map(cast, tree)
