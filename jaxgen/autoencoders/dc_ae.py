"""DC-AE (Chen et al. 2025): the encoder and decoder of diffusers'
`AutoencoderDC`, configured by the same fields.

`Arch` holds diffusers' constructor arguments (per-stage tuples expanded), so
any `AutoencoderDC` config.json maps onto it (`Arch.from_diffusers`), and
submodules are named after diffusers' module paths with "." -> "_"
(`down_blocks_1_4` is `encoder.down_blocks.1.4`), which keeps the weight
conversion one-to-one (`jaxgen.autoencoders.diffusers_compat`).

Encoder: conv_in (a 3x3 conv, or for a first stage without blocks a conv +
pixel-unshuffle "DCDownBlock2d" without shortcut), per stage its blocks and
then (except the last stage) a down block with the channel-averaging
shortcut, and conv_out plus the factor-1 averaging shortcut to the latent.
Decoder: the mirror, with each stage's up block first, then RMSNorm, the
head activation and conv_out.
"""

import dataclasses
from typing import Any, Dict, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen import config_lib
from jaxgen.autoencoders import ops
from jaxgen.nn import linear

Dtype = Any
_BLOCKS = ("ResBlock", "EfficientViTBlock")


def _per_stage(value, n, name):
  if isinstance(value, (str, bool)) or value is None:
    return (value,) * n
  value = tuple(value)
  if len(value) != n:
    raise ValueError(f"{name} has {len(value)} entries for {n} stages.")
  return value


@dataclasses.dataclass(frozen=True)
class Arch:
  """diffusers `AutoencoderDC` constructor arguments (defaults: f32c32-sana).
  """
  in_channels: int = 3
  latent_channels: int = 32
  attention_head_dim: int = 32
  encoder_block_types: Tuple[str, ...] = ("ResBlock",) * 3 + (
      "EfficientViTBlock",) * 3
  decoder_block_types: Tuple[str, ...] = ("ResBlock",) * 3 + (
      "EfficientViTBlock",) * 3
  encoder_block_out_channels: Tuple[int, ...] = (128, 256, 512, 512, 1024,
                                                 1024)
  decoder_block_out_channels: Tuple[int, ...] = (128, 256, 512, 512, 1024,
                                                 1024)
  encoder_layers_per_block: Tuple[int, ...] = (2, 2, 2, 3, 3, 3)
  decoder_layers_per_block: Tuple[int, ...] = (3, 3, 3, 3, 3, 3)
  encoder_qkv_multiscales: Tuple[Tuple[int, ...], ...] = ((), (), (), (5,),
                                                          (5,), (5,))
  decoder_qkv_multiscales: Tuple[Tuple[int, ...], ...] = ((), (), (), (5,),
                                                          (5,), (5,))
  upsample_block_type: str = "interpolate"
  downsample_block_type: str = "Conv"
  decoder_norm_types: Tuple[str, ...] = ("rms_norm",) * 6
  decoder_act_fns: Tuple[str, ...] = ("silu",) * 6
  encoder_out_shortcut: bool = True
  decoder_in_shortcut: bool = True
  decoder_conv_act_fn: str = "relu"
  # Not a diffusers field (diffusers always has them): the space-to-channel
  # shortcuts of the stage transitions; False, with encoder_out_shortcut and
  # decoder_in_shortcut False, is the plain autoencoder DC-AE compares with.
  stage_shortcuts: bool = True

  @property
  def compression(self) -> int:
    """Spatial downsampling factor, 2 ** (stages - 1)."""
    return 2 ** (len(self.encoder_block_out_channels) - 1)

  @classmethod
  def from_diffusers(cls, config: Dict[str, Any]) -> "Arch":
    """The arch of a diffusers `AutoencoderDC` config.json dict.

    Raises:
      ValueError: one line naming a field this implementation cannot express.
    """
    fields = {f.name for f in dataclasses.fields(cls)}
    # diffusers' bookkeeping ("_class_name", ...) and the scaling factor,
    # which is applied outside the model.
    unknown = sorted(k for k in set(config) - fields
                     if not k.startswith("_") and k != "scaling_factor")
    if unknown:
      raise ValueError(f"AutoencoderDC config field {unknown[0]!r} is not "
                       "supported by jaxgen's DC-AE.")
    kw = {k: v for k, v in config.items() if k in fields}
    return cls(**kw).normalized()

  def normalized(self) -> "Arch":
    """Per-stage fields as tuples of the stage count; values checked."""
    ne, nd = (len(self.encoder_block_out_channels),
              len(self.decoder_block_out_channels))
    out = dataclasses.replace(
        self,
        encoder_block_out_channels=tuple(self.encoder_block_out_channels),
        decoder_block_out_channels=tuple(self.decoder_block_out_channels),
        encoder_layers_per_block=tuple(self.encoder_layers_per_block),
        decoder_layers_per_block=tuple(self.decoder_layers_per_block),
        encoder_block_types=_per_stage(self.encoder_block_types, ne,
                                       "encoder_block_types"),
        decoder_block_types=_per_stage(self.decoder_block_types, nd,
                                       "decoder_block_types"),
        encoder_qkv_multiscales=tuple(tuple(s) for s in
                                      self.encoder_qkv_multiscales),
        decoder_qkv_multiscales=tuple(tuple(s) for s in
                                      self.decoder_qkv_multiscales),
        decoder_norm_types=_per_stage(self.decoder_norm_types, nd,
                                      "decoder_norm_types"),
        decoder_act_fns=_per_stage(self.decoder_act_fns, nd,
                                   "decoder_act_fns"))
    checks = [
        ("encoder_block_types", set(out.encoder_block_types) <= set(_BLOCKS)),
        ("decoder_block_types", set(out.decoder_block_types) <= set(_BLOCKS)),
        ("downsample_block_type", out.downsample_block_type in
         ("pixel_unshuffle", "Conv", "conv")),
        ("upsample_block_type", out.upsample_block_type in
         ("pixel_shuffle", "interpolate")),
        ("decoder_norm_types", set(out.decoder_norm_types) <=
         {"rms_norm", "batch_norm"}),
        ("decoder_act_fns", set(out.decoder_act_fns) <=
         {"silu", "relu", "relu6"}),
        ("decoder_conv_act_fn", out.decoder_conv_act_fn in
         ("silu", "relu", "relu6")),
    ]
    for name, ok in checks:
      if not ok:
        raise ValueError(f"AutoencoderDC {name}={getattr(out, name)!r} is "
                         "not supported by jaxgen's DC-AE.")
    for i, (kind, norm) in enumerate(zip(out.decoder_block_types,
                                         out.decoder_norm_types)):
      # diffusers puts the stage's norm at the end of LiteMLA; jaxgen's
      # LiteMLA has RMSNorm only (the released in/mix models use batch norm
      # in the ResBlock stages alone).
      if kind == "EfficientViTBlock" and norm != "rms_norm":
        raise ValueError(
            f"AutoencoderDC decoder_norm_types[{i}]={norm!r} on an "
            "EfficientViTBlock stage is not supported by jaxgen's DC-AE; "
            "use 'rms_norm' there (batch_norm in ResBlock stages only).")
    return out


def check_sizes(arch: Arch, prefix: str = "config.model.",
                variational: bool = False) -> None:
  """Refuses widths, depths and kernel sizes the networks would divide by or
  build nothing from, stage tuples of the wrong length, and widths the
  channel-regrouping shortcuts cannot split in equal groups.

  Args:
    arch: a normalized `Arch`.
    prefix: how the fields are named in the message.
    variational: the encoder emits a mean and a log-variance (twice the
      latent channels).

  Raises:
    ValueError: one line, "<prefix><field>=... must be ...".
  """
  def at_least(name, value, low=1):
    config_lib.check_range(f"{prefix}{name}", value, low=low, integer=True)

  def each(name, values, low=1):
    if not values:
      raise ValueError(f"{prefix}{name}=() needs at least one entry.")
    for i, v in enumerate(values):
      at_least(f"{name}[{i}]", v, low)

  at_least("latent_channels", arch.latent_channels)
  at_least("attention_head_dim", arch.attention_head_dim)
  for part in ("encoder", "decoder"):
    widths = getattr(arch, f"{part}_block_out_channels")
    each(f"{part}_block_out_channels", widths)
    for name in ("layers_per_block", "qkv_multiscales"):
      values = getattr(arch, f"{part}_{name}")
      if len(values) != len(widths):
        raise ValueError(
            f"{prefix}{part}_{name} has {len(values)} entries for the "
            f"{len(widths)} stages of {part}_block_out_channels; give one "
            "per stage.")
    depths = getattr(arch, f"{part}_layers_per_block")
    each(f"{part}_layers_per_block", depths, 0)
    # An empty stage after the first also drops its resampling block (as in
    # diffusers), so the compression would no longer be 2 ** (stages - 1).
    for i, depth in enumerate(depths[1:], 1):
      if depth == 0:
        raise ValueError(
            f"{prefix}{part}_layers_per_block[{i}]=0: only the first stage "
            "may be empty (a later empty stage drops its resampling and "
            "changes the compression); give it at least 1 block or remove "
            "the stage.")
    for i, scales in enumerate(getattr(arch, f"{part}_qkv_multiscales")):
      for k, v in enumerate(scales):
        at_least(f"{part}_qkv_multiscales[{i}][{k}]", v)
    # LiteMLA splits a stage's width into heads of attention_head_dim.
    for i, (kind, width) in enumerate(zip(
        getattr(arch, f"{part}_block_types"), widths)):
      if kind == "EfficientViTBlock" and width % arch.attention_head_dim:
        raise ValueError(
            f"{prefix}{part}_block_out_channels[{i}]={width} is not a "
            f"multiple of {prefix}attention_head_dim="
            f"{arch.attention_head_dim} (stage {i} has attention); change "
            "one of them.")
  if arch.downsample_block_type == "pixel_unshuffle":
    # Its conv makes width / 4 channels that the unshuffle turns into width:
    # another width was floored to a multiple of 4 without a word.
    enc = arch.encoder_block_out_channels
    for i in range(len(enc) - 1):
      if enc[i + 1] % 4:
        raise ValueError(
            f"{prefix}encoder_block_out_channels[{i + 1}]={enc[i + 1]} is not "
            f"a multiple of 4, which {prefix}downsample_block_type="
            "'pixel_unshuffle' needs (a conv to width / 4 channels, then "
            "space-to-channel); change the width or use 'Conv'.")
  _check_shortcuts(arch, prefix, variational)


def _check_shortcuts(arch: Arch, prefix: str, variational: bool) -> None:
  """The shortcuts average (encoder) or repeat (decoder) channels in equal
  groups: widths that do not divide were a shape error naming no field."""
  def need(ok, field, value, what):
    if not ok:
      raise ValueError(f"{prefix}{field}={value}: {what}; change the widths "
                       "or turn that shortcut off.")

  enc, dec = arch.encoder_block_out_channels, arch.decoder_block_out_channels
  for i in range(len(enc) - 1):
    if arch.encoder_layers_per_block[i] > 0 and arch.stage_shortcuts:
      need(4 * enc[i] % enc[i + 1] == 0, f"encoder_block_out_channels[{i + 1}]",
           enc[i + 1], f"stage {i}'s shortcut averages its 4 x {enc[i]} "
           "space-to-channel values into this many equal groups")
  for i in range(len(dec) - 1):
    if arch.decoder_layers_per_block[i] > 0 and arch.stage_shortcuts:
      need(4 * dec[i] % dec[i + 1] == 0, f"decoder_block_out_channels[{i + 1}]",
           dec[i + 1], f"the shortcut into stage {i} repeats these channels "
           f"into its 4 x {dec[i]} values")
  out = arch.latent_channels * (2 if variational else 1)
  if arch.encoder_out_shortcut:
    need(enc[-1] % out == 0, "latent_channels", arch.latent_channels,
         f"the encoder's output shortcut averages encoder_block_out_channels"
         f"[-1]={enc[-1]} channels into {out} equal groups"
         + (" (mean and log-variance)" if variational else ""))
  if arch.decoder_in_shortcut:
    need(dec[-1] % arch.latent_channels == 0, "latent_channels",
         arch.latent_channels, "the decoder's input shortcut repeats the "
         f"latent into decoder_block_out_channels[-1]={dec[-1]} channels")


def released(name: str) -> Arch:
  """The arch of a released DC-AE ("f32c32_in", "f64c128_in",
  "f128c512_in", "f32c32_sana"); the "mix" models share the "in" arch."""
  if name == "f32c32_sana":
    return Arch().normalized()
  stages = {"f32c32_in": 6, "f64c128_in": 7, "f128c512_in": 8}
  latent = {"f32c32_in": 32, "f64c128_in": 128, "f128c512_in": 512}
  if name not in stages:
    raise ValueError(f"unknown DC-AE {name!r}; use one of "
                     f"{sorted(stages) + ['f32c32_sana']}.")
  n = stages[name]
  widths = (128, 256, 512, 512, 1024, 1024, 2048, 2048)[:n]
  evit = n - 3
  return Arch(
      latent_channels=latent[name],
      encoder_block_types=("ResBlock",) * 3 + ("EfficientViTBlock",) * evit,
      decoder_block_types=("ResBlock",) * 3 + ("EfficientViTBlock",) * evit,
      encoder_block_out_channels=widths, decoder_block_out_channels=widths,
      encoder_layers_per_block=(0, 4, 8) + (2,) * evit,
      decoder_layers_per_block=(0, 5, 10) + (2,) * evit,
      encoder_qkv_multiscales=((),) * n, decoder_qkv_multiscales=((),) * n,
      upsample_block_type="pixel_shuffle",
      downsample_block_type="pixel_unshuffle",
      decoder_norm_types=("batch_norm",) * 3 + ("rms_norm",) * evit,
      decoder_act_fns=("relu",) * 3 + ("silu",) * evit).normalized()


def _block(kind, heads_dim, scales, norm, act, dtype, conv_impl, name):
  if kind == "ResBlock":
    return ops.ResBlock(act=act, norm=norm, dtype=dtype, conv_impl=conv_impl,
                        name=name)
  return ops.EfficientViTBlock(heads_dim, scales, dtype, name=name)


class DownBlock(nn.Module):
  """diffusers' DCDownBlock2d: strided conv or conv + unshuffle (+ shortcut)."""
  features: int
  unshuffle: bool
  shortcut: bool
  dtype: Dtype = jnp.float32
  conv_impl: str = "lax"

  @nn.compact
  def __call__(self, x):
    if self.unshuffle:
      y = linear.Conv(self.features // 4, 3, dtype=self.dtype,
                      impl=self.conv_impl, name="conv")(x)
      y = ops.pixel_unshuffle(y, 2)
    else:
      y = linear.Conv(self.features, 3, strides=2, dtype=self.dtype,
                      name="conv")(x)
    if self.shortcut:
      y = y + ops.channel_average_down(x, self.features, 2)
    return y


class UpBlock(nn.Module):
  """diffusers' DCUpBlock2d: conv + shuffle or nearest + conv (+ shortcut)."""
  features: int
  interpolate: bool
  shortcut: bool
  dtype: Dtype = jnp.float32
  conv_impl: str = "lax"

  @nn.compact
  def __call__(self, x):
    if self.interpolate:
      up = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)  # nearest 2x
      y = linear.Conv(self.features, 3, dtype=self.dtype,
                      impl=self.conv_impl, name="conv")(up)
    else:
      y = linear.Conv(self.features * 4, 3, dtype=self.dtype,
                      impl=self.conv_impl, name="conv")(x)
      y = ops.pixel_shuffle(y, 2)
    if self.shortcut:
      y = y + ops.channel_duplicate_up(x, self.features, 2)
    return y


class Encoder(nn.Module):
  """Images in [-1, 1] (NHWC) -> latents [B, H/f, W/f, latent_channels]
  (twice the channels, mean then log-variance, when `variational`)."""
  arch: Arch
  dtype: Dtype = jnp.float32
  variational: bool = False
  conv_impl: str = "lax"

  @nn.compact
  def __call__(self, x, train: bool = False):
    a = self.arch
    impl = self.conv_impl
    widths, depths = a.encoder_block_out_channels, a.encoder_layers_per_block
    unshuffle = a.downsample_block_type == "pixel_unshuffle"
    if depths[0] > 0:
      h = linear.Conv(widths[0], 3, in_axis=None, dtype=self.dtype,
                      impl=impl, name="conv_in")(x)
    else:
      h = DownBlock(widths[1], unshuffle, False, self.dtype, impl,
                    name="conv_in")(x)
    for i, (width, depth) in enumerate(zip(widths, depths)):
      for j in range(depth):
        h = _block(a.encoder_block_types[i], a.attention_head_dim,
                   a.encoder_qkv_multiscales[i], "rms_norm", "silu",
                   self.dtype, impl, f"down_blocks_{i}_{j}")(h, train)
      if i < len(widths) - 1 and depth > 0:
        h = DownBlock(widths[i + 1], unshuffle, a.stage_shortcuts, self.dtype,
                      impl, name=f"down_blocks_{i}_{depth}")(h)
    out = a.latent_channels * (2 if self.variational else 1)
    z = linear.Conv(out, 3, out_axis=None, dtype=self.dtype, impl=impl,
                    name="conv_out")(h)
    if a.encoder_out_shortcut:
      z = z + ops.channel_average_down(h, out, 1)
    return z.astype(jnp.float32)


class Decoder(nn.Module):
  """Latents -> images (NHWC, unclipped)."""
  arch: Arch
  dtype: Dtype = jnp.float32
  conv_impl: str = "lax"

  @nn.compact
  def __call__(self, z, train: bool = False):
    a = self.arch
    impl = self.conv_impl
    widths, depths = a.decoder_block_out_channels, a.decoder_layers_per_block
    interpolate = a.upsample_block_type == "interpolate"
    h = linear.Conv(widths[-1], 3, in_axis=None, dtype=self.dtype, impl=impl,
                    name="conv_in")(z)
    if a.decoder_in_shortcut:
      h = h + ops.channel_duplicate_up(z.astype(h.dtype), widths[-1], 1)
    for i in reversed(range(len(widths))):
      j = 0
      if i < len(widths) - 1 and depths[i] > 0:
        h = UpBlock(widths[i], interpolate, a.stage_shortcuts, self.dtype,
                    impl, name=f"up_blocks_{i}_0")(h)
        j = 1
      for k in range(depths[i]):
        h = _block(a.decoder_block_types[i], a.attention_head_dim,
                   a.decoder_qkv_multiscales[i], a.decoder_norm_types[i],
                   a.decoder_act_fns[i], self.dtype, impl,
                   f"up_blocks_{i}_{j + k}")(h, train)
    h = ops.rms_norm("norm_out")(h).astype(self.dtype)
    h = {"silu": nn.silu, "relu": nn.relu,
         "relu6": nn.relu6}[a.decoder_conv_act_fn](h)
    if depths[0] > 0:
      out = linear.Conv(a.in_channels, 3, out_axis=None, dtype=self.dtype,
                        impl=impl, name="conv_out")(h)
    else:
      out = UpBlock(a.in_channels, interpolate, False, self.dtype, impl,
                    name="conv_out")(h)
    return out.astype(jnp.float32)


def split_moments(h: jax.Array):
  """A variational encoder's output -> (mean, log-variance clipped to
  [-30, 20] as in the LDM / SD-VAE code)."""
  mean, logvar = jnp.split(h, 2, axis=-1)
  return mean, jnp.clip(logvar, -30.0, 20.0)


class EncoderDecoder(nn.Module):
  """The interface every autoencoder module has: `moments`, `encode`,
  `decode`, and `__call__` (reconstruct). Subclasses build the parts.

  Attributes:
    arch: the architecture.
    dtype: compute dtype.
    variational: the encoder emits a diagonal Gaussian (mean, log-variance;
      for the optional KL term); `encode` returns its mean.
    conv_impl: `linear.Conv.impl` of the 3x3 convs ("lax" or "winograd";
      `linear.resolve_conv_impl` turns a config's "auto" into one).
  """
  arch: Any
  dtype: Dtype = jnp.float32
  variational: bool = False
  conv_impl: str = "lax"

  def parts(self):
    """(encoder, decoder) modules; called in `setup`."""
    raise NotImplementedError

  def setup(self):
    self.encoder, self.decoder = self.parts()

  def moments(self, x, train: bool = False):
    """(mean, log-variance) of q(z|x); log-variance None if deterministic.
    Float32 whatever the compute dtype (losses, statistics and latents
    written to disk are taken from them)."""
    h = self.encoder(x, train).astype(jnp.float32)
    return split_moments(h) if self.variational else (h, None)

  def encode(self, x, train: bool = False):
    return self.moments(x, train)[0]

  def decode(self, z, train: bool = False):
    return self.decoder(z, train).astype(jnp.float32)

  def __call__(self, x, train: bool = False):
    return self.decode(self.encode(x, train), train)


class DCAE(EncoderDecoder):
  """DC-AE's encoder + decoder (`arch` is an `Arch`)."""

  def parts(self):
    return (Encoder(self.arch, self.dtype, self.variational, self.conv_impl),
            Decoder(self.arch, self.dtype, self.conv_impl))


def num_params(arch: Arch) -> int:
  """Parameter count (batch-norm statistics excluded, as diffusers counts)."""
  side = 2 * arch.compression
  shapes = jax.eval_shape(lambda: DCAE(arch).init(
      jax.random.key(0), jnp.zeros((1, side, side, arch.in_channels))))
  return int(sum(x.size for x in jax.tree.leaves(shapes["params"])))


def _conv_macs(size: int, k: int, c_in: int, c_out: int, groups: int = 1,
               stride: int = 1) -> float:
  """MACs of a k x k conv producing a size x size map (real taps only at
  stride 1, as XLA counts them; stride 2 counts every tap, and so do
  depthwise convs, computed tap by tap by `linear.depthwise_taps`)."""
  if groups > 1 and groups == c_in == c_out:
    return float(size * size * k * k * c_out)
  if stride == 1:
    return float(linear.conv_same_macs(size, size, k, c_in // groups, c_out))
  return float(size * size * k * k * (c_in // groups) * c_out)


def _block_macs(kind: str, size: int, c: int, head_dim: int, scales) -> float:
  if kind == "ResBlock":
    return 2 * _conv_macs(size, 3, c, c)
  n, heads = size * size, c // head_dim
  macs = _conv_macs(size, 1, c, 3 * c)                       # qkv
  for s in scales:
    macs += _conv_macs(size, s, 3 * c, 3 * c, groups=3 * c)  # depthwise
    macs += _conv_macs(size, 1, 3 * c, 3 * c, groups=3 * heads)
  groups = heads * (1 + len(scales))
  macs += 2 * n * groups * head_dim * (head_dim + 1)          # k^T v, q (kv)
  macs += _conv_macs(size, 1, c * (1 + len(scales)), c)       # proj
  hidden = 4 * c                                             # GLUMBConv
  macs += _conv_macs(size, 1, c, 2 * hidden)
  macs += _conv_macs(size, 3, 2 * hidden, 2 * hidden, groups=2 * hidden)
  macs += _conv_macs(size, 1, hidden, c)
  return macs


def encoder_macs(arch: Arch, image_size: int) -> float:
  """Multiply-accumulates of one encoder forward pass per image."""
  a = arch
  widths, depths = a.encoder_block_out_channels, a.encoder_layers_per_block
  unshuffle = a.downsample_block_type == "pixel_unshuffle"
  size = image_size
  if depths[0] > 0:
    macs = _conv_macs(size, 3, a.in_channels, widths[0])
  else:
    size //= 2
    macs = (_conv_macs(2 * size, 3, a.in_channels, widths[1] // 4)
            if unshuffle else
            _conv_macs(size, 3, a.in_channels, widths[1], stride=2))
  for i, (width, depth) in enumerate(zip(widths, depths)):
    macs += depth * _block_macs(a.encoder_block_types[i], size, width,
                                a.attention_head_dim,
                                a.encoder_qkv_multiscales[i])
    if i < len(widths) - 1 and depth > 0:
      macs += (_conv_macs(size, 3, width, widths[i + 1] // 4) if unshuffle
               else _conv_macs(size // 2, 3, width, widths[i + 1], stride=2))
      size //= 2
  return macs + _conv_macs(size, 3, widths[-1], a.latent_channels)


def decoder_macs(arch: Arch, latent_size: int) -> float:
  """Multiply-accumulates of one decoder forward pass per latent."""
  a = arch
  widths, depths = a.decoder_block_out_channels, a.decoder_layers_per_block
  interpolate = a.upsample_block_type == "interpolate"
  size = latent_size
  macs = _conv_macs(size, 3, a.latent_channels, widths[-1])
  for i in reversed(range(len(widths))):
    if i < len(widths) - 1 and depths[i] > 0:
      macs += (_conv_macs(2 * size, 3, widths[i + 1], widths[i])
               if interpolate else
               _conv_macs(size, 3, widths[i + 1], 4 * widths[i]))
      size *= 2
    macs += depths[i] * _block_macs(a.decoder_block_types[i], size,
                                    widths[i], a.attention_head_dim,
                                    a.decoder_qkv_multiscales[i])
  c = widths[0] if depths[0] > 0 else widths[1]
  if depths[0] > 0:
    return macs + _conv_macs(size, 3, c, a.in_channels)
  return macs + (_conv_macs(2 * size, 3, c, a.in_channels) if interpolate
                 else _conv_macs(size, 3, c, 4 * a.in_channels))
