"""Tests of the normalisation layers and the embeddings."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.nn import embeddings
from jaxgen.nn import norms
from jaxgen.nn import partitioning as pt


def test_group_norm_matches_numpy():
  x = np.asarray(jax.random.normal(jax.random.key(0), (2, 4, 4, 12))) * 3 + 1
  layer = norms.GroupNorm(num_groups=4, epsilon=1e-6)
  v = nn.unbox(jax.jit(layer.init)(jax.random.key(1), x))
  y = np.asarray(jax.jit(layer.apply)(v, x))
  g = x.reshape(2, 4, 4, 4, 3)
  ref = (g - g.mean(axis=(1, 2, 4), keepdims=True)) / np.sqrt(
      g.var(axis=(1, 2, 4), keepdims=True) + 1e-6)
  np.testing.assert_allclose(y, ref.reshape(x.shape), atol=1e-4)


@pytest.mark.parametrize("shape,groups", [
    ((2, 6, 5, 64), 32),      # 2 channels per group (the U-ViT's 64-wide maps)
    ((2, 4, 4, 32), 32),      # one channel per group
    ((3, 2, 4, 4, 12), 1),    # video [B, T, H, W, C], one group (Cosmos)
    ((2, 4, 4, 12), 4),
])
def test_group_norm_and_its_gradients_match_flax(shape, groups):
  # flax.linen.GroupNorm is an independent implementation (grouped view of
  # the map); jaxgen's reduces per channel first and folds the affine.
  ks = jax.random.split(jax.random.key(3), 4)
  x = jax.random.normal(ks[0], shape) * 3 + 1
  c = shape[-1]
  scale = 1 + 0.3 * jax.random.normal(ks[1], (c,))
  bias = 0.3 * jax.random.normal(ks[2], (c,))
  upstream = jax.random.normal(ks[3], shape)
  ours = norms.GroupNorm(num_groups=groups, epsilon=1e-6)
  ref = nn.GroupNorm(num_groups=groups, epsilon=1e-6,
                     reduction_axes=tuple(range(1, len(shape))))

  def loss(layer, x, scale, bias):
    y = layer.apply({"params": {"scale": scale, "bias": bias}}, x)
    return jnp.sum(y * upstream), y

  (_, y), grads = jax.value_and_grad(loss, argnums=(1, 2, 3), has_aux=True)(
      ours, x, scale, bias)
  (_, y_ref), grads_ref = jax.value_and_grad(
      loss, argnums=(1, 2, 3), has_aux=True)(ref, x, scale, bias)
  np.testing.assert_allclose(y, y_ref, atol=2e-5)
  for g, g_ref in zip(grads, grads_ref):
    np.testing.assert_allclose(g, g_ref, atol=2e-4 * float(
        jnp.abs(g_ref).max()))


def test_group_count_divides_channels():
  assert norms.num_groups_for(96, 32) == 32
  assert norms.num_groups_for(24, 32) == 24
  assert norms.num_groups_for(36, 32) == 18


def test_rms_and_layer_norm_bf16_output_and_names():
  x = jax.random.normal(jax.random.key(2), (3, 5, 8)) * 7
  for layer in (norms.RMSNorm(axis_name=pt.KV, dtype=jnp.bfloat16),
                norms.LayerNorm(dtype=jnp.bfloat16)):
    boxed = jax.jit(layer.init)(jax.random.key(0), x)
    for leaf in jax.tree.leaves(boxed, is_leaf=lambda a: isinstance(
        a, nn.LogicallyPartitioned)):
      assert isinstance(leaf, nn.LogicallyPartitioned)
    y = jax.jit(layer.apply)(nn.unbox(boxed), x)
    assert y.dtype == jnp.bfloat16
    rms = jnp.sqrt(jnp.mean(jnp.square(y.astype(jnp.float32)), axis=-1))
    np.testing.assert_allclose(rms, 1.0, atol=2e-2)


def test_bf16_inputs_get_float32_statistics():
  # bf16 maps at 300 + N(0, 1): bf16 statistics (a spacing of 2 at 300)
  # leave a row mean of ~0.2; float32 ones normalise it to ~0 (the inputs'
  # own bf16 rounding bounds what remains).
  x = (300 + jax.random.normal(jax.random.key(5), (2, 4, 4, 64))).astype(
      jnp.bfloat16)
  for layer in (norms.LayerNorm(dtype=jnp.bfloat16),
                norms.GroupNorm(num_groups=8, dtype=jnp.bfloat16)):
    v = nn.unbox(jax.jit(layer.init)(jax.random.key(0), x))
    y = np.asarray(jax.jit(layer.apply)(v, x), np.float32)
    axes = (-1,) if isinstance(layer, norms.LayerNorm) else (1, 2, 3)
    assert np.abs(y.mean(axis=axes)).max() < 0.05, type(layer).__name__
    np.testing.assert_allclose(y.std(axis=axes), 1.0, atol=0.05)
  # RMSNorm has no mean: its scale is the float32 root mean square.
  layer = norms.RMSNorm(dtype=jnp.bfloat16)
  v = nn.unbox(jax.jit(layer.init)(jax.random.key(0), x))
  y = np.asarray(jax.jit(layer.apply)(v, x), np.float32)
  x32 = np.asarray(x, np.float32)
  want = x32 / np.sqrt(np.mean(x32 ** 2, axis=-1, keepdims=True) + 1e-6)
  np.testing.assert_allclose(y, want, rtol=1e-2)


def test_sinusoidal_embedding_values():
  e = embeddings.sinusoidal_embedding(jnp.array([0.0, 2.0]), 8, 100.0)
  assert e.shape == (2, 8)
  np.testing.assert_allclose(e[0], [0, 0, 0, 0, 1, 1, 1, 1], atol=1e-7)
  freqs = 100.0 ** (-np.arange(4) / 4)
  np.testing.assert_allclose(e[1, :4], np.sin(2 * freqs), atol=1e-6)
  assert embeddings.sinusoidal_embedding(jnp.zeros((3,)), 7).shape == (3, 7)


def test_sincos_2d_positions_layout():
  pos = embeddings.sincos_2d_positions(3, 4, 16)
  assert pos.shape == (12, 16)
  # First half depends only on the row, second half only on the column.
  np.testing.assert_array_equal(pos[4, :8], pos[7, :8])    # row 1
  np.testing.assert_array_equal(pos[1, 8:], pos[9, 8:])    # column 1
  assert len({tuple(np.round(p, 6)) for p in pos}) == 12   # all distinct
  with pytest.raises(ValueError):
    embeddings.sincos_2d_positions(2, 2, 6)


def test_sincos_3d_positions_shape():
  pos = embeddings.sincos_3d_positions(2, 3, 4, 64)
  assert pos.shape == (24, 64)
  assert len({tuple(np.round(p, 6)) for p in pos}) == 24


def test_conditioning_embedding_null_label():
  module = embeddings.ConditioningEmbedding(16, freq_dim=8, num_classes=5)
  s = jnp.array([-3.0, 4.0])
  v = nn.unbox(jax.jit(module.init)(jax.random.key(0), s, jnp.array([0, 1])))
  assert v["params"]["class_embedding"].shape == (6, 16)
  apply = jax.jit(module.apply)
  null = apply(v, s, jnp.array([5, 5]))
  np.testing.assert_allclose(module.apply(v, s, None), null)
  assert not np.allclose(apply(v, s, jnp.array([0, 1])), null)
  uncond = embeddings.ConditioningEmbedding(16, freq_dim=8)
  with pytest.raises(ValueError):
    jax.jit(uncond.init)(jax.random.key(0), s, jnp.array([0, 1]))
