"""PSNR and SSIM (dm-pix) against scikit-image on random images."""

import numpy as np
import pytest

from jaxgen.eval import pixels

metrics = pytest.importorskip(
    "skimage.metrics", reason="needs scikit-image (the test extra)")


def _pair(seed, shape=(2, 24, 20, 3)):
  rng = np.random.default_rng(seed)
  a = rng.uniform(-1, 1, shape).astype(np.float32)
  b = np.clip(a + rng.normal(0, 0.2, shape), -1, 1).astype(np.float32)
  return a, b


def test_psnr_matches_scikit_image():
  a, b = _pair(0)
  got = np.asarray(pixels.psnr(a, b))
  want = [metrics.peak_signal_noise_ratio((x + 1) / 2, (y + 1) / 2,
                                          data_range=1.0)
          for x, y in zip(a, b)]
  np.testing.assert_allclose(got, want, rtol=1e-5)
  # An exact reconstruction: skimage's inf made a set's mean PSNR inf.
  same = np.asarray(pixels.psnr(a, np.concatenate([a[:1], b[1:]])))
  assert same[0] == pixels.MAX_PSNR_DB == 100.0
  np.testing.assert_allclose(same[1:], want[1:], rtol=1e-5)


@pytest.mark.parametrize("channels", [1, 3])
def test_ssim_matches_scikit_image_with_the_gaussian_window(channels):
  a, b = _pair(1, (2, 32, 28, channels))
  got = np.asarray(pixels.ssim(a, b))
  want = [metrics.structural_similarity(
      (x + 1) / 2, (y + 1) / 2, data_range=1.0, channel_axis=-1,
      gaussian_weights=True, sigma=1.5, use_sample_covariance=False)
          for x, y in zip(a.astype(np.float64), b.astype(np.float64))]
  # skimage crops the border (the window's radius) before averaging, dm-pix
  # uses only the valid region too: both average the same map.
  np.testing.assert_allclose(got, want, rtol=2e-4)
  assert np.all(np.asarray(pixels.ssim(a, a)) > 0.9999)
