"""scaling.compare on synthetic families with known frontiers and crossings."""

import json
import math
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

from scaling import compare
from scaling import metrics as metrics_lib
from scaling import results
from scaling import results as results_lib

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
BUDGETS = (1e8, 1e9, 1e10, 1e11)


def _family_rows(family, coef, exponent, metric="eval_fid",
                 to_metric=lambda loss: loss, sampling_per_param=None,
                 noise=0.0, seed=0):
  """Rows whose isoFLOP minima lie exactly on coef * C^exponent.

  Per budget, five sizes around N_opt = 0.1 C^0.5 with loss
  L*(C) (1 + 0.05 ln(N / N_opt)^2): a parabola in ln N whose vertex is
  (N_opt, L*(C)).
  """
  rng = np.random.default_rng(seed)
  rows = []
  for c in BUDGETS:
    n_opt = 0.1 * c**0.5
    for f in (0.25, 0.5, 1.0, 2.0, 4.0):
      n = n_opt * f
      loss = coef * c**exponent * (1 + 0.05 * math.log(f)**2)
      loss *= 1 + noise * rng.standard_normal()
      row = {"family": family, "point": f"C{c:g}_x{f:g}", "params": n,
             "budget_flops": c, "flops": c, "examples_seen": c / (6 * n),
             "status": "ok", metric: float(to_metric(loss))}
      if sampling_per_param:
        row["sampling_flops_per_example"] = sampling_per_param * n
      rows.append(row)
  return rows


def _write(path, rows):
  with open(path, "w") as f:
    for r in rows:
      f.write(json.dumps(r) + "\n")
  return str(path)


def test_frontiers_reach_and_crossing_match_the_closed_forms(tmp_path):
  # A: 10 C^-0.1, B: 30 C^-0.15 -> they cross where C^0.05 = 3, C = 3^20.
  a = _write(tmp_path / "a.jsonl", _family_rows("A", 10.0, -0.1,
                                                  sampling_per_param=2.0))
  b = _write(tmp_path / "b.jsonl", _family_rows("B", 30.0, -0.15,
                                                  sampling_per_param=100.0))
  targets = [1.0, 0.5]
  summary = compare.run([a, b], str(tmp_path / "out"), "eval_fid",
                        targets=targets, target_flops=1e13, n_bootstrap=20)
  fams = {f["family"]: f for f in summary["families"]}
  assert fams["A"]["loss_exponent"] == pytest.approx(-0.1, rel=1e-6)
  assert fams["B"]["loss_coef"] == pytest.approx(30.0, rel=1e-6)
  assert fams["A"]["metric_at_target_flops"] == pytest.approx(
      10 * 1e13**-0.1, rel=1e-6)
  # The compute-optimal N at the largest budget is 0.1 sqrt(1e11); the
  # sampling FLOPs are 2 N (A) and 100 N (B).
  n_opt = 0.1 * 1e11**0.5
  assert fams["A"]["n_opt_at_largest_budget"] == pytest.approx(n_opt, 1e-6)
  assert fams["B"]["sampling_flops_per_image"] == pytest.approx(
      100 * n_opt, rel=1e-6)
  # Compute to reach v: C = (v / L0)^(1 / gamma).
  for row, v in zip(summary["reach"], targets):
    for name, coef, gamma in (("A", 10.0, -0.1), ("B", 30.0, -0.15)):
      assert row["families"][name]["compute"] == pytest.approx(
          (v / coef)**(1 / gamma), rel=1e-5)
  # Below the crossing loss (10 * 3^-2 = 1.11) B is cheaper: it improves
  # faster. Exact data: bootstrap intervals are points, no overlap.
  assert [r["cheapest"] for r in summary["reach"]] == ["B", "B"]
  assert all(r["overlaps"] == [] for r in summary["reach"])
  [cross] = summary["crossings"]
  assert cross["compute"] == pytest.approx(3.0**20, rel=1e-6)
  assert cross["metric"] == pytest.approx(10 * 3.0**-2, rel=1e-6)
  assert cross["inside_data"] is True
  out = tmp_path / "out"
  assert (out / "compare.png").stat().st_size > 10_000
  text = (out / "compare.md").read_text()
  assert "Frontier crossings" in text
  reach_rows = [ln for ln in text.splitlines() if ln.startswith("| 1 |")
                or ln.startswith("| 0.5 |")]
  assert len(reach_rows) == 2 and all(ln.endswith("| B |")
                                      for ln in reach_rows)
  assert json.loads((out / "compare.json").read_text())["metric"] == (
      "eval_fid")


def test_a_target_above_the_crossing_is_cheapest_for_the_other_family(
    tmp_path):
  a = _write(tmp_path / "a.jsonl", _family_rows("A", 10.0, -0.1))
  b = _write(tmp_path / "b.jsonl", _family_rows("B", 30.0, -0.15))
  # 1.5 > 1.11: reached first by A (A is better at small compute).
  summary = compare.run([a, b], str(tmp_path / "o"), "eval_fid",
                        targets=[1.5], n_bootstrap=0)
  assert summary["reach"][0]["cheapest"] == "A"
  # No bootstrap: no intervals, no overlap claims.
  assert summary["reach"][0]["families"]["A"]["interval"] is None


def test_a_cheapest_family_without_an_interval_is_not_resolved(tmp_path):
  # Three sizes per budget: bootstrapped, but every resample that fits is
  # the fit itself, so no interval. Its ranking was reported resolved.
  three = [r for r in _family_rows("A", 10.0, -0.1)
           if r["point"].endswith(("_x0.5", "_x1", "_x2"))]
  a = _write(tmp_path / "a.jsonl", three)
  b = _write(tmp_path / "b.jsonl", _family_rows("B", 30.0, -0.15))
  # 1.5: reached first by A, beyond its smallest fitted budget.
  with pytest.warns(results.FitWarning, match="no bootstrap interval"):
    summary = compare.run([a, b], str(tmp_path / "o"), "eval_fid",
                          targets=[1.5], n_bootstrap=20)
  row = summary["reach"][0]
  assert row["cheapest"] == "A" and not row["families"]["A"]["already"]
  assert row["overlaps"] == ["B"]


def test_noisy_families_with_close_frontiers_report_overlap(tmp_path):
  rows = (_family_rows("A", 10.0, -0.1, noise=0.03, seed=1)
          + _family_rows("B", 10.2, -0.1, noise=0.03, seed=2))
  path = _write(tmp_path / "ab.jsonl", rows)  # Two families, one file.
  summary = compare.run([path], str(tmp_path / "o"), "eval_fid",
                        targets=[1.0], n_bootstrap=100)
  row = summary["reach"][0]
  assert row["overlaps"], row
  lines = compare.result_lines(summary)
  assert "interval overlaps" in lines[0]


def test_higher_is_better_metric_compares_through_its_map(tmp_path):
  # PSNR = -10 log10(loss): the frontiers are power laws in 10^(-PSNR/10).
  psnr = lambda loss: -10 * np.log10(loss)
  a = _write(tmp_path / "a.jsonl", _family_rows(
      "A", 0.5, -0.2, metric="eval_psnr", to_metric=psnr))
  b = _write(tmp_path / "b.jsonl", _family_rows(
      "B", 2.0, -0.25, metric="eval_psnr", to_metric=psnr))
  summary = compare.run([a, b], str(tmp_path / "o"), "eval_psnr",
                        targets=[30.0], n_bootstrap=0)
  assert summary["higher_is_better"]
  loss = 10**(-30 / 10)
  for name, coef, gamma in (("A", 0.5, -0.2), ("B", 2.0, -0.25)):
    assert summary["reach"][0]["families"][name]["compute"] == pytest.approx(
        (loss / coef)**(1 / gamma), rel=1e-5)
  # Default targets: each family's frontier at its largest budget, in dB.
  m = metrics_lib.resolve("eval_psnr")
  frontiers = compare.load_frontiers([a, b], "eval_psnr", n_bootstrap=0)
  assert compare.default_targets(frontiers, m) == sorted(
      [float(f"{psnr(0.5 * 1e11**-0.2):.3g}"),
       float(f"{psnr(2.0 * 1e11**-0.25):.3g}")])


def test_bad_inputs_fail_or_warn_in_one_line(tmp_path):
  a_rows = _family_rows("A", 10.0, -0.1)
  a = _write(tmp_path / "a.jsonl", a_rows)
  with pytest.raises(ValueError, match="no 'eval_kid' in any row"):
    compare.load_frontiers([a], "eval_kid")
  with pytest.raises(ValueError, match="family 'A' is in both"):
    compare.load_frontiers([a, a], "eval_fid")
  # A metric missing from some rows: a warning naming those points.
  del a_rows[3]["eval_fid"]
  del a_rows[7]["eval_fid"]
  partial = _write(tmp_path / "p.jsonl", a_rows)
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    compare.load_frontiers([partial], "eval_fid", n_bootstrap=0)
  text = " ".join(str(w.message) for w in caught
                  if issubclass(w.category, results_lib.FitWarning))
  assert f"eval_fid missing from 2 ok rows, dropped: {a_rows[3]['point']}, "\
      f"{a_rows[7]['point']}" in text
  # A family with one budget has no frontier: left out by name, and with
  # no family left, an error.
  one = _write(tmp_path / "one.jsonl",
               [r for r in _family_rows("C", 1.0, -0.1)
                if r["budget_flops"] == 1e8])
  with pytest.warns(results_lib.FitWarning,
                    match="family 'C': approach 2 needs .* left out"):
    got = compare.load_frontiers([a, one], "eval_fid", n_bootstrap=0)
  assert [f.family for f in got] == ["A"]
  summary = compare.run([a, one], str(tmp_path / "o"), "eval_fid",
                        n_bootstrap=0)
  assert summary["left_out"][0].startswith("family 'C': approach 2 needs")
  # scaling.fit's --approaches=3 is no flag of this command.
  assert summary["left_out"][0].endswith("add sizes around each minimum")
  assert "Left out (no frontier):" in (tmp_path / "o" / "compare.md"
                                       ).read_text()
  with pytest.raises(ValueError, match="no family has a frontier: family "
                     "'C': approach 2 needs"):
    compare.load_frontiers([one], "eval_fid", n_bootstrap=0)


def test_command_line_prints_the_table_and_one_line_per_target(tmp_path):
  a = _write(tmp_path / "a.jsonl", _family_rows("A", 10.0, -0.1))
  b = _write(tmp_path / "b.jsonl", _family_rows("B", 30.0, -0.15))
  out = subprocess.run(
      [sys.executable, "-m", "scaling.compare", f"--results={a},{b}",
       "--metric=eval_fid", f"--out={tmp_path / 'o'}", "--bootstrap=10",
       "--targets=0.5"], cwd=ROOT, capture_output=True, text=True,
      check=True).stdout
  assert "| family | runs |" in out
  assert "eval_fid=0.5: cheapest B at" in out
  assert out.strip().endswith("compare.md, compare.json and compare.png")


def test_families_compared_on_their_own_losses_carry_a_caveat(tmp_path):
  # eval_loss is ε-MSE for one family and velocity MSE for another: the
  # comparison runs, with a warning and a caveat atop compare.md.
  a = _write(tmp_path / "a.jsonl", _family_rows("A", 10.0, -0.1,
                                                  metric="eval_loss"))
  b = _write(tmp_path / "b.jsonl", _family_rows("B", 30.0, -0.15,
                                                  metric="eval_loss"))
  with pytest.warns(results_lib.FitWarning, match=r"eval_loss is each "
                    r"family's own training objective \(A, B\), not "
                    "comparable across families; pass --metric="):
    summary = compare.run([a, b], str(tmp_path / "o"), "eval_loss",
                          n_bootstrap=0)
  assert summary["caveat"].startswith("eval_loss is each family's own")
  md = (tmp_path / "o" / "compare.md").read_text().splitlines()
  assert md[2].startswith("**Caveat**: eval_loss is each family's own")
  # One family, or a sample metric: no caveat.
  with warnings.catch_warnings():
    warnings.simplefilter("error", results_lib.FitWarning)
    assert not compare.run([a], str(tmp_path / "o1"), "eval_loss",
                           n_bootstrap=0)["caveat"]


def test_resamples_that_never_reach_a_target_widen_the_interval(tmp_path):
  # A nearly flat, noisy frontier: many resamples do not fall with compute.
  # The target is below its value at every budget (0.927 at 1e11), so those
  # resamples never reach it (one above it at the smallest budget is reached
  # there: test_a_rising_frontier_...).
  flat = _write(tmp_path / "f.jsonl", _family_rows("F", 1.0, -0.003,
                                                   noise=0.05, seed=4))
  summary = compare.run([flat], str(tmp_path / "o"), "eval_fid",
                        targets=[0.9], n_bootstrap=100)
  iv = summary["reach"][0]["families"]["F"]["interval"]
  assert iv is not None and iv[1] is None  # Some resamples: never.
  assert "to never)" in (tmp_path / "o" / "compare.md").read_text()
  json.loads((tmp_path / "o" / "compare.json").read_text())  # Valid JSON.


def test_three_sizes_per_budget_give_no_interval_rather_than_a_zero_width_one(
    tmp_path):
  # With 3 sizes per budget, a within-budget resample fits a parabola only
  # if it draws all 3, i.e. the original runs: every fit equals the fit.
  rows = [r for r in _family_rows("A", 10.0, -0.1, noise=0.02, seed=3)
          if r["point"].endswith(("x0.5", "x1", "x2"))]
  path = _write(tmp_path / "a.jsonl", rows)
  with pytest.warns(results_lib.FitWarning, match="no bootstrap interval"):
    summary = compare.run([path], str(tmp_path / "o"), "eval_fid",
                          targets=[1.0], n_bootstrap=50)
  fam = summary["families"][0]
  assert fam["metric_at_target_flops_interval"] is None and fam["no_interval"]
  assert summary["reach"][0]["families"]["A"]["interval"] is None
  with open(os.path.join(tmp_path, "o", "compare.md")) as f:
    assert "no interval: too few runs per budget" in f.read()
  # Five sizes per budget resample into a real spread.
  path5 = _write(tmp_path / "a5.jsonl",
                 _family_rows("A", 10.0, -0.1, noise=0.02, seed=3))
  summary5 = compare.run([path5], str(tmp_path / "o5"), "eval_fid",
                         targets=[1.0], n_bootstrap=50)
  lo, hi = summary5["families"][0]["metric_at_target_flops_interval"]
  assert lo < hi and not summary5["families"][0]["no_interval"]


def test_a_family_whose_resamples_mostly_fail_is_warned_about(tmp_path):
  # Two budgets of four sizes: a within-budget resample needs 3 distinct
  # sizes in both, so most resamples have too few usable budgets.
  rows = [r for r in _family_rows("A", 10.0, -0.1, noise=0.01, seed=3)
          if r["budget_flops"] in BUDGETS[:2]
          and not r["point"].endswith("x0.25")]
  path = _write(tmp_path / "a.jsonl", rows)
  with pytest.warns(results_lib.FitWarning, match=r"family 'A': only \d+ "
                    r"of 100 bootstrap resamples could be fitted \(the "
                    r"others: too few usable budgets\)"):
    compare.run([path], str(tmp_path / "o"), "eval_fid", targets=[1.0],
                n_bootstrap=100)
  # Four budgets of five sizes: nothing to warn about.
  full = _write(tmp_path / "full.jsonl",
                _family_rows("A", 10.0, -0.1, noise=0.01, seed=3))
  with warnings.catch_warnings():
    warnings.simplefilter("error", results_lib.FitWarning)
    compare.run([full], str(tmp_path / "o2"), "eval_fid", targets=[1.0],
                n_bootstrap=100)


def test_bad_target_flops_empty_files_and_whose_budget_is_excluded(tmp_path):
  a = _write(tmp_path / "a.jsonl", _family_rows("A", 10.0, -0.1))
  for bad in (-5.0, 0.0, float("inf"), float("nan")):
    with pytest.raises(ValueError, match="--target_flops must be a positive "
                       "finite FLOP count"):
      compare.run([a], str(tmp_path / "o"), "eval_fid", target_flops=bad,
                  n_bootstrap=0)
  assert not (tmp_path / "o").exists()
  proc = subprocess.run(
      [sys.executable, "-m", "scaling.compare", f"--results={a}",
       "--metric=eval_fid", f"--out={tmp_path / 'o'}", "--target_flops=-5"],
      cwd=ROOT, capture_output=True, text=True, check=False)
  assert proc.returncode == 2
  assert proc.stderr.strip() == (
      "error: flag --target_flops=-5.0: must be a positive finite FLOP "
      "count, e.g. 1e16.")
  empty = _write(tmp_path / "empty.jsonl", [])
  with pytest.raises(ValueError, match="empty.jsonl is empty"):
    compare.load_frontiers([a, empty], "eval_fid", n_bootstrap=0)
  # A comparison that fails after --out was probed leaves no empty folder.
  proc = subprocess.run(
      [sys.executable, "-m", "scaling.compare", f"--results={a},{empty}",
       "--metric=eval_fid", f"--out={tmp_path / 'o'}"],
      cwd=ROOT, capture_output=True, text=True, check=False)
  assert proc.returncode == 1 and "empty.jsonl is empty" in proc.stderr
  assert not (tmp_path / "o").exists()
  # A budget whose parabola opens downwards: the warning names its family.
  rows = _family_rows("B", 10.0, -0.1)
  for r in rows:
    if r["budget_flops"] == 1e9:
      r["eval_fid"] = 2 * 10.0 * 1e9**-0.1 - r["eval_fid"]
  b = _write(tmp_path / "b.jsonl", rows)
  with pytest.warns(results_lib.FitWarning, match="family 'B': approach 2: "
                    "budget 1e\\+09 FLOPs excluded"):
    compare.load_frontiers([a, b], "eval_fid", n_bootstrap=0)


def test_a_rising_frontier_has_reached_targets_above_it_at_its_smallest_budget(
    tmp_path):
  # R: 2 C^+0.05 rises with compute; at its smallest budget (1e8, its
  # smallest run spends that too) it is 2 * 1e8^0.05 = 5.02. F: 100 C^-0.1
  # falls, reaching 6 at C = (100/6)^10 = 1.66e12.
  rising = _write(tmp_path / "r.jsonl", _family_rows("R", 2.0, 0.05))
  falling = _write(tmp_path / "f.jsonl", _family_rows("F", 100.0, -0.1))
  summary = compare.run([rising, falling], str(tmp_path / "o"), "eval_fid",
                        targets=[6.0, 4.0, 20.0], n_bootstrap=0)
  above, below, easy = summary["reach"]
  r = above["families"]["R"]
  assert r["compute"] == pytest.approx(1e8) and r["already"]
  assert above["families"]["F"]["compute"] == pytest.approx(
      (100 / 6) ** 10, rel=1e-3)
  assert above["cheapest"] == "R"
  # Below its value at the smallest budget a rising frontier never gets.
  assert below["families"]["R"]["compute"] is None
  assert not below["families"]["R"]["already"]
  # Both are below 20 at their smallest fitted budget (F: 15.8 at 1e8; its
  # power law would answer 9.8e6, below its data): both "already" there,
  # bounds that cannot be ranked.
  f = easy["families"]["F"]
  assert f["compute"] == pytest.approx(1e8) and f["already"]
  assert {easy["cheapest"], *easy["overlaps"]} == {"R", "F"}
  md = (tmp_path / "o" / "compare.md").read_text()
  assert "≤ 1e+08 (already at its smallest fitted budget)" in md
  assert "(overlaps F: not resolved)" in md
  # The closed form on arrays: falling, rising-reached, rising-not.
  got = compare.compute_to_reach(np.array([100.0, 2.0, 2.0]),
                                 np.array([-0.1, 0.05, 0.05]),
                                 np.array([6.0, 6.0, 4.0]), c_min=1e8)
  np.testing.assert_allclose(got[:2], [(100 / 6) ** 10, 1e8], rtol=1e-9)
  assert np.isnan(got[2])


def test_a_crossing_beyond_one_familys_budgets_is_not_inside_the_data(
    tmp_path):
  # A fitted at 1e8-1e9, B at 1e10-1e11: their crossing at 3^20 = 3.5e9 is
  # an extrapolation of B (it was "inside" the union of the ranges).
  a = _write(tmp_path / "a.jsonl", [
      r for r in _family_rows("A", 10.0, -0.1) if r["budget_flops"] <= 1e9])
  b = _write(tmp_path / "b.jsonl", [
      r for r in _family_rows("B", 30.0, -0.15)
      if r["budget_flops"] >= 1e10])
  summary = compare.run([a, b], str(tmp_path / "out"), "eval_fid",
                        targets=[1.0], target_flops=1e13, n_bootstrap=0)
  [cross] = summary["crossings"]
  assert cross["compute"] == pytest.approx(3.0**20, rel=1e-6)
  assert cross["inside_data"] is False
