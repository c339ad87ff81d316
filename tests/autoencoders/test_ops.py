"""DC-AE building blocks: shortcut channel order, attention, diffusers parity.

The parity tests need the `parity` extra (torch, diffusers); without it they
skip with the reason.
"""

import itertools

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.autoencoders import diffusers_compat
from jaxgen.autoencoders import ops
from tests import parity


def _x(shape, seed=0):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def test_pixel_unshuffle_packs_channels_like_torch():
  x = _x((2, 6, 4, 3))
  r = 2
  y = np.asarray(ops.pixel_unshuffle(x, r))
  assert y.shape == (2, 3, 2, 12)
  # out[c*r*r + i*r + j] at (h, w) is x[r*h + i, r*w + j, c].
  for c, i, j, h, w in itertools.product(range(3), range(r), range(r),
                                         range(3), range(2)):
    assert y[1, h, w, c * r * r + i * r + j] == x[1, r * h + i, r * w + j, c]
  np.testing.assert_array_equal(ops.pixel_shuffle(y, r), x)


def test_pixel_unshuffle_matches_torch():
  torch = parity.need("torch")
  x = _x((2, 8, 4, 5))
  t = torch.from_numpy(x.transpose(0, 3, 1, 2))
  want = torch.nn.functional.pixel_unshuffle(t, 2).numpy().transpose(
      0, 2, 3, 1)
  np.testing.assert_array_equal(ops.pixel_unshuffle(x, 2), want)


def test_shortcuts_are_average_pooling_and_nearest_upsampling():
  x = _x((1, 4, 4, 3))
  pooled = x.reshape(1, 2, 2, 2, 2, 3).mean(axis=(2, 4))
  np.testing.assert_allclose(ops.channel_average_down(x, 3), pooled,
                             rtol=1e-6)
  np.testing.assert_array_equal(ops.channel_duplicate_up(pooled, 3),
                                pooled.repeat(2, 1).repeat(2, 2))
  # Twice the channels: channel 2c + i averages the row-i pixel pair.
  two = np.asarray(ops.channel_average_down(x, 6))
  np.testing.assert_allclose(two[0, 1, 0, 2 * 1 + 1],
                             x[0, 3, 0:2, 1].mean(), rtol=1e-6)
  # Factor 1 (the latent ends): group means and repeats.
  np.testing.assert_allclose(ops.channel_average_down(_x((1, 2, 2, 8)), 2,
                                                      factor=1),
                             _x((1, 2, 2, 8)).reshape(1, 2, 2, 2, 4).mean(-1),
                             rtol=1e-6)
  np.testing.assert_array_equal(
      ops.channel_duplicate_up(x, 6, factor=1), x.repeat(2, axis=-1))


def test_relu_linear_attention_is_the_reference_formula():
  q, k, v = (np.abs(_x((1, 5, 2, 3), s)) for s in (1, 2, 3))
  got = np.asarray(ops.relu_linear_attention(q, k, v))
  for n, g in itertools.product(range(5), range(2)):
    w = np.array([k[0, m, g] @ q[0, n, g] for m in range(5)])
    want = (w[:, None] * v[0, :, g]).sum(0) / (w.sum() + 1e-15)
    np.testing.assert_allclose(got[0, n, g], want, rtol=1e-5)


def test_relu_linear_attention_of_bf16_inputs_is_computed_in_float32():
  # Sums over 4096 tokens: in bf16 (8 mantissa bits) they would be off by
  # ~1e-2; the reference casts q, k, v to float32 first, as this does.
  rng = np.random.default_rng(0)
  q, k, v = (jnp.asarray(np.abs(rng.normal(size=(1, 4096, 2, 8))),
                         jnp.bfloat16) for _ in range(3))
  got = ops.relu_linear_attention(q, k, v)
  assert got.dtype == jnp.float32
  q64, k64, v64 = (np.asarray(t, np.float64) for t in (q, k, v))
  kv = np.einsum("bmgd,bmge->bgde", k64, v64)
  want = (np.einsum("bngd,bgde->bnge", q64, kv)
          / (np.einsum("bngd,bgd->bng", q64, k64.sum(1))[..., None]
             + ops.ATTENTION_EPS))
  np.testing.assert_allclose(np.asarray(got), want, rtol=2e-5)


def _diffusers():
  return (parity.need("torch"),
          parity.need("diffusers.models.autoencoders.autoencoder_dc"))


def _randomize(torch, module):
  gen = torch.Generator().manual_seed(0)
  with torch.no_grad():
    for p in module.parameters():
      p.copy_(torch.randn(p.shape, generator=gen) * 0.2)
  return module.eval()


def _compare(torch, ref, ours, params, x):
  with torch.no_grad():
    want = ref(torch.from_numpy(x.transpose(0, 3, 1, 2))).numpy()
  got = jax.jit(ours.apply)({"params": params}, x)
  want = want.transpose(0, 2, 3, 1)
  np.testing.assert_allclose(np.asarray(got), want,
                             atol=1e-4 * np.abs(want).max(), rtol=0)


def test_resblock_matches_diffusers():
  torch, dc = _diffusers()
  ref = _randomize(torch, dc.ResBlock(16, 16, norm_type="rms_norm",
                                      act_fn="silu"))
  params = diffusers_compat.resblock(
      {k: v.numpy() for k, v in ref.state_dict().items()})
  _compare(torch, ref, ops.ResBlock(act="silu"), params, _x((2, 8, 8, 16)))


@pytest.mark.parametrize("scales,size", [((5,), 8), ((), 8), ((5,), 4)])
def test_efficientvit_block_matches_diffusers(scales, size):
  """size 4: 16 tokens <= head_dim, the reference's quadratic branch."""
  torch, dc = _diffusers()
  ref = _randomize(torch, dc.EfficientViTBlock(
      64, attention_head_dim=32, qkv_multiscales=scales,
      norm_type="rms_norm"))
  params = diffusers_compat.efficientvit_block(
      {k: v.numpy() for k, v in ref.state_dict().items()}, scales)
  _compare(torch, ref, ops.EfficientViTBlock(32, scales), params,
           _x((2, size, size, 64)))
