"""The U-ViT of simple diffusion (Hoogeboom et al. 2023) and SiD2 (2024).

Layout, at image size S and first-layer patch size p (r = S / p):

  x --stem--> r x r x C0 --[ResBlocks, Down]* --> (r / 2^L)^2 tokens
    --> transformer stack (width D) --> [Up, ResBlocks]* --head--> v_hat

* stem: p x p conv with stride p (`downsample="patch"`), or log2(p) levels
  of an orthonormal Haar transform with the sub-bands on channels followed
  by a 3x3 conv (`downsample="haar"`); p == 1 is a plain 3x3 conv. The head
  mirrors it (transposed p x p conv / 3x3 conv + inverse Haar).
* conv levels: ADM-style ResBlocks with FiLM from the conditioning vector
  (sinusoidal logSNR embedding -> MLP, plus a class embedding with a null
  row for classifier-free guidance).
* transformer at the lowest resolution (16 x 16 in the paper presets):
  pre-norm, QK-normalised attention, MLP with FiLM on its hidden layer.
* `skip_style="unet"` (SiD): the output of every down ResBlock is
  concatenated into the matching up ResBlock. `skip_style="residual"`
  (SiD2): one skip per level,
      down: h = blocks(h); pos = h; h = Down(h); neg = h
      up:   h = Up(h - neg) + pos; h = blocks(h)
  With `zero_init` (zero residual outputs, zero learned positions, bias-free
  Up) every block is the identity at init, so the feature map entering the
  head equals the one leaving the stem.
* dropout (rate `dropout_rate`) only at feature maps of side
  <= `dropout_max_res`, as SiD found it hurts at high resolution.

Call: `UViT(...).apply(params, x, logsnr, labels, train=..., rngs=...)`
with x f32[B, H, W, C] in [-1, 1], logsnr f32[B], labels i32[B] in
[0, num_classes] (num_classes = null label) or None; returns v_hat with x's
shape, float32.
"""

import dataclasses
import math
from typing import Any, Dict, Mapping, Optional, Sequence, Tuple, Union

import flax.linen as nn
import jax
import jax.numpy as jnp
from ml_collections import config_dict

from jaxgen import config_lib
from jaxgen.nn import attention
from jaxgen.nn import embeddings
from jaxgen.nn import linear
from jaxgen.nn import norms
from jaxgen.nn import partitioning as pt
from jaxgen.nn import remat as remat_lib
from jaxgen.nn import stack
from jaxgen.nn import resample
from jaxgen.nn import resblock
from jaxgen.nn import transformer
from jaxgen.nn import wavelets

Dtype = Any

# logSNR lies in about [-20, 20]; angular frequencies from 1 down to 1e-3 per
# logSNR unit resolve both small steps and the whole range.
_LOGSNR_MAX_PERIOD = 1000.0

# Field overrides per preset. Only `tiny` is ours; the ImageNet entries follow
# the best-supported public description of SiD's U-ViT, because its exact
# Appendix-B table could not be read (see
# docs/references/simple_diffusion.md, sec. 3.1 and "Open items"):
#   [S] UViT/2 at 256 and UViT/4 at 512, i.e. the first feature map is
#       128 x 128 at both sizes (JiT Tables 7/8 notation);
#   [S] ~2B parameters (JiT: 2B, Drifting-Models: 2.5B) and ~555 GMACs =
#       ~1110 GFLOPs per forward at 256 and 512 (JiT / AsymFlow);
#   [V] transformer stack at 16 x 16; dropout only at low resolution.
# INFERRED (not from the paper): channels (128, 256, 512) with two ResBlocks
# per conv level at 128/64/32, transformer width 2048 with 16 heads of 128
# and MLP ratio 4, depth 36, conditioning width 1024, dropout 0.1 at <= 16
# (the transformer only), patching rather than a wavelet stem. These give
# 2.47B parameters and 1.105 TFLOPs per forward at 256 and 512, close to the
# secondary numbers above (cond_dim=512 would give 2.11B; most of the
# difference is the per-block MLP FiLM projection). imagenet128 reuses the
# shapes with p = 1 (first map 128 x 128); that SiD used this exact model at
# 128 is a guess, as is the dropout rate (SiD's is not verified).
_IMAGENET_UVIT = dict(
    channels=(128, 256, 512),
    num_res_blocks=(2, 2, 2),
    transformer_width=2048,
    transformer_depth=36,
    num_heads=16,
    mlp_ratio=4,
    cond_dim=1024,
    num_classes=1000,
    downsample="patch",
    skip_style="unet",
    position_embedding="learned",
    dropout_rate=0.1,
    dropout_max_res=16,
    # 36 blocks: one scanned block compiles in a fraction of the time.
    scan_layers=True,
)

UVIT_PRESETS: Dict[str, Dict[str, Any]] = {
    # CPU smoke tests and small sweeps: 32px, transformer at 8 x 8.
    "tiny": dict(
        channels=(32, 64),
        num_res_blocks=(1, 1),
        transformer_width=64,
        transformer_depth=2,
        num_heads=4,
        mlp_ratio=4,
        cond_dim=64,
        freq_dim=64,
        patch_size=1,
    ),
    "imagenet128": dict(_IMAGENET_UVIT, patch_size=1),
    "imagenet256": dict(_IMAGENET_UVIT, patch_size=2),
    "imagenet512": dict(_IMAGENET_UVIT, patch_size=4),
}

_SKIP_STYLES = ("unet", "residual")
_DOWNSAMPLES = ("patch", "haar")
_POSITION_EMBEDDINGS = ("learned", "sincos", "none")


class UViT(nn.Module):
  """U-ViT denoiser: returns v_hat for noisy images at a given logSNR.

  Attributes:
    channels: channels of the conv levels, highest resolution first.
    num_res_blocks: ResBlocks per conv level (same length as `channels`).
    transformer_width: token width D at the lowest resolution.
    transformer_depth: number of transformer blocks.
    num_heads: attention heads (head dim = D / num_heads).
    mlp_ratio: transformer MLP hidden width / D.
    cond_dim: width of the conditioning vector.
    freq_dim: size of the sinusoidal logSNR embedding.
    num_classes: classes for conditioning; 0 = unconditional.
    patch_size: first-layer downsampling factor p (1 = none).
    downsample: "patch" (p x p strided conv) or "haar" (log2 p Haar levels).
    skip_style: "unet" (SiD) or "residual" (SiD2).
    position_embedding: "learned", "sincos" or "none".
    dropout_rate: dropout rate in the low-resolution stages.
    dropout_max_res: largest feature-map side that gets dropout.
    zero_init: zero-init residual outputs, learned positions and the head.
    qk_norm: RMS-normalise queries and keys.
    attention_impl: "auto" | "xla" | "cudnn" | "einsum" (see
      jaxgen.nn.attention.IMPLEMENTATIONS).
    num_groups: GroupNorm groups.
    out_channels: output channels (default: input channels).
    dtype: compute dtype (parameters are float32).
    remat: rematerialisation policy name (see jaxgen.nn.remat).
    scan_layers: the transformer blocks as one `nn.scan` (compile time flat
      in depth; parameters stacked under "transformer", see jaxgen.nn.stack)
      instead of a loop ("transformer0", ...).
  """
  channels: Sequence[int] = (32, 64)
  num_res_blocks: Sequence[int] = (1, 1)
  transformer_width: int = 64
  transformer_depth: int = 2
  num_heads: int = 4
  mlp_ratio: int = 4
  cond_dim: int = 64
  freq_dim: int = 64
  num_classes: int = 0
  patch_size: int = 1
  downsample: str = "patch"
  skip_style: str = "unet"
  position_embedding: str = "learned"
  dropout_rate: float = 0.0
  dropout_max_res: int = 16
  zero_init: bool = True
  qk_norm: bool = True
  attention_impl: str = "auto"
  num_groups: int = 32
  out_channels: Optional[int] = None
  dtype: Dtype = jnp.float32
  remat: str = "none"
  scan_layers: bool = False

  def check_fields(self) -> None:
    """Raises a one-line ValueError naming the config field that is wrong."""
    check = config_lib.check_range
    for name in ("transformer_width", "transformer_depth", "num_heads",
                 "cond_dim", "freq_dim", "patch_size", "num_groups"):
      check(f"config.model.{name}", getattr(self, name), low=1, integer=True)
    for name, values, low in (("channels", self.channels, 1),
                              ("num_res_blocks", self.num_res_blocks, 0)):
      for v in values:
        check(f"config.model.{name} entry", v, low=low, integer=True)
    check("config.model.mlp_ratio", self.mlp_ratio, low=1, integer=True)
    check("config.model.dropout_rate", self.dropout_rate, low=0, high=1,
          high_open=True)
    remat_lib.remat_policy(self.remat)
    attention.check_impl(
        self.attention_impl, self.dtype,
        self.transformer_width // self.num_heads
        if not self.transformer_width % self.num_heads else None)
    for name, value, allowed in (
        ("skip_style", self.skip_style, _SKIP_STYLES),
        ("downsample", self.downsample, _DOWNSAMPLES),
        ("position_embedding", self.position_embedding,
         _POSITION_EMBEDDINGS)):
      if value not in allowed:
        raise ValueError(f"config.model.{name}={value!r}; use one of "
                         f"{', '.join(allowed)}.")
    if len(self.channels) != len(self.num_res_blocks):
      raise ValueError("config.model.channels and num_res_blocks differ in "
                       "length.")
    if self.downsample == "haar" and not _is_pow2(self.patch_size):
      raise ValueError("config.model.downsample='haar' needs a power-of-2 "
                       f"patch_size (got {self.patch_size}).")
    if self.transformer_width % self.num_heads:
      raise ValueError(
          f"config.model.transformer_width={self.transformer_width} is not "
          f"divisible by num_heads={self.num_heads}.")
    if self.position_embedding == "sincos" and self.transformer_width % 4:
      # Half the width per axis, each half sin and cos.
      raise ValueError(
          f"config.model.transformer_width={self.transformer_width} is not a "
          "multiple of 4, which position_embedding='sincos' needs; change it "
          "or use 'learned'.")

  def validate(self, height: int, width: int) -> None:
    """Raises ValueError on inconsistent fields or an unusable image size.

    Args:
      height: image height.
      width: image width.
    """
    self.check_fields()
    total = self.patch_size * 2 ** len(self.channels)
    if height % total or width % total:
      raise ValueError(f"Image {height}x{width} is not divisible by "
                       f"patch_size * 2**levels = {total}.")

  def _block(self, cls):
    """`cls`, rematerialised in the backward pass as `self.remat` says."""
    policy = remat_lib.remat_policy(self.remat)
    if policy is False:
      return cls
    # (self, x, cond, train): `train` is a Python bool.
    return nn.remat(cls, static_argnums=(3,), policy=policy)

  def _dropout(self, res: int) -> float:
    """Dropout rate for feature maps of side `res`."""
    return self.dropout_rate if res <= self.dropout_max_res else 0.0

  @nn.compact
  def __call__(self, x: jax.Array, logsnr: jax.Array,
               labels: Optional[jax.Array] = None, *,
               train: bool) -> jax.Array:
    """Predicts v for noisy images.

    Args:
      x: f32[B, H, W, C] noisy images.
      logsnr: f32[B] log signal-to-noise ratios.
      labels: optional i32[B] in [0, num_classes]; num_classes (or None)
        is the null label used for classifier-free guidance.
      train: enables dropout (needs the 'dropout' rng).

    Returns:
      f32[B, H, W, out_channels or C], the v-prediction.
    """
    _, height, width, c_img = x.shape
    self.validate(height, width)
    c_out = self.out_channels or c_img
    p = self.patch_size
    dt = self.dtype
    levels = len(self.channels)
    head_init = pt.zeros_init if self.zero_init else pt.conv_init

    cond = embeddings.ConditioningEmbedding(
        self.cond_dim, self.freq_dim, _LOGSNR_MAX_PERIOD, self.num_classes,
        dtype=dt, name="cond")(logsnr, labels)

    # Stem. Pixel-channel dims (3, 3*p*p) are named None: no mesh axis
    # divides them, and these kernels are tiny.
    if p > 1 and self.downsample == "patch":
      h = resample.Downsample(self.channels[0], p, in_axis=None, dtype=dt,
                              name="stem")(x)
    else:
      if p > 1:
        x = wavelets.haar2d(x, _log2(p))
      h = linear.Conv(self.channels[0], 3, in_axis=None, dtype=dt,
                      name="stem")(x)
    h = pt.constrain(h, pt.CONV_ACT)
    self.sow("intermediates", "stem_out", h)

    res = height // p
    skips, negs = [], []
    for lvl, (ch, n) in enumerate(zip(self.channels, self.num_res_blocks)):
      for i in range(n):
        h = self._block(resblock.ResBlock)(
            ch, self._dropout(res), self.zero_init, self.num_groups, dt,
            name=f"down{lvl}_block{i}")(h, cond, train)
        if self.skip_style == "unet":
          skips.append(h)
      if self.skip_style == "residual":
        skips.append(h)
      self.sow("intermediates", f"down{lvl}_out", h)
      nxt = (self.channels[lvl + 1] if lvl + 1 < levels
             else self.transformer_width)
      h = resample.Downsample(nxt, 2, dtype=dt, name=f"down{lvl}")(h)
      h = pt.constrain(h, pt.CONV_ACT)
      negs.append(h)
      res //= 2

    h = self._transformer(h, cond, train)

    for lvl in reversed(range(levels)):
      ch, n = self.channels[lvl], self.num_res_blocks[lvl]
      res *= 2
      if self.skip_style == "residual":
        h = h - negs.pop()
      h = resample.Upsample(ch, 2, dtype=dt, name=f"up{lvl}")(h)
      if self.skip_style == "residual":
        h = h + skips.pop()
      for i in range(n):
        if self.skip_style == "unet":
          h = jnp.concatenate([h, skips.pop().astype(h.dtype)], axis=-1)
        h = self._block(resblock.ResBlock)(
            ch, self._dropout(res), self.zero_init, self.num_groups, dt,
            name=f"up{lvl}_block{i}")(h, cond, train)
      self.sow("intermediates", f"up{lvl}_out", h)
    self.sow("intermediates", "head_in", h)

    h = nn.silu(norms.GroupNorm(self.num_groups, dtype=dt, name="head_norm")(h))
    if p > 1 and self.downsample == "patch":
      out = resample.Upsample(c_out, p, out_axis=None, use_bias=True,
                              zero_init=self.zero_init, dtype=dt,
                              name="head")(h)
    else:
      out = linear.Conv(c_out * 4 ** _log2(p), 3, out_axis=None,
                        kernel_init=head_init, dtype=dt, name="head")(h)
      if p > 1:
        out = wavelets.haar2d_inverse(out, _log2(p))
    return out.astype(jnp.float32)

  def _transformer(self, h: jax.Array, cond: jax.Array,
                   train: bool) -> jax.Array:
    """The token stack at the lowest resolution; NHWC in and out."""
    b, rh, rw, d = h.shape
    tokens = pt.constrain(h.reshape(b, rh * rw, d), pt.TOKEN_ACT)
    if self.position_embedding == "learned":
      init = pt.zeros_init if self.zero_init else pt.embed_init
      pos = self.param("pos_embedding",
                       pt.logical_init(init, (None, pt.EMBED)),
                       (rh * rw, d), jnp.float32)
      tokens = tokens + pos.astype(tokens.dtype)
    elif self.position_embedding == "sincos":
      pos = embeddings.sincos_2d_positions(rh, rw, d)
      tokens = tokens + jnp.asarray(pos, tokens.dtype)
    block = dict(num_heads=self.num_heads, mlp_dim=self.mlp_ratio * d,
                 qk_norm=self.qk_norm, dropout_rate=self._dropout(rh),
                 zero_init=self.zero_init,
                 attention_impl=self.attention_impl, dtype=self.dtype)
    tokens = stack.apply(transformer.TransformerBlock, block, tokens,
                         (cond,), depth=self.transformer_depth,
                         scan=self.scan_layers, remat=self.remat,
                         name="transformer", static=(train,))
    self.sow("intermediates", "transformer_out", tokens)
    return tokens.reshape(b, rh, rw, d)


def _is_pow2(n: int) -> bool:
  return n >= 1 and (n & (n - 1)) == 0


def _log2(n: int) -> int:
  return int(round(math.log2(n)))


ModelSpec = Union[str, Mapping[str, Any]]


def uvit_kwargs(spec: ModelSpec, **overrides) -> Dict[str, Any]:
  """Field values for a preset name or a kwargs mapping, plus overrides.

  Args:
    spec: a key of `UVIT_PRESETS`, or a mapping of UViT fields.
    **overrides: fields that replace those of `spec`.

  Returns:
    A dict that `UViT(**...)` accepts.
  """
  if isinstance(spec, str):
    if spec not in UVIT_PRESETS:
      raise ValueError(f"unknown U-ViT preset {spec!r}; choose one of "
                       f"{sorted(UVIT_PRESETS)}.")
    spec = UVIT_PRESETS[spec]
  return {**dict(spec), **overrides}


def preset_fields(name: str) -> Dict[str, Any]:
  """Every UViT field for preset `name`: dataclass defaults, then the row.

  Configs store this full set so that any field can be overridden from the
  command line (`--config.model.transformer_depth=4`). The compute dtype is
  not among them: it is the run's `config.dtype`.

  Args:
    name: a key of `UVIT_PRESETS`.

  Returns:
    Dict of field name -> value (num_classes excluded: it comes from data).
  """
  fields = {f.name: f.default for f in dataclasses.fields(UViT)
            if f.name not in ("parent", "name", "num_classes", "remat",
                              "dtype")}
  fields.update({k: v for k, v in uvit_kwargs(name).items() if k != "dtype"})
  # Typed placeholders keep None-valued fields overridable from the CLI.
  if fields.get("out_channels") is None:
    fields["out_channels"] = config_dict.placeholder(int)
  return fields


def uvit_from_preset(name: str, **overrides) -> UViT:
  """Builds a UViT from a preset name, with field overrides.

  Args:
    name: a key of `UVIT_PRESETS`.
    **overrides: UViT fields to change (e.g. num_classes, dtype).

  Returns:
    The (unbound) module.
  """
  return UViT(**uvit_kwargs(name, **overrides))


def _image_hw(image_size: Union[int, Tuple[int, int]]) -> Tuple[int, int]:
  if isinstance(image_size, int):
    return image_size, image_size
  return int(image_size[0]), int(image_size[1])


def uvit_num_params(spec: ModelSpec, image_size: Union[int, Tuple[int, int]],
                    in_channels: int = 3) -> int:
  """Parameter count via `jax.eval_shape` (nothing is allocated).

  The learned position embedding depends on the image size, hence the
  argument.

  Args:
    spec: a preset name or a mapping of UViT fields.
    image_size: side (or (H, W)) of the images.
    in_channels: image channels.

  Returns:
    The number of parameters.
  """
  model = UViT(**uvit_kwargs(spec))
  h, w = _image_hw(image_size)
  x = jax.ShapeDtypeStruct((1, h, w, in_channels), jnp.float32)
  logsnr = jax.ShapeDtypeStruct((1,), jnp.float32)
  labels = (jax.ShapeDtypeStruct((1,), jnp.int32) if model.num_classes
            else None)
  shapes = jax.eval_shape(
      lambda k, x, s, y: model.init(k, x, s, y, train=False),
      jax.random.key(0), x, logsnr, labels)
  return int(sum(math.prod(a.shape)
                 for a in jax.tree.leaves(shapes["params"])))


def uvit_flops_per_example(spec: ModelSpec,
                           image_size: Union[int, Tuple[int, int]],
                           in_channels: int = 3) -> float:
  """Analytic forward FLOPs per example (training is about 3x this).

  Counts 2 * MACs of every conv, dense layer and attention matmul (QK^T
  and AV), with conv taps on the zero padding excluded, as XLA's
  `cost_analysis()` does. Norms, activations, softmax, FiLM arithmetic,
  additions and the Haar transform are ignored (elementwise).

  Args:
    spec: a preset name or a mapping of UViT fields.
    image_size: side (or (H, W)) of the images.
    in_channels: image channels (also the output channels unless
      `out_channels` is set).

  Returns:
    Forward FLOPs for one example.
  """
  m = UViT(**uvit_kwargs(spec))
  height, width = _image_hw(image_size)
  m.validate(height, width)
  p = m.patch_size
  c_out = m.out_channels or in_channels
  dc = m.cond_dim
  conv3 = lambda hh, ww, ci, co: linear.conv_same_macs(hh, ww, 3, ci, co)

  def res_block(hh, ww, ci, co):
    macs = conv3(hh, ww, ci, co) + conv3(hh, ww, co, co) + dc * 2 * co
    if ci != co:
      macs += hh * ww * ci * co  # 1x1 skip conv
    return macs

  macs = m.freq_dim * dc + dc * dc  # conditioning MLP
  hh, ww = height // p, width // p
  if p > 1 and m.downsample == "patch":
    macs += hh * ww * p * p * in_channels * m.channels[0]
    macs += hh * ww * m.channels[0] * c_out * p * p  # transposed-conv head
  else:
    bands = 4 ** _log2(p)
    macs += conv3(hh, ww, in_channels * bands, m.channels[0])
    macs += conv3(hh, ww, m.channels[0], c_out * bands)

  widths = list(m.channels) + [m.transformer_width]
  for lvl, (ch, n) in enumerate(zip(m.channels, m.num_res_blocks)):
    # Every level is entered at its own width (the stem or the previous
    # Down already maps to it); unet up blocks also see a concatenated skip.
    c_up = 2 * ch if m.skip_style == "unet" else ch
    macs += n * (res_block(hh, ww, ch, ch) + res_block(hh, ww, c_up, ch))
    # Down: 2x2 stride-2 conv; Up: its transpose; same MAC count.
    macs += 2 * (hh // 2) * (ww // 2) * 4 * ch * widths[lvl + 1]
    hh, ww = hh // 2, ww // 2

  d, t = m.transformer_width, hh * ww
  hd = d // m.num_heads * m.num_heads
  mlp = m.mlp_ratio * d
  per_block = (4 * t * d * hd          # q, k, v and output projections
               + 2 * t * t * hd        # QK^T and AV
               + 2 * t * d * mlp       # MLP in and out
               + dc * 2 * mlp)         # MLP FiLM
  macs += m.transformer_depth * per_block
  return 2.0 * macs
