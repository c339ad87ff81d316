"""Tests of the orthonormal Haar transforms."""

import jax
import numpy as np
import pytest

from jaxgen.nn import wavelets


_haar2d = jax.jit(wavelets.haar2d, static_argnums=1)
_haar2d_inv = jax.jit(wavelets.haar2d_inverse, static_argnums=1)
_haar3d = jax.jit(wavelets.haar3d, static_argnums=1)
_haar3d_inv = jax.jit(wavelets.haar3d_inverse, static_argnums=1)


@pytest.mark.parametrize("levels", [1, 2])
def test_haar2d_exact_inverse_and_energy(levels):
  x = jax.random.normal(jax.random.key(0), (2, 8, 12, 3))
  y = _haar2d(x, levels)
  assert y.shape == (2, 8 // 2**levels, 12 // 2**levels, 3 * 4**levels)
  np.testing.assert_allclose(_haar2d_inv(y, levels), x,
                             atol=1e-6, rtol=0)
  # Orthonormal: energy is preserved.
  np.testing.assert_allclose(np.sum(np.square(y)), np.sum(np.square(x)),
                             rtol=1e-5)


@pytest.mark.parametrize("levels", [1, 2])
def test_haar3d_exact_inverse_and_energy(levels):
  x = jax.random.normal(jax.random.key(1), (1, 4, 8, 4, 2))
  y = _haar3d(x, levels)
  assert y.shape == (1, 4 // 2**levels, 8 // 2**levels, 4 // 2**levels,
                     2 * 8**levels)
  np.testing.assert_allclose(_haar3d_inv(y, levels), x,
                             atol=1e-6, rtol=0)
  np.testing.assert_allclose(np.sum(np.square(y)), np.sum(np.square(x)),
                             rtol=1e-5)


def test_haar2d_matches_numpy_on_a_2x2_block():
  rng = np.random.default_rng(0)
  x = rng.normal(size=(1, 2, 2, 2)).astype(np.float32)
  y = np.asarray(wavelets.haar2d(x))[0, 0, 0]
  c = x.shape[-1]
  for i in range(2):      # band along H
    for j in range(2):    # band along W
      expected = 0.5 * sum((-1) ** (i * r + j * s) * x[0, r, s]
                           for r in range(2) for s in range(2))
      np.testing.assert_allclose(y[(2 * i + j) * c:(2 * i + j + 1) * c],
                                 expected, atol=1e-6)


def test_haar3d_matches_numpy_on_a_2x2x2_block():
  rng = np.random.default_rng(1)
  x = rng.normal(size=(1, 2, 2, 2, 1)).astype(np.float32)
  y = np.asarray(wavelets.haar3d(x))[0, 0, 0, 0]
  for t in range(2):
    for i in range(2):
      for j in range(2):
        expected = sum((-1) ** (t * a + i * r + j * s) * x[0, a, r, s, 0]
                       for a in range(2) for r in range(2)
                       for s in range(2)) / np.sqrt(8.0)
        np.testing.assert_allclose(y[4 * t + 2 * i + j], expected, atol=1e-6)


def test_haar_rejects_odd_sizes():
  with pytest.raises(ValueError):
    wavelets.haar2d(np.zeros((1, 3, 4, 1), np.float32))
