"""The GAN term of autoencoder training: a patch discriminator and the
taming-style adaptive weight.

DC-AE's phase 3 (and Cosmos's fine-tuning stage) add an adversarial loss on
the decoder's output. The discriminator is a PatchGAN (Isola et al. 2017, as
in taming-transformers' NLayerDiscriminator): 4x4 convolutions at stride 2,
leaky ReLU(0.2), then two stride-1 4x4 convolutions down to one logit per
patch. Unlike taming it has no BatchNorm: the R1 / R2 penalties of R3GAN
(`jaxgen.gan.losses`) take per-sample input gradients from one vector-Jacobian
product, which is exact only without batch-coupled layers.

Losses are R3GAN's registry (`jaxgen.gan.losses.LOSSES`): "rpgan" pairs the
i-th real patch with the i-th reconstructed one, "hinge" is taming's. The
generator-side term is weighted by the adaptive weight of Esser et al. 2021,

  lambda = ||grad_W L_rec|| / (||grad_W L_gan|| + 1e-4), clipped to [0, 1e4],

with W the decoder's last layer, so the adversarial gradient at the output
layer is `gan_weight` times as large as the reconstruction gradient there.
"""

import re
from typing import Any, Sequence

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxgen.nn import linear
from jaxgen.train import state as state_lib

# The decoder's last layer for the adaptive weight (a regex over "/"-joined
# parameter paths of the autoencoder): its kernels alone, as taming takes
# `conv_out.weight` (the bias moved lambda by up to 3%). A Cosmos video
# decoder's conv_out has a spatial and a temporal kernel; a boxed
# (partitioned) leaf's path ends in "/value".
LAST_LAYER = r"^decoder/conv_out/(.*/)?kernel(/value)?$"
Dtype = Any


class PatchDiscriminator(nn.Module):
  """PatchGAN without normalisation: images -> logits f32[B, h, w].

  Attributes:
    widths: channels of the stride-2 stages (len(widths) halvings).
    dtype: compute dtype.
  """
  widths: Sequence[int] = (64, 128, 256)
  dtype: Dtype = jnp.float32

  @nn.compact
  def __call__(self, x: jax.Array) -> jax.Array:
    h = x
    for i, width in enumerate(self.widths):
      h = linear.Conv(width, 4, strides=2, in_axis=None if i == 0 else
                      "conv_in", dtype=self.dtype, name=f"down_{i}")(h)
      h = nn.leaky_relu(h, 0.2)
    h = linear.Conv(self.widths[-1], 4, dtype=self.dtype, name="mid")(h)
    h = nn.leaky_relu(h, 0.2)
    logits = linear.Conv(1, 4, out_axis=None, dtype=self.dtype,
                         name="logits")(h)
    return logits[..., 0].astype(jnp.float32)


def subtree_norm(grads: Any, pattern: str) -> jax.Array:
  """Global L2 norm of the leaves whose "/"-joined path matches `pattern`.

  Args:
    grads: a gradient pytree.
    pattern: regex (e.g. `LAST_LAYER`).

  Returns:
    float32 scalar.

  Raises:
    ValueError: if nothing matches (a model without that layer name).
  """
  regex = re.compile(pattern)
  leaves = [x for path, x in jax.tree_util.tree_flatten_with_path(grads)[0]
            if regex.search(state_lib.path_name(path))]
  if not leaves:
    raise ValueError(f"no parameter matches {pattern!r}.")
  return state_lib.global_norm(leaves)


def adaptive_weight(rec_grads: Any, gan_grads: Any,
                    pattern: str = LAST_LAYER) -> jax.Array:
  """taming's lambda: ||grad L_rec|| / (||grad L_gan|| + 1e-4) at the last
  layer, clipped to [0, 1e4] and carrying no gradient.

  Args:
    rec_grads: gradients of the reconstruction loss w.r.t. the AE params.
    gan_grads: gradients of the generator's adversarial loss w.r.t. them.
    pattern: which parameters count as the last layer.

  Returns:
    float32 scalar.
  """
  w = subtree_norm(rec_grads, pattern) / (subtree_norm(gan_grads, pattern)
                                          + 1e-4)
  return jax.lax.stop_gradient(jnp.clip(w, 0.0, 1e4))
