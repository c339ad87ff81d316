"""Resolution changes: space<->depth moves, average pooling and learned p x p
resampling.

`Downsample(features, factor=p)` is a p x p convolution with stride p, and
`Upsample` its transposed counterpart (kernel p, stride p). Both are written
as a rearrangement plus one matmul (einsum): mathematically the same as the
strided (transposed) convolution, but compiled to a plain dot, so there are no
dilated convolutions in the backward pass and FLOP counts are exact.
"""

from typing import Any, Optional

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen.nn import partitioning as pt

Dtype = Any


def space_to_depth(x: jax.Array, factor: int) -> jax.Array:
  """Moves factor x factor spatial blocks onto channels.

  Args:
    x: f[B, H, W, C], H and W divisible by `factor`.
    factor: block size p.

  Returns:
    f[B, H/p, W/p, p*p*C]; channel (i * p + j) * C + c holds x[p*h+i, p*w+j, c].
  """
  return einops.rearrange(x, "b (h i) (w j) c -> b h w (i j c)",
                          i=factor, j=factor)


def avg_pool_to(x: jax.Array, size: int) -> jax.Array:
  """Average-pools the square spatial axes (-3, -2) of `x` down to `size`.

  Args:
    x: f[..., d, d, C] with d a multiple of `size`.
    size: target side.

  Returns:
    f[..., size, size, C], each pixel the mean of a (d/size)² block.

  Raises:
    ValueError: if the sides are not square multiples of `size`.
  """
  h, w = x.shape[-3], x.shape[-2]
  if h != w or h % size:
    raise ValueError(f"Images of side {h}x{w} cannot be average-pooled to "
                     f"{size}: the sides must be equal multiples of it.")
  f = h // size
  if f == 1:
    return x
  return einops.reduce(x, "... (h i) (w j) c -> ... h w c", "mean", i=f, j=f)


def depth_to_space(x: jax.Array, factor: int) -> jax.Array:
  """Inverse of `space_to_depth`.

  Args:
    x: f[B, h, w, p*p*C].
    factor: block size p.

  Returns:
    f[B, h*p, w*p, C].
  """
  return einops.rearrange(x, "b h w (i j c) -> b (h i) (w j) c",
                          i=factor, j=factor)


class Downsample(nn.Module):
  """Learned downsampling: a `factor` x `factor` conv with stride `factor`.

  Attributes:
    features: output channels.
    factor: stride and kernel size.
    in_axis: logical name of the input-channel dim (None for pixels).
    out_axis: logical name of the output-channel dim.
    use_bias: add a bias.
    dtype: compute dtype.
  """
  features: int
  factor: int = 2
  in_axis: Optional[str] = pt.CONV_IN
  out_axis: Optional[str] = pt.CONV_OUT
  use_bias: bool = True
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Maps f[B, H, W, C] to f[B, H/factor, W/factor, features]."""
    p = self.factor
    kernel = self.param(
        "kernel",
        pt.logical_init(pt.conv_init, (pt.KERNEL_H, pt.KERNEL_W, self.in_axis,
                                       self.out_axis)),
        (p, p, x.shape[-1], self.features), jnp.float32)
    xb = einops.rearrange(x.astype(self.dtype),
                          "b (h i) (w j) c -> b h i w j c", i=p, j=p)
    y = jnp.einsum("bhiwjc,ijcd->bhwd", xb, kernel.astype(self.dtype))
    if self.use_bias:
      bias = self.param("bias", pt.logical_init(pt.zeros_init,
                                                (self.out_axis,)),
                        (self.features,), jnp.float32)
      y = y + bias.astype(self.dtype)
    return y


class Upsample(nn.Module):
  """Learned upsampling: a transposed conv with kernel and stride `factor`.

  Every output pixel depends on exactly one input pixel, so this is a dense
  layer to factor*factor*features channels followed by depth-to-space.
  No bias by default: the SiD2 residual U-ViT relies on Up(0) == 0.

  Attributes:
    features: output channels.
    factor: stride and kernel size.
    in_axis: logical name of the input-channel dim.
    out_axis: logical name of the output-channel dim (None for pixels).
    use_bias: add a bias.
    zero_init: start from a zero kernel.
    dtype: compute dtype.
  """
  features: int
  factor: int = 2
  in_axis: Optional[str] = pt.CONV_IN
  out_axis: Optional[str] = pt.CONV_OUT
  use_bias: bool = False
  zero_init: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Maps f[B, h, w, C] to f[B, h*factor, w*factor, features]."""
    p = self.factor
    # variance_scaling would count p*p*C inputs per output; the true fan-in of
    # a stride-p transposed conv is C, hence the p*p scale.
    init = (pt.zeros_init if self.zero_init else
            pt.as_matrix_init(nn.initializers.variance_scaling(
                float(p * p), "fan_in", "truncated_normal")))
    kernel = self.param(
        "kernel",
        pt.logical_init(init, (pt.KERNEL_H, pt.KERNEL_W, self.in_axis,
                               self.out_axis)),
        (p, p, x.shape[-1], self.features), jnp.float32)
    y = jnp.einsum("bhwc,ijcd->bhiwjd", x.astype(self.dtype),
                   kernel.astype(self.dtype))
    y = einops.rearrange(y, "b h i w j d -> b (h i) (w j) d")
    if self.use_bias:
      bias = self.param("bias", pt.logical_init(pt.zeros_init,
                                                (self.out_axis,)),
                        (self.features,), jnp.float32)
      y = y + bias.astype(self.dtype)
    return y
