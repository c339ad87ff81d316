"""Pre-norm transformer block with a conditioned MLP (SiD's U-ViT block).

  x = x + Attn(LN(x))                # QK-norm, zero-initialised out proj
  x = x + Mlp(LN(x), cond)           # FiLM on the hidden layer

With `zero_init` both residual branches start at zero, so a stack of blocks
is the identity at init.
"""

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen.nn import attention
from jaxgen.nn import mlp
from jaxgen.nn import norms
from jaxgen.nn import partitioning as pt

Dtype = Any


class TransformerBlock(nn.Module):
  """Pre-norm self-attention + MLP block.

  Attributes:
    num_heads: attention heads.
    mlp_dim: MLP hidden width.
    head_dim: per-head width (default: width // num_heads).
    qk_norm: RMS-normalise queries and keys.
    dropout_rate: dropout on the attention output and the MLP hidden layer.
    zero_init: zero both residual output projections.
    attention_impl: attention implementation (attention.IMPLEMENTATIONS).
    dtype: compute dtype.
  """
  num_heads: int
  mlp_dim: int
  head_dim: Optional[int] = None
  qk_norm: bool = True
  dropout_rate: float = 0.0
  zero_init: bool = True
  attention_impl: str = "auto"
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, cond: Optional[jax.Array] = None,
               train: bool = False,
               mask: Optional[jax.Array] = None) -> jax.Array:
    """Applies the block.

    Args:
      x: f[B, L, D] tokens.
      cond: optional f[B, Dc] conditioning vector for the MLP.
      mask: optional attention mask broadcastable to [B, H, L, L].
      train: enables dropout (needs the 'dropout' rng).

    Returns:
      f[B, L, D].
    """
    h = norms.LayerNorm(dtype=self.dtype, name="norm_attn")(x)
    h = attention.MultiHeadAttention(
        self.num_heads, self.head_dim, qk_norm=self.qk_norm,
        zero_init_out=self.zero_init, impl=self.attention_impl,
        dtype=self.dtype, name="attn")(
            h, mask=mask)
    if self.dropout_rate > 0:
      h = nn.Dropout(self.dropout_rate)(h, deterministic=not train)
    x = pt.constrain(x.astype(self.dtype) + h, pt.TOKEN_ACT)
    h = norms.LayerNorm(dtype=self.dtype, name="norm_mlp")(x)
    h = mlp.Mlp(self.mlp_dim, dropout_rate=self.dropout_rate,
                zero_init_out=self.zero_init, dtype=self.dtype,
                name="mlp")(h, cond, train=train)
    return pt.constrain(x + h, pt.TOKEN_ACT)
