"""Fits on any metric: directions, higher-is-better maps, bound warnings and
the extrapolation printed by the CLI."""

import json
import warnings

import numpy as np
import pytest

from scaling import approach3
from scaling import fit
from scaling import metrics
from scaling import results
from tests.scaling import test_approach3 as t3
from tests.scaling import test_fit_cli as tcli


def test_resolve_directions_and_maps():
  psnr = metrics.resolve("eval_psnr")
  assert psnr.higher_is_better and psnr.fitted == "10^(-eval_psnr/10)"
  # 20 dB is an MSE of 1% of peak²; the inverse map returns the dB.
  np.testing.assert_allclose(psnr.to_loss(20.0), 0.01)
  np.testing.assert_allclose(psnr.from_loss(psnr.to_loss([12.5, 31.0])),
                             [12.5, 31.0])
  assert metrics.resolve("ssim").to_loss(0.75) == pytest.approx(0.25)
  assert metrics.resolve("eval_is").to_loss(4.0) == pytest.approx(0.25)
  for name in ("eval_fid", "eval_loss", None):
    m = metrics.resolve(name)
    assert not m.higher_is_better and m.to_loss(3.0) == 3.0
  # Forced directions: lower keeps PSNR as is; higher needs a known map.
  assert not metrics.resolve("eval_psnr", "lower").higher_is_better
  with pytest.raises(ValueError, match=r"^--metric_direction=higher for "
                     "--metric=eval_fid: no map onto a falling loss .*; pass "
                     "--metric_direction=auto or lower"):
    metrics.resolve("eval_fid", "higher")
  # Without --metric the message is about the loss, not a "--metric=loss".
  with pytest.raises(ValueError, match=r"^--metric_direction=higher for "
                     r"the loss \(no --metric\)"):
    metrics.resolve(None, "higher")
  with pytest.raises(ValueError, match="choose one of"):
    metrics.resolve("eval_fid", "up")


def _psnr_rows(params):
  n, d, c, loss = approach3.simulate_isoflops(
      params, [1e18, 1e19, 1e20, 1e21], noise=0.003, seed=0)
  return [{"family": "ae", "params": float(a), "budget_flops": float(b),
           "flops": float(b), "examples_seen": float(dd),
           "eval_psnr": float(-10 * np.log10(x)), "status": "ok"}
          for a, dd, b, x in zip(n, d, c, loss)]


def test_higher_is_better_metric_recovers_synthetic_parameters(tmp_path):
  # PSNR of a known loss surface (loss = 10^(-PSNR/10)): the fit must see
  # the surface again, and predict PSNR rising with compute.
  path = tmp_path / "results.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in _psnr_rows(t3.TRUE)))
  fits = fit.run(str(path), str(tmp_path / "out"), metric="eval_psnr",
                 target_flops=[1e22, 1e23], n_bootstrap=8, top_k=20)
  p = fits.fit3.params
  for name, rtol in (("E", 0.02), ("alpha", 0.05), ("beta", 0.05)):
    assert getattr(p, name) == pytest.approx(getattr(t3.TRUE, name),
                                             rel=rtol), name
  rows = fits.summary["extrapolation"]
  for row in rows:
    for approach in ("approach2", "approach3"):
      pred = row[approach]
      assert pred["eval_psnr"]["value"] == pytest.approx(
          -10 * np.log10(pred["loss"]["value"]))
      assert pred["eval_psnr"]["lo"] <= pred["eval_psnr"]["hi"]
  assert (rows[1]["approach3"]["eval_psnr"]["value"]
          > rows[0]["approach3"]["eval_psnr"]["value"])
  truth = approach3.LossParams(**t3.TRUE.to_dict())
  law = fits.fit3.flops
  n_opt = truth.n_opt(1e22, law)
  expected = -10 * np.log10(truth.loss(n_opt, law.data(1e22, n_opt)))
  assert rows[0]["approach3"]["eval_psnr"]["value"] == pytest.approx(
      expected, abs=0.02)
  report = (tmp_path / "out" / "report.md").read_text()
  assert "higher is better" in report and "| eval_psnr |" in report


def test_collapsed_floor_warns_in_one_line():
  # A pure power law (E = 0) has no floor: approach 3's E runs to 0.
  pure = approach3.LossParams(E=1e-12, A=300.0, B=1000.0, alpha=0.35,
                              beta=0.3)
  n, d, c, loss = approach3.simulate_isoflops(pure, [1e18, 1e19, 1e20],
                                              noise=0.0)
  runs = results.make_runs(n, loss, d=d, c=c, budget=c)
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    fit.fit_runs(runs, approaches=(3,), top_k=20)
  messages = [str(w.message) for w in caught
              if issubclass(w.category, results.FitWarning)]
  assert any(m.startswith("approach 3: E = ") and "collapsed" in m
             and "\n" not in m for m in messages), messages
  # A surface with a floor fits without the warning.
  n, d, c, loss = approach3.simulate_isoflops(t3.TRUE, [1e18, 1e19, 1e20],
                                              noise=0.0)
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    fit.fit_runs(results.make_runs(n, loss, d=d, c=c, budget=c),
                 approaches=(3,), top_k=20)
  assert not [w for w in caught if "collapsed" in str(w.message)]


def test_cli_prints_extrapolation_and_warnings(tmp_path):
  path = tmp_path / "results.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in _psnr_rows(t3.TRUE)))
  out = tcli._cli(f"--results={path}", f"--out={tmp_path / 'o'}",
                  "--metric=eval_psnr", "--target_flops=1e22,1e24",
                  "--bootstrap=0", "--top_k=20")
  assert out.returncode == 0, out.stderr
  lines = [l for l in out.stdout.splitlines() if l.startswith("at ")]
  assert len(lines) == 2 and lines[0].startswith("at 1e+22 FLOPs: approach 2")
  assert "eval_psnr" in lines[0] and "approach 3" in lines[0]
