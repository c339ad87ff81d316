"""Logical axis names for parameters and activations, and helpers to use them.

Models never name a physical mesh axis. Every parameter is created through
`logical_init(init, names)`, which boxes it as `nn.LogicallyPartitioned` with
one logical name per dimension; the config's `logical_axis_rules` later map
these names to mesh axes (`data`, `fsdp`, `tensor`). Activations are pinned
with `constrain`, which is a no-op outside a mesh / rules context, so the same
module runs unchanged in unit tests and in sharded training.

Weight vocabulary (the default rules map the first group to `fsdp`):
  embed (transformer width), conv_in (conv input channels), cond
  (conditioning-vector width)                       -> fsdp
  mlp (MLP hidden), heads, conv_out                  -> tensor
  kv (head dim), kernel_h, kernel_w, classes, norm   -> never sharded
A `None` name marks a dimension that must never be sharded, used for
pixel-channel dimensions (3 or 3*4^L), which no mesh axis divides.
"""

import math
from typing import Callable, Optional, Sequence, Tuple

import flax.linen as nn
import jax

# Parameter dimension names.
EMBED = "embed"
MLP = "mlp"
HEADS = "heads"
KV = "kv"
CONV_IN = "conv_in"
CONV_OUT = "conv_out"
KERNEL_H = "kernel_h"
KERNEL_W = "kernel_w"
COND = "cond"
CLASSES = "classes"
NORM = "norm"

# Activation dimension names.
ACT_BATCH = "act_batch"
ACT_HEIGHT = "act_height"
ACT_WIDTH = "act_width"
ACT_CHANNELS = "act_channels"
ACT_LEN = "act_len"
ACT_EMBED = "act_embed"
ACT_MLP = "act_mlp"

CONV_ACT = (ACT_BATCH, ACT_HEIGHT, ACT_WIDTH, ACT_CHANNELS)
TOKEN_ACT = (ACT_BATCH, ACT_LEN, ACT_EMBED)
MLP_ACT = (ACT_BATCH, ACT_LEN, ACT_MLP)

Names = Tuple[Optional[str], ...]
Initializer = Callable[..., jax.Array]


def as_matrix_init(init: Initializer) -> Initializer:
  """Runs `init` on the (prod(shape[:-1]), shape[-1]) matrix and reshapes.

  For an HWIO conv kernel the matrix fan-in is kh * kw * c_in, the same as
  `variance_scaling` computes for the 4-D shape. Drawing 2-D random numbers
  is much cheaper to compile than 4-D ones under the partitionable threefry
  PRNG the trainer uses.

  Args:
    init: a `(key, shape, dtype) -> array` initialiser.

  Returns:
    The wrapped initialiser.
  """
  def wrapped(key, shape, dtype=jax.numpy.float32):
    rows = math.prod(shape[:-1])
    return init(key, (rows, shape[-1]), dtype).reshape(shape)
  return wrapped


# Default initialisers, shared so all families start from the same scales.
dense_init = nn.initializers.xavier_uniform()
conv_init = as_matrix_init(
    nn.initializers.variance_scaling(1.0, "fan_in", "truncated_normal"))
zeros_init = nn.initializers.zeros_init()
ones_init = nn.initializers.ones_init()
embed_init = nn.initializers.normal(stddev=0.02)


def logical_init(init: Initializer,
                 names: Sequence[Optional[str]]) -> Initializer:
  """Wraps `init` so the parameter it makes carries logical axis names.

  Args:
    init: a `(key, shape, dtype) -> array` initialiser.
    names: one logical name (or None) per parameter dimension.

  Returns:
    An initialiser returning an `nn.LogicallyPartitioned` box.
  """
  return nn.with_logical_partitioning(init, tuple(names))


def constrain(x: jax.Array, names: Sequence[Optional[str]]) -> jax.Array:
  """Pins the sharding of activation `x` by logical names (no-op off-mesh).

  Args:
    x: an activation.
    names: one logical activation name per dimension of `x`.

  Returns:
    `x`, with a sharding constraint when rules and a mesh are active.
  """
  if x.ndim != len(names):
    raise ValueError(f"constrain: {x.ndim}-D array given {len(names)} names.")
  return nn.with_logical_constraint(x, tuple(names))
