"""Token MLP with optional FiLM conditioning of its hidden layer.

SiD's U-ViT conditions the transformer MLP on the noise level by a scale and
shift of the hidden layer (Hoogeboom et al. 2023, as transcribed by public
reimplementations of the appendix pseudocode):
  h = act(W1 x) -> h * (1 + scale(c)) + shift(c) -> dropout -> W2 h.
"""

from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen.nn import linear
from jaxgen.nn import partitioning as pt

Dtype = Any


class Mlp(nn.Module):
  """Two-layer token MLP, optionally FiLM-conditioned on a vector.

  Attributes:
    hidden_dim: hidden width.
    out_dim: output width (default: input width).
    activation: hidden nonlinearity.
    dropout_rate: dropout on the hidden layer (train only).
    zero_init_out: zero the output projection (residual branch starts at 0).
    dtype: compute dtype.
  """
  hidden_dim: int
  out_dim: Optional[int] = None
  activation: Callable[[jax.Array], jax.Array] = nn.gelu
  dropout_rate: float = 0.0
  zero_init_out: bool = False
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array, cond: Optional[jax.Array] = None, *,
               train: bool = False) -> jax.Array:
    """Applies the MLP.

    Args:
      x: f[B, L, D] tokens.
      cond: optional f[B, Dc] (or f[B, L, Dc]) conditioning vector.
      train: enables dropout (needs the 'dropout' rng).

    Returns:
      f[B, L, out_dim].
    """
    out_dim = self.out_dim or x.shape[-1]
    h = linear.Dense(self.hidden_dim, (pt.EMBED, pt.MLP), dtype=self.dtype,
                     name="dense_in")(x)
    h = pt.constrain(self.activation(h), pt.MLP_ACT)
    if cond is not None:
      # (2, hidden) rather than 2*hidden features, so tensor-parallel shards
      # of scale and shift line up with the shards of h.
      ss = linear.Dense((2, self.hidden_dim), (pt.COND, None, pt.MLP),
                        dtype=self.dtype, name="film")(nn.silu(cond))
      if ss.ndim == 3:
        ss = ss[:, None]
      h = h * (1 + ss[..., 0, :]) + ss[..., 1, :]
    if self.dropout_rate > 0:
      h = nn.Dropout(self.dropout_rate)(h, deterministic=not train)
    init = pt.zeros_init if self.zero_init_out else pt.dense_init
    y = linear.Dense(out_dim, (pt.MLP, pt.EMBED), kernel_init=init,
                     dtype=self.dtype, name="dense_out")(h)
    return pt.constrain(y, pt.TOKEN_ACT)
