"""R3GAN's generator and discriminator (Config E: ResNeXt-ified, no norms).

Both networks are stacks of resolution stages, symmetric to each other:

  G: z (+ class embedding) -> learned 4x4 basis modulated by a linear map of z
     -> [2 residual blocks] at 4x4 -> per stage: 1x1 conv (if the width
     changes), bilinear 2x upsampling, 2 residual blocks -> 1x1 conv to RGB.
  D: 1x1 conv from RGB -> per stage: 2 residual blocks, bilinear 2x
     downsampling, 1x1 conv (if the width changes) -> at 4x4: 2 residual
     blocks, a depthwise 4x4 "valid" conv, a linear layer to one logit (or a
     projection onto a class embedding when conditional).

Residual block (inverted bottleneck, ResNeXt grouped conv):
  x + Conv1x1(2C→C)(lrelu(b2 + GConv3x3(2C→2C, groups of `group_width`)(
      lrelu(b1 + Conv1x1(C→2C)(x)))))
There is no normalisation layer of any kind and no batch-coupled op, which
the per-sample R1/R2 gradients rely on.

Initialisation (fix-up variant): every weight is N(0, (gain/√fan_in)²); the
first two convs of a block use gain √(2/(1+0.2²))·L^(−1/4), with L the number
of residual blocks in the network (a block has m = 3 layers, so the exponent
is −1/(2m−2)); the last 1x1 conv is zero, so every block is the identity at
init and the network is a shallow linear map of its stem. Biases are zero.

Layout: NHWC in and out. With `conv_impl="taps"` (the CPU default) the
stream inside both networks is channels first, [C, B, H, W]: its 1x1 convs
are [C_out, C_in] x [C_in, pixels] matmuls and the grouped conv needs no
layout copies (about 2% faster per R3GAN step on one core than NHWC between
blocks; experiments/performance/report.md). Parameters are the same in both.

Resampling is the separable [1,3,3,1] filter (2x bilinear interpolation) with
zero borders, written as shifted adds rather than depthwise convolutions: it
is exact, cheap on every backend, and trivially twice differentiable.

Mixed precision: parameters are float32; the highest-resolution
`low_precision_stages` stages compute in `dtype` (bf16 on accelerators), the
rest in float32 (the reference: 3 stages for 32 px models, 4 above).

Logical axis names: the residual-stream channels are `embed` (→ fsdp) and
the expanded 2C channels `mlp` (→ tensor), so a block is sharded like a
transformer MLP; the grouped conv's per-group input dim is `conv_in` and the
transition convs use `conv_in`/`conv_out`; class tables are (classes, cond).
"""

import math
from typing import Any, Optional, Sequence, Tuple

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


def _matmul(x: jax.Array, w: jax.Array) -> jax.Array:
  """x[..., c] @ w[c, d] as one [pixels, c] x [c, d] matmul.

  Flattened to 2-D because the transpose of an N-d dot_general (the weight
  gradient, at every order of R1/R2's double backprop) contracts several
  dims at once, which XLA:CPU runs off its fast matmul path.
  """
  y = jax.lax.dot_general(x.reshape(-1, x.shape[-1]), w,
                          (((1,), (0,)), ((), ())))
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
      mm = _matmul_cf if self.channels_first else _matmul
      return mm(x, kernel)
    if self.impl == "taps":
      taps = _conv_taps_cf if self.channels_first else _conv_taps
      return taps(x, kernel, self.groups)
    if self.channels_first:
      raise ValueError("A channels-first k x k conv needs impl='taps'.")
    return jax.lax.conv_general_dilated(
        x, kernel, (1, 1), "SAME", dimension_numbers=("NHWC", "HWIO", "NHWC"),
        feature_group_count=self.groups)


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
  y = jax.lax.dot_general(cols, rows, (((2,), (1,)), ((0,), (0,))))
  out = _sum_row_shifts(y.reshape(groups, b, h, w, k, go), 4, 2)
  return jnp.moveaxis(out, 0, 3).reshape(b, h, w, o)


def _matmul_cf(x: jax.Array, w: jax.Array) -> jax.Array:
  """w[c, d]ᵀ x[c, ...] as one [d, c] x [c, pixels] matmul (channels first)."""
  y = jax.lax.dot_general(w, x.reshape(x.shape[0], -1),
                          (((0,), (0,)), ((), ())))
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
  y = jax.lax.dot_general(rows, cols, (((2,), (1,)), ((0,), (0,))))
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


class ResidualBlock(nn.Module):
  """1x1 → grouped 3x3 → 1x1 inverted-bottleneck block with fix-up init.

  Attributes:
    group_width: channels per group of the 3x3 conv (16 in the paper's
      CIFAR/FFHQ models, 32 for ImageNet).
    expansion: hidden width / stream width (2: inverted bottleneck).
    num_blocks: L, residual blocks in the whole network (init scale).
    conv_impl: implementation of the grouped conv (see `Conv.impl`).
    channels_first: x and the output are f[C, B, H, W] (needs "taps").
    dtype: compute dtype.
  """
  group_width: int = 16
  expansion: int = 2
  num_blocks: int = 1
  conv_impl: str = "lax"
  channels_first: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    """Maps f[B, H, W, C] to f[B, H, W, C] (identity at init; channels
    first: f[C, B, H, W] to f[C, B, H, W])."""
    c = x.shape[0] if self.channels_first else x.shape[-1]
    hidden = c * self.expansion
    if hidden % self.group_width:
      raise ValueError(f"Hidden width {hidden} is not a multiple of the group "
                       f"width {self.group_width}.")
    gain = LRELU_GAIN * self.num_blocks ** (-0.25)
    x = x.astype(self.dtype)
    # The CPU form runs the block channels first ([C, B, H, W]): its 1x1
    # convs and grouped conv then need no layout copies inside the block,
    # which made R1's double backprop through a 32 px block pair ~15%
    # faster on one core (experiments/performance/report.md). Same
    # parameters, same values. The networks keep the whole stream channels
    # first on that path; an NHWC input is moved in and out here.
    cf = self.conv_impl == "taps"
    if self.channels_first and not cf:
      raise ValueError("A channels-first ResidualBlock needs conv_impl='taps'.")
    move = cf and not self.channels_first
    ca = 0 if cf else -1
    h = _to_cf(x) if move else x
    h = Conv(hidden, gain=gain, axes=(pt.EMBED, pt.MLP), channels_first=cf,
             dtype=self.dtype, name="conv_expand")(h)
    h = BiasedActivation(channel_axis=ca, name="act_expand")(h)
    h = Conv(hidden, 3, groups=hidden // self.group_width, gain=gain,
             axes=(pt.CONV_IN, pt.MLP), impl=self.conv_impl,
             channels_first=cf, dtype=self.dtype, name="conv_group")(h)
    h = BiasedActivation(channel_axis=ca, name="act_group")(h)
    h = Conv(c, gain=0.0, axes=(pt.MLP, pt.EMBED), channels_first=cf,
             dtype=self.dtype, name="conv_project")(h)
    h = _from_cf(h) if move else h
    return pt.constrain(x + h, CF_ACT if self.channels_first else pt.CONV_ACT)


# Logical names of a channels-first activation f[C, B, H, W].
CF_ACT = (pt.ACT_CHANNELS, pt.ACT_BATCH, pt.ACT_HEIGHT, pt.ACT_WIDTH)


def _to_cf(x: jax.Array) -> jax.Array:
  """NHWC -> [C, B, H, W]."""
  return jnp.moveaxis(x, -1, 0)


def _from_cf(x: jax.Array) -> jax.Array:
  """[C, B, H, W] -> NHWC."""
  return jnp.moveaxis(x, 0, -1)


def _embed(table: jax.Array, labels: jax.Array) -> jax.Array:
  """Rows of a class table for a batch of labels, batch-sharded.

  The (small) table is gathered whole first, FSDP-style, so the lookup's
  output follows the batch sharding instead of the table's.
  """
  table = pt.constrain(table, (None, None))
  return pt.constrain(table[labels], (pt.ACT_BATCH, None))


def _stage_dtype(index_from_top: int, low_precision_stages: int,
                 dtype: Dtype) -> Dtype:
  """`dtype` for the top `low_precision_stages` stages, float32 below."""
  return dtype if index_from_top < low_precision_stages else jnp.float32


class Generator(nn.Module):
  """R3GAN generator: z (, labels) -> images f[B, H, W, channels].

  Attributes:
    widths: stream width per stage, from 4x4 up (H = 4·2^(len−1)).
    group_width: channels per group of the grouped convs.
    blocks_per_stage: residual blocks per stage (2 in the paper).
    expansion: inverted-bottleneck expansion (2).
    num_classes: 0 = unconditional; else labels are embedded and
      concatenated to z.
    cond_dim: width of the class embedding (64 in the paper).
    channels: output channels.
    low_precision_stages: highest-resolution stages computed in `dtype`.
    conv_impl: implementation of the grouped convs (see `Conv.impl`).
    dtype: low-precision compute dtype.
  """
  widths: Sequence[int]
  group_width: int = 16
  blocks_per_stage: int = 2
  expansion: int = 2
  num_classes: int = 0
  cond_dim: int = 64
  channels: int = 3
  low_precision_stages: int = 0
  conv_impl: str = "lax"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, z: jax.Array,
               labels: Optional[jax.Array] = None) -> jax.Array:
    """Generates images.

    Args:
      z: f[B, noise_dim] standard normal noise (not normalised).
      labels: i32[B] class labels (used iff num_classes > 0).

    Returns:
      f32[B, H, W, channels]; no output non-linearity (data is in [-1, 1]).
    """
    n = len(self.widths)
    num_blocks = n * self.blocks_per_stage
    z = z.astype(jnp.float32)
    if self.num_classes:
      # A gather from the table equals the reference's bias-free Linear on a
      # one-hot (gain 1: std 1/√num_classes), without the matmul.
      table = self.param(
          "class_embed", pt.logical_init(
              nn.initializers.normal(1.0 / math.sqrt(self.num_classes)),
              (pt.CLASSES, pt.COND)),
          (self.num_classes, self.cond_dim), jnp.float32)
      z = jnp.concatenate([z, _embed(table, labels)], axis=-1)
    w0 = self.widths[0]
    dt = _stage_dtype(n - 1, self.low_precision_stages, self.dtype)
    basis = self.param("basis", pt.logical_init(
        nn.initializers.normal(1.0), (pt.KERNEL_H, pt.KERNEL_W, pt.EMBED)),
                       (4, 4, w0), jnp.float32)
    mod = self.param("modulation", pt.logical_init(
        msr_init(1.0), (pt.COND, pt.CONV_OUT)), (z.shape[-1], w0),
                     jnp.float32)
    x = (basis[None].astype(dt) *
         _matmul(z.astype(dt), mod.astype(dt))[:, None, None, :])
    # The CPU form ("taps") keeps the stream channels first end to end: no
    # layout copies at the blocks' borders (see `ResidualBlock`).
    cf = self.conv_impl == "taps"
    x = _to_cf(x) if cf else x
    for i, width in enumerate(self.widths):
      dt = _stage_dtype(n - 1 - i, self.low_precision_stages, self.dtype)
      if i > 0:
        # Channels change at the low resolution, then the image is upsampled.
        if x.shape[0 if cf else -1] != width:
          x = Conv(width, channels_first=cf, dtype=dt,
                   name=f"stage{i}_transition")(x)
        x = upsample_2x(x.astype(dt), cf)
      for j in range(self.blocks_per_stage):
        x = ResidualBlock(self.group_width, self.expansion, num_blocks,
                          self.conv_impl, channels_first=cf, dtype=dt,
                          name=f"stage{i}_block{j}")(x)
    x = Conv(self.channels, axes=(pt.EMBED, None), channels_first=cf,
             dtype=dt, name="to_rgb")(x)
    x = _from_cf(x) if cf else x
    return x.astype(jnp.float32)


class Discriminator(nn.Module):
  """R3GAN discriminator: images (, labels) -> one logit per image.

  Attributes:
    widths: stream width per stage from 4x4 up, i.e. the generator's list
      (the discriminator walks it in reverse).
    group_width: channels per group of the grouped convs.
    blocks_per_stage: residual blocks per stage.
    expansion: inverted-bottleneck expansion.
    num_classes: 0 = unconditional; else a projection discriminator.
    low_precision_stages: highest-resolution stages computed in `dtype`.
    conv_impl: implementation of the grouped convs (see `Conv.impl`).
    dtype: low-precision compute dtype.
  """
  widths: Sequence[int]
  group_width: int = 16
  blocks_per_stage: int = 2
  expansion: int = 2
  num_classes: int = 0
  low_precision_stages: int = 0
  conv_impl: str = "lax"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array,
               labels: Optional[jax.Array] = None) -> jax.Array:
    """Scores images.

    Args:
      x: f[B, H, W, C] images in [-1, 1].
      labels: i32[B] class labels (used iff num_classes > 0).

    Returns:
      f32[B] logits (higher = more real).
    """
    widths = list(reversed(self.widths))
    n = len(widths)
    num_blocks = n * self.blocks_per_stage
    dt = _stage_dtype(0, self.low_precision_stages, self.dtype)
    # Channels first end to end on the CPU form, as in the generator.
    cf = self.conv_impl == "taps"
    x = _to_cf(x) if cf else x
    x = Conv(widths[0], axes=(None, pt.EMBED), channels_first=cf, dtype=dt,
             name="from_rgb")(x)
    for i, width in enumerate(widths):
      dt = _stage_dtype(i, self.low_precision_stages, self.dtype)
      for j in range(self.blocks_per_stage):
        x = ResidualBlock(self.group_width, self.expansion, num_blocks,
                          self.conv_impl, channels_first=cf, dtype=dt,
                          name=f"stage{i}_block{j}")(x)
      if i < n - 1:
        # The image is downsampled first, then the channels change.
        x = downsample_2x(x.astype(dt), cf)
        if widths[i + 1] != width:
          x = Conv(widths[i + 1], channels_first=cf, dtype=dt,
                   name=f"stage{i}_transition")(x)
    x = _from_cf(x) if cf else x
    x = x.astype(jnp.float32)
    c = x.shape[-1]
    # Depthwise 4x4 "valid" conv: 4x4 -> 1x1 with one filter per channel.
    basis = self.param("basis", pt.logical_init(
        msr_init(1.0), (pt.KERNEL_H, pt.KERNEL_W, pt.EMBED)), (4, 4, c),
                       jnp.float32)
    # Batch-sharded features: FSDP gathers the (small) head weights instead
    # of resharding activations across the batch.
    feat = pt.constrain(jnp.sum(x * basis, axis=(1, 2)), (pt.ACT_BATCH, None))
    out_dim = c if self.num_classes else 1
    head = self.param("head", pt.logical_init(
        msr_init(1.0), (pt.EMBED, pt.CONV_OUT if self.num_classes else None)),
                      (c, out_dim), jnp.float32)
    feat = pt.constrain(_matmul(feat, head), (pt.ACT_BATCH, None))
    if not self.num_classes:
      return feat[:, 0]
    # Projection discriminator: <D'(x), E(c)>, E initialised with gain
    # 1/√(embedding dim) as in the reference.
    table = self.param("class_embed", pt.logical_init(
        nn.initializers.normal(1.0 / math.sqrt(c * self.num_classes)),
        (pt.CLASSES, pt.COND)), (self.num_classes, c), jnp.float32)
    return jnp.sum(feat * _embed(table, labels), axis=-1)


# -- accounting ----------------------------------------------------------------


def _block_macs(size: int, c: int, expansion: int, group_width: int) -> int:
  # The 3x3 conv is counted with all 9 taps (the usual convention, and what
  # the "taps" form computes); XLA's count of a lax conv skips the taps on the
  # zero border, e.g. 14% fewer at 8x8, 2% fewer at 64x64.
  hidden = c * expansion
  return size * size * (2 * c * hidden + 9 * group_width * hidden)


def generator_macs(widths: Sequence[int], *, group_width: int = 16,
                   blocks_per_stage: int = 2, expansion: int = 2,
                   noise_dim: int = 64, cond_dim: int = 0,
                   channels: int = 3) -> int:
  """Multiply-accumulates of one generator forward pass, per example.

  Counts every matmul and convolution (3x3 convs with all 9 taps); the
  resampling adds, the basis modulation and the activations are elementwise
  and not counted.

  Args:
    widths: stage widths from 4x4 up.
    group_width: grouped-conv group width.
    blocks_per_stage: residual blocks per stage.
    expansion: inverted-bottleneck expansion.
    noise_dim: z width.
    cond_dim: class-embedding width (0 if unconditional).
    channels: output channels.

  Returns:
    MACs per example.
  """
  macs = (noise_dim + cond_dim) * widths[0]
  size, prev = 4, widths[0]
  for i, w in enumerate(widths):
    if i > 0:
      if w != prev:
        macs += size * size * prev * w  # 1x1 at the lower resolution.
      size *= 2
    macs += blocks_per_stage * _block_macs(size, w, expansion, group_width)
    prev = w
  return macs + size * size * prev * channels


def discriminator_macs(widths: Sequence[int], *, group_width: int = 16,
                       blocks_per_stage: int = 2, expansion: int = 2,
                       num_classes: int = 0, channels: int = 3) -> int:
  """Multiply-accumulates of one discriminator forward pass, per example.

  Args:
    widths: the generator's stage widths (4x4 first).
    group_width: grouped-conv group width.
    blocks_per_stage: residual blocks per stage.
    expansion: inverted-bottleneck expansion.
    num_classes: 0 = unconditional (projection head otherwise).
    channels: input channels.

  Returns:
    MACs per example.
  """
  ws = list(reversed(widths))
  size = 4 * 2 ** (len(ws) - 1)
  macs = size * size * channels * ws[0]
  for i, w in enumerate(ws):
    macs += blocks_per_stage * _block_macs(size, w, expansion, group_width)
    if i < len(ws) - 1:
      size //= 2
      if ws[i + 1] != w:
        macs += size * size * w * ws[i + 1]  # 1x1 after downsampling.
  c = ws[-1]
  macs += 16 * c  # Depthwise 4x4 basis.
  macs += c * (c if num_classes else 1)
  if num_classes:
    macs += c  # Projection dot product.
  return macs
