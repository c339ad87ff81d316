"""Dense and convolution layers whose parameters carry logical axis names.

Flax's own `nn.Dense` / `nn.DenseGeneral` reshape kernels inside their
initialisers, which does not mix well with boxed (named) parameters, so these
small layers create their parameters directly. Parameters are stored in
`param_dtype` (float32) and cast to the compute `dtype` at use.
"""

from typing import Any, Optional, Sequence, Tuple, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxgen.nn import partitioning as pt

Dtype = Any


class Dense(nn.Module):
  """Affine map over the last `len(kernel_axes) - len(features)` axes of x.

  With one input axis and an int `features` this is an ordinary dense layer;
  with `features=(heads, head_dim)` it is a q/k/v projection; with two input
  axes and one output axis it is the attention output projection.

  Attributes:
    features: output feature size(s).
    kernel_axes: logical names, input dims first, then output dims.
    num_in_axes: how many trailing axes of x are contracted.
    use_bias: add a bias (named like the output dims).
    kernel_init: initialiser of the kernel (default xavier uniform).
    dtype: compute dtype.
    param_dtype: parameter dtype.
  """
  features: Union[int, Sequence[int]]
  kernel_axes: Tuple[Optional[str], ...]
  num_in_axes: int = 1
  use_bias: bool = True
  kernel_init: pt.Initializer = pt.dense_init
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Applies the layer.

    Args:
      x: array whose last `num_in_axes` axes are the input features.

    Returns:
      Array with those axes replaced by `features`.
    """
    feats = ((self.features,) if isinstance(self.features, int)
             else tuple(self.features))
    in_shape = x.shape[x.ndim - self.num_in_axes:]
    if len(self.kernel_axes) != len(in_shape) + len(feats):
      raise ValueError(f"kernel_axes {self.kernel_axes} do not match input "
                       f"dims {in_shape} and features {feats}.")
    kernel_shape = in_shape + feats

    def init(key, shape, dtype):
      # Fan-in/fan-out of the flattened matrix, whatever the axis grouping.
      flat = (int(np.prod(in_shape)), int(np.prod(feats)))
      return self.kernel_init(key, flat, dtype).reshape(shape)

    kernel = self.param("kernel", pt.logical_init(init, self.kernel_axes),
                        kernel_shape, self.param_dtype)
    x = x.astype(self.dtype)
    # Contract a [tokens, fan_in] matrix, not the N-d input: the transpose
    # of an N-d dot_general (the kernel gradient) contracts several batch
    # dims at once, which XLA:CPU runs off its fast matmul path (2x slower
    # at width 64). Merging the (major-sharded) leading and input dims keeps
    # every sharding representable; output dims stay separate because the
    # FiLM kernel shards its minor dim.
    lead = x.shape[:x.ndim - self.num_in_axes]
    fan_in = int(np.prod(in_shape))
    y = jax.lax.dot_general(
        x.reshape(-1, fan_in),
        kernel.astype(self.dtype).reshape((fan_in,) + feats),
        (((1,), (0,)), ((), ())))
    y = y.reshape(lead + feats)
    if self.use_bias:
      bias = self.param(
          "bias",
          pt.logical_init(pt.zeros_init, self.kernel_axes[self.num_in_axes:]),
          feats, self.param_dtype)
      y = y + bias.astype(self.dtype)
    return y


class Conv(nn.Module):
  """2-D convolution, NHWC, HWIO kernel, padded by kernel_size // 2.

  For odd kernels this is SAME padding at stride 1, and at stride 2 it pads
  both sides like PyTorch's `padding=k // 2` (XLA's SAME would pad only the
  far side), so converted PyTorch weights see the same pixels.

  Attributes:
    features: output channels.
    kernel_size: spatial kernel size (square).
    in_axis: logical name of the input-channel dim (None for pixel channels).
    out_axis: logical name of the output-channel dim.
    use_bias: add a bias.
    groups: feature groups (channels for a depthwise conv); the kernel's
      input dim is then C / groups.
    strides: spatial stride.
    kernel_init: kernel initialiser (default truncated-normal fan-in).
    dtype: compute dtype.
    param_dtype: parameter dtype.
    padding: explicit ((top, bottom), (left, right)) padding instead
      (e.g. SD-VAE's stride-2 ((0, 1), (0, 1))).
    impl: "lax" (XLA's convolution) or "winograd": a dense 3x3, stride-1,
      pad-1 float32 conv with at least `WINOGRAD_MIN_CHANNELS` channels on
      both sides then runs as `winograd_conv3x3` (2.25x fewer multiplies;
      the fast form on CPU, see `resolve_conv_impl`; its backward pass
      keeps the transformed input, 4x the conv's input); any other conv
      runs through lax either way.
  """
  features: int
  kernel_size: int = 3
  in_axis: Optional[str] = pt.CONV_IN
  out_axis: Optional[str] = pt.CONV_OUT
  use_bias: bool = True
  groups: int = 1
  strides: int = 1
  kernel_init: pt.Initializer = pt.conv_init
  dtype: Dtype = jnp.float32
  param_dtype: Dtype = jnp.float32
  padding: Optional[Any] = None
  impl: str = "lax"

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Applies the convolution.

    Args:
      x: f[B, H, W, C].

    Returns:
      f[B, H, W, features].
    """
    k = self.kernel_size
    kernel = self.param(
        "kernel",
        pt.logical_init(self.kernel_init,
                        (pt.KERNEL_H, pt.KERNEL_W, self.in_axis,
                         self.out_axis)),
        (k, k, x.shape[-1] // self.groups, self.features), self.param_dtype)
    pad = ((k // 2, k // 2),) * 2 if k % 2 else "SAME"
    if self.padding is not None:
      pad = tuple(tuple(p) for p in self.padding)
    c_in = x.shape[-1]
    if self.impl not in CONV_IMPLS:
      raise ValueError(f"Conv impl={self.impl!r}; use one of {CONV_IMPLS}.")
    if (self.impl == "winograd" and k == 3 and self.strides == 1
        and self.groups == 1 and pad == ((1, 1), (1, 1))
        and min(c_in, self.features) >= WINOGRAD_MIN_CHANNELS
        and jnp.dtype(self.dtype) == jnp.float32):
      y = winograd_conv3x3(x.astype(self.dtype), kernel.astype(self.dtype))
    elif (self.groups == c_in == self.features and self.strides == 1
          and self.groups > 1):
      y = depthwise_taps(x.astype(self.dtype), kernel.astype(self.dtype), pad)
    elif k == 1 and self.strides == 1 and 1 < self.groups < c_in:
      # A grouped (not depthwise) 1x1 conv as a per-group matmul: XLA's SPMD
      # partitioner returns wrong values for grouped convolutions whose
      # input channels are sharded (jax 0.10, seen on CPU), and the einsum
      # is the same arithmetic.
      g = self.groups
      xg = x.astype(self.dtype).reshape(x.shape[:-1] + (g, c_in // g))
      kg = kernel.astype(self.dtype).reshape(c_in // g, g,
                                             self.features // g)
      y = jnp.einsum("...gi,igo->...go", xg, kg).reshape(
          x.shape[:-1] + (self.features,))
    else:
      y = jax.lax.conv_general_dilated(
          x.astype(self.dtype), kernel.astype(self.dtype),
          (self.strides, self.strides), pad,
          dimension_numbers=("NHWC", "HWIO", "NHWC"),
          feature_group_count=self.groups)
    if self.use_bias:
      bias = self.param("bias", pt.logical_init(pt.zeros_init,
                                                (self.out_axis,)),
                        (self.features,), self.param_dtype)
      y = y + bias.astype(self.dtype)
    return y


CONV_IMPLS = ("lax", "winograd")
# Below this many input or output channels the Winograd transforms cost more
# than the multiplies they save (one CPU core: 64 channels at 32x32, batch 4
# is 0.7x lax forward and 1.0x forward + backward; 32 channels is slower).
WINOGRAD_MIN_CHANNELS = 64


def resolve_conv_impl(name: str, field: str = "conv_impl") -> str:
  """A config's conv implementation: "auto" is "winograd" on CPU, where
  XLA's direct convolution runs within 7% of oneDNN's multiply rate and
  Winograd's 2.25x fewer multiplies make 3x3 convs 1.5-2x faster, and
  "lax" on GPU / TPU, whose convolution libraries pick their own
  algorithms.

  Args:
    name: "auto", "lax" or "winograd".
    field: the config field named in the error.

  Returns:
    "lax" or "winograd".

  Raises:
    ValueError: one line, for any other name.
  """
  if name == "auto":
    return "winograd" if jax.default_backend() == "cpu" else "lax"
  if name not in CONV_IMPLS:
    raise ValueError(f"{field}={name!r}; use 'auto', 'lax' or 'winograd'.")
  return name


def _winograd_data(d):
  """B^T d over 4 views of an axis: F(2, 3)'s input transform."""
  return [d[0] - d[2], d[1] + d[2], d[2] - d[1], d[1] - d[3]]


def _winograd_kernel(g):
  """G g over the 3 taps of an axis: F(2, 3)'s kernel transform."""
  return [g[0], (g[0] + g[1] + g[2]) * 0.5, (g[0] - g[1] + g[2]) * 0.5, g[2]]


def _winograd_output(m):
  """A^T m over 4 transformed positions: F(2, 3)'s 2 outputs."""
  return [m[0] + m[1] + m[2], m[1] - m[2] - m[3]]


def winograd_conv3x3(x: jax.Array, kernel: jax.Array) -> jax.Array:
  """A 3x3 convolution (stride 1, one zero pixel of padding) by Winograd's
  minimal filtering F(2x2, 3x3) (Lavin & Gray 2016).

  Each 2x2 output tile is A^T [(G g G^T) . (B^T d B)] A of the 4x4 input
  tile d around it, summed over input channels, so the channel contraction
  is 16 matmuls [tiles, C_in] x [C_in, C_out] (one per transformed
  position): 16 multiplies per 4 outputs instead of 36. The transforms are
  additions and halvings applied to strided views, axis by axis. Values
  equal a direct convolution's up to float32 rounding (the transforms'
  coefficients are 0, +-1 and 1/2); gradients follow by autodiff and are
  the same kind of batched matmul. Odd sizes get one more zero row /
  column, cropped from the output.

  Args:
    x: f[B, H, W, C].
    kernel: f[3, 3, C, O] (HWIO).

  Returns:
    f[B, H, W, O].
  """
  b, h, w, c = x.shape
  o = kernel.shape[-1]
  h2, w2 = -(-h // 2), -(-w // 2)
  xp = jnp.pad(x, ((0, 0), (1, 1 + h % 2), (1, 1 + w % 2), (0, 0)))
  # V[a, b'] = (B^T d B)[a, b'] for every tile: rows, then columns.
  rows = _winograd_data([xp[:, i:i + 2 * h2:2] for i in range(4)])
  v = jnp.stack([jnp.stack(_winograd_data([r[:, :, j:j + 2 * w2:2]
                                           for j in range(4)]))
                 for r in rows])                         # [4, 4, B, h2, w2, C]
  # U = G g G^T written out with adds (an einsum against G makes XLA:CPU
  # pass over the [4, 4, C, O] result several times: 2x the whole conv's
  # time at 1024 channels).
  u = jnp.stack([jnp.stack(_winograd_kernel([r[j] for j in range(3)]))
                 for r in _winograd_kernel([kernel[i] for i in range(3)])])
  # The matmuls over flattened tiles: a 2-D contraction per position keeps
  # XLA:CPU on its fast matmul path (see `Dense`).
  m = jnp.einsum("pnc,pco->pno", v.reshape(16, b * h2 * w2, c),
                 u.reshape(16, c, o)).reshape(4, 4, b * h2 * w2, o)
  y = jnp.stack([jnp.stack(_winograd_output(t))
                 for t in _winograd_output(m)])           # [2, 2, tiles, O]
  y = jnp.transpose(y.reshape(2, 2, b, h2, w2, o), (2, 3, 0, 4, 1, 5))
  return y.reshape(b, 2 * h2, 2 * w2, o)[:, :h, :w]


def depthwise_taps(x: jax.Array, kernel: jax.Array, padding) -> jax.Array:
  """A stride-1 depthwise convolution as a sum of shifted, scaled copies.

  Exact, and partitioned correctly: the weight gradient of XLA's depthwise
  convolution (a `batch_group_count` conv) is multiplied by the number of
  devices the batch is *not* sharded over when a mesh axis replicates it
  (jax 0.10: 4x on a (2, 2, 2) mesh with the batch over "data"), which the
  elementwise form avoids. Every tap is computed, padding included.

  Args:
    x: f[B, H, W, C].
    kernel: f[kh, kw, 1, C].
    padding: "SAME" or ((top, bottom), (left, right)).

  Returns:
    f[B, H', W', C].
  """
  kh, kw = kernel.shape[:2]
  if isinstance(padding, str):  # XLA's SAME: the extra pad goes last.
    padding = tuple(((k - 1) // 2, k - 1 - (k - 1) // 2) for k in (kh, kw))
  (top, bottom), (left, right) = padding
  xp = jnp.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)))
  h = xp.shape[1] - kh + 1
  w = xp.shape[2] - kw + 1
  y = None
  for i in range(kh):
    for j in range(kw):
      term = xp[:, i:i + h, j:j + w, :] * kernel[i, j, 0]
      y = term if y is None else y + term
  return y


def conv_same_macs(height: int, width: int, kernel_size: int, c_in: int,
                   c_out: int) -> int:
  """Multiply-accumulates of a stride-1 SAME conv that touch real inputs.

  Taps falling on the zero padding are not counted, matching XLA's
  `cost_analysis()`; for a 128x128 map and a 3x3 kernel the padded count is
  only 1.6% higher.

  Args:
    height: feature-map height.
    width: feature-map width.
    kernel_size: odd square kernel size.
    c_in: input channels.
    c_out: output channels.

  Returns:
    The MAC count per example.
  """
  def valid_taps(n):
    half = kernel_size // 2
    return sum(min(n - 1, i + half) - max(0, i - half) + 1 for i in range(n))
  return valid_taps(height) * valid_taps(width) * c_in * c_out
