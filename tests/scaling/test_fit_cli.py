"""End to end: `python -m scaling.fit` and `fit.run` on synthetic sweeps."""

import dataclasses
import json
import os
import re
import subprocess
import sys
import warnings

import numpy as np
import pytest

from scaling import approach3
from scaling import bootstrap
from scaling import fit
from scaling import flops_law
from scaling import report as report_lib
from scaling import results
from tests.scaling import test_approach3 as t3

_OUTPUTS = ("fit.json", "report.md", "isoflops.png", "frontier.png",
            "contours.png")


def _synthetic(seed=0):
  return approach3.simulate_isoflops(t3.TRUE, [1e18, 1e19, 1e20, 1e21],
                                     noise=0.003, seed=seed)


def _write_csv(path, jitter=True):
  n, d, c, loss = _synthetic()
  if jitter:  # CSV budgets are detected, so make them not exactly equal.
    c = c * np.exp(np.random.default_rng(0).normal(0, 0.01, len(c)))
  rows = ["N,C,loss"] + [f"{float(a)!r},{float(b)!r},{float(x)!r}"
                         for a, b, x in zip(n, c, loss)]
  path.write_text("\n".join(rows) + "\n")
  return str(path)


def _write_jsonl(path, extra=()):
  n, d, c, loss = _synthetic()
  rows = [{"family": "dit", "params": a, "params_non_embedding": a,
           "budget_flops": b, "flops": b, "examples_seen": dd,
           "final_train_loss": x, "eval_loss": x, "status": "ok",
           "wall_time_s": 1.0, "config": {}}
          for a, dd, b, x in zip(n, d, c, loss)]
  rows += list(extra)
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  return str(path)


def _cli(*args):
  env = dict(os.environ, PYTHONPATH=t3.REPO)
  return subprocess.run([sys.executable, "-m", "scaling.fit", *args],
                        capture_output=True, text=True, env=env, check=False,
                        cwd=t3.REPO)


def test_run_on_csv_writes_everything(tmp_path):
  out = tmp_path / "out"
  fits = fit.run(_write_csv(tmp_path / "runs.csv"), str(out),
                 target_flops=[1e23], n_bootstrap=10, top_k=20)
  for name in _OUTPUTS:
    assert (out / name).stat().st_size > 0, name
  summary = json.loads((out / "fit.json").read_text())
  a2, a3 = summary["approach2"], summary["approach3"]
  assert a2["a"] == pytest.approx(t3.TRUE.a, abs=0.02)
  assert a2["n_budgets_used"] == 4
  for key in ("E", "A", "B", "alpha", "beta", "a", "b", "G"):
    assert key in a3 and key in a3["intervals"]
  assert a3["alpha"] == pytest.approx(t3.TRUE.alpha, abs=0.02)
  ext = summary["extrapolation"][0]
  assert ext["flops"] == 1e23
  for approach in ("approach2", "approach3"):
    for key in ("N_opt", "D_opt", "loss"):
      assert {"value", "lo", "median", "hi"} <= set(ext[approach][key])
  assert fits.fit3.params.alpha == a3["alpha"]
  report = (out / "report.md").read_text()
  assert "## Approach 2" in report and "![contours](contours.png)" in report
  # The loss fitted is the metric: one "loss" column, not two alike.
  assert summary["settings"]["metric"] == "loss"
  head = next(ln for ln in report.splitlines() if ln.startswith(
      "| C (FLOPs) |"))
  assert head.rstrip(" |").split(" | ").count("loss") == 1, head


def test_cli_on_jsonl_drops_bad_rows(tmp_path):
  bad = [{"family": "dit", "params": 1e9, "budget_flops": 1e20,
          "examples_seen": 1e9, "eval_loss": None, "final_train_loss": None,
          "status": "diverged"},
         {"family": "dit", "params": 2e9, "budget_flops": 1e20,
          "examples_seen": 1e9, "eval_loss": float("nan"), "status": "ok"}]
  path = _write_jsonl(tmp_path / "results.jsonl", extra=bad)
  out = tmp_path / "out"
  proc = _cli(f"--results={path}", f"--out={out}", "--bootstrap=5",
              "--target_flops=1e22,1e23", "--top_k=20")
  assert proc.returncode == 0, proc.stderr
  assert "dropped 2 of 34 runs: 1 with status 'diverged', 1 with NaN" in (
      proc.stderr)
  for name in _OUTPUTS:
    assert (out / name).exists(), name
  summary = json.loads((out / "fit.json").read_text())
  assert summary["data"]["n_runs"] == 32
  assert summary["approach2"]["budget_rule"].startswith("budgets from the")
  assert len(summary["extrapolation"]) == 2
  assert any("dropped 2 of 34" in w for w in summary["warnings"])
  assert "dropped 2 of 34" in (out / "report.md").read_text()


def test_cli_rejects_mixed_families(tmp_path):
  other = {"family": "uvit", "params": 1e9, "budget_flops": 1e20,
           "examples_seen": 1e9, "eval_loss": 3.0, "status": "ok"}
  path = _write_jsonl(tmp_path / "results.jsonl", extra=[other])
  proc = _cli(f"--results={path}", f"--out={tmp_path / 'out'}")
  assert proc.returncode == 1
  assert proc.stderr.strip().splitlines()[-1] == (
      "error: runs of 2 families in one fit: 'dit', 'uvit'; fit one family "
      "at a time (--family=NAME)")
  # The failed fit leaves no empty --out (nor the parents it created);
  # a folder that was there before stays.
  assert not (tmp_path / "out").exists()
  proc = _cli(f"--results={path}", f"--out={tmp_path / 'a' / 'b'}")
  assert proc.returncode == 1 and not (tmp_path / "a").exists()
  (tmp_path / "kept").mkdir()
  proc = _cli(f"--results={path}", f"--out={tmp_path / 'kept'}")
  assert proc.returncode == 1 and (tmp_path / "kept").is_dir()


def test_the_default_loss_is_named_by_its_field(tmp_path):
  # JSONL rows with eval_loss: the fit, its report and its lines say so
  # (it said "loss", leaving eval_loss or the train loss to be guessed).
  out = tmp_path / "out"
  fits = fit.run(_write_jsonl(tmp_path / "r.jsonl"), str(out),
                 approaches=[2], n_bootstrap=0, target_flops=[1e22])
  assert fits.summary["settings"]["metric"] == "eval_loss"
  assert "- \"loss\" below is the rows' `eval_loss`" in (
      out / "report.md").read_text()
  assert "eval_loss" in report_lib.extrapolation_lines(fits.summary)[0]
  # A direction forced on the default loss names what was passed (it said
  # "for --metric=eval_loss", a flag not given).
  with pytest.raises(ValueError, match=r"^--metric_direction=higher for the "
                     r"loss \(no --metric\): "):
    fit.run(str(tmp_path / "r.jsonl"), str(tmp_path / "out2"),
            approaches=[2], n_bootstrap=0, direction="higher")


def test_excluded_budgets_are_printed_above_the_error():
  # The committed R3GAN CPU sweep: no budget has an interior minimum in
  # its eval_loss; each one's reason is a warning line before the error.
  proc = _cli("--results=experiments/scaling_families/results_r3gan.jsonl",
              "--metric=eval_loss", "--out=/tmp/jaxgen_test_fit_no_budget")
  lines = proc.stderr.strip().splitlines()
  assert proc.returncode == 1 and len(lines) == 4, proc.stderr[-2000:]
  assert all(ln.startswith("warning: approach 2: budget ") and
             " FLOPs excluded: " in ln for ln in lines[:3])
  assert lines[3].startswith("error: approach 2 needs isoFLOP minima at >= 2 "
                             "budgets") and "--approaches=3" in lines[3]


def test_too_few_runs_is_one_line_error(tmp_path):
  path = tmp_path / "runs.csv"
  path.write_text("N,D,loss\n1e8,1e9,3.0\n2e8,1e9,2.9\n3e8,1e9,2.8\n"
                  "1e8,2e9,2.9\n2e8,2e9,2.8\n")
  # Five runs (a tiny sweep has four): neither approach can fit, said once
  # (approach 2's error suggested --approaches=3, which then failed too).
  for approaches in ([2], [3], [2, 3]):
    with pytest.raises(ValueError) as e:
      fit.run(str(path), str(tmp_path / "out"), approaches=approaches)
    assert str(e.value) == (
        "5 runs are too few for a scaling fit: approach 2 needs 3 model "
        "sizes at each of >= 2 budgets, approach 3 >= 6 runs; a sweep's tiny "
        "preset (2 sizes x 2 budgets) only tests the pipeline, sweep its cpu "
        "preset to fit")
  with open(path, "a", encoding="utf-8") as f:
    f.write("3e8,2e9,2.7\n")
  # Six runs: approach 3 can fit them, so approach 2's errors offer it.
  with pytest.raises(ValueError, match=r"approach 2 found no isoFLOP budget"
                     r".* lower --min_budget_runs or use --approaches=3$"):
    fit.run(str(path), str(tmp_path / "out"), approaches=[2])
  # Given budgets that match no run: the runs' range, and not "give
  # --budgets" (C = 6ND: 6e17 to 3.6e18).
  with pytest.raises(ValueError, match=r"none within \+-0\.05 dex of the "
                     r"given budgets; their compute spans 6e\+17 to "
                     r"3\.6e\+18 FLOPs\); give --budgets the runs' "
                     r"budget_flops, widen --budget_tol or use"):
    fit.run(str(path), str(tmp_path / "out"), approaches=[2],
            budgets=[1e20, 1e21])
  # One data size: approach 3 cannot fit, so it is not offered.
  one_d = tmp_path / "one_d.csv"
  one_d.write_text("N,D,loss\n" + "".join(
      f"{n}e8,1e9,{3 - n / 10}\n" for n in range(1, 7)))
  with pytest.raises(ValueError) as e:
    fit.run(str(one_d), str(tmp_path / "out"), approaches=[2])
  assert str(e.value).endswith("lower --min_budget_runs"), str(e.value)
  # An approach that does not exist fits nothing: an error, not an empty
  # fit.json.
  for approaches in ([], [4], [2, 4]):
    with pytest.raises(ValueError, match="use 2, 3 or both"):
      fit.run(str(path), str(tmp_path / "out"), approaches=approaches)


def test_fit_runs_rejects_mixed_families():
  n, d, c, loss = _synthetic()
  runs = results.make_runs(n, loss, d=d, c=c,
                           family=["a"] * 16 + ["b"] * 16)
  with pytest.raises(ValueError, match="'a', 'b'"):
    fit.fit_runs(runs)


def test_all_runs_diverged_is_an_error(tmp_path):
  rows = [{"params": 1e8, "budget_flops": 1e18, "examples_seen": 1e6,
           "status": "diverged"}] * 3
  path = tmp_path / "results.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  with pytest.warns(results.FitWarning, match="dropped 3 of 3 runs"):
    with pytest.raises(ValueError, match="no usable runs"):
      fit.run(str(path), str(tmp_path / "out"))


def test_fit_runs_drops_nan_losses_from_arrays():
  n, d, c, loss = _synthetic()
  loss = loss.copy()
  loss[3] = np.nan
  runs = results.make_runs(n, loss, d=d, c=c, budget=c)
  with pytest.warns(results.FitWarning, match="dropped 1 of 32 runs: 1 with "
                    "NaN"):
    fits = fit.fit_runs(runs, top_k=10)
  assert fits.summary["data"]["n_runs"] == 31


@pytest.mark.parametrize("approaches", [[2], [3]])
def test_single_approach_without_bootstrap(tmp_path, approaches):
  out = tmp_path / "out"
  fit.run(_write_csv(tmp_path / "runs.csv"), str(out), approaches=approaches,
          top_k=10)
  summary = json.loads((out / "fit.json").read_text())
  name = f"approach{approaches[0]}"
  assert name in summary and "intervals" not in summary[name]
  other = "approach3" if approaches == [2] else "approach2"
  assert other not in summary
  assert "no bootstrap" in (out / "report.md").read_text()
  assert (out / "frontier.png").exists()


@pytest.mark.parametrize("flag,message", [
    ("--target_flops=-4e12", "--target_flops=['-4e12']: must be positive "
     "finite FLOP counts"),
    ("--target_flops=0", "must be positive finite FLOP counts"),
    ("--target_flops=inf", "must be positive finite FLOP counts"),
    ("--target_flops=nan", "must be positive finite FLOP counts"),
    ("--bootstrap=-1", "--bootstrap=-1: -1 is not a non-negative integer"),
    ("--drop_highest_loss=-2", "--drop_highest_loss=-2: -2 is not a "
     "non-negative integer"),
])
def test_cli_refuses_bad_numbers_in_one_line_before_fitting(tmp_path, flag,
                                                            message):
  out = tmp_path / "out"
  proc = _cli(f"--results={_write_jsonl(tmp_path / 'r.jsonl')}",
              f"--out={out}", flag)
  assert proc.returncode == 2, proc.stderr
  assert proc.stderr.strip().count("\n") == 0, proc.stderr
  assert proc.stderr.startswith("error: flag ") and message in proc.stderr
  assert not out.exists()


def test_a_bad_target_fails_before_touching_an_earlier_fit(tmp_path):
  out = tmp_path / "out"
  path = _write_jsonl(tmp_path / "r.jsonl")
  fit.run(path, str(out), approaches=[2])
  before = {p.name: p.read_bytes() for p in out.iterdir()}
  for bad in (-4e12, 0.0, float("inf"), float("nan")):
    with pytest.raises(ValueError, match="--target_flops must be positive "
                       "finite"):
      fit.run(path, str(out), approaches=[2], target_flops=[bad])
  assert {p.name: p.read_bytes() for p in out.iterdir()} == before


def test_a_missing_metric_lists_the_metrics_there(tmp_path):
  with pytest.raises(ValueError, match=r"no run has a usable loss \(fields "
                     r"eval_fid\); metrics in this file: eval_loss, "
                     "final_train_loss$"):
    fit.run(_write_jsonl(tmp_path / "r.jsonl"), str(tmp_path / "out"),
            metric="eval_fid")
  assert not (tmp_path / "out").exists()


def test_rows_naming_their_sweep_metric_are_fitted_on_it(tmp_path):
  # R3GAN's rows hold its adversarial eval_loss beside the sample metric
  # its spec fits; the fit took eval_loss unless --metric was given.
  n, d, c, loss = _synthetic()
  rows = [{"family": "gan", "metric": "eval_fd_shapes", "params": a,
           "budget_flops": b, "flops": b, "examples_seen": dd,
           "eval_loss": 0.7, "eval_fd_shapes": 100 * x, "status": "ok"}
          for a, dd, b, x in zip(n, d, c, loss)]
  path = tmp_path / "r.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  fits = fit.run(str(path), str(tmp_path / "out"), approaches=(3,),
                 n_bootstrap=0, top_k=20)
  assert fits.summary["settings"]["metric"] == "eval_fd_shapes"
  assert fits.fit3.params.E == pytest.approx(100 * t3.TRUE.E, rel=0.1)
  fits = fit.run(str(path), str(tmp_path / "out2"), approaches=(3,),
                 n_bootstrap=0, top_k=20, metric="eval_loss")
  assert fits.summary["settings"]["metric"] == "eval_loss"
  # A direction that cannot apply to it names the rows' metric (it said
  # "for --metric=eval_fd_shapes", a flag not given).
  with pytest.raises(ValueError, match=r"^--metric_direction=higher for the "
                     r"sweep's metric eval_fd_shapes \(no --metric\): "):
    fit.run(str(path), str(tmp_path / "out4"), approaches=(3,),
            n_bootstrap=0, direction="higher")
  # Beside another family's rows (without the metric), --family=gan takes
  # its own rows' metric, and warns about no other family's rows.
  other = [dict(r, family="sd", metric="eval_loss", eval_loss=1.0)
           for r in rows]
  for r in other:
    del r["eval_fd_shapes"]
  path.write_text("".join(json.dumps(r) + "\n" for r in rows + other))
  with warnings.catch_warnings():
    warnings.simplefilter("error", results.FitWarning)
    fits = fit.run(str(path), str(tmp_path / "out3"), approaches=(3,),
                   n_bootstrap=0, top_k=20, family="gan")
  assert fits.summary["settings"]["metric"] == "eval_fd_shapes"
  assert fits.fit3.params.E == pytest.approx(100 * t3.TRUE.E, rel=0.1)


def test_approach3_without_a_frontier_is_left_out_with_a_warning(
    tmp_path, monkeypatch):
  real = approach3.fit_parametric

  def loss_rising_with_d(*args, **kwargs):
    got = real(*args, **kwargs)
    p = got.params
    return dataclasses.replace(got, params=dataclasses.replace(
        p, beta=-p.beta))

  monkeypatch.setattr(approach3, "fit_parametric", loss_rising_with_d)
  path = _write_jsonl(tmp_path / "r.jsonl")
  out = tmp_path / "out"
  with pytest.warns(results.FitWarning, match="approach 3: fitted alpha = "
                    ".*no valid compute-optimal frontier"):
    fits = fit.run(path, str(out), n_bootstrap=5, top_k=10,
                   target_flops=[1e23])
  assert fits.fit3 is None and fits.fit2 is not None
  summary = json.loads((out / "fit.json").read_text())
  a3 = summary["approach3"]
  assert a3["frontier"] is False and a3["G"] is None and a3["beta"] < 0
  assert "approach2" in summary["extrapolation"][0]
  assert "approach3" not in summary["extrapolation"][0]
  assert any("no valid compute-optimal frontier" in w
             for w in summary["warnings"])
  assert "no compute-optimal frontier" in (out / "report.md").read_text()
  assert not (out / "contours.png").exists()
  # Approach 3 alone has nothing to extrapolate: an error, no output.
  with pytest.raises(ValueError, match="no valid compute-optimal frontier; "
                     "nothing to extrapolate"):
    fit.run(path, str(tmp_path / "out3"), approaches=[3], top_k=10)
  assert not (tmp_path / "out3").exists()


def test_three_runs_per_budget_give_no_approach2_interval():
  # A within-budget resample of 3 runs fits a parabola only by drawing all
  # 3: every interval would be the fit itself (width 0 by construction).
  n, d, c, loss = _synthetic()
  keep = np.concatenate([np.flatnonzero(c == b)[np.argsort(
      loss[c == b])[:3]] for b in np.unique(c)])
  runs = results.make_runs(n[keep], loss[keep], d=d[keep], c=c[keep],
                           budget=c[keep])
  with pytest.warns(results.FitWarning, match="approach 2: no bootstrap "
                    "interval \\(every resample that fits is the fit itself"):
    fits = fit.fit_runs(runs, approaches=(2,), n_bootstrap=20)
  assert fits.boot2 is None
  assert "too few runs" in fits.summary["approach2"]["no_interval"]
  # With more runs per budget the bootstrap runs.
  fits = fit.fit_runs(results.make_runs(n, loss, d=d, c=c, budget=c),
                      approaches=(2,), n_bootstrap=20)
  assert fits.boot2 is not None


def test_far_targets_and_thin_bootstraps_are_warned_about(tmp_path):
  # Data at 1e18-1e21 FLOPs: 1e30 is 10^9 times beyond, 1e5 far below.
  with pytest.warns(results.FitWarning, match=r"target_flops 1e\+30, 1e\+05 "
                    r"are far outside the runs' .* FLOPs .*: the "
                    "extrapolation there is a guess"):
    fit.run(_write_csv(tmp_path / "runs.csv"), str(tmp_path / "out"),
            approaches=[2], n_bootstrap=0, target_flops=[1e30, 1e5])
  # Intervals backed by 28 of 100 resamples (a 2-budget sweep) say so.
  with pytest.warns(results.FitWarning, match="approach 2: only 28 of 100 "
                    "bootstrap resamples could be fitted"):
    bootstrap.warn_if_few_resamples("approach 2", 72, 100)
  # Each approach's resamples fail for their own reason.
  with pytest.warns(results.FitWarning, match=r"approach 3: only 40 of 100 "
                    r"bootstrap resamples could be fitted \(the others: the "
                    "fit failed or found no compute-optimal frontier\)"):
    bootstrap.warn_if_few_resamples("approach 3", 60, 100)
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    bootstrap.warn_if_few_resamples("approach 2", 28, 100)


def test_an_unpinned_exponent_is_named_without_numpy_overflow_noise():
  # alpha = 65 was said to have "run to the edge of its range (0.02, 2.5)",
  # next to raw numpy overflow warnings.
  p = approach3.LossParams.from_theta([800.0, 3.0, 0.1, 65.0, 0.3])
  runs = results.make_runs([1e3, 1e4], [1.0, 0.9], d=[1e6, 1e6])
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    loss = p.loss([1.0, 1e6], [1e6, 1e6])
    fit._warn_bounds(p, runs)
  assert np.isinf(p.A) and not np.isfinite(loss).any()
  assert [str(w.message) for w in caught] == [
      "approach 3: alpha = 65 is outside the plausible range 0.02–2.5: the "
      "runs do not pin it"]


def test_flops_per_example_off_a_power_law_are_warned_about():
  n = np.array([1e5, 2e5, 4e5, 8e5])
  d = np.full(4, 1e6)
  for c in (6 * n * d, 6 * n**0.9 * 1e5**0.1 * d):
    # C = 6 N D, or FLOPs per example ∝ N^0.9: the law fits, silent.
    assert flops_law.FlopsLaw.fit(n, c, d).off_law() is None
  # The third size at 1.5x its FLOPs per example (another resolution).
  c = 6 * n * d * np.array([1, 1, 1.5, 1])
  law = flops_law.FlopsLaw.fit(n, c, d)
  assert re.fullmatch(
      rf"FLOPs per example miss the fitted {re.escape(str(law))} by up to "
      r"1\.33x on some runs \(not a power law in N: mixed resolutions or "
      r"patch sizes\?\): treat N_opt / D_opt as approximate", law.off_law())
  # One size at several FLOPs per example: one k, and the spread is said.
  law = flops_law.FlopsLaw.fit([1e6] * 3, [1e12, 2e12, 4e12], [1e4] * 3)
  assert law.kappa == 200 and law.max_miss == 2 and law.off_law()


def test_runs_past_one_epoch_are_warned_about_once(tmp_path):
  # Pitfall 12: D counts examples seen; past one epoch they repeat.
  n, d, c, loss = _synthetic()
  rows = [{"family": "sd", "params": a, "budget_flops": b, "flops": b,
           "examples_seen": dd, "eval_loss": x, "status": "ok",
           "epochs": e}
          for a, dd, b, x, e in zip(n, d, c, loss,
                                    np.linspace(0.2, 3.5, len(n)))]
  path = tmp_path / "r.jsonl"
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  with pytest.warns(results.FitWarning) as record:
    fits = fit.run(str(path), str(tmp_path / "out"), approaches=(3,),
                   n_bootstrap=0, top_k=20)
  over = int(np.sum(np.linspace(0.2, 3.5, len(n)) > 1))
  said = [str(w.message) for w in record if "epoch" in str(w.message)]
  assert said == [
      f"{over} of {len(n)} runs trained for more than one epoch (up to "
      "3.5): D counts repeated examples, which the one-epoch laws do not "
      "model; the fitted D_opt is examples seen, not distinct data"]
  assert said[0] in fits.summary["warnings"]
  # Rows within one epoch, or without the field (older sweeps): no word.
  for r in rows:
    r["epochs"] = min(r["epochs"], 1.0)
  path.write_text("".join(json.dumps(r) + "\n" for r in rows))
  with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    fit.run(str(path), str(tmp_path / "out2"), approaches=(3,),
            n_bootstrap=0, top_k=20)
  assert not [w for w in caught if "epoch" in str(w.message)]
