"""R3GAN's layers: bias-free convs with the fix-up init, biased leaky ReLU and
2x resampling, shared by the generator and discriminator (`networks.py`).

Resampling is the separable [1,3,3,1] filter (2x bilinear interpolation) with
zero borders, written as shifted adds rather than depthwise convolutions: it
is exact, cheap on every backend, and trivially twice differentiable.

Conv implementations: a 1x1 conv is one [pixels, C_in] x [C_in, C_out]
matmul; a k x k (grouped) conv is `lax.conv_general_dilated` ("lax") or a sum
of per-tap matmuls ("taps", the CPU default, optionally channels first).
"""

import math
from typing import Any, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen.nn import partitioning as pt

Dtype = Any

LRELU_SLOPE = 0.2
# He gain of leaky ReLU(0.2); folded into the init, as in the reference.
LRELU_GAIN = math.sqrt(2.0 / (1.0 + LRELU_SLOPE ** 2))


def msr_init(gain: float) -> pt.Initializer:
  """N(0, (gain/√fan_in)²) with fan_in = prod(shape[:-1]); zeros if gain=0.

  For a grouped HWIO kernel (k, k, C/groups, O) the fan-in is k·k·C/groups,
  the reference's `MSRInitializer`.

  Args:
    gain: the standard deviation times √fan_in.

  Returns:
    An initialiser.
  """
  if gain == 0.0:
    return pt.zeros_init
  return pt.as_matrix_init(
      nn.initializers.variance_scaling(gain ** 2, "fan_in", "normal"))


# -- resampling --------------------------------------------------------------


# The helpers below use lax ops rather than jnp.pad / jnp.einsum /
# jax.nn.leaky_relu, which are separately jitted functions: nested jits make
# tracing the double-backprop step several times slower.


def _pad(x: jax.Array, pads) -> jax.Array:
  """Zero padding by (low, high) per dimension."""
  return jax.lax.pad(x, jnp.zeros((), x.dtype), [(lo, hi, 0) for lo, hi in pads])


def _shift(x: jax.Array, axis: int, offset: int) -> jax.Array:
  """y[i] = x[i + offset] along `axis`, zero where that is out of range."""
  n = x.shape[axis]
  pads = [(0, 0)] * x.ndim
  if offset > 0:
    pads[axis] = (0, offset)
    return jax.lax.slice_in_dim(_pad(x, pads), offset, offset + n, axis=axis)
  pads[axis] = (-offset, 0)
  return jax.lax.slice_in_dim(_pad(x, pads), 0, n, axis=axis)


def precision(x: jax.Array):
  """HIGHEST for float32 operands, else the backend's default.

  XLA's default runs float32 matmuls and convs as TF32 on recent GPUs and
  as one bf16 pass on TPUs; the reference turns TF32 off ("numerical
  accuracy") for the float32 stages, the D head and R1 / R2's double
  backprop, whose transposes keep this setting. bf16 stages keep the
  default. Exact float32 on CPU either way.
  """
  return jax.lax.Precision.HIGHEST if x.dtype == jnp.float32 else None


def matmul(x: jax.Array, w: jax.Array) -> jax.Array:
  """x[..., c] @ w[c, d] as one [pixels, c] x [c, d] matmul.

  Flattened to 2-D because the transpose of an N-d dot_general (the weight
  gradient, at every order of R1/R2's double backprop) contracts several
  dims at once, which XLA:CPU runs off its fast matmul path.
  """
  y = jax.lax.dot_general(x.reshape(-1, x.shape[-1]), w,
                          (((1,), (0,)), ((), ())), precision=precision(x))
  return y.reshape(x.shape[:-1] + w.shape[1:])


def _leaky_relu(x: jax.Array) -> jax.Array:
  return jnp.where(x >= 0, x, LRELU_SLOPE * x)


def _upsample_1d(x: jax.Array, axis: int) -> jax.Array:
  # upfirdn with up=2 and the filter [1,3,3,1]/4: even outputs see x[i-1] and
  # x[i], odd ones x[i] and x[i+1], weighted 1:3.
  even = 0.25 * _shift(x, axis, -1) + 0.75 * x
  odd = 0.75 * x + 0.25 * _shift(x, axis, 1)
  y = jnp.stack([even, odd], axis=axis + 1)
  shape = list(x.shape)
  shape[axis] *= 2
  return y.reshape(shape)


def _downsample_1d(x: jax.Array, axis: int) -> jax.Array:
  # Filter [1,3,3,1]/8 at stride 2 with one zero on each border:
  # y[j] = (x[2j-1] + 3 x[2j] + 3 x[2j+1] + x[2j+2]) / 8.
  shape = list(x.shape)
  shape[axis: axis + 1] = [shape[axis] // 2, 2]
  pairs = x.reshape(shape)
  a = jax.lax.index_in_dim(pairs, 0, axis + 1, keepdims=False)
  b = jax.lax.index_in_dim(pairs, 1, axis + 1, keepdims=False)
  return (_shift(b, axis, -1) + 3.0 * (a + b) + _shift(a, axis, 1)) * 0.125


def upsample_2x(x: jax.Array, channels_first: bool = False) -> jax.Array:
  """2x bilinear upsampling of NHWC `x` ([1,3,3,1] filter, gain 4).

  Args:
    x: f[B, H, W, C] (channels first: f[C, B, H, W]).
    channels_first: the layout of x and the output.

  Returns:
    f[B, 2H, 2W, C] (channels first: f[C, B, 2H, 2W]).
  """
  h = 2 if channels_first else 1
  return _upsample_1d(_upsample_1d(x, h), h + 1)


def downsample_2x(x: jax.Array, channels_first: bool = False) -> jax.Array:
  """2x filtered downsampling of NHWC `x` ([1,3,3,1] filter, unit gain).

  Args:
    x: f[B, H, W, C] with even H and W (channels first: f[C, B, H, W]).
    channels_first: the layout of x and the output.

  Returns:
    f[B, H/2, W/2, C] (channels first: f[C, B, H/2, W/2]).
  """
  h = 2 if channels_first else 1
  return _downsample_1d(_downsample_1d(x, h), h + 1)


# -- layers ------------------------------------------------------------------


class Conv(nn.Module):
  """Bias-free conv: 1x1 as a matmul, k x k (optionally grouped) via lax.

  Attributes:
    features: output channels.
    kernel_size: 1 or an odd size (SAME padding).
    groups: feature groups of a k x k conv (channels / group width).
    gain: init gain (see `msr_init`); 0 zero-initialises.
    axes: logical names of the (input, output) channel dims.
    impl: k x k conv implementation: "lax" (one grouped convolution) or
      "taps" (the k·k shifted views side by side, then one group-batched
      matmul; much faster double backprop on CPU).
    channels_first: x and the output are [C, B, H, W] (1x1 convs and the
      "taps" form only; see `ResidualBlock`).
    dtype: compute dtype.
  """
  features: int
  kernel_size: int = 1
  groups: int = 1
  gain: float = 1.0
  axes: Tuple[Optional[str], Optional[str]] = (pt.CONV_IN, pt.CONV_OUT)
  impl: str = "lax"
  channels_first: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Maps f[B, H, W, C] to f[B, H, W, features] (channels first: f[C, B,
    H, W] to f[features, B, H, W])."""
    c_in = x.shape[0] if self.channels_first else x.shape[-1]
    if self.kernel_size == 1 and self.groups == 1:
      shape, names = (c_in, self.features), tuple(self.axes)
    else:
      k = self.kernel_size
      shape = (k, k, c_in // self.groups, self.features)
      names = (pt.KERNEL_H, pt.KERNEL_W) + tuple(self.axes)
    kernel = self.param("kernel", pt.logical_init(msr_init(self.gain), names),
                        shape, jnp.float32).astype(self.dtype)
    x = x.astype(self.dtype)
    if len(shape) == 2:
      mm = _matmul_cf if self.channels_first else matmul
      return mm(x, kernel)
    if self.impl == "taps":
      taps = _conv_taps_cf if self.channels_first else _conv_taps
      return taps(x, kernel, self.groups)
    if self.channels_first:
      raise ValueError("A channels-first k x k conv needs impl='taps'.")
    return jax.lax.conv_general_dilated(
        x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=self.groups, precision=precision(x))


def _conv_taps(x: jax.Array, kernel: jax.Array, groups: int) -> jax.Array:
  """SAME grouped conv as shifted views and group-batched matmuls.

  The same function as `lax.conv_general_dilated(feature_group_count=...)`.
  XLA:CPU runs the second-order gradient of a grouped conv (a conv with
  `batch_group_count`) more than 100x slower than this form, which matters
  for R1/R2 double backprop on CPU; accelerators use the lax conv.

  The input is moved group-major once ([g, pixels, C/g]: the matmul batches
  over a leading dim, so XLA adds no transpose around it) and only the k
  column shifts are stacked (k·C/g inputs); one matmul computes all k kernel
  rows at once (k·O/g outputs per group), and row i's output is shifted
  along H by i - k//2 before the rows are summed. Against stacking all k·k
  views pixel-major (one [pixels, k·k·C/g] x [k·k·C/g, O/g] matmul) this is
  2.0-2.4x faster for R1's double backprop at the `cifar10` shapes (one
  core). All taps are computed, including those on the zero border.

  Args:
    x: f[B, H, W, C].
    kernel: f[k, k, C/groups, O] (HWIO; output channel o is in group
      o // (O/groups)).
    groups: number of feature groups.

  Returns:
    f[B, H, W, O].
  """
  b, h, w, c = x.shape
  k, gi, o = kernel.shape[0], kernel.shape[2], kernel.shape[3]
  go, p = o // groups, k // 2
  xg = jnp.moveaxis(x.reshape(b, h, w, groups, gi), 3, 0)  # [g, b, h, w, gi]
  xg = _pad(xg, ((0, 0), (0, 0), (0, 0), (p, p), (0, 0)))
  cols = jnp.stack([xg[:, :, :, j:j + w] for j in range(k)], axis=4)
  cols = cols.reshape(groups, b * h * w, k * gi)
  # [g, (column j, gi), (row i, go)]
  rows = kernel.reshape(k, k, gi, groups, go).transpose(3, 1, 2, 0, 4)
  rows = rows.reshape(groups, k * gi, k * go)
  y = jax.lax.dot_general(cols, rows, (((2,), (1,)), ((0,), (0,))),
                          precision=precision(x))
  out = _sum_row_shifts(y.reshape(groups, b, h, w, k, go), 4, 2)
  return jnp.moveaxis(out, 0, 3).reshape(b, h, w, o)


def _matmul_cf(x: jax.Array, w: jax.Array) -> jax.Array:
  """w[c, d]ᵀ x[c, ...] as one [d, c] x [c, pixels] matmul (channels first)."""
  y = jax.lax.dot_general(w, x.reshape(x.shape[0], -1),
                          (((0,), (0,)), ((), ())), precision=precision(x))
  return y.reshape(w.shape[1:] + x.shape[1:])


def _conv_taps_cf(x: jax.Array, kernel: jax.Array, groups: int) -> jax.Array:
  """`_conv_taps` on channels-first activations.

  With channels leading, each group's input is [C/g, pixels] without a
  transpose, the column shifts are along contiguous memory, and the matmul
  [g, k·O/g, k·C/g] x [g, k·C/g, pixels] has its batch dim first already,
  so no layout copies are needed around it (in NHWC they are fused into the
  elementwise ops of the double backprop, at ~1-2 GB/s on one core).

  Args:
    x: f[C, B, H, W].
    kernel: f[k, k, C/groups, O] (HWIO, as `_conv_taps`).
    groups: number of feature groups.

  Returns:
    f[O, B, H, W].
  """
  c, b, h, w = x.shape
  k, gi, o = kernel.shape[0], kernel.shape[2], kernel.shape[3]
  go, p = o // groups, k // 2
  xg = _pad(x.reshape(groups, gi, b, h, w), ((0, 0),) * 4 + ((p, p),))
  cols = jnp.stack([xg[..., j:j + w] for j in range(k)], axis=1)
  cols = cols.reshape(groups, k * gi, b * h * w)  # [g, (column j, gi), px]
  # [g, (row i, go), (column j, gi)]
  rows = kernel.reshape(k, k, gi, groups, go).transpose(3, 0, 4, 1, 2)
  rows = rows.reshape(groups, k * go, k * gi)
  y = jax.lax.dot_general(rows, cols, (((2,), (1,)), ((0,), (0,))),
                          precision=precision(x))
  out = _sum_row_shifts(y.reshape(groups, k, go, b, h, w), 1, 3)
  return out.reshape(o, b, h, w)


def _sum_row_shifts(y: jax.Array, row_axis: int, h_axis: int) -> jax.Array:
  """Sums the per-kernel-row outputs of the taps forms, each shifted in H.

  Row i of a k x k kernel reads input row r + i - k//2, so its output is
  shifted by that offset before the rows are summed.

  Args:
    y: outputs with the k kernel rows along `row_axis`.
    row_axis: the kernel-row dim of y.
    h_axis: the H dim once `row_axis` is taken out.

  Returns:
    y summed over its kernel rows.
  """
  k = y.shape[row_axis]
  out = None
  for i in range(k):
    yi = _shift(jax.lax.index_in_dim(y, i, row_axis, keepdims=False), h_axis,
                i - k // 2)
    out = yi if out is None else out + yi
  return out


class BiasedActivation(nn.Module):
  """lrelu(x + b, 0.2); the gain lives in the next layer's init.

  Attributes:
    axis: logical name of the channel dim of the bias.
    channel_axis: the channel dim of x (0 for channels-first activations).
  """
  axis: Optional[str] = pt.MLP
  channel_axis: int = -1

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    bias = self.param("bias", pt.logical_init(pt.zeros_init, (self.axis,)),
                      (x.shape[self.channel_axis],), jnp.float32)
    shape = [1] * x.ndim
    shape[self.channel_axis] = -1
    return _leaky_relu(x + bias.astype(x.dtype).reshape(shape))
