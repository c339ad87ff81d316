"""Convolutional residual block with FiLM conditioning (ADM-style).

  h = Conv3x3(SiLU(GN(x)))
  h = GN(h) * (1 + scale(c)) + shift(c)      # "scale-shift norm"
  h = Conv3x3(Dropout(SiLU(h)))              # zero-initialised by default
  out = skip(x) + h                          # skip is a 1x1 conv iff C changes

Zero-initialising the last conv makes the block the identity at init when
the channel count is unchanged, which the SiD2 residual U-ViT relies on.
"""

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen.nn import linear
from jaxgen.nn import norms
from jaxgen.nn import partitioning as pt

Dtype = Any


class ResBlock(nn.Module):
  """Pre-activation conv ResBlock with FiLM from a conditioning vector.

  Attributes:
    features: output channels.
    dropout_rate: dropout before the second conv (train only).
    zero_init: zero the second conv, so the residual branch starts at 0.
    num_groups: GroupNorm groups (reduced to divide the channel count).
    dtype: compute dtype.
  """
  features: int
  dropout_rate: float = 0.0
  zero_init: bool = True
  num_groups: int = 32
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, cond: Optional[jax.Array] = None,
               train: bool = False) -> jax.Array:
    """Applies the block.

    Args:
      x: f[B, H, W, C].
      cond: optional f[B, Dc] conditioning vector.
      train: enables dropout (needs the 'dropout' rng).

    Returns:
      f[B, H, W, features].
    """
    h = norms.GroupNorm(self.num_groups, dtype=self.dtype, name="norm_in")(x)
    h = linear.Conv(self.features, 3, dtype=self.dtype,
                    name="conv_in")(nn.silu(h))
    h = norms.GroupNorm(self.num_groups, dtype=self.dtype, name="norm_out")(h)
    if cond is not None:
      ss = linear.Dense((2, self.features), (pt.COND, None, pt.CONV_OUT),
                        dtype=self.dtype, name="film")(nn.silu(cond))
      h = h * (1 + ss[:, None, None, 0]) + ss[:, None, None, 1]
    h = nn.silu(h)
    if self.dropout_rate > 0:
      h = nn.Dropout(self.dropout_rate)(h, deterministic=not train)
    init = pt.zeros_init if self.zero_init else pt.conv_init
    h = linear.Conv(self.features, 3, kernel_init=init, dtype=self.dtype,
                    name="conv_out")(h)
    if x.shape[-1] != self.features:
      x = linear.Conv(self.features, 1, dtype=self.dtype, name="skip")(x)
    return pt.constrain(x.astype(self.dtype) + h, pt.CONV_ACT)
