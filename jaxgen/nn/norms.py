"""Normalisation layers with named scale/bias, statistics in float32.

Statistics are always computed in float32, whatever the compute dtype, since
bf16 means and variances over large maps lose too much precision.
"""

import math
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen.nn import partitioning as pt

Dtype = Any


def _scale_and_bias(module: nn.Module, features: int, use_scale: bool,
                    use_bias: bool, axis_name: Optional[str]):
  """The optional learned per-feature scale and bias (None when unused)."""
  scale = bias = None
  if use_scale:
    scale = module.param("scale", pt.logical_init(pt.ones_init, (axis_name,)),
                         (features,), jnp.float32)
  if use_bias:
    bias = module.param("bias", pt.logical_init(pt.zeros_init, (axis_name,)),
                        (features,), jnp.float32)
  return scale, bias


def _affine(module: nn.Module, y: jax.Array, features: int, use_scale: bool,
            use_bias: bool, axis_name: Optional[str]) -> jax.Array:
  """Applies the optional learned per-feature scale and bias."""
  scale, bias = _scale_and_bias(module, features, use_scale, use_bias,
                                axis_name)
  if scale is not None:
    y = y * scale
  if bias is not None:
    y = y + bias
  return y


class GroupNorm(nn.Module):
  """Group normalisation over (H, W, channels-in-group) of NHWC maps.

  The statistics are reduced over the spatial axes first, per channel, and
  then summed within each group on the small [B, C] array; mean, 1/std and
  the learned scale and bias are folded into one per-(example, channel)
  scale and shift. The map itself is therefore only touched with
  channel-contiguous broadcasts: a [B, ..., G, C/G] view, whose inner axis
  is 1-4 channels wide in the U-Nets here, keeps XLA:CPU from vectorising
  (2-2.5x slower forward + backward; see experiments/performance/report.md).

  Attributes:
    num_groups: groups; reduced to the largest divisor of C not above it
      (`num_groups_for`: 24 for C = 48 and 32) so any width works.
    epsilon: variance floor.
    use_scale: learn a per-channel scale.
    use_bias: learn a per-channel bias.
    dtype: output dtype.
  """
  num_groups: int = 32
  epsilon: float = 1e-6
  use_scale: bool = True
  use_bias: bool = True
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Normalises x: f[B, ..., C] (all middle axes are reduced)."""
    b, c = x.shape[0], x.shape[-1]
    groups = num_groups_for(c, self.num_groups)
    per_group = c // groups
    spatial = tuple(range(1, x.ndim - 1))
    count = per_group * math.prod(x.shape[1:-1])
    # [B, C] per-channel values -> their group's mean, repeated per channel.
    group_mean = lambda v: jnp.repeat(
        v.reshape(b, groups, per_group).sum(-1) / count, per_group, axis=-1)
    channels = lambda v: v.reshape((b,) + (1,) * len(spatial) + (c,))
    xf = x.astype(jnp.float32)
    mean = group_mean(jnp.sum(xf, axis=spatial))
    centred = xf - channels(mean)
    # Two-pass variance (of the centred values): no cancellation.
    var = group_mean(jnp.sum(jnp.square(centred), axis=spatial))
    gain = jax.lax.rsqrt(var + self.epsilon)
    # The scale folds into the [B, C] gain: one multiply of the map, not two.
    scale, bias = _scale_and_bias(self, c, self.use_scale, self.use_bias,
                                  pt.NORM)
    if scale is not None:
      gain = gain * scale
    y = centred * channels(gain)
    if bias is not None:
      y = y + bias
    return y.astype(self.dtype)


class LayerNorm(nn.Module):
  """Layer normalisation over the last axis.

  Attributes:
    epsilon: variance floor.
    use_scale: learn a per-feature scale.
    use_bias: learn a per-feature bias.
    dtype: output dtype.
  """
  epsilon: float = 1e-6
  use_scale: bool = True
  use_bias: bool = True
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Normalises x over its last axis."""
    xf = x.astype(jnp.float32)
    mean = jnp.mean(xf, axis=-1, keepdims=True)
    var = jnp.mean(jnp.square(xf - mean), axis=-1, keepdims=True)
    y = (xf - mean) * jax.lax.rsqrt(var + self.epsilon)
    y = _affine(self, y, x.shape[-1], self.use_scale, self.use_bias, pt.NORM)
    return y.astype(self.dtype)


class RMSNorm(nn.Module):
  """Root-mean-square normalisation over the last axis with a learned scale.

  Attributes:
    epsilon: floor on the mean square.
    axis_name: logical name of the scale (e.g. `kv` for QK-norm).
    use_bias: also add a learned bias (DC-AE's RMSNorm2d).
    dtype: output dtype.
  """
  epsilon: float = 1e-6
  axis_name: Optional[str] = pt.NORM
  use_bias: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Normalises x over its last axis."""
    xf = x.astype(jnp.float32)
    ms = jnp.mean(jnp.square(xf), axis=-1, keepdims=True)
    y = xf * jax.lax.rsqrt(ms + self.epsilon)
    y = _affine(self, y, x.shape[-1], True, self.use_bias, self.axis_name)
    return y.astype(self.dtype)


def num_groups_for(channels: int, max_groups: int) -> int:
  """Largest group count <= max_groups dividing `channels`.

  Args:
    channels: number of channels.
    max_groups: preferred number of groups (32 in most diffusion U-Nets).

  Returns:
    The group count actually used.
  """
  for g in range(min(max_groups, channels), 0, -1):
    if channels % g == 0:
      return g
  return 1
