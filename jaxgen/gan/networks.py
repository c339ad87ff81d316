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

The layers (convs, biased activation, 2x resampling) are in `layers.py`.

Mixed precision: parameters are float32; the highest-resolution
`low_precision_stages` stages compute in `dtype` (bf16 on accelerators), the
rest in float32 (the reference: 3 stages for 32 px models, 4 above).

Logical axis names: the residual-stream channels are `embed` (→ fsdp) and
the expanded 2C channels `mlp` (→ tensor), so a block is sharded like a
transformer MLP; the grouped conv's per-group input dim is `conv_in` and the
transition convs use `conv_in`/`conv_out`; class tables are (classes, cond).
"""

import math
from typing import Any, Optional, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen.gan import layers
from jaxgen.nn import partitioning as pt

Dtype = Any

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
    gain = layers.LRELU_GAIN * self.num_blocks ** (-0.25)
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
    h = layers.Conv(hidden, gain=gain, axes=(pt.EMBED, pt.MLP),
                    channels_first=cf, dtype=self.dtype,
                    name="conv_expand")(h)
    h = layers.BiasedActivation(channel_axis=ca, name="act_expand")(h)
    h = layers.Conv(hidden, 3, groups=hidden // self.group_width, gain=gain,
                    axes=(pt.CONV_IN, pt.MLP), impl=self.conv_impl,
                    channels_first=cf, dtype=self.dtype, name="conv_group")(h)
    h = layers.BiasedActivation(channel_axis=ca, name="act_group")(h)
    h = layers.Conv(c, gain=0.0, axes=(pt.MLP, pt.EMBED), channels_first=cf,
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
  if labels is None:
    raise ValueError(f"a class-conditional network ({table.shape[0]} "
                     "classes) needs labels; pass labels=[N] class ids or "
                     "build it with num_classes=0.")
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
    mod = self.param(
        "modulation",
        pt.logical_init(layers.msr_init(1.0), (pt.COND, pt.CONV_OUT)),
        (z.shape[-1], w0), jnp.float32)
    x = (basis[None].astype(dt) *
         layers.matmul(z.astype(dt), mod.astype(dt))[:, None, None, :])
    # The CPU form ("taps") keeps the stream channels first end to end: no
    # layout copies at the blocks' borders (see `ResidualBlock`).
    cf = self.conv_impl == "taps"
    x = _to_cf(x) if cf else x
    for i, width in enumerate(self.widths):
      dt = _stage_dtype(n - 1 - i, self.low_precision_stages, self.dtype)
      if i > 0:
        # Channels change at the low resolution, then the image is upsampled.
        if x.shape[0 if cf else -1] != width:
          x = layers.Conv(width, channels_first=cf, dtype=dt,
                          name=f"stage{i}_transition")(x)
        x = layers.upsample_2x(x.astype(dt), cf)
      for j in range(self.blocks_per_stage):
        x = ResidualBlock(self.group_width, self.expansion, num_blocks,
                          self.conv_impl, channels_first=cf, dtype=dt,
                          name=f"stage{i}_block{j}")(x)
    x = layers.Conv(self.channels, axes=(pt.EMBED, None), channels_first=cf,
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
    x = layers.Conv(widths[0], axes=(None, pt.EMBED), channels_first=cf,
                    dtype=dt, name="from_rgb")(x)
    for i, width in enumerate(widths):
      dt = _stage_dtype(i, self.low_precision_stages, self.dtype)
      for j in range(self.blocks_per_stage):
        x = ResidualBlock(self.group_width, self.expansion, num_blocks,
                          self.conv_impl, channels_first=cf, dtype=dt,
                          name=f"stage{i}_block{j}")(x)
      if i < n - 1:
        # The image is downsampled first, then the channels change.
        x = layers.downsample_2x(x.astype(dt), cf)
        if widths[i + 1] != width:
          x = layers.Conv(widths[i + 1], channels_first=cf, dtype=dt,
                          name=f"stage{i}_transition")(x)
    x = _from_cf(x) if cf else x
    x = x.astype(jnp.float32)
    c = x.shape[-1]
    # Depthwise 4x4 "valid" conv: 4x4 -> 1x1 with one filter per channel.
    basis = self.param(
        "basis",
        pt.logical_init(layers.msr_init(1.0),
                        (pt.KERNEL_H, pt.KERNEL_W, pt.EMBED)),
        (4, 4, c), jnp.float32)
    # Batch-sharded features: FSDP gathers the (small) head weights instead
    # of resharding activations across the batch.
    feat = pt.constrain(jnp.sum(x * basis, axis=(1, 2)), (pt.ACT_BATCH, None))
    out_dim = c if self.num_classes else 1
    head_out = pt.CONV_OUT if self.num_classes else None
    head = self.param(
        "head", pt.logical_init(layers.msr_init(1.0), (pt.EMBED, head_out)),
        (c, out_dim), jnp.float32)
    feat = pt.constrain(layers.matmul(feat, head), (pt.ACT_BATCH, None))
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
