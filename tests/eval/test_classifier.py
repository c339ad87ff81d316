"""Tests of jaxgen.eval.classifier: Fréchet distance, pooling, tiny training."""

import numpy as np
import pytest
import scipy.linalg

from jaxgen.eval import classifier


def _random_cov(rng, d, scale=1.0):
  a = rng.normal(size=(d, d)) * scale
  return a @ a.T / d + 0.1 * np.eye(d)


def _scipy_fd(mu1, c1, mu2, c2):
  """Independent reference: the usual FID formula with scipy's sqrtm."""
  covmean = scipy.linalg.sqrtm(c1 @ c2)
  covmean = np.real(covmean)
  diff = mu1 - mu2
  return diff @ diff + np.trace(c1 + c2 - 2.0 * covmean)


def test_identical_gaussians_give_zero():
  rng = np.random.default_rng(0)
  mu, cov = rng.normal(size=16), _random_cov(rng, 16)
  assert abs(classifier.frechet_distance(mu, cov, mu, cov)) < 1e-9


def test_closed_form_for_commuting_covariances():
  # Diagonal covariances: d² = |Δμ|² + Σ (√a_i − √b_i)².
  rng = np.random.default_rng(1)
  mu1, mu2 = rng.normal(size=8), rng.normal(size=8)
  a, b = rng.uniform(0.1, 3.0, 8), rng.uniform(0.1, 3.0, 8)
  expected = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(a) - np.sqrt(b)) ** 2)
  got = classifier.frechet_distance(mu1, np.diag(a), mu2, np.diag(b))
  np.testing.assert_allclose(got, expected, rtol=1e-10)
  # Isotropic scaling in 1-D: (m1 − m2)² + (s1 − s2)².
  got = classifier.frechet_distance(np.array([1.0]), np.array([[4.0]]),
                                    np.array([-2.0]), np.array([[9.0]]))
  np.testing.assert_allclose(got, 9.0 + 1.0, rtol=1e-12)


@pytest.mark.parametrize("d", [3, 32])
def test_matches_scipy_sqrtm_for_general_covariances(d):
  rng = np.random.default_rng(d)
  mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
  c1, c2 = _random_cov(rng, d), _random_cov(rng, d, scale=2.0)
  np.testing.assert_allclose(classifier.frechet_distance(mu1, c1, mu2, c2),
                             _scipy_fd(mu1, c1, mu2, c2), rtol=1e-8)
  # Symmetric in its two arguments.
  np.testing.assert_allclose(classifier.frechet_distance(mu2, c2, mu1, c1),
                             classifier.frechet_distance(mu1, c1, mu2, c2),
                             rtol=1e-8)


def test_rank_deficient_covariance_is_finite_and_nonnegative():
  rng = np.random.default_rng(3)
  f = rng.normal(size=(5, 16))  # 5 samples in 16-D: covariance of rank 4.
  mu, cov = classifier.gaussian_stats(f)
  fd = classifier.frechet_distance(mu, cov, np.zeros(16), np.eye(16))
  assert np.isfinite(fd) and fd > 0
  np.testing.assert_allclose(fd, _scipy_fd(mu, cov, np.zeros(16), np.eye(16)),
                             rtol=1e-6)


def test_gaussian_stats_match_numpy():
  f = np.random.default_rng(4).normal(size=(100, 6))
  mu, cov = classifier.gaussian_stats(f)
  np.testing.assert_allclose(mu, f.mean(0))
  np.testing.assert_allclose(cov, np.cov(f.T, ddof=1))


def test_to_input_size_average_pools():
  x = np.arange(2 * 4 * 4 * 3, dtype=np.float32).reshape(2, 4, 4, 3)
  y = np.asarray(classifier.to_input_size(x, 2))
  np.testing.assert_allclose(
      y, x.reshape(2, 2, 2, 2, 2, 3).mean(axis=(2, 4)))
  assert classifier.to_input_size(x, 4) is x
  with pytest.raises(ValueError, match="cannot be average-pooled"):
    classifier.to_input_size(x, 3)


def test_sample_metrics_perfect_classifier_and_same_distribution():
  rng = np.random.default_rng(5)
  labels = np.arange(400) % 4
  logits = np.eye(4)[labels] * 10.0
  feats = rng.normal(size=(400, 4))
  ref = (np.zeros(4), np.eye(4))
  out = classifier.sample_metrics(feats, logits, labels, ref,
                                  num_bootstrap=20)
  assert out["accuracy"] == 1.0 and out["accuracy_boot_std"] == 0.0
  assert out["per_class_accuracy"] == {0: 1.0, 1: 1.0, 2: 1.0, 3: 1.0}
  # Same distribution: only finite-sample bias (~D(D+1)/(2N) terms) remains.
  assert 0.0 <= out["fd"] < 0.1
  assert out["fd_boot_std"] > 0.0 and len(out["fd_boot"]) == 20
  shifted = classifier.sample_metrics(feats + 1.0, logits, labels, ref,
                                      num_bootstrap=5)
  np.testing.assert_allclose(shifted["fd"] - out["fd"],
                             4.0 + 2.0 * feats.mean(0).sum(), rtol=1e-6)


def test_stratified_bootstrap_keeps_class_counts():
  # Features are a function of the label only: with the class counts fixed
  # every replicate has the same statistics, so the bootstrap spread is 0.
  labels = np.arange(64) % 4
  feats = np.eye(4)[labels] * 3.0
  logits = np.eye(4)[labels]
  ref = (np.zeros(4), np.eye(4))
  strat = classifier.sample_metrics(feats, logits, labels, ref,
                                    num_bootstrap=20)
  plain = classifier.sample_metrics(feats, logits, labels, ref,
                                    num_bootstrap=20, stratify=False)
  assert strat["fd_boot_std"] < 1e-9
  assert plain["fd_boot_std"] > 1e-3
  np.testing.assert_allclose(strat["fd_boot_mean"], strat["fd"], rtol=1e-9)


def test_tiny_training_separates_two_classes_and_round_trips(tmp_path):
  # Class 0: a bright block in the top half; class 1: in the bottom half
  # (left-right mirroring, the training augmentation, keeps the classes).
  rng = np.random.default_rng(6)
  n, d = 32, 16
  images = rng.uniform(-1.0, -0.5, size=(n, d, d, 3)).astype(np.float32)
  labels = np.arange(n) % 2
  for i, y in enumerate(labels):
    o = 1 if y == 0 else 9
    images[i, o:o + 6, 2:14] = 0.8
  cfg = classifier.ClassifierConfig(input_size=8, channels=(8, 16),
                                    feature_dim=16, num_classes=2,
                                    batch_size=16, steps=40,
                                    learning_rate=1e-2)
  params, info = classifier.train_classifier(cfg, images=images,
                                             labels=labels)
  assert np.isfinite(info["train_loss"])
  feats, logits = classifier.embed(params, images, cfg, batch_size=32)
  assert feats.shape == (n, 16) and logits.shape == (n, 2)
  assert (logits.argmax(-1) == labels).mean() == 1.0
  path = str(tmp_path / "clf.msgpack")
  classifier.save_params(params, path)
  again = classifier.load_params(path, cfg)
  np.testing.assert_allclose(classifier.embed(again, images, cfg)[1], logits,
                             rtol=1e-6)
