"""Cosmos-style continuous autoencoders (NVIDIA Cosmos tokenizer, 2025).

Image (`video=False`, NHWC): the Haar wavelet patcher is the first op
(`wavelet.haar_patch`, 3 -> 3 p^2 channels at 1/p resolution), then SD-VAE
blocks: conv_in, per level `num_res_blocks` ResNet blocks (GroupNorm(32,
eps 1e-6) + swish + 3x3 conv, twice, 1x1 skip when the width changes) with
self-attention at the levels whose feature size, for `resolution` px
inputs, is in `attn_resolutions`, a learned 2x
downsample (pad right/bottom by one, 3x3 conv at stride 2) after each of the
first log2(compression / p) levels; a middle ResNet-attention-ResNet; then
GroupNorm, swish, conv_out to the latent and a 1x1 `quant_conv`. The decoder
(`post_quant_conv`, conv_in, middle, levels of `num_res_blocks + 1` blocks)
upsamples (nearest-neighbour 2x + 3x3 conv) after its deepest
log2(compression / p) levels, as Cosmos's does (so with fewer upsamples
than levels the upper levels run at the higher resolution), and ends with
GroupNorm, swish, conv_out to 3 p^2 channels and the unpatcher as the last
op.

Attention placement is fixed per level by `CosmosArch.resolution`, a model
setting as in Cosmos (1024 for the released tokenizers, whose levels then
have no attention), not by the data's size: the same blocks run at any
input size, e.g. DC-AE's phase 2 at a higher resolution, the SE
regulariser's smaller latents or an encode at another --image_size.

Video (`video=True`, NTHWC, 1 + k * temporal_compression frames): the
factorized causal 3-D variant. The patcher is `haar_patch_3d` (p in time
and space, the first frame repeated so it is coded on its own). Every 3-D
convolution is a spatial (1, 3, 3) conv followed by a causal temporal
(3, 1, 1) conv whose left padding replicates the first frame, so frame t
never sees frames after t. Norms are per-frame GroupNorm(1). Attention is
factorized: spatial within each frame, then causal (masked) over time at
each position. Downsamples are Cosmos's hybrid ones: a strided conv plus a
non-parametric average pool of its input, spatially (1, 2, 2) and, for the
first log2(temporal_compression / p) levels, causally in time (2, 1, 1),
then a 1x1x1 conv; upsamples repeat frames (dropping the first copy) and
pixels with a residual conv each.

Parameters carry logical axis names; `encoder/conv_in`, `encoder/conv_out`,
`encoder/quant_conv`, `decoder/post_quant_conv`, `decoder/conv_in`,
`decoder/norm_out` and `decoder/conv_out` name the layers DC-AE's phases and
the GAN's adaptive weight refer to. See docs/references/autoencoders.md
section 4.
"""

import dataclasses
import math
from typing import Any, Tuple

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen import config_lib
from jaxgen.autoencoders import dc_ae
from jaxgen.autoencoders import wavelet
from jaxgen.nn import linear
from jaxgen.nn import norms
from jaxgen.nn import partitioning as pt

Dtype = Any


@dataclasses.dataclass(frozen=True)
class CosmosArch:
  """A Cosmos continuous tokenizer (defaults: CI8x8).

  Attributes:
    in_channels: image channels.
    latent_channels: latent channels (Cosmos's z_channels = embedding dim).
    channels: base width; level i has channels * channels_mult[i].
    channels_mult: width multipliers per level.
    num_res_blocks: ResNet blocks per encoder level (decoder: one more).
    attn_resolutions: feature-map sizes (after patching) with attention, at
      the model's `resolution`.
    resolution: the image size attention is placed for, a fixed model
      setting as in Cosmos (networks/configs: 1024 for the released
      tokenizers, whose levels then have none; only the middle blocks
      attend), not the data's size: the same blocks run at any input size
      (DC-AE's phase 2 at a higher resolution, the SE term, encode).
    patch_size: patch size p (a power of two; 1 = none).
    patch_method: "haar" (the wavelet packet) or "rearrange" (plain
      space-to-depth, Cosmos's other patcher), for comparisons.
    spatial_compression: total spatial downsampling (p x learned).
    temporal_compression: total temporal downsampling (video only).
    video: the factorized causal 3-D model on NTHWC clips.
    num_groups: GroupNorm groups (32 for images; the video model uses 1,
      per frame).
  """
  in_channels: int = 3
  latent_channels: int = 16
  channels: int = 128
  channels_mult: Tuple[int, ...] = (2, 4, 4)
  num_res_blocks: int = 2
  attn_resolutions: Tuple[int, ...] = (32,)
  resolution: int = 1024
  patch_size: int = 4
  patch_method: str = "haar"
  spatial_compression: int = 8
  temporal_compression: int = 1
  video: bool = False
  num_groups: int = 32

  @property
  def compression(self) -> int:
    return self.spatial_compression

  @property
  def num_down(self) -> int:
    """Learned spatial downsamples: log2(compression) - log2(p)."""
    return int(math.log2(self.spatial_compression)) - int(
        math.log2(self.patch_size))

  @property
  def num_time_down(self) -> int:
    """Learned temporal downsamples (video)."""
    if not self.video:
      return 0
    return int(math.log2(self.temporal_compression)) - int(
        math.log2(self.patch_size))

  def check(self) -> "CosmosArch":
    """Raises one-line ValueErrors for inconsistent fields."""
    def at_least(name, value, low=1):
      config_lib.check_range(f"config.model.{name}", value, low=low,
                             integer=True)
    # Sizes a network would divide by or build nothing from.
    at_least("latent_channels", self.latent_channels)
    at_least("channels", self.channels)
    for i, m in enumerate(self.channels_mult):
      at_least(f"channels_mult[{i}]", m)
    at_least("num_res_blocks", self.num_res_blocks, 0)
    at_least("num_groups", self.num_groups)
    for i, r in enumerate(self.attn_resolutions):
      at_least(f"attn_resolutions[{i}]", r)
    at_least("resolution", self.resolution, self.patch_size)
    if self.patch_method not in ("haar", "rearrange"):
      raise ValueError(f"config.model.patch_method={self.patch_method!r}; "
                       "use 'haar' or 'rearrange'.")
    for name in ("patch_size", "spatial_compression", "temporal_compression"):
      v = getattr(self, name)
      if v < 1 or v & (v - 1):
        raise ValueError(f"config.model.{name}={v} must be a power of two.")
    if self.spatial_compression < self.patch_size:
      raise ValueError(
          f"config.model.spatial_compression={self.spatial_compression} is "
          f"below patch_size={self.patch_size}, which already compresses "
          f"{self.patch_size}x; raise it or lower patch_size.")
    if not 0 <= self.num_down < len(self.channels_mult):
      raise ValueError(
          f"config.model.spatial_compression={self.spatial_compression} with "
          f"patch_size={self.patch_size} needs {self.num_down} learned "
          f"downsamples; give channels_mult more than that many levels.")
    if self.video and not 0 <= self.num_time_down <= self.num_down:
      raise ValueError(
          f"config.model.temporal_compression={self.temporal_compression} "
          f"needs {self.num_time_down} temporal downsamples with patch_size="
          f"{self.patch_size}; use between {self.patch_size} and "
          f"{self.patch_size * 2 ** self.num_down}.")
    return self


def attention_levels(a: CosmosArch, decoder: bool = False
                     ) -> Tuple[int, ...]:
  """The levels with attention blocks (the middle block always has one).

  Cosmos tracks a nominal feature size `curr_res` from `a.resolution`: the
  encoder starts at resolution / p and halves it after each level that
  downsamples (the video encoder: after every level but the last); the
  decoder starts at resolution / p / 2^(levels - 1) and doubles it after
  each level that upsamples (video: every level but the first). A level
  attends when that size is in `a.attn_resolutions`.

  Args:
    a: the architecture.
    decoder: the decoder's levels (else the encoder's).

  Returns:
    Level indices, in increasing order.
  """
  n, base = len(a.channels_mult), a.resolution // a.patch_size
  if not decoder:
    halvings = [i if a.video else min(i, a.num_down) for i in range(n)]
    sizes = [base // 2 ** h for h in halvings]
  else:
    start = base // 2 ** (n - 1)
    doublings = [n - 1 - i if a.video else sum(
        1 for j in range(i + 1, n) if upsamples_after(a, j))
                 for i in range(n)]
    sizes = [start * 2 ** d for d in doublings]
  return tuple(i for i in range(n) if sizes[i] in a.attn_resolutions)


def upsamples_after(a: CosmosArch, i: int) -> bool:
  """Whether the decoder upsamples after level i (levels run n-1 .. 0).

  Images: after the deepest log2(compression / p) levels, Cosmos's
  `i_level >= num_resolutions - num_upsamples`, so the upper levels run at
  the higher resolution. Video: after levels num_down .. 1, mirroring the
  encoder (Cosmos's factorized 3-D decoder places them by another rule,
  which needs more levels than temporal upsamples + 1; not reproduced).
  """
  if a.video:
    return 1 <= i <= a.num_down
  return i >= len(a.channels_mult) - a.num_down


# -- factorized (2-D or causal 3-D) layers -------------------------------------


def _frames(fn, x):
  """Applies an NHWC function to every frame of an NTHWC map."""
  b, t = x.shape[:2]
  y = fn(x.reshape((b * t,) + x.shape[2:]))
  return y.reshape((b, t) + y.shape[1:])


class TemporalConv(nn.Module):
  """Causal (k, 1, 1) convolution over time of NTHWC maps: the left padding
  replicates the first frame (Cosmos's CausalConv3d time padding)."""
  features: int
  kernel_size: int = 3
  strides: int = 1
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    k = self.kernel_size
    kernel = self.param(
        "kernel", pt.logical_init(pt.conv_init, (pt.KERNEL_H, pt.CONV_IN,
                                                 pt.CONV_OUT)),
        (k, x.shape[-1], self.features), jnp.float32)
    bias = self.param("bias", pt.logical_init(pt.zeros_init, (pt.CONV_OUT,)),
                      (self.features,), jnp.float32)
    x = jnp.concatenate([jnp.repeat(x[:, :1], k - 1, axis=1), x], axis=1)
    y = jax.lax.conv_general_dilated(
        x.astype(self.dtype), kernel.astype(self.dtype)[:, None, None],
        (self.strides, 1, 1), "VALID",
        dimension_numbers=("NTHWC", "THWIO", "NTHWC"))
    return y + bias.astype(self.dtype)


class Conv(nn.Module):
  """k x k conv (images) or spatial (1, k, k) + causal temporal (k, 1, 1)
  conv (video), the factorized CausalConv3d pair."""
  features: int
  kernel_size: int = 3
  video: bool = False
  dtype: Dtype = jnp.float32
  in_axis: Any = pt.CONV_IN
  out_axis: Any = pt.CONV_OUT
  conv_impl: str = "lax"  # The spatial conv's `linear.Conv.impl`.

  @nn.compact
  def __call__(self, x):
    conv = linear.Conv(self.features, self.kernel_size, in_axis=self.in_axis,
                       out_axis=self.out_axis, dtype=self.dtype,
                       impl=self.conv_impl, name="spatial")
    if not self.video:
      return conv(x)
    y = _frames(conv, x)
    if self.kernel_size == 1:
      return y
    return TemporalConv(self.features, self.kernel_size, dtype=self.dtype,
                        name="temporal")(y)


class Norm(nn.Module):
  """GroupNorm (eps 1e-6), per frame for video."""
  num_groups: int
  video: bool = False

  @nn.compact
  def __call__(self, x):
    norm = norms.GroupNorm(self.num_groups, epsilon=1e-6, name="norm")
    return _frames(norm, x) if self.video else norm(x)


class ResnetBlock(nn.Module):
  """norm, swish, conv, norm, swish, conv, plus a (1x1 when widths differ)
  skip."""
  features: int
  arch: CosmosArch
  dtype: Dtype = jnp.float32
  conv_impl: str = "lax"

  @nn.compact
  def __call__(self, x):
    a = self.arch
    h = nn.swish(Norm(a.num_groups, a.video, name="norm1")(x))
    h = Conv(self.features, 3, a.video, self.dtype,
             conv_impl=self.conv_impl, name="conv1")(h)
    h = nn.swish(Norm(a.num_groups, a.video, name="norm2")(h))
    h = Conv(self.features, 3, a.video, self.dtype,
             conv_impl=self.conv_impl, name="conv2")(h)
    if x.shape[-1] != self.features:
      x = Conv(self.features, 1, a.video, self.dtype, name="skip")(x)
    return x + h


class AttnBlock(nn.Module):
  """Single-head self-attention over H x W (images; each frame of a video),
  then, for video, causal attention over time at every position."""
  arch: CosmosArch
  dtype: Dtype = jnp.float32

  def _attend(self, x, h, name, causal):
    """x + proj(attention(h)) over axis 1 of [N, L, C] (h: x normalised)."""
    c = x.shape[-1]
    qkv = linear.Dense(3 * c, kernel_axes=(pt.EMBED, pt.MLP),
                       dtype=self.dtype, name=f"{name}_qkv")(h)
    q, k, v = jnp.split(qkv.astype(jnp.float32), 3, axis=-1)
    logits = jnp.einsum("bqc,bkc->bqk", q, k) / math.sqrt(c)
    if causal:
      n = logits.shape[-1]
      logits = jnp.where(jnp.tril(jnp.ones((n, n), bool)), logits, -1e30)
    out = jnp.einsum("bqk,bkc->bqc", jax.nn.softmax(logits, -1), v)
    return x + linear.Dense(c, kernel_axes=(pt.MLP, pt.EMBED),
                            dtype=self.dtype, name=f"{name}_proj")(
                                out.astype(self.dtype))

  @nn.compact
  def __call__(self, x):
    a = self.arch
    # Normalised per image / per frame, so time stays causal.
    norm = lambda name, y: Norm(a.num_groups, a.video, name=name)(y)  # noqa: E731
    if not a.video:
      b, hh, ww, c = x.shape
      flat = lambda y: y.reshape(b, hh * ww, c)  # noqa: E731
      y = self._attend(flat(x), flat(norm("spatial_norm", x)), "spatial",
                       False)
      return y.reshape(x.shape)
    b, t, hh, ww, c = x.shape
    flat = lambda y: y.reshape(b * t, hh * ww, c)  # noqa: E731
    y = self._attend(flat(x), flat(norm("spatial_norm", x)), "spatial", False)
    y = y.reshape(x.shape)
    over_time = lambda y: einops.rearrange(  # noqa: E731
        y, "b t h w c -> (b h w) t c")
    y = self._attend(over_time(y), over_time(norm("temporal_norm", y)),
                     "temporal", True)
    return einops.rearrange(y, "(b h w) t c -> b t h w c", b=b, h=hh)


def _avg_pool_space(x):
  return einops.reduce(x, "... (h i) (w j) c -> ... h w c", "mean", i=2, j=2)


class Downsample(nn.Module):
  """2x spatial (and optionally causal 2x temporal) downsampling."""
  arch: CosmosArch
  time: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    # SD-VAE's asymmetric padding: one zero row / column right and bottom.
    down = linear.Conv(c, 3, strides=2, padding=((0, 1), (0, 1)),
                       dtype=self.dtype, name="conv")
    if not self.arch.video:
      return down(x)
    x = _frames(down, x) + _avg_pool_space(x)
    if self.time:
      # Causal in time: the first frame is replicated on the left.
      t_conv = TemporalConv(c, 3, strides=2, dtype=self.dtype,
                            name="time_conv")(x)
      padded = jnp.concatenate([x[:, :1], x], axis=1)
      pooled = einops.reduce(padded, "b (t k) h w c -> b t h w c", "mean",
                             k=2)
      x = t_conv + pooled
    return Conv(c, 1, True, self.dtype, name="mix")(x)


class Upsample(nn.Module):
  """2x nearest spatial (and optionally 2x temporal) upsampling + convs."""
  arch: CosmosArch
  time: bool = False
  dtype: Dtype = jnp.float32
  conv_impl: str = "lax"

  @nn.compact
  def __call__(self, x):
    c = x.shape[-1]
    if self.arch.video and self.time:
      # Every frame twice, minus the first copy: 1 + k -> 1 + 2 k frames.
      x = jnp.repeat(x, 2, axis=1)[:, 1:]
      x = x + TemporalConv(c, 3, dtype=self.dtype, name="time_conv")(x)
    up = lambda y: jnp.repeat(jnp.repeat(y, 2, axis=-3), 2, axis=-2)  # noqa: E731
    x = up(x)
    conv = linear.Conv(c, 3, dtype=self.dtype, impl=self.conv_impl,
                       name="conv")
    if not self.arch.video:
      return conv(x)
    x = x + _frames(conv, x)
    return Conv(c, 1, True, self.dtype, name="mix")(x)


# -- encoder / decoder -----------------------------------------------------------


def patch(x: jax.Array, a: CosmosArch) -> jax.Array:
  """The encoder's first op: Haar wavelet or plain space-to-depth."""
  p = a.patch_size
  if a.patch_method == "haar":
    return wavelet.haar_patch_3d(x, p) if a.video else wavelet.haar_patch(x, p)
  if a.video:
    raise ValueError("patch_method='rearrange' is for images only.")
  return einops.rearrange(x, "b (h i) (w j) c -> b h w (c i j)", i=p, j=p)


def unpatch(y: jax.Array, a: CosmosArch) -> jax.Array:
  """The decoder's last op, the inverse of `patch`."""
  p = a.patch_size
  if a.patch_method == "haar":
    return (wavelet.haar_unpatch_3d(y, p) if a.video
            else wavelet.haar_unpatch(y, p))
  return einops.rearrange(y, "b h w (c i j) -> b (h i) (w j) c", i=p, j=p)


class Encoder(nn.Module):
  """Images / clips in [-1, 1] -> latents (2x channels if `variational`)."""
  arch: CosmosArch
  dtype: Dtype = jnp.float32
  variational: bool = False
  conv_impl: str = "lax"

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    a, impl = self.arch, self.conv_impl
    x = patch(x, a)
    attn = attention_levels(a)
    h = Conv(a.channels, 3, a.video, self.dtype, in_axis=None,
             conv_impl=impl, name="conv_in")(x)
    for i, mult in enumerate(a.channels_mult):
      for j in range(a.num_res_blocks):
        h = ResnetBlock(a.channels * mult, a, self.dtype, impl,
                        name=f"down_{i}_block_{j}")(h)
        if i in attn:
          h = AttnBlock(a, self.dtype, name=f"down_{i}_attn_{j}")(h)
      if i < a.num_down:
        h = Downsample(a, i < a.num_time_down, self.dtype,
                       name=f"down_{i}_downsample")(h)
    h = ResnetBlock(h.shape[-1], a, self.dtype, impl, name="mid_block_1")(h)
    h = AttnBlock(a, self.dtype, name="mid_attn_1")(h)
    h = ResnetBlock(h.shape[-1], a, self.dtype, impl, name="mid_block_2")(h)
    h = nn.swish(Norm(a.num_groups, a.video, name="norm_out")(h))
    h = Conv(a.latent_channels, 3, a.video, self.dtype, conv_impl=impl,
             name="conv_out")(h)
    out = a.latent_channels * (2 if self.variational else 1)
    z = Conv(out, 1, a.video, self.dtype, out_axis=None,
             name="quant_conv")(h)
    return z.astype(jnp.float32)


class Decoder(nn.Module):
  """Latents -> images / clips (unclipped)."""
  arch: CosmosArch
  dtype: Dtype = jnp.float32
  conv_impl: str = "lax"

  @nn.compact
  def __call__(self, z, train: bool = False):
    del train
    a, impl = self.arch, self.conv_impl
    attn = attention_levels(a, decoder=True)
    h = Conv(a.latent_channels, 1, a.video, self.dtype, in_axis=None,
             name="post_quant_conv")(z)
    h = Conv(a.channels * a.channels_mult[-1], 3, a.video, self.dtype,
             conv_impl=impl, name="conv_in")(h)
    h = ResnetBlock(h.shape[-1], a, self.dtype, impl, name="mid_block_1")(h)
    h = AttnBlock(a, self.dtype, name="mid_attn_1")(h)
    h = ResnetBlock(h.shape[-1], a, self.dtype, impl, name="mid_block_2")(h)
    for i in reversed(range(len(a.channels_mult))):
      for j in range(a.num_res_blocks + 1):
        h = ResnetBlock(a.channels * a.channels_mult[i], a, self.dtype, impl,
                        name=f"up_{i}_block_{j}")(h)
        if i in attn:
          h = AttnBlock(a, self.dtype, name=f"up_{i}_attn_{j}")(h)
      if upsamples_after(a, i):
        h = Upsample(a, i - 1 < a.num_time_down, self.dtype, impl,
                     name=f"up_{i}_upsample")(h)
    h = nn.swish(Norm(a.num_groups, a.video, name="norm_out")(h))
    p = a.patch_size
    out = a.in_channels * p ** (3 if a.video else 2)
    h = Conv(out, 3, a.video, self.dtype, out_axis=None, conv_impl=impl,
             name="conv_out")(h)
    h = h.astype(jnp.float32)
    return unpatch(h, a)


class CosmosAE(dc_ae.EncoderDecoder):
  """The Cosmos encoder + decoder (`arch` is a `CosmosArch`) with the
  `dc_ae.EncoderDecoder` interface; `arch.resolution` places its attention
  blocks, whatever size it is applied to.
  """

  def parts(self):
    return (Encoder(self.arch, self.dtype, self.variational, self.conv_impl),
            Decoder(self.arch, self.dtype, self.conv_impl))
