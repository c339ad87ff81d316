"""Cosmos Haar patching: the reference's sub-bands and order, exact inverses,
causal first frames, and parity with diffusers' Cosmos patcher."""

import numpy as np
import pytest

from jaxgen.autoencoders import wavelet
from tests import parity


def _x(shape, seed=0):
  return np.random.default_rng(seed).normal(size=shape).astype(np.float32)


def test_one_level_is_the_reference_sub_bands():
  x = _x((1, 2, 2, 3))
  y = np.asarray(wavelet.haar_patch(x, 2))[0, 0, 0]
  a, b, c, d = x[0, 0, 0], x[0, 0, 1], x[0, 1, 0], x[0, 1, 1]
  want = np.concatenate([(a + b + c + d) / 4, (a + b - c - d) / 4,
                         (a - b + c - d) / 4, (a - b - c + d) / 4])
  np.testing.assert_allclose(y, want, rtol=1e-6, atol=1e-6)


def test_two_levels_start_with_the_4x4_mean_in_sub_band_major_order():
  x = _x((2, 8, 8, 3))
  y = np.asarray(wavelet.haar_patch(x, 4))
  assert y.shape == (2, 2, 2, 48)
  np.testing.assert_allclose(
      y[..., :3], x.reshape(2, 2, 4, 2, 4, 3).mean(axis=(2, 4)), rtol=1e-5,
      atol=1e-6)
  # Channel s2 * 4C + s1 * C + c: level 2 transforms every level-1 band
  # (s1) across the 2x2 grid of level-1 blocks. By hand for the first 4x4
  # block, with the one-level formulas of the test above.
  def bands(a, b, c, d):
    return [(a + b + c + d) / 4, (a + b - c - d) / 4, (a - b + c - d) / 4,
            (a - b - c + d) / 4]

  blk = x[0, :4, :4]
  one = [[bands(blk[2 * i, 2 * j], blk[2 * i, 2 * j + 1],
                blk[2 * i + 1, 2 * j], blk[2 * i + 1, 2 * j + 1])
          for j in (0, 1)] for i in (0, 1)]
  want = np.zeros(48, np.float32)
  for s1 in range(4):
    two = bands(one[0][0][s1], one[0][1][s1], one[1][0][s1], one[1][1][s1])
    for s2 in range(4):
      want[s2 * 12 + s1 * 3:s2 * 12 + s1 * 3 + 3] = two[s2]
  np.testing.assert_allclose(y[0, 0, 0], want, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("p", [2, 4, 8])
def test_unpatch_inverts_patch(p):
  x = _x((2, 16, 8, 3), p)
  np.testing.assert_allclose(
      wavelet.haar_unpatch(wavelet.haar_patch(x, p), p), x, atol=1e-5)


@pytest.mark.parametrize("p", [2, 4])
def test_3d_is_causal_and_inverts(p):
  x = _x((1, 1 + 2 * p, 8, 8, 3), p)
  y = np.asarray(wavelet.haar_patch_3d(x, p))
  assert y.shape == (1, 3, 8 // p, 8 // p, 3 * p ** 3)
  # The first latent frame sees only frame 0: its LLL is frame 0's p x p mean.
  np.testing.assert_allclose(
      y[0, 0, ..., :3],
      x[0, 0].reshape(8 // p, p, 8 // p, p, 3).mean(axis=(1, 3)), atol=1e-5)
  np.testing.assert_allclose(wavelet.haar_unpatch_3d(y, p), x, atol=1e-5)
  with pytest.raises(ValueError, match="1 \\+ k"):
    wavelet.haar_patch_3d(x[:, :-1], p)


@pytest.mark.parametrize("p", [2, 4])
def test_3d_matches_diffusers_cosmos_patcher(p):
  torch = parity.need("torch")
  cosmos = parity.need("diffusers.models.autoencoders.autoencoder_kl_cosmos")
  x = _x((2, 1 + p, 8, 8, 3), 7)
  t = torch.from_numpy(x.transpose(0, 4, 1, 2, 3))
  with torch.no_grad():
    want = cosmos.CosmosPatchEmbed3d(p, "haar")(t)
    back = cosmos.CosmosUnpatcher3d(p, "haar")(want)
  want = want.numpy().transpose(0, 2, 3, 4, 1)
  np.testing.assert_allclose(wavelet.haar_patch_3d(x, p), want, atol=1e-5)
  np.testing.assert_allclose(
      wavelet.haar_unpatch_3d(want, p),
      back.numpy().transpose(0, 2, 3, 4, 1), atol=1e-5)
