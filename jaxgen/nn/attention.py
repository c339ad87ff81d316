"""Multi-head dot-product attention with QK-normalisation.

QK-norm (Dehghani et al. 2023, ViT-22B; used by SiD's U-ViT): q and k are
RMS-normalised over the head dimension, with a learned per-dimension scale,
before the usual 1/sqrt(head_dim) logits. It bounds the attention logits and
removes the loss spikes large transformers otherwise show at high learning
rates.
"""

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen.nn import linear
from jaxgen.nn import norms
from jaxgen.nn import partitioning as pt

Dtype = Any


def dot_product_attention(q: jax.Array, k: jax.Array, v: jax.Array,
                          mask: Optional[jax.Array] = None) -> jax.Array:
  """softmax(q k^T / sqrt(d)) v, logits and softmax in float32.

  Args:
    q: f[B, Lq, H, D].
    k: f[B, Lk, H, D].
    v: f[B, Lk, H, Dv].
    mask: optional bool, broadcastable to [B, H, Lq, Lk]; True = attend.

  Returns:
    f[B, Lq, H, Dv] in q's dtype.
  """
  scale = q.shape[-1] ** -0.5
  # bf16 inputs accumulate into float32 logits (as jax's attention does);
  # rounding q·k to bf16 first doubled the output error at large logits.
  logits = jnp.einsum("bqhd,bkhd->bhqk", q, k,
                      preferred_element_type=jnp.float32) * scale
  if mask is not None:
    logits = jnp.where(mask, logits, jnp.finfo(jnp.float32).min)
  weights = jax.nn.softmax(logits, axis=-1).astype(v.dtype)
  return jnp.einsum("bhqk,bkhd->bqhd", weights, v)


# `model.attention_impl`: "auto" lets `jax.nn.dot_product_attention` pick
# (XLA today), "xla" / "cudnn" force one (cuDNN's fused kernel needs a GPU
# and bf16/fp16 inputs), "einsum" is the explicit reference above.
IMPLEMENTATIONS = ("auto", "xla", "cudnn", "einsum")


def check_impl(impl: str, dtype: Optional[Dtype] = None,
               head_dim: Optional[int] = None) -> None:
  """Raises a one-line ValueError if this backend or model cannot run `impl`.

  cuDNN's fused kernel (jax's `dot_product_attention(implementation=
  "cudnn")`) takes bf16 / fp16 inputs only and head dims that are multiples
  of 8 up to 256 (128 before Hopper); jax refuses others while tracing,
  naming no config field.

  Args:
    impl: one of IMPLEMENTATIONS.
    dtype: the attention's compute dtype, if known.
    head_dim: the per-head width, if known.
  """
  if impl not in IMPLEMENTATIONS:
    raise ValueError(f"config.model.attention_impl={impl!r}: choose one of "
                     f"{', '.join(IMPLEMENTATIONS)}.")
  backend = jax.default_backend()
  if impl == "cudnn" and backend != "gpu":
    raise ValueError("config.model.attention_impl='cudnn' needs a GPU backend "
                     f"(this one is {backend!r}); use 'auto' or 'xla'.")
  if impl == "cudnn" and dtype is not None and jnp.dtype(dtype) not in (
      jnp.dtype(jnp.bfloat16), jnp.dtype(jnp.float16)):
    raise ValueError(
        "config.model.attention_impl='cudnn' runs bf16 or float16 only; the "
        f"model computes in {jnp.dtype(dtype).name} (config.dtype): set "
        "config.dtype=bfloat16 or use attention_impl 'auto'.")
  if impl == "cudnn" and head_dim is not None and (
      head_dim % 8 or head_dim > 256):
    raise ValueError(
        f"config.model.attention_impl='cudnn' needs a head dim that is a "
        f"multiple of 8 up to 256 (128 before Hopper); this model's is "
        f"{head_dim} (width / num_heads): change them or use 'auto'.")


def attend(q: jax.Array, k: jax.Array, v: jax.Array,
           mask: Optional[jax.Array] = None, impl: str = "auto") -> jax.Array:
  """Scaled dot-product attention by the chosen implementation.

  Args:
    q: f[B, Lq, H, D].
    k: f[B, Lk, H, D].
    v: f[B, Lk, H, Dv].
    mask: optional bool, broadcastable to [B, H, Lq, Lk]; True = attend.
    impl: one of IMPLEMENTATIONS.

  Returns:
    f[B, Lq, H, Dv] in q's dtype.
  """
  if impl == "einsum":
    return dot_product_attention(q, k, v, mask)
  return jax.nn.dot_product_attention(
      q, k, v, mask=mask, implementation=None if impl == "auto" else impl)


class MultiHeadAttention(nn.Module):
  """Multi-head (self- or cross-) attention.

  Attributes:
    num_heads: number of heads.
    head_dim: per-head width (default: input width // num_heads).
    qk_norm: RMS-normalise q and k with learned scales.
    zero_init_out: zero the output projection (residual branch starts at 0).
    impl: attention implementation (see IMPLEMENTATIONS).
    dtype: compute dtype.
  """
  num_heads: int
  head_dim: Optional[int] = None
  qk_norm: bool = True
  zero_init_out: bool = False
  impl: str = "auto"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, context: Optional[jax.Array] = None,
               mask: Optional[jax.Array] = None) -> jax.Array:
    """Attends from x to context (default: x itself).

    Args:
      x: f[B, L, D] queries.
      context: optional f[B, Lc, Dc] keys/values source.
      mask: optional bool mask broadcastable to [B, H, L, Lc].

    Returns:
      f[B, L, D].
    """
    width = x.shape[-1]
    head_dim = self.head_dim or width // self.num_heads
    ctx = x if context is None else context
    proj = lambda name: linear.Dense(  # pylint: disable=g-long-lambda
        (self.num_heads, head_dim), (pt.EMBED, pt.HEADS, pt.KV),
        use_bias=False, dtype=self.dtype, name=name)
    q = proj("query")(x)
    k = proj("key")(ctx)
    v = proj("value")(ctx)
    if self.qk_norm:
      q = norms.RMSNorm(axis_name=pt.KV, dtype=self.dtype, name="q_norm")(q)
      k = norms.RMSNorm(axis_name=pt.KV, dtype=self.dtype, name="k_norm")(k)
    out = attend(q, k, v, mask, self.impl)
    init = pt.zeros_init if self.zero_init_out else pt.dense_init
    y = linear.Dense(width, (pt.HEADS, pt.KV, pt.EMBED), num_in_axes=2,
                     kernel_init=init, dtype=self.dtype, name="out")(out)
    return pt.constrain(y, pt.TOKEN_ACT)
