"""Approach 2: budget grouping, parabola checks, Epoch and synthetic fits."""

import warnings

import numpy as np
import pytest

from scaling import approach2
from scaling import approach3
from scaling import results
from tests.scaling import test_approach3 as t3


def _synthetic(noise=0.0, seed=0, budgets=t3.BUDGETS, n_per_budget=8):
  n, _, c, loss = approach3.simulate_isoflops(t3.TRUE, budgets, n_per_budget,
                                              noise=noise, seed=seed)
  return n, c, loss


def test_epoch_detected_budgets():
  # Rule: centres = densest +-0.02 dex windows of log10 C with >= 8 runs,
  # each run snapped to the nearest centre within +-0.05 dex.
  runs = t3.epoch_runs()
  centres = approach2.detect_budgets(runs.c)
  assert len(centres) == 9
  # The digitised budgets sit within ~10% below Chinchilla's nominal ones.
  ratio = centres / np.array(approach2.CHINCHILLA_BUDGETS)
  assert np.all((ratio > 0.88) & (ratio < 1.01))
  with warnings.catch_warnings():
    warnings.simplefilter("error")  # No budget may be excluded here.
    fit = approach2.fit_isoflops(runs.n, runs.loss,
                                 approach2.run_budgets(runs))
  assert len(fit.used) == 9
  assert fit.n_opt.exponent == pytest.approx(0.50, abs=0.01)
  assert fit.d_opt.exponent == pytest.approx(1 - fit.n_opt.exponent)
  # Chinchilla approach 2: ~61B (notes: 61.5-68B) at Gopher's 5.76e23.
  assert 55e9 < fit.n_opt(5.76e23) < 75e9


def test_epoch_nominal_budgets():
  # Rule: nearest of Chinchilla's nine budgets within +-0.05 dex (the notes'
  # rule; they report a = 0.502 on all 245 rows, 0.514 after dropping 5).
  runs = t3.epoch_runs()
  budget = approach2.assign_budgets(runs.c, approach2.CHINCHILLA_BUDGETS)
  fit = approach2.fit_isoflops(runs.n, runs.loss, budget)
  assert fit.n_opt.exponent == pytest.approx(0.50, abs=0.02)
  all_runs = results.load_runs(t3.epoch_csv())
  budget = approach2.assign_budgets(all_runs.c, approach2.CHINCHILLA_BUDGETS)
  fit = approach2.fit_isoflops(all_runs.n, all_runs.loss, budget)
  assert fit.n_opt.exponent == pytest.approx(0.502, abs=0.002)


@pytest.mark.parametrize("noise", [0.0, 0.002])
def test_synthetic_exponent(noise):
  n, c, loss = _synthetic(noise)
  fit = approach2.fit_isoflops(n, loss, c)
  assert len(fit.used) == len(t3.BUDGETS)
  assert fit.n_opt.exponent == pytest.approx(t3.TRUE.a, abs=0.01)
  assert fit.d_opt.exponent == pytest.approx(t3.TRUE.b, abs=0.01)
  # The parabola minima lie on the true frontier's loss within noise.
  for cv in fit.used:
    assert cv.loss_opt == pytest.approx(t3.TRUE.loss_opt(cv.budget),
                                        rel=0.005)


def test_detects_synthetic_budgets_with_jitter():
  n, c, loss = _synthetic()
  jitter = np.exp(np.random.default_rng(0).normal(0, 0.02, len(c)))
  budget = approach2.assign_budgets(c * jitter)
  np.testing.assert_allclose(np.unique(budget), t3.BUDGETS, rtol=0.03)
  fit = approach2.fit_isoflops(n, loss, budget)
  assert fit.n_opt.exponent == pytest.approx(t3.TRUE.a, abs=0.015)


def test_budget_without_interior_minimum_is_named_and_excluded():
  n, c, loss = _synthetic()
  # Keep only the 4 smallest models of the 1e20 budget: loss still falls.
  drop = (c == 1e20) & (n > np.sort(n[c == 1e20])[3])
  with pytest.warns(results.FitWarning,
                    match=r"budget 1e\+20 FLOPs excluded: minimum at N="):
    fit = approach2.fit_isoflops(n[~drop], loss[~drop], c[~drop])
  assert [cv.budget for cv in fit.curves if not cv.used] == [1e20]
  assert len(fit.used) == len(t3.BUDGETS) - 1
  assert fit.n_opt.exponent == pytest.approx(t3.TRUE.a, abs=0.01)


def test_concave_and_tiny_budgets_are_excluded():
  n, c, loss = _synthetic()
  sel = c == 1e19
  loss = loss.copy()
  loss[sel] = 5.0 - (np.log(n[sel]) - np.log(n[sel]).mean())**2
  keep = ~((c == 1e21) & (n > np.sort(n[c == 1e21])[1]))
  with pytest.warns(results.FitWarning) as record:
    fit = approach2.fit_isoflops(n[keep], loss[keep], c[keep])
  messages = " ".join(str(w.message) for w in record)
  assert "budget 1e+19 FLOPs excluded: parabola not convex" in messages
  assert "budget 1e+21 FLOPs excluded: 2 distinct model sizes" in messages
  assert len(fit.used) == len(t3.BUDGETS) - 2


def test_a_minimum_loss_below_zero_excludes_its_budget():
  # 1 - accuracy near 0: the parabola through 0.30, 0.02, 0.01, 0.25 dips
  # below 0, and its log made the whole frontier (coefficient and
  # exponent) NaN.
  curve = approach2.fit_parabola(1e15, [1e6, 2e6, 4e6, 8e6],
                                 [0.30, 0.02, 0.01, 0.25])
  assert not curve.used and curve.loss_opt < 0
  assert curve.reason.startswith("the parabola's minimum loss -0.0")
  n, c, loss = _synthetic()
  sel = c == c.max()
  loss = loss.copy()
  loss[sel] = loss[sel] - loss[sel].min() - 0.01
  with pytest.warns(results.FitWarning, match="minimum loss .* is not "
                    "positive"):
    fit = approach2.fit_isoflops(n, loss, c)
  assert len(fit.used) == len(t3.BUDGETS) - 1
  assert np.isfinite([fit.loss_opt.coef, fit.loss_opt.exponent,
                      fit.n_opt.exponent]).all()


def test_too_few_budgets_is_one_line_error():
  n, c, loss = _synthetic(budgets=[1e18])
  with pytest.raises(ValueError, match=r">= 2 budgets .* got 1 of 1") as e:
    approach2.fit_isoflops(n, loss, c)
  assert "\n" not in str(e.value)


def test_runs_budgets_are_used_exactly():
  n, c, loss = _synthetic()
  runs = results.make_runs(n, loss, c=c * 1.3, budget=c)
  np.testing.assert_array_equal(approach2.run_budgets(runs), c)
  # Explicit centres override the runs' own budgets.
  snapped = approach2.run_budgets(runs, budgets=[1.3e18], tol=0.01)
  assert np.isfinite(snapped).sum() == 8


def test_curvature_standard_error_and_a_flat_budget_warning():
  # Pitfall 12: diffusion losses are flat in N, so noise can place an
  # isoFLOP vertex; the curvature was used without checking it stood out.
  x = np.linspace(-2.0, 2.0, 7)
  n, sigma = np.exp(10.0 + x), 0.002
  # The standard error matches the spread of the curvature over noise
  # draws (Monte Carlo, 4000 draws: within 5%).
  rng = np.random.default_rng(0)
  fits = [approach2.fit_parabola(1e20, n, 1.0 + 0.05 * x**2
                                 + rng.normal(0, sigma, 7))
          for _ in range(4000)]
  spread = np.std([cv.curvature for cv in fits])
  mean_se = np.sqrt(np.mean([cv.curvature_se**2 for cv in fits]))
  assert mean_se == pytest.approx(spread, rel=0.05)
  assert np.isnan(approach2.fit_parabola(1e20, n[:3], x[:3]**2).curvature_se)
  # Two budgets: a clear parabola, and one whose curvature is noise.
  flat = 1.0 + 0.0002 * x**2 + np.array([1, -1, 1, -1, 1, -1, 1]) * sigma
  clear = 1.0 + 0.05 * x**2 + np.array([1, -1, 1, -1, 1, -1, 1]) * sigma
  with pytest.warns(results.FitWarning) as record:
    fit = approach2.fit_isoflops(np.r_[n, n * 4], np.r_[flat, clear],
                                 np.r_[[1e20] * 7, [4e20] * 7])
  said = [str(w.message) for w in record]
  weak = fit.curves[0]
  assert said == [
      f"approach 2: budget 1e+20 FLOPs: the parabola's curvature "
      f"{weak.curvature:.3g} is within 2 standard errors "
      f"({weak.curvature_se:.3g}) of 0, so noise may place its minimum; add "
      "runs, or sizes farther from the minimum"]
  assert [cv.weak for cv in fit.curves] == [True, False]
  assert len(fit.used) == 2  # Warned about, still used.
