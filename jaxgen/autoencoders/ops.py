"""DC-AE building blocks (Chen et al. 2025), NHWC, in the reference's order.

* Residual autoencoding shortcuts: `channel_average_down` (space-to-channel,
  then the mean of consecutive channel groups) and `channel_duplicate_up`
  (repeat each channel, then channel-to-space). Channels are packed as torch's
  `pixel_unshuffle` packs them, channel-major: output channel
  `c * r * r + i * r + j` holds input channel c at offset (i, j), so weights
  converted from the PyTorch models line up unchanged.
* `ResBlock`: 3x3 conv (bias) -> act -> 3x3 conv (no bias) -> norm, plus x.
* `GLUMBConv`: 1x1 expand to 2 x 4C (bias) -> SiLU -> depthwise 3x3 (bias) ->
  x * SiLU(gate) -> 1x1 to C (no bias) -> RMSNorm, plus x.
* `LiteMLA`: ReLU linear attention over multi-scale q/k/v (a depthwise s x s
  conv and a grouped 1x1 conv per scale), computed in float32 with the
  reference's epsilon 1e-15, -> 1x1 projection -> RMSNorm, plus x.
* `EfficientViTBlock` = LiteMLA then GLUMBConv.

RMSNorm is DC-AE's RMSNorm2d: over channels, with scale *and* bias, eps 1e-5.
See docs/references/autoencoders.md section 1.
"""

from typing import Any, Sequence

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen.nn import linear
from jaxgen.nn import norms

Dtype = Any
ATTENTION_EPS = 1e-15
NORM_EPS = 1e-5


def pixel_unshuffle(x: jax.Array, factor: int) -> jax.Array:
  """torch's `pixel_unshuffle` on NHWC: [B, H, W, C] -> [B, H/r, W/r, C r r].

  Output channel c * r * r + i * r + j is x[r h + i, r w + j, c].
  """
  return einops.rearrange(x, "b (h i) (w j) c -> b h w (c i j)",
                          i=factor, j=factor)


def pixel_shuffle(x: jax.Array, factor: int) -> jax.Array:
  """torch's `pixel_shuffle` on NHWC, the inverse of `pixel_unshuffle`."""
  return einops.rearrange(x, "b h w (c i j) -> b (h i) (w j) c",
                          i=factor, j=factor)


def channel_average_down(x: jax.Array, out_channels: int,
                         factor: int = 2) -> jax.Array:
  """The encoder's non-parametric shortcut (factor 1 at the latent).

  Args:
    x: f[B, H, W, C].
    out_channels: channels after; C * factor**2 must be a multiple of it.
    factor: spatial downsampling (1 keeps the size).

  Returns:
    f[B, H / factor, W / factor, out_channels]: means of consecutive groups
    of C * factor**2 / out_channels unshuffled channels.
  """
  y = pixel_unshuffle(x, factor) if factor > 1 else x
  if y.shape[-1] % out_channels:
    raise ValueError(f"{y.shape[-1]} channels cannot be averaged into "
                     f"{out_channels} groups.")
  return einops.reduce(y, "b h w (c g) -> b h w c", "mean", c=out_channels)


def channel_duplicate_up(x: jax.Array, out_channels: int,
                         factor: int = 2) -> jax.Array:
  """The decoder's non-parametric shortcut (factor 1 at the latent).

  Args:
    x: f[B, h, w, C].
    out_channels: channels after; out_channels * factor**2 must be a
      multiple of C.
    factor: spatial upsampling (1 keeps the size).

  Returns:
    f[B, h * factor, w * factor, out_channels]: every channel repeated
    out_channels * factor**2 / C times in place, then shuffled.
  """
  total = out_channels * factor * factor
  if total % x.shape[-1]:
    raise ValueError(f"{x.shape[-1]} channels cannot be duplicated into "
                     f"{total}.")
  y = jnp.repeat(x, total // x.shape[-1], axis=-1)
  return pixel_shuffle(y, factor) if factor > 1 else y


def rms_norm(name: str = None) -> nn.Module:
  """DC-AE's RMSNorm2d: scale and bias over channels, eps 1e-5."""
  return norms.RMSNorm(epsilon=NORM_EPS, use_bias=True, name=name)


def _act(name: str):
  return {"silu": nn.silu, "relu": nn.relu, "relu6": nn.relu6}[name]


def batch_norm(train: bool, name: str = None) -> nn.Module:
  """The in/mix decoders' BatchNorm2d (eps 1e-5, torch momentum 0.1).

  Its statistics live in the "batch_stats" collection. Under `jax.jit` the
  batch is one global array, so in training the statistics are those of the
  global batch, synchronised over the data axes without extra code.
  """
  return nn.BatchNorm(use_running_average=not train, momentum=0.9,
                      epsilon=NORM_EPS, name=name)


class ResBlock(nn.Module):
  """conv3x3 (bias) -> act -> conv3x3 (no bias) -> norm, plus the input.

  Attributes:
    act: "silu", "relu" or "relu6".
    norm: "rms_norm" or "batch_norm".
    dtype: compute dtype.
    conv_impl: the 3x3 convs' `linear.Conv.impl`.
  """
  act: str = "silu"
  norm: str = "rms_norm"
  dtype: Dtype = jnp.float32
  conv_impl: str = "lax"

  @nn.compact
  def __call__(self, x, train: bool = False):
    c = x.shape[-1]
    h = linear.Conv(c, 3, dtype=self.dtype, impl=self.conv_impl,
                    name="conv1")(x)
    h = _act(self.act)(h)
    h = linear.Conv(c, 3, use_bias=False, dtype=self.dtype,
                    impl=self.conv_impl, name="conv2")(h)
    norm = (batch_norm(train, "norm") if self.norm == "batch_norm"
            else rms_norm("norm"))
    return x + norm(h).astype(x.dtype)


class GLUMBConv(nn.Module):
  """Gated inverted-bottleneck conv (SANA's GLUMBConv), plus the input."""
  expand_ratio: int = 4
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    c = x.shape[-1]
    hidden = self.expand_ratio * c
    h = linear.Conv(2 * hidden, 1, dtype=self.dtype, name="conv_inverted")(x)
    h = nn.silu(h)
    h = linear.Conv(2 * hidden, 3, groups=2 * hidden, in_axis=None,
                    dtype=self.dtype, name="conv_depth")(h)
    h, gate = jnp.split(h, 2, axis=-1)
    h = h * nn.silu(gate)
    h = linear.Conv(c, 1, use_bias=False, dtype=self.dtype,
                    name="conv_point")(h)
    return x + rms_norm("norm")(h).astype(x.dtype)


def relu_linear_attention(q: jax.Array, k: jax.Array, v: jax.Array,
                          eps: float = ATTENTION_EPS) -> jax.Array:
  """out_n = sum_m v_m (k_m . q_n) / (sum_m k_m . q_n + eps), in float32.

  The reference switches to the "quadratic" form (scores normalised over
  keys) when there are at most head_dim tokens; it is the same expression,
  so one form serves both.

  Args:
    q: [B, N, G, d] (already through ReLU).
    k: [B, N, G, d] (already through ReLU).
    v: [B, N, G, d].
    eps: added to the denominator.

  Returns:
    f32[B, N, G, d].
  """
  q, k, v = (t.astype(jnp.float32) for t in (q, k, v))
  kv = jnp.einsum("bmgd,bmge->bgde", k, v, precision="highest")
  num = jnp.einsum("bngd,bgde->bnge", q, kv, precision="highest")
  den = jnp.einsum("bngd,bgd->bng", q, jnp.sum(k, axis=1),
                   precision="highest")
  return num / (den[..., None] + eps)


class LiteMLA(nn.Module):
  """Multi-scale ReLU linear attention with a residual connection.

  Attributes:
    head_dim: channels per head (32 in DC-AE).
    scales: kernel sizes of the multi-scale q/k/v aggregation (() or (5,)).
    dtype: compute dtype outside the attention.
  """
  head_dim: int = 32
  scales: Sequence[int] = (5,)
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    b, h, w, c = x.shape
    d = self.head_dim
    if c % d:
      raise ValueError(f"LiteMLA width {c} is not a multiple of head_dim {d}.")
    heads = c // d
    # The fused 1x1 q/k/v projection: its weight is diffusers' to_q, to_k,
    # to_v concatenated, but those names are not semantic: every 3d
    # consecutive channels are one head's q, k, v (so "to_q" holds all
    # three for the first third of the heads; the reshape below).
    qkv = linear.Conv(3 * c, 1, use_bias=False, dtype=self.dtype,
                      name="qkv")(x)
    parts = [qkv]
    for s in self.scales:
      agg = linear.Conv(3 * c, s, use_bias=False, groups=3 * c, in_axis=None,
                        dtype=self.dtype, name=f"aggreg_{s}_depth")(qkv)
      agg = linear.Conv(3 * c, 1, use_bias=False, groups=3 * heads,
                        in_axis=None, dtype=self.dtype,
                        name=f"aggreg_{s}_group")(agg)
      parts.append(agg)
    t = jnp.concatenate(parts, axis=-1)
    # Groups of 3d consecutive channels: [q (d), k (d), v (d)] each.
    t = t.reshape(b, h * w, -1, 3 * d)
    q, k, v = jnp.split(t, 3, axis=-1)
    out = relu_linear_attention(nn.relu(q), nn.relu(k), v)
    out = out.reshape(b, h, w, -1).astype(self.dtype)
    out = linear.Conv(c, 1, use_bias=False, dtype=self.dtype,
                      name="proj")(out)
    return x + rms_norm("norm")(out).astype(x.dtype)


class EfficientViTBlock(nn.Module):
  """LiteMLA (context) then GLUMBConv (local), each with its residual."""
  head_dim: int = 32
  scales: Sequence[int] = (5,)
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, train: bool = False):
    del train
    x = LiteMLA(self.head_dim, tuple(self.scales), self.dtype,
                name="attn")(x)
    return GLUMBConv(dtype=self.dtype, name="conv_out")(x)
