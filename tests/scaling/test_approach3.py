"""Approach 3: objective/gradient, Epoch reproduction, synthetic recovery."""

import os
import time

import numpy as np
import pytest
from scipy import optimize

from scaling import approach3
from scaling import results

REPO = os.path.dirname(os.path.dirname(os.path.dirname(
    os.path.abspath(__file__))))
_EPOCH_CANDIDATES = [
    os.environ.get("JAXGEN_EPOCH_CSV", ""),
    os.path.join(REPO, "shared", "data", "svg_extracted_data.csv"),
    os.path.join(REPO, "..", "shared", "data", "svg_extracted_data.csv"),
]
TRUE = approach3.LossParams(E=1.5, A=300.0, B=1000.0, alpha=0.35, beta=0.3)
BUDGETS = [1e17, 1e18, 1e19, 1e20, 1e21, 1e22]


def epoch_csv():
  """Path of Epoch's Chinchilla extraction (not redistributed in the repo)."""
  for path in _EPOCH_CANDIDATES:
    if path and os.path.exists(path):
      return path
  pytest.skip("svg_extracted_data.csv not found (set JAXGEN_EPOCH_CSV)")


def epoch_runs():
  """The 240 runs Epoch fitted: the 5 highest losses dropped."""
  return results.drop_highest_loss(results.load_runs(epoch_csv()), 5)


@pytest.fixture(scope="module")
def epoch_fit():
  runs = epoch_runs()
  start = time.perf_counter()
  fit = approach3.fit_parametric(runs.n, runs.d, runs.loss)
  return runs, fit, time.perf_counter() - start


def test_gradient_matches_finite_differences():
  n, d, _, loss = approach3.simulate_isoflops(TRUE, BUDGETS, noise=0.01)
  args = (np.log(n), np.log(d), np.log(loss))
  f = lambda t: approach3.objective_and_grad(t, *args)[0]
  g = lambda t: approach3.objective_and_grad(t, *args)[1]
  for theta in ([6.0, 7.0, 0.5, 0.3, 0.35], [5.0, 8.0, 0.2, 0.4, 0.3]):
    theta = np.array(theta)
    np.testing.assert_allclose(g(theta), optimize.approx_fprime(theta, f,
                                                                1e-7),
                               rtol=1e-4, atol=1e-7)


def test_grid_objective_matches_single_evaluation():
  n, d, _, loss = approach3.simulate_isoflops(TRUE, BUDGETS, noise=0.01)
  args = (np.log(n), np.log(d), np.log(loss))
  thetas = approach3.init_grid()[::97]
  batched = approach3.grid_objective(thetas, *args)
  single = [approach3.objective_and_grad(t, *args)[0] for t in thetas]
  np.testing.assert_allclose(batched, single, rtol=1e-12)
  assert len(approach3.init_grid()) == 4500


def test_epoch_reproduction(epoch_fit):
  runs, fit, seconds = epoch_fit
  p = fit.params
  assert len(runs) == 240
  # Targets from the research notes (Epoch protocol, 4500-start grid).
  assert p.alpha == pytest.approx(0.347, abs=0.003)
  assert p.beta == pytest.approx(0.367, abs=0.003)
  assert p.E == pytest.approx(1.817, abs=0.005)
  assert p.a == pytest.approx(0.514, abs=0.005)
  assert p.A == pytest.approx(477.8, rel=0.05)
  assert p.B == pytest.approx(2143.0, rel=0.10)
  assert fit.objective == pytest.approx(1.0183e-3, rel=1e-3)
  assert fit.n_at_best > 1
  # "Well under a minute" with a wide margin for a loaded CI machine.
  assert seconds < 30


def test_published_parameters_score_worse(epoch_fit):
  runs, fit, _ = epoch_fit
  unrounded = approach3.score(approach3.HOFFMANN_UNROUNDED, runs.n, runs.d,
                              runs.loss)
  rounded = approach3.score(approach3.HOFFMANN_ROUNDED, runs.n, runs.d,
                            runs.loss)
  assert unrounded == pytest.approx(1.2312e-3, rel=1e-3)
  assert rounded == pytest.approx(4.1210e-3, rel=1e-3)
  assert fit.objective < unrounded < rounded
  assert approach3.HOFFMANN_UNROUNDED.E == pytest.approx(1.6934, abs=1e-4)


def test_frontier_minimises_loss_at_fixed_compute():
  for c in (1e19, 1e23):
    n = np.geomspace(1e6, 1e13, 200001)
    loss = TRUE.loss(n, c / (6 * n))
    assert TRUE.n_opt(c) == pytest.approx(n[np.argmin(loss)], rel=1e-3)
    assert TRUE.d_opt(c) * TRUE.n_opt(c) * 6 == pytest.approx(c)
  assert TRUE.a + TRUE.b == pytest.approx(1.0)


def test_recovers_noise_free_surface():
  n, d, _, loss = approach3.simulate_isoflops(TRUE, BUDGETS)
  p = approach3.fit_parametric(n, d, loss).params
  for name in ("E", "A", "B", "alpha", "beta"):
    assert getattr(p, name) == pytest.approx(getattr(TRUE, name), rel=1e-3)


@pytest.mark.parametrize("seed", [0, 1])
def test_recovers_noisy_surface(seed):
  n, d, _, loss = approach3.simulate_isoflops(TRUE, BUDGETS, noise=0.002,
                                              seed=seed)
  p = approach3.fit_parametric(n, d, loss).params
  assert p.alpha == pytest.approx(TRUE.alpha, abs=0.01)
  assert p.beta == pytest.approx(TRUE.beta, abs=0.01)
  assert p.E == pytest.approx(TRUE.E, abs=0.03)
  assert p.A == pytest.approx(TRUE.A, rel=0.1)
  assert p.B == pytest.approx(TRUE.B, rel=0.1)
  assert p.a == pytest.approx(TRUE.a, abs=0.01)


def test_too_few_points_is_one_line_error():
  n, d, _, loss = approach3.simulate_isoflops(TRUE, [1e18], n_per_budget=5)
  with pytest.raises(ValueError, match=r"at least 6 runs .* got 5") as e:
    approach3.fit_parametric(n, d, loss)
  assert "\n" not in str(e.value)


def test_needs_distinct_sizes_and_data():
  n = np.full(8, 1e8)
  with pytest.raises(ValueError, match="2 distinct N"):
    approach3.fit_parametric(n, np.geomspace(1e9, 1e10, 8), np.full(8, 3.0))


def test_a_fit_whose_loss_rises_with_d_has_no_frontier():
  # beta < 0: alpha A / (beta B) is negative and its fractional power was
  # a complex number; now there is no frontier and G is NaN.
  p = approach3.LossParams(E=6.7, A=5620.0, B=53.8, alpha=0.386, beta=-0.064)
  assert not p.has_frontier and np.isnan(p.G)
  assert TRUE.has_frontier and TRUE.G > 0
  fit = approach3.ParametricFit(p, 1e-3, 9, 1e-3, np.zeros(5), 100, 1, True)
  out = fit.to_dict()
  assert out["frontier"] is False
  assert out["a"] is None and out["b"] is None and out["G"] is None
