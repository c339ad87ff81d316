"""A DiT for packed pyramid sequences (Peebles & Xie 2023; Jin et al. 2024).

The network works on *tokens* laid out by `jaxgen.flow.layout`: the K stage
samples of a batch packed into one sequence, each a segment of history and
generated-frame chunks at their own resolutions. Per segment it embeds the
timestep (and class) into a conditioning vector; every block turns that into
adaLN-zero modulations and gathers each token's from its segment (the
official `forward_with_pad`), so history tokens are modulated by their
segment's timestep. Attention goes through `jax.nn.dot_product_attention`
(the fused kernel on GPUs) with the layout's (same segment) ∧ (slot_q >=
slot_k) mask, segment by segment or over the whole packed row; q and k are RMS-normalised (QK-norm) and, by default, rotated
by 3-D RoPE over (frame slot, row, column).

Positions: "rope" (default; relative, so a stage's smaller grid simply
extrapolates), "sincos" (SD3-style fixed additive sin-cos at the same
coordinates) or "learned" (additive per-axis tables, linearly interpolated
at the fractional centres of coarse history cells).
"""

from typing import Any, Optional, Tuple

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from jaxgen import config_lib
from jaxgen.flow import layout as layout_lib
from jaxgen.nn import attention
from jaxgen.nn import embeddings
from jaxgen.nn import linear
from jaxgen.nn import norms
from jaxgen.nn import partitioning as pt
from jaxgen.nn import remat as remat_lib
from jaxgen.nn import stack
from jaxgen.nn import rope

Dtype = Any
POSITIONS = ("rope", "sincos", "learned")
# Elementwise FLOPs XLA counts per attention score and head in the softmax.
SOFTMAX_FLOPS = 6


def _modulate(x, shift, scale):
  return x * (1.0 + scale) + shift


class DiTBlock(nn.Module):
  """adaLN-zero transformer block with per-segment modulation.

  Attributes:
    num_heads: attention heads.
    mlp_dim: MLP hidden width.
    qk_norm: RMS-normalise queries and keys.
    attention_impl: see jaxgen.nn.attention.IMPLEMENTATIONS.
    dtype: compute dtype.
  """
  num_heads: int
  mlp_dim: int
  qk_norm: bool = True
  attention_impl: str = "auto"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x, cond, masks, angles, segment_ids, spans):
    """Applies the block.

    Args:
      x: f[B, L, D] tokens.
      cond: f[B, S, Dc] per-segment conditioning.
      masks: one bool[B or 1, 1, n, n] mask per span.
      angles: f32[1, L, head_dim/2] RoPE angles, or None.
      segment_ids: the segment of each token (L ints, static).
      spans: token ranges attended separately: ((0, L),) for one masked
        call over the packed row, or each segment's range (static).

    Returns:
      f[B, L, D].
    """
    width = x.shape[-1]
    head_dim = width // self.num_heads
    # (6, D) rather than 6·D so tensor-parallel shards line up with x's.
    mod = linear.Dense((6, width), (pt.COND, None, pt.EMBED),
                       kernel_init=pt.zeros_init, dtype=self.dtype,
                       name="modulation")(nn.silu(cond))
    mod = jnp.take(mod, jnp.asarray(segment_ids), axis=1)  # [B, L, 6, D]
    shift_a, scale_a, gate_a, shift_m, scale_m, gate_m = [
        mod[:, :, i] for i in range(6)]

    h = norms.LayerNorm(use_scale=False, use_bias=False, dtype=self.dtype,
                        name="norm_attn")(x)
    h = _modulate(h, shift_a, scale_a)
    proj = lambda name: linear.Dense(  # pylint: disable=g-long-lambda
        (self.num_heads, head_dim), (pt.EMBED, pt.HEADS, pt.KV),
        use_bias=False, dtype=self.dtype, name=name)
    q, k, v = proj("query")(h), proj("key")(h), proj("value")(h)
    if self.qk_norm:
      q = norms.RMSNorm(axis_name=pt.KV, dtype=self.dtype, name="q_norm")(q)
      k = norms.RMSNorm(axis_name=pt.KV, dtype=self.dtype, name="k_norm")(k)
    if angles is not None:
      q, k = rope.apply_rope(q, angles), rope.apply_rope(k, angles)
    a = jnp.concatenate(
        [attention.attend(q[:, i:j], k[:, i:j], v[:, i:j], m,
                          self.attention_impl)
         for (i, j), m in zip(spans, masks)], axis=1)
    a = linear.Dense(width, (pt.HEADS, pt.KV, pt.EMBED), num_in_axes=2,
                     dtype=self.dtype, name="out")(a)
    x = pt.constrain(x + gate_a * a, pt.TOKEN_ACT)

    h = norms.LayerNorm(use_scale=False, use_bias=False, dtype=self.dtype,
                        name="norm_mlp")(x)
    h = _modulate(h, shift_m, scale_m)
    h = linear.Dense(self.mlp_dim, (pt.EMBED, pt.MLP), dtype=self.dtype,
                     name="mlp_in")(h)
    h = pt.constrain(nn.gelu(h, approximate=True), pt.MLP_ACT)
    h = linear.Dense(width, (pt.MLP, pt.EMBED), dtype=self.dtype,
                     name="mlp_out")(h)
    return pt.constrain(x + gate_m * h, pt.TOKEN_ACT)


class DiT(nn.Module):
  """Diffusion transformer over a packed token layout.

  Attributes:
    token_dim: features per input / output token (patch² × channels).
    width: model width D.
    depth: number of blocks.
    num_heads: attention heads (D divisible by it; head_dim even for RoPE).
    mlp_ratio: MLP hidden width / D.
    num_classes: classes for conditioning (0 = unconditional); the label
      `num_classes` is the null label of classifier-free guidance.
    positions: "rope" | "sincos" | "learned".
    max_positions: (slots, rows, cols) the learned tables cover.
    rope_theta: RoPE base wavelength.
    freq_dim: sinusoidal timestep embedding size.
    qk_norm: QK-norm in every block.
    attention_impl: "auto" | "xla" | "cudnn" | "einsum" (see
      jaxgen.nn.attention.IMPLEMENTATIONS).
    segment_attention: attend segment by segment (segments never attend to
      each other, so this is the same function as one masked call over the
      packed row, without the cross-segment scores: the official per-stage
      varlen loop); False makes one `dot_product_attention` call with the
      full (same segment) ∧ (slot_q >= slot_k) mask.
    remat: rematerialisation policy name (see jaxgen.nn.remat).
    scan_layers: the blocks as one `nn.scan` (compile time flat in depth;
      parameters stacked under "block_", see jaxgen.nn.stack) instead of a
      loop ("block_0", ...).
    dtype: compute dtype.
  """
  token_dim: int
  width: int = 256
  depth: int = 6
  num_heads: int = 4
  mlp_ratio: float = 4.0
  num_classes: int = 0
  positions: str = "rope"
  max_positions: Tuple[int, int, int] = (16, 64, 64)
  rope_theta: float = 10_000.0
  freq_dim: int = 256
  qk_norm: bool = True
  attention_impl: str = "auto"
  segment_attention: bool = True
  remat: str = "none"
  scan_layers: bool = False
  dtype: Dtype = jnp.float32

  @property
  def mlp_dim(self) -> int:
    """MLP hidden width: width × mlp_ratio."""
    return int(self.width * self.mlp_ratio)

  def validate(self) -> None:
    """Raises a one-line ValueError if the widths do not fit together."""
    for name in ("width", "depth", "num_heads", "freq_dim"):
      config_lib.check_range(f"config.model.{name}", getattr(self, name),
                             low=1, integer=True)
    for name in ("mlp_ratio", "rope_theta"):
      config_lib.check_range(f"config.model.{name}", getattr(self, name),
                             low=0, low_open=True)
    if self.width % self.num_heads:
      raise ValueError(f"model.width={self.width} is not divisible by "
                       f"model.num_heads={self.num_heads}.")
    if self.positions not in POSITIONS:
      raise ValueError(f"model.positions={self.positions!r}: choose one of "
                       f"{', '.join(POSITIONS)}.")
    head_dim = self.width // self.num_heads
    if self.positions == "rope" and head_dim % 2:
      raise ValueError("RoPE needs an even head_dim; change model.width or "
                       "model.num_heads.")
    # Rows and columns get 3/8 of the (head or model) width each, rounded
    # down to even: below 6 that is nothing, and the model had no spatial
    # positions at all (images: none whatever).
    if self.positions == "rope" and rope.axes_dims(head_dim)[1] == 0:
      raise ValueError(
          f"RoPE with head_dim={head_dim} (model.width / model.num_heads) "
          "leaves rows and columns no dimensions; use a head_dim >= 6.")
    attention.check_impl(self.attention_impl, self.dtype, head_dim)
    remat_lib.remat_policy(self.remat)
    if self.positions == "sincos" and self.width % 2:
      raise ValueError("sincos positions need an even model.width.")
    if self.positions == "sincos" and rope.axes_dims(self.width)[1] == 0:
      raise ValueError(f"sincos positions with model.width={self.width} "
                       "leave rows and columns no dimensions; use >= 6.")

  @nn.compact
  def __call__(self, tokens: jax.Array, layout: layout_lib.Layout,
               timesteps: jax.Array, labels: Optional[jax.Array] = None,
               valid: Optional[jax.Array] = None) -> jax.Array:
    """Predicts the velocity of every token.

    Args:
      tokens: f[B, L, token_dim] packed noisy (and history) tokens.
      layout: the static layout of the row (`jaxgen.flow.layout.build`).
      timesteps: f32[B, S] the embedded scalar of each segment.
      labels: i32[B, S] class of each segment (None: unconditional or
        null).
      valid: bool[B, L] token validity (empty history slots), or None.

    Returns:
      f32[B, L, token_dim].
    """
    cond = embeddings.ConditioningEmbedding(
        self.width, freq_dim=self.freq_dim, num_classes=self.num_classes,
        dtype=self.dtype, name="cond")(timesteps, labels)
    x = linear.Dense(self.width, (None, pt.EMBED), dtype=self.dtype,
                     name="embed")(tokens)
    head_dim = self.width // self.num_heads
    coords = layout.coords
    angles = None
    if self.positions == "rope":
      angles = rope.rope_angles(jnp.asarray(coords)[None],
                                rope.axes_dims(head_dim), self.rope_theta)
    elif self.positions == "sincos":
      x = x + jnp.asarray(_sincos(coords, self.width), self.dtype)[None]
    else:
      x = x + self._learned_positions(coords)[None].astype(self.dtype)
    x = pt.constrain(x, pt.TOKEN_ACT)
    spans = (layout.spans if self.segment_attention
             else ((0, layout.length),))
    masks = [layout_lib.attention_mask(layout, valid, span) for span in spans]

    block = dict(num_heads=self.num_heads, mlp_dim=self.mlp_dim,
                 qk_norm=self.qk_norm, attention_impl=self.attention_impl,
                 dtype=self.dtype)
    # Segment ids and spans are static (they select slices and rows).
    segment_ids = tuple(int(i) for i in layout.segment_ids)
    x = stack.apply(DiTBlock, block, x, (cond, masks, angles),
                    depth=self.depth, scan=self.scan_layers,
                    remat=self.remat, name="block_",
                    static=(segment_ids, tuple(spans)))

    mod = linear.Dense((2, self.width), (pt.COND, None, pt.EMBED),
                       kernel_init=pt.zeros_init, dtype=self.dtype,
                       name="final_modulation")(nn.silu(cond))
    mod = jnp.take(mod, jnp.asarray(layout.segment_ids), axis=1)
    h = norms.LayerNorm(use_scale=False, use_bias=False, dtype=self.dtype,
                        name="norm_out")(x)
    h = _modulate(h, mod[:, :, 0], mod[:, :, 1])
    out = linear.Dense(self.token_dim, (pt.EMBED, None),
                       kernel_init=pt.zeros_init, dtype=self.dtype,
                       name="unembed")(h)
    return out.astype(jnp.float32)

  def _learned_positions(self, coords: np.ndarray) -> jax.Array:
    """Sum of per-axis learned tables at (possibly fractional) coords."""
    total = 0.0
    for a, (name, size) in enumerate(zip(("slot", "row", "col"),
                                         self.max_positions)):
      table = self.param(f"pos_{name}",
                         pt.logical_init(pt.embed_init, (None, pt.EMBED)),
                         (size, self.width), jnp.float32)
      c = np.clip(coords[:, a], 0, size - 1)
      lo = np.floor(c).astype(np.int32)
      hi = np.minimum(lo + 1, size - 1)
      w = jnp.asarray((c - lo)[:, None], jnp.float32)
      total = total + (1 - w) * table[lo] + w * table[hi]
    return total


def _sincos(coords: np.ndarray, width: int) -> np.ndarray:
  """Fixed sin-cos over (slot, row, col) coords: 1/4 time, 3/8 per space."""
  d_t, d_hw, _ = rope.axes_dims(width)
  parts = [embeddings.sincos_1d(coords[:, 1], d_hw),
           embeddings.sincos_1d(coords[:, 2], d_hw)]
  if d_t:
    parts.insert(0, embeddings.sincos_1d(coords[:, 0], d_t))
  return np.concatenate(parts, axis=1)


def forward_flops(kwargs: dict, layout: layout_lib.Layout) -> float:
  """Matmul FLOPs of one forward pass over one packed row.

  Attention is counted dense over each attended span (the segment, or the
  whole row without `segment_attention`), as XLA's `dot_product_attention`
  computes it whatever the mask, with the softmax's
  elementwise work (it is as large as the matmuls' at small widths); other
  elementwise work (norms, GELU, modulation) is left out (~80 FLOPs per
  token and width per block, 0.2% at width 1536); per-segment work
  (conditioning, modulation) is counted per segment.

  Args:
    kwargs: DiT constructor arguments (token_dim, width, depth, mlp_ratio,
      freq_dim).
    layout: the row layout.

  Returns:
    FLOPs (2 per multiply-add).
  """
  d = int(kwargs.get("width", 256))
  depth = int(kwargs.get("depth", 6))
  m = int(d * float(kwargs.get("mlp_ratio", 4.0)))
  p = int(kwargs["token_dim"])
  f = int(kwargs.get("freq_dim", 256))
  length, segments = layout.length, len(layout.stages)
  heads = int(kwargs.get("num_heads", 4))
  spans = (layout.spans if kwargs.get("segment_attention", True)
           else ((0, length),))
  scores = sum((j - i) ** 2 for i, j in spans)
  per_block = (2 * length * d * (4 * d + 2 * m)     # qkv + out + MLP
               + 4 * scores * d                      # q·k and weights·v
               # softmax: scale, max, subtract, exp, sum, divide per score
               + SOFTMAX_FLOPS * heads * scores
               + 2 * segments * d * 6 * d)           # adaLN modulation
  embed = 2 * length * p * d * 2                     # in + out projections
  cond = 2 * segments * (f * d + d * d + 2 * d * d)  # timestep MLP + final
  return float(depth * per_block + embed + cond)
