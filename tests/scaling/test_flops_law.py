"""C = kappa N^phi D: the law's fit, its frontier and the fits that take it."""

import warnings

import numpy as np
import pytest

from scaling import approach2
from scaling import approach3
from scaling import check as check_lib
from scaling import fit
from scaling import flops_law
from scaling import report as report_lib
from scaling import results
from tests.scaling import test_approach3 as t3

# FLOPs per example growing slower than N, like the CPU simple-diffusion
# sweep's N^0.92 but further from 1 so that a wrong law shows.
LAW = flops_law.FlopsLaw(kappa=2000.0, phi=0.8)


def test_fit_recovers_a_power_law_and_keeps_k_for_constant_ratios():
  rng = np.random.default_rng(0)
  n = np.geomspace(1e5, 1e8, 9)
  d = rng.uniform(1e6, 1e8, 9)
  law = flops_law.FlopsLaw.fit(n, LAW.compute(n, d), d)
  assert law.kappa == pytest.approx(2000.0, rel=1e-9)
  assert law.phi == pytest.approx(0.8, abs=1e-12)
  assert law.max_miss == pytest.approx(1.0, abs=1e-9)
  # C / (N D) equal within rounding: one k, phi exactly 1.
  c = 6 * n * d * (1 + 1e-4 * rng.standard_normal(9))
  law = flops_law.FlopsLaw.fit(n, c, d)
  assert law.phi == 1.0 and law.is_linear
  assert law.kappa == pytest.approx(6.0, rel=1e-3)
  # One size only: no exponent to fit.
  law = flops_law.FlopsLaw.fit([1e6, 1e6], [3e12, 8e12], [1e5, 2e5])
  assert law.phi == 1.0 and law.kappa == pytest.approx(35.0)


@pytest.mark.parametrize("phi", [0.6, 0.8, 1.0, 1.3])
def test_frontier_minimises_loss_along_the_law(phi):
  law = flops_law.FlopsLaw(kappa=500.0, phi=phi)
  for c in (1e16, 1e21):
    # Brute force: the loss along D = C / (kappa N^phi) on a fine N grid.
    n = np.geomspace(1e2, 1e14, 400001)
    loss = t3.TRUE.loss(n, c / (500.0 * n**phi))
    n_best = n[np.argmin(loss)]
    assert t3.TRUE.n_opt(c, law) == pytest.approx(n_best, rel=1e-3)
    d = t3.TRUE.d_opt(c, law)
    assert law.compute(t3.TRUE.n_opt(c, law), d) == pytest.approx(c)
    # The exponents: N_opt ∝ C^a, D_opt ∝ C^b with b = 1 - phi a.
    front = t3.TRUE.frontier(law)
    ratio = t3.TRUE.n_opt(10 * c, law) / t3.TRUE.n_opt(c, law)
    assert np.log10(ratio) == pytest.approx(front["a"], rel=1e-9)
    ratio = t3.TRUE.d_opt(10 * c, law) / d
    assert np.log10(ratio) == pytest.approx(front["b"], rel=1e-9)
  if phi == 1.0:  # Chinchilla's closed form.
    assert front == pytest.approx({"G": t3.TRUE.G, "a": t3.TRUE.a,
                                   "b": t3.TRUE.b})


def test_approach3_extrapolates_with_the_fitted_law():
  n, d, c, loss = approach3.simulate_isoflops(t3.TRUE, t3.BUDGETS, k=LAW)
  runs = results.make_runs(n, loss, d=d, c=c)
  with warnings.catch_warnings():
    warnings.simplefilter("ignore", results.FitWarning)
    fits = fit.fit_runs(runs, approaches=(2, 3), n_bootstrap=0,
                        target_flops=[1e24])
  law = fits.fit3.flops
  assert law.phi == pytest.approx(0.8) and law.kappa == pytest.approx(2000)
  want = t3.TRUE.n_opt(1e24, LAW)
  row = fits.summary["extrapolation"][0]
  assert row["approach3"]["N_opt"]["value"] == pytest.approx(want, rel=1e-3)
  assert row["approach3"]["D_opt"]["value"] == pytest.approx(
      t3.TRUE.d_opt(1e24, LAW), rel=1e-3)
  # The one-k frontier the harness took before misses by a factor.
  k = float(np.median(c / (n * d)))
  assert abs(t3.TRUE.n_opt(1e24, k) / want - 1) > 0.5
  # Approach 2's D_opt at each budget spends the budget under the law.
  for cv in fits.fit2.used:
    d_opt = fits.fit2.flops.data(cv.budget, cv.n_opt)
    assert LAW.compute(cv.n_opt, d_opt) == pytest.approx(cv.budget)
  assert fits.fit2.d_opt.exponent == pytest.approx(
      1 - 0.8 * fits.fit2.n_opt.exponent, abs=1e-9)
  data = fits.summary["data"]
  assert data["flops"]["phi"] == pytest.approx(0.8)


def test_report_and_check_read_the_law_back(tmp_path):
  n, d, c, loss = approach3.simulate_isoflops(t3.TRUE, t3.BUDGETS[:3], k=LAW)
  fits = fit.fit_runs(results.make_runs(n, loss, d=d, c=c),
                      approaches=(2, 3), n_bootstrap=0)
  fit.write_outputs(fits, str(tmp_path))
  report = (tmp_path / "report.md").read_text()
  assert "training compute C = 2000 N^0.800 D: ln(C/D) fitted on ln N" in (
      report)
  assert "a = beta/(alpha + phi beta), b = 1 - phi a" in report
  summary = fits.summary
  pred = check_lib.predicted_optimum(summary, 1e20)
  assert pred["approach3"]["N_opt"] == pytest.approx(
      t3.TRUE.n_opt(1e20, LAW), rel=1e-3)
  # A fit.json from before the law (one "k"): read as C = k N D.
  old = {"approach3": {**t3.TRUE.to_dict(), "k": 6.0}}
  assert check_lib.predicted_optimum(old, 1e20)["approach3"]["N_opt"] == (
      pytest.approx(t3.TRUE.n_opt(1e20)))


def test_runs_off_any_power_law_are_called_out():
  n, d, c, loss = approach3.simulate_isoflops(t3.TRUE, t3.BUDGETS[:3])
  # Half the runs at 3x the FLOPs per example of the other half (a second
  # resolution mixed into the fit).
  c = np.where(np.arange(len(c)) % 2, 3 * c, c)
  with pytest.warns(results.FitWarning, match=r"FLOPs per example miss the "
                    r"fitted C = \S+ N\^\S+ D by up to \S+x on some runs"):
    fit.fit_runs(results.make_runs(n, loss, d=d, c=c), approaches=(3,),
                 n_bootstrap=0)


def test_isoflop_fit_without_a_law_keeps_k_6():
  n, d, _, loss = approach3.simulate_isoflops(t3.TRUE, t3.BUDGETS[:3])
  budget = np.repeat(t3.BUDGETS[:3], 8)
  f = approach2.fit_isoflops(n, loss, budget)
  assert f.flops == flops_law.FlopsLaw(6.0, 1.0)
  assert f.d_opt.exponent == pytest.approx(1 - f.n_opt.exponent)


def test_report_names_the_law_in_one_line():
  line = report_lib._flops_line  # pylint: disable=protected-access
  exact = flops_law.FlopsLaw(6.0, 1.0)
  assert line({"flops": exact.to_dict(), "k_range": [6.0, 6.0]}) == (
      "- training compute C = 6 N D (C/(N D) = 6 on every run)")
  assert line({"flops": exact.to_dict(), "k_range": [5.98, 6.03]}) == (
      "- training compute C = 6 N D (C/(N D) from 5.98 to 6.03, within 1%: "
      "one k, the median)")
  one_size = flops_law.FlopsLaw(200.0, 1.0, 2.0)
  assert line({"flops": one_size.to_dict(), "k_range": [100.0, 400.0]}) == (
      "- training compute C = 200 N D (one model size: C/(N D) from 100 to "
      "400, one k, the median)")
  # A fit.json written before the law: its one k.
  assert line({"k": 226.4}) == "- k in C = k N D: 226.4 (median C/(N D))"


@pytest.mark.parametrize("n, c, d, match", [
    ([1e5, 2e5], [1e12, np.nan], [1e4, 1e4], "positive, finite N, C and D"),
    ([1e5, -2e5], [1e12, 1e12], [1e4, 1e4], "positive, finite N, C and D"),
    ([], [], [], "positive, finite N, C and D"),
    # C / D falling with N: no trade-off between N and D exists.
    ([1e5, 2e5, 4e5], [4e12, 2e12, 1e12], [1e4] * 3,
     r"FLOPs per example do not grow with N over these runs \(C/D ∝ "
     r"N\^-1.000\): no compute-optimal trade-off exists"),
    # The same C / D at every size: the fitted slope is +-1e-15, and its
    # sign (rounding) decided between an error and a frontier of G ~ 1e41.
    ([1e5, 3e5], [1e12, 1e12], [1e4, 1e4],
     r"FLOPs per example do not grow with N over these runs \(C/D ∝ "
     r"N\^0.000\)"),
    ([1e8, 2e8], [1.02e18, 1.02e18], [1e6, 1e6], "do not grow with N"),
])
def test_bad_runs_are_one_line_errors(n, c, d, match):
  with pytest.raises(ValueError, match=match) as e:
    flops_law.FlopsLaw.fit(n, c, d)
  assert "\n" not in str(e.value)
