"""FID, KID, IS, precision / recall against independent computations."""

import numpy as np
import pytest
from scipy import linalg

from jaxgen.eval import distances
from jaxgen.eval import fid as fid_lib


def _random_cov(rng, d):
  a = rng.normal(size=(d, 2 * d))
  return a @ a.T / (2 * d)


def test_frechet_distance_of_two_diagonal_gaussians_is_closed_form():
  mu1, mu2 = np.array([0.0, 1.0, 2.0]), np.array([1.0, 1.0, 0.0])
  v1, v2 = np.array([1.0, 4.0, 9.0]), np.array([4.0, 1.0, 1.0])
  want = np.sum((mu1 - mu2) ** 2) + np.sum((np.sqrt(v1) - np.sqrt(v2)) ** 2)
  got = distances.frechet_distance(mu1, np.diag(v1), mu2, np.diag(v2))
  assert got == pytest.approx(want, rel=1e-10)  # 5 + 1 + 1 + 4 = 11
  assert want == 11.0


def test_frechet_distance_matches_the_symmetric_eigen_form():
  rng = np.random.default_rng(0)
  d = 16
  mu1, mu2 = rng.normal(size=d), rng.normal(size=d)
  s1, s2 = _random_cov(rng, d), _random_cov(rng, d)
  # tr((s1 s2)^1/2) = sum of sqrt eigenvalues of s1^1/2 s2 s1^1/2.
  r1 = linalg.sqrtm(s1).real
  eig = np.linalg.eigvalsh(r1 @ s2 @ r1)
  want = (np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2)
          - 2 * np.sum(np.sqrt(np.clip(eig, 0, None))))
  assert distances.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(
      want, rel=1e-8)
  assert distances.frechet_distance(mu1, s1, mu1, s1) == pytest.approx(
      0.0, abs=1e-8)


@pytest.mark.parametrize("n", [12, 400])
def test_frechet_distance_equals_pytorch_fids_sqrtm_trace(n):
  # pytorch-fid's procedure, computed with scipy: trace of the (real part
  # of the) product's sqrtm; rank 11 of 128 with 12 samples, full with 400.
  rng = np.random.default_rng(n)
  a, b = rng.normal(size=(n, 128)), rng.normal(0.3, 1.2, size=(n, 128))
  mu1, s1 = a.mean(0), np.cov(a, rowvar=False)
  mu2, s2 = b.mean(0), np.cov(b, rowvar=False)
  covmean = linalg.sqrtm(s1 @ s2)
  want = (np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2)
          - 2 * np.trace(covmean.real))
  assert distances.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(
      want, rel=1e-7)


def test_statistics_that_are_not_covariances_are_refused():
  # A negative "covariance": the product's eigenvalues are negative, their
  # roots imaginary.
  with pytest.raises(ValueError, match=r"^the square root of the covariance "
                     r"product has an imaginary component of 2; the "
                     r"statistics are not valid covariances\.$"):
    distances.frechet_distance(np.zeros(3), np.eye(3), np.zeros(3),
                               -4.0 * np.eye(3))


def test_one_dimensional_and_symmetric():
  got = distances.frechet_distance(np.array([1.0]), np.array([[4.0]]),
                                   np.array([-2.0]), np.array([[9.0]]))
  assert got == pytest.approx(9.0 + 1.0, rel=1e-12)  # (m1-m2)² + (s1-s2)²
  rng = np.random.default_rng(5)
  mu1, mu2 = rng.normal(size=8), rng.normal(size=8)
  s1, s2 = _random_cov(rng, 8), 2.0 * _random_cov(rng, 8)
  assert distances.frechet_distance(mu1, s1, mu2, s2) == pytest.approx(
      distances.frechet_distance(mu2, s2, mu1, s1), rel=1e-8)


def test_gaussian_stats_match_numpy():
  f = np.random.default_rng(4).normal(size=(100, 6))
  mu, cov = distances.gaussian_stats(f)
  np.testing.assert_allclose(mu, f.mean(0))
  np.testing.assert_allclose(cov, np.cov(f.T, ddof=1))


def test_singular_covariances_stay_finite_and_the_offset_is_the_fallback(
    monkeypatch):
  rng = np.random.default_rng(1)
  f1, f2 = rng.normal(size=(5, 8)), rng.normal(size=(5, 8))  # rank 4 of 8
  with pytest.warns(UserWarning, match="covariance is singular"):
    mu1, s1 = distances.gaussian_stats(f1)
  with pytest.warns(UserWarning):
    mu2, s2 = distances.gaussian_stats(f2)
  # Eigenvalues of a singular product are still finite: no offset needed.
  value = distances.frechet_distance(mu1, s1, mu2, s2)
  assert np.isfinite(value) and value > 0
  # When they are not, pytorch-fid's eps * I is added to both covariances
  # (by hand: the trace term of the offset product).
  real = np.linalg.eigvals
  calls = []

  def first_fails(m):
    calls.append(m)
    return np.full(len(m), np.nan) if len(calls) == 1 else real(m)

  monkeypatch.setattr(np.linalg, "eigvals", first_fails)
  eps = 1e-6
  got = distances.frechet_distance(mu1, s1, mu2, s2, eps=eps)
  offset = np.eye(8) * eps
  np.testing.assert_allclose(calls[1], (s1 + offset) @ (s2 + offset))
  roots = np.sqrt(real((s1 + offset) @ (s2 + offset)).astype(complex))
  want = (np.sum((mu1 - mu2) ** 2) + np.trace(s1) + np.trace(s2)
          - 2 * np.sum(roots).real)
  assert got == pytest.approx(want, rel=1e-9)


def test_mismatched_statistics_are_refused():
  with pytest.raises(ValueError, match="different dimensions"):
    distances.frechet_distance(np.zeros(3), np.eye(3), np.zeros(4), np.eye(4))
  # A mean that does not fit its covariance gave 3.0; sigmas of different
  # sizes beside equal means printed the two (equal) mean shapes.
  with pytest.raises(ValueError, match=r"^a mean of shape \(3,\) with a "
                     r"covariance of shape \(4, 4\); a mean of D needs"):
    distances.frechet_distance(np.zeros(3), np.eye(4), np.zeros(3), np.eye(3))
  with pytest.raises(ValueError, match=r"shape \(4,\) with a covariance of "
                     r"shape \(5, 5\)"):
    distances.frechet_distance(np.zeros(4), np.eye(4), np.zeros(4), np.eye(5))
  # KID names its subset size, not the (large enough) sets.
  with pytest.raises(ValueError, match=r"^KID subset_size=1: the unbiased"):
    distances.kernel_inception_distance(np.ones((100, 4)), np.ones((100, 4)),
                                        subset_size=1)


def test_one_sample_and_nan_statistics_are_refused():
  with pytest.raises(ValueError, match="1 sample.*at least 2"):
    distances.gaussian_stats(np.ones((1, 4)))
  # NaN features (were NaN statistics, blamed later on the sample count).
  feats = np.ones((5, 4))
  feats[3, 1] = np.inf
  with pytest.raises(ValueError, match="^1 of 5 feature rows hold NaN or "
                     "inf values"):
    distances.gaussian_stats(feats)
  # NaN statistics: refused up front, with what to do.
  nan = np.full((3, 3), np.nan)
  with pytest.raises(ValueError, match="NaN or inf"):
    distances.frechet_distance(np.zeros(3), nan, np.zeros(3), np.eye(3))


def test_kid_is_the_unbiased_polynomial_mmd():
  rng = np.random.default_rng(2)
  x, y = rng.normal(size=(6, 4)), rng.normal(0.5, 1.0, size=(6, 4))
  k = lambda a, b: (a @ b / 4 + 1) ** 3
  m = 6
  xx = sum(k(x[i], x[j]) for i in range(m) for j in range(m) if i != j)
  yy = sum(k(y[i], y[j]) for i in range(m) for j in range(m) if i != j)
  xy = sum(k(x[i], y[j]) for i in range(m) for j in range(m))
  want = xx / (m * (m - 1)) + yy / (m * (m - 1)) - 2 * xy / m**2
  kid, std = distances.kernel_inception_distance(x, y, subsets=3,
                                                 subset_size=6)
  # Sets no larger than a subset: one value, no spread (exactly, so that
  # `jaxgen.eval.fid` says so instead of printing ± 0.000000).
  assert kid == pytest.approx(want, rel=1e-10) and std == 0.0
  _, std = distances.kernel_inception_distance(
      rng.normal(size=(200, 8)), rng.normal(size=(200, 8)))
  assert std == 0.0
  assert fid_lib.format_lines({"fid": 1.0, "kid": kid, "kid_std": std}
                              ).splitlines()[1].endswith("(one subset: the "
                              "sets are no larger than the subset size, so "
                              "no spread)")
  same, _ = distances.kernel_inception_distance(
      rng.normal(size=(400, 4)), rng.normal(size=(400, 4)), subsets=10,
      subset_size=200)
  assert abs(same) < 0.05


def test_too_few_stored_features_leave_out_kid_and_precision_recall():
  # A stats file written with --keep_features=0 or 1 still gives FID: the
  # set metrics needing more rows are left out, not raised.
  rng = np.random.default_rng(3)
  stats = lambda f: distances.gaussian_stats(f)  # noqa: E731
  a, b = rng.normal(size=(50, 4)), rng.normal(size=(50, 4))
  for kept in (0, 1):
    out = distances.all_metrics(stats(a), stats(b), features_a=a[:kept],
                                features_b=b)
    assert set(out) == {"fid"}
  out = distances.all_metrics(stats(a), stats(b), features_a=a[:3],
                              features_b=b)
  assert set(out) == {"fid", "kid", "kid_std"}
  out = distances.all_metrics(stats(a), stats(b), features_a=a,
                              features_b=b)
  assert {"kid", "precision", "recall"} <= set(out)
  assert out["fid"] == pytest.approx(distances.frechet_distance(
      *stats(a), *stats(b)))


def test_inception_score_limits_and_formula():
  # Confident and uniform over K classes: IS = K; all the same class: 1.
  k = 5
  confident = np.eye(k)[np.arange(50) % k] * 100.0
  assert distances.inception_score(confident, splits=5)[0] == pytest.approx(
      k, rel=1e-6)
  same = np.tile(np.eye(k)[0] * 100.0, (50, 1))
  assert distances.inception_score(same, splits=5)[0] == pytest.approx(1.0)
  rng = np.random.default_rng(3)
  logits = rng.normal(size=(20, 4))
  p = np.exp(logits) / np.exp(logits).sum(1, keepdims=True)
  want = []
  for part in (p[:10], p[10:]):
    py = part.mean(0)
    want.append(np.exp(np.mean(np.sum(part * np.log(part / py), 1))))
  mean, std = distances.inception_score(logits, splits=2)
  assert mean == pytest.approx(np.mean(want)) and std == pytest.approx(
      np.std(want))


def test_precision_recall_against_brute_force():
  rng = np.random.default_rng(4)
  real = rng.normal(size=(40, 3))
  fake = rng.normal(0.7, 0.6, size=(30, 3))

  def brute(a, b, k=3):
    # Fraction of b inside some ball of a (radius: k-th neighbour in a).
    d_aa = np.linalg.norm(a[:, None] - a[None], axis=-1)
    radii = np.sort(d_aa, axis=1)[:, k]
    d_ba = np.linalg.norm(b[:, None] - a[None], axis=-1)
    return np.mean((d_ba <= radii[None]).any(1))

  got = distances.precision_recall(real, fake, block=7)
  assert got["precision"] == pytest.approx(brute(real, fake))
  assert got["recall"] == pytest.approx(brute(fake, real))
  assert 0 < got["precision"] < 1 and 0 < got["recall"] < 1
  same = distances.precision_recall(real, real)
  assert same == {"precision": 1.0, "recall": 1.0}


def test_precision_recall_in_float32_decide_as_float64_at_feature_scale():
  # Pool3-like features (non-negative, 256-d, norms ~10) with duplicated
  # rows (ties count: the k-th neighbour of a duplicated point is at its
  # k-th order statistic); blocks of 128 leave a padded last block.
  rng = np.random.default_rng(6)
  real = np.maximum(rng.normal(0.2, 1.0, size=(500, 256)), 0)
  real = np.concatenate([real, real[:40]])
  fake = np.maximum(rng.normal(0.2, 1.02, size=(450, 256)), 0)

  def reference(a, b, k=3):
    d_aa = ((a[:, None] - a[None]) ** 2).sum(-1)
    radii = np.sort(d_aa, axis=1)[:, k]
    d_ba = ((b[:, None] - a[None]) ** 2).sum(-1)
    return np.mean((d_ba <= radii[None]).any(1))

  got = distances.precision_recall(real, fake, block=128)
  assert got == {"precision": reference(real, fake),
                 "recall": reference(fake, real)}
  assert 0.05 < got["precision"] < 0.95 and 0.05 < got["recall"] < 0.95


def test_precision_recall_reports_progress_over_its_four_passes():
  rng = np.random.default_rng(3)
  real, fake = rng.normal(size=(23, 5)), rng.normal(size=(17, 5))
  bars = []

  class Bar:

    def __init__(self, total, what):
      self.total, self.what, self.done, self.closed = total, what, [], False
      bars.append(self)

    def update(self, n):
      self.done.append(n)

    def close(self):
      self.closed = True

  quiet = distances.precision_recall(real, fake, block=8)
  assert distances.precision_recall(real, fake, block=8,
                                    progress=Bar) == quiet
  (bar,) = bars
  assert (bar.total, bar.what, bar.closed) == (80, "precision/recall", True)
  # Blocks of 8: 23 rows are 8, 8, 7 and 17 rows 8, 8, 1, twice each.
  assert bar.done == [8, 8, 7, 8, 8, 1, 8, 8, 1, 8, 8, 7]
