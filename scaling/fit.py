"""Fits Chinchilla approaches 2 and 3 to sweep results; CLI and library entry.

Usage:
  python -m scaling.fit --results=FILE --out=DIR [--target_flops=C1,C2]
      [--bootstrap=N] [--drop_highest_loss=K] [--family=NAME]
      [--budgets=chinchilla|C1,C2,...] [--compare=chinchilla]

FILE is a results.jsonl or CSV (see scaling/results.py for the schema). DIR
receives fit.json, report.md, isoflops.png, frontier.png and contours.png.
Warnings (dropped runs, excluded budgets) are printed and repeated in the
report; bad input (too few runs, several families, no usable budgets) stops
with a one-line error.

Library use:
  runs = results.load_runs(path)
  fits = fit.fit_runs(runs, target_flops=[1e21], n_bootstrap=100)
  fit.write_outputs(fits, out_dir)
"""

import dataclasses
import json
import math
import os
import shlex
import sys
import time
import warnings
from typing import Dict, List, Optional, Sequence

from absl import app
from absl import flags
import etils.epath as epath
import numpy as np

from jaxgen import config_lib
from jaxgen import jsonl
from jaxgen import paths
from scaling import approach2 as approach2_lib
from scaling import approach3 as approach3_lib
from scaling import bootstrap as bootstrap_lib
from scaling import flops_law
from scaling import metrics as metrics_lib
from scaling import plots
from scaling import report as report_lib
from scaling import results as results_lib


@dataclasses.dataclass
class Fits:
  """Everything one fit produced (the inputs of fit.json, plots, report)."""

  runs: results_lib.Runs
  budget: Optional[np.ndarray]
  fit2: Optional[approach2_lib.IsoflopFit]
  fit3: Optional[approach3_lib.ParametricFit]
  boot2: Optional[bootstrap_lib.Bootstrap]
  boot3: Optional[bootstrap_lib.Bootstrap]
  targets: List[float]
  level: float
  summary: Dict[str, object]
  metric: metrics_lib.Metric = metrics_lib.resolve(None)


def default_target(runs: results_lib.Runs) -> float:
  """The power of ten at or above 10x the largest run's compute."""
  return 10.0**math.ceil(math.log10(10 * runs.c.max()))


def _point_with_interval(value, boot, name, level):
  out = {"value": float(value)}
  if boot is not None and name in boot.samples and len(boot.samples[name]):
    lo, med, hi = boot.interval(name, level)
    out.update(lo=float(lo), median=float(med), hi=float(hi))
  return out


def fit_runs(runs: results_lib.Runs, *, approaches: Sequence[int] = (2, 3),
             budgets: Optional[Sequence[float]] = None,
             budget_tol: float = approach2_lib.DEFAULT_TOL_DEX,
             detect_tol: float = approach2_lib.DEFAULT_DETECT_TOL_DEX,
             min_budget_runs: int = approach2_lib.DEFAULT_MIN_RUNS,
             target_flops: Optional[Sequence[float]] = None,
             n_bootstrap: int = 0,
             level: float = bootstrap_lib.DEFAULT_LEVEL, seed: int = 0,
             top_k: Optional[int] = approach3_lib.DEFAULT_TOP_K,
             compare: Optional[str] = None,
             check_full_grid: bool = False,
             metric: Optional[metrics_lib.Metric] = None) -> Fits:
  """Runs approaches 2 and/or 3 (with bootstrap) on one family's runs.

  Args:
    runs: cleaned runs (results.load_runs).
    approaches: which approaches to run, subset of (2, 3).
    budgets: budget centres to snap C to (approach 2); None uses the runs'
      budgets, or detects centres.
    budget_tol: snapping tolerance in dex.
    detect_tol: detection window half-width in dex.
    min_budget_runs: fewest runs per detected budget.
    target_flops: budgets to extrapolate to (default: `default_target`).
    n_bootstrap: resamples per approach (0 = no intervals).
    level: central interval level (0.8 -> 10/50/90 percentiles).
    seed: bootstrap seed.
    top_k: approach-3 L-BFGS starts (None = all 4500).
    compare: "chinchilla" adds published Chinchilla/Epoch parameter sets
      scored on this data.
    check_full_grid: also fit approach 3 from all grid starts and record
      how far that optimum is from the top-k one.
    metric: the metric the runs' losses were mapped from (`metrics.resolve`;
      default: a plain loss); extrapolations also give its values.

  Returns:
    Fits with a JSON-ready `summary`.

  Raises:
    ValueError: several families, too few runs, no usable budgets, a
      target that is not a positive finite FLOP count, or approach 3 alone
      without a compute-optimal frontier (alpha or beta <= 0). With
      approach 2 as well, such an approach-3 fit is only left out of the
      extrapolation, with a FitWarning.
  """
  if not approaches or not set(approaches) <= {2, 3}:
    raise ValueError(f"approaches={list(approaches)}: use 2, 3 or both.")
  if compare not in (None, "", "chinchilla"):
    raise ValueError(f"unknown compare={compare!r}; known: chinchilla")
  if compare and 3 not in approaches:
    raise ValueError("compare=chinchilla scores approach-3 parameters; "
                     "include approach 3")
  # Runs built from arrays may hold NaNs; loaded runs pass unchanged.
  runs = results_lib.clean(runs)
  if not len(runs):
    raise ValueError("no usable runs to fit")
  runs = results_lib.select_family(runs, None)
  fewest = min(approach2_lib.MIN_BUDGETS * approach2_lib.MIN_SIZES_PER_BUDGET,
               approach3_lib.MIN_POINTS)
  if len(runs) < fewest:
    # Neither approach can fit; each would name only its own minimum (and
    # approach 2's error would suggest approach 3, which needs as many).
    raise ValueError(
        f"{len(runs)} runs are too few for a scaling fit: approach 2 needs "
        f"{approach2_lib.MIN_SIZES_PER_BUDGET} model sizes at each of >= "
        f"{approach2_lib.MIN_BUDGETS} budgets, approach 3 >= "
        f"{approach3_lib.MIN_POINTS} runs; a sweep's tiny preset (2 sizes x "
        "2 budgets) only tests the pipeline, sweep its cpu preset to fit")
  targets = [float(t) for t in (target_flops or [default_target(runs)])]
  if not results_lib.are_numbers(targets, positive=True):
    # Checked before fitting: a negative or zero target breaks only the
    # extrapolation, after minutes of bootstrap.
    raise ValueError(f"target_flops={targets}: --target_flops must be "
                     "positive finite FLOP counts, e.g. 1e21,1e22")
  c_lo, c_hi = float(runs.c.min()), float(runs.c.max())
  far = [t for t in targets if t > 1e4 * c_hi or t < c_lo / 10]
  if far:
    # Power laws fitted over a narrow range say little that far out (and
    # nothing meaningful below the data).
    warnings.warn(f"target_flops {', '.join(f'{t:.3g}' for t in far)} "
                  f"{'is' if len(far) == 1 else 'are'} far outside the "
                  f"runs' {c_lo:.3g} to {c_hi:.3g} FLOPs (below a tenth or "
                  "above 10^4 times): the extrapolation there is a guess",
                  results_lib.FitWarning, stacklevel=2)
  law = flops_law.FlopsLaw.fit(runs.n, runs.c, runs.d)
  if law.off_law():
    warnings.warn(law.off_law(), results_lib.FitWarning, stacklevel=2)
  summary = {
      "data": {
          "source": runs.source, "family": runs.families[0],
          "n_runs": len(runs), "flops": law.to_dict(),
          "k_range": [float(x) for x in _k_range(runs)],
          "N_range": [float(runs.n.min()), float(runs.n.max())],
          "D_range": [float(runs.d.min()), float(runs.d.max())],
          "C_range": [c_lo, c_hi],
          "loss_range": [float(runs.loss.min()), float(runs.loss.max())],
      },
      "settings": {"approaches": list(approaches), "bootstrap": n_bootstrap,
                   "level": level, "seed": seed, "top_k": top_k,
                   "target_flops": targets},
  }
  metric = metric or metrics_lib.resolve(None)
  summary["settings"].update(metric=metric.name, fitted=metric.fitted,
                             higher_is_better=metric.higher_is_better)
  fits = Fits(runs, None, None, None, None, None, targets, level, summary,
              metric)
  if 2 in approaches:
    _run_approach2(fits, law, budgets, budget_tol, detect_tol, min_budget_runs,
                   n_bootstrap, seed)
  if 3 in approaches:
    _run_approach3(fits, law, top_k, n_bootstrap, seed, check_full_grid,
                   alone=2 not in approaches)
  summary["extrapolation"] = _extrapolate(fits)
  if compare and fits.fit3 is None:
    warnings.warn("compare=chinchilla skipped: it compares approach 3's "
                  "frontier, and this fit has none", results_lib.FitWarning,
                  stacklevel=2)
  elif compare:
    summary["reference"] = _chinchilla_reference(fits)
  return fits


def _k_range(runs):
  """(smallest, largest) C / (N D) over the runs, for the report."""
  ratio = runs.c / (runs.n * runs.d)
  return ratio.min(), ratio.max()


def _run_approach2(fits, k, budgets, budget_tol, detect_tol, min_runs,
                   n_bootstrap, seed):
  runs = fits.runs
  if budgets is not None:
    rule = (f"C snapped to the nearest given budget within +-{budget_tol} "
            "dex")
  elif runs.has_budgets:
    rule = "budgets from the runs' budget_flops, used exactly"
  else:
    rule = (f"C snapped to the nearest detected budget centre within "
            f"+-{budget_tol} dex; centres = densest +-{detect_tol} dex "
            f"windows of log10 C with >= {min_runs} runs")
  budget = approach2_lib.run_budgets(runs, budgets, budget_tol, detect_tol,
                                     min_runs)
  n_free = int((~np.isfinite(budget)).sum())
  if n_free == len(runs):
    why = (f"none within +-{budget_tol} dex of the given budgets"
           if budgets is not None else f"no +-{detect_tol} dex window of "
           f"log10 C holds {min_runs} runs")
    fix = ("give --budgets the runs' budget_flops, widen --budget_tol"
           if budgets is not None else
           "give --budgets, lower --min_budget_runs")
    lo, hi = fits.summary["data"]["C_range"]
    raise ValueError(
        f"approach 2 found no isoFLOP budget among {len(runs)} runs ({why}; "
        f"their compute spans {lo:.3g} to {hi:.3g} FLOPs); {fix}"
        + (" or use --approaches=3" if approach3_lib.can_fit(runs.n, runs.d, runs.loss) else ""))
  if n_free:
    warnings.warn(f"approach 2: {n_free} of {len(runs)} runs are near no "
                  "budget and are not used by it", results_lib.FitWarning,
                  stacklevel=3)
  fits.budget = budget
  try:
    fits.fit2 = approach2_lib.fit_isoflops(runs.n, runs.loss, budget, k=k)
  except ValueError as e:
    # scaling.fit's way out (scaling.compare, which fits approach 2 only,
    # has no such flag).
    if not approach3_lib.can_fit(runs.n, runs.d, runs.loss):
      raise
    raise ValueError(f"{e}, or fit approach 3 alone with --approaches=3"
                     ) from None
  out = fits.fit2.to_dict()
  out["budget_rule"] = rule
  if n_bootstrap and bootstrap_lib.approach2_interval_is_degenerate(
      fits.fit2):
    # Not a zero-width interval ([211.2, 211.2] on the R3GAN results).
    out["no_interval"] = bootstrap_lib.NO_APPROACH2_INTERVAL
    warnings.warn(f"approach 2: no bootstrap interval ({out['no_interval']})",
                  results_lib.FitWarning, stacklevel=3)
  elif n_bootstrap:
    fits.boot2 = bootstrap_lib.bootstrap_approach2(
        runs.n, runs.loss, bootstrap_lib.used_budgets(budget, fits.fit2),
        k=k, n_resamples=n_bootstrap, seed=seed, targets=fits.targets)
    out["intervals"] = fits.boot2.intervals(fits.level)
    out["bootstrap_failed"] = fits.boot2.n_failed
    bootstrap_lib.warn_if_few_resamples("approach 2", fits.boot2.n_failed,
                                       n_bootstrap)
  fits.summary["approach2"] = out


def _run_approach3(fits, k, top_k, n_bootstrap, seed, check_full_grid,
                   alone=False):
  runs = fits.runs
  start = time.perf_counter()
  fits.fit3 = approach3_lib.fit_parametric(runs.n, runs.d, runs.loss,
                                           top_k=top_k, k=k)
  out = fits.fit3.to_dict()
  out["fit_seconds"] = time.perf_counter() - start
  p = fits.fit3.params
  if not p.has_frontier:
    why = (f"approach 3: fitted alpha = {p.alpha:.3g}, beta = {p.beta:.3g}: "
           "the loss does not fall with both N and D, so the fit has no "
           "valid compute-optimal frontier")
    if alone:
      raise ValueError(f"{why}; nothing to extrapolate (add approach 2: "
                       "--approaches=2,3)")
    # Its parameters stay in fit.json and the report; nothing downstream
    # (extrapolation, bootstrap, plots) uses the frontier it lacks.
    warnings.warn(f"{why}; left out of the extrapolation and plots",
                  results_lib.FitWarning, stacklevel=3)
    fits.fit3 = None
    fits.summary["approach3"] = out
    return
  _warn_bounds(p, runs)
  if check_full_grid:
    start = time.perf_counter()
    full = approach3_lib.fit_parametric(runs.n, runs.d, runs.loss,
                                        top_k=None, k=k)
    ours, theirs = fits.fit3.params.to_dict(), full.params.to_dict()
    out["full_grid_check"] = {
        **theirs, "objective": full.objective, "n_starts": full.n_starts,
        "n_at_best": full.n_at_best,
        "seconds": time.perf_counter() - start,
        "max_rel_param_diff": max(abs(ours[x] / theirs[x] - 1)
                                  for x in ours),
        "objective_rel_diff": fits.fit3.objective / full.objective - 1}
  if n_bootstrap:
    start = time.perf_counter()
    fits.boot3 = bootstrap_lib.bootstrap_approach3(
        runs.n, runs.d, runs.loss, point=fits.fit3, n_resamples=n_bootstrap,
        seed=seed, targets=fits.targets)
    out["intervals"] = fits.boot3.intervals(fits.level)
    out["bootstrap_failed"] = fits.boot3.n_failed
    bootstrap_lib.warn_if_few_resamples("approach 3", fits.boot3.n_failed,
                                       n_bootstrap)
    out["bootstrap_seconds"] = time.perf_counter() - start
  fits.summary["approach3"] = out


# Approach-3 parameters this close to a bound say the data do not pin them:
# E below this fraction of the smallest loss has collapsed to its bound 0 (no
# floor in the data), and exponents outside these limits are at the edges of
# the start grid (0..2) the fit explores.
E_COLLAPSED = 1e-3
EXPONENT_LIMITS = (0.02, 2.5)


def _warn_bounds(p, runs):
  """One FitWarning per approach-3 parameter that ran to a bound."""
  if p.E < E_COLLAPSED * float(runs.loss.min()):
    warnings.warn(f"approach 3: E = {p.E:.3g} collapsed to its bound 0 (no "
                  "loss floor in these runs): the extrapolation follows pure "
                  "power laws", results_lib.FitWarning, stacklevel=3)
  for name in ("alpha", "beta"):
    value = getattr(p, name)
    if not EXPONENT_LIMITS[0] <= value <= EXPONENT_LIMITS[1]:
      warnings.warn(f"approach 3: {name} = {value:.3g} is outside the "
                    f"plausible range {EXPONENT_LIMITS[0]}–"
                    f"{EXPONENT_LIMITS[1]}: the runs do not pin it",
                    results_lib.FitWarning, stacklevel=3)


def _metric_values(metric, pred):
  """Adds the metric's own value (and interval) to a loss prediction."""
  if not metric.higher_is_better:
    return pred
  loss = pred["loss"]
  out = {"value": float(metric.from_loss(loss["value"]))}
  if "lo" in loss:
    out["lo"], out["hi"] = metric.interval_from_loss(loss["lo"], loss["hi"])
    out["median"] = float(metric.from_loss(loss["median"]))
  return dict(pred, **{metric.name: out})


def _extrapolate(fits):
  rows = []
  for c in fits.targets:
    row = {"flops": c}
    if fits.fit2 is not None:
      f = fits.fit2
      pred = bootstrap_lib.approach2_predict(
          {"G": f.n_opt.coef, "a": f.n_opt.exponent, "H": f.d_opt.coef,
           "b": f.d_opt.exponent, "loss_coef": f.loss_opt.coef,
           "loss_exponent": f.loss_opt.exponent}, c)
      row["approach2"] = _metric_values(fits.metric, {
          key: _point_with_interval(v, fits.boot2, f"{key}@{c:.4g}",
                                    fits.level) for key, v in pred.items()})
    if fits.fit3 is not None:
      pred = bootstrap_lib.approach3_predict(fits.fit3.params.to_dict(), c,
                                             fits.fit3.flops)
      row["approach3"] = _metric_values(fits.metric, {
          key: _point_with_interval(v, fits.boot3, f"{key}@{c:.4g}",
                                    fits.level) for key, v in pred.items()})
    rows.append(row)
  return rows


def _chinchilla_reference(fits):
  runs, fit3 = fits.runs, fits.fit3
  out = {}
  for name, p in (("hoffmann_unrounded", approach3_lib.HOFFMANN_UNROUNDED),
                  ("hoffmann_rounded", approach3_lib.HOFFMANN_ROUNDED),
                  ("epoch_2024", approach3_lib.EPOCH_2024)):
    front = p.frontier(fit3.flops)
    out[name] = {
        **p.to_dict(), "a": front["a"], "G": front["G"],
        "objective": approach3_lib.score(p, runs.n, runs.d, runs.loss,
                                         fit3.delta),
        "N_opt": [float(p.n_opt(c, fit3.flops)) for c in fits.targets]}
  return out


def _jsonable(obj):
  if isinstance(obj, dict):
    return {str(k): _jsonable(v) for k, v in obj.items()}
  if isinstance(obj, (list, tuple, np.ndarray)):
    return [_jsonable(v) for v in obj]
  if isinstance(obj, (bool, np.bool_)):
    return bool(obj)
  if isinstance(obj, (int, np.integer)):
    return int(obj)
  if isinstance(obj, (float, np.floating)):
    return float(obj) if np.isfinite(obj) else None
  return obj


def write_outputs(fits: Fits, out_dir: str, command: str = "",
                  caught: Sequence[str] = ()) -> Dict[str, str]:
  """Writes fit.json, the PNG plots and report.md into `out_dir`.

  Args:
    fits: result of `fit_runs`.
    out_dir: output directory (created).
    command: the command line, recorded in the report.
    caught: warning messages emitted during the fit, for the report.

  Returns:
    Mapping of output name to path.
  """
  # Everything that can fail on the data is computed before the first file
  # is written, so a failure leaves an earlier fit in `out_dir` whole.
  summary = _jsonable(dict(fits.summary, warnings=list(caught),
                           command=command))
  text = json.dumps(summary, indent=1) + "\n"
  pngs = {name: f"{name}.png" for name, shown in (
      ("isoflops", fits.fit2 is not None), ("frontier", True),
      ("contours", fits.fit3 is not None)) if shown}
  report = report_lib.render(summary, pngs)
  out = epath.Path(out_dir)
  out.mkdir(parents=True, exist_ok=True)
  paths = {}
  runs = fits.runs
  if fits.fit2 is not None:
    paths["isoflops"] = plots.plot_isoflops(
        runs, fits.budget, fits.fit2, str(out / "isoflops.png"),
        boot=fits.boot2, level=fits.level)
  paths["frontier"] = plots.plot_frontier(
      fits.fit2, fits.fit3, str(out / "frontier.png"),
      boot2=fits.boot2, boot3=fits.boot3,
      c_range=(runs.c.min(), runs.c.max()), targets=fits.targets,
      level=fits.level)
  if fits.fit3 is not None:
    used = [cv.budget for cv in fits.fit2.used] if fits.fit2 else []
    paths["contours"] = plots.plot_contours(
        runs, fits.fit3, str(out / "contours.png"), used)
  paths["fit.json"] = str(out / "fit.json")
  jsonl.write_atomic(paths["fit.json"], text)
  paths["report"] = str(out / "report.md")
  jsonl.write_atomic(paths["report"], report)
  return paths


def warn_repeated_data(records) -> None:
  """One FitWarning when runs trained for more than one epoch (pitfall 12
  of the notes: D counts examples seen, and past one epoch they repeat,
  which the one-epoch laws do not model).

  Args:
    records: result rows; those with an `epochs` field (rows of
      `scaling.run` since it was logged) are checked.
  """
  epochs = [float(r["epochs"]) for r in records
            if isinstance(r.get("epochs"), (int, float))]
  over = [e for e in epochs if e > 1.0]
  if over:
    warnings.warn(
        f"{len(over)} of {len(epochs)} runs trained for more than one epoch "
        f"(up to {max(over):.3g}): D counts repeated examples, which the "
        "one-epoch laws do not model; the fitted D_opt is examples seen, "
        "not distinct data", results_lib.FitWarning, stacklevel=3)


def run(results: str, out: str, *, family: Optional[str] = None,
        drop_highest_loss: int = 0, param_key: str = "params",
        metric: Optional[str] = None, direction: str = "auto",
        command: str = "", **fit_kwargs) -> Fits:
  """Loads, fits and writes outputs: the body of the CLI.

  Args:
    results: results.jsonl or CSV path.
    out: output directory.
    family: family to fit (required when the file holds several).
    drop_highest_loss: drop this many highest-loss runs first (Epoch: 5).
    param_key: JSONL field for N ("params" or "params_non_embedding").
    metric: field fitted as the loss, e.g. "eval_fid" (default: the rows'
      `metric` (their sweep spec's), else eval_loss, else the final train
      loss).
    direction: whether the metric improves downwards or upwards ("auto":
      known names, see scaling/metrics.py).
    command: command line recorded in the report.
    **fit_kwargs: passed to `fit_runs`.

  Returns:
    The Fits (fit.json etc. are written to `out`).
  """
  caught = []
  try:
    with warnings.catch_warnings(record=True) as caught:
      warnings.simplefilter("always", results_lib.FitWarning)
      records = results_lib.read_records(results)
      # Rows of scaling.run name their spec's metric (R3GAN: a sample
      # metric, not its adversarial eval_loss): those of the family fitted,
      # in a file of several.
      mine = [r for r in records
              if family is None or r.get("family") == family]
      warn_repeated_data(mine or records)
      given, metric = metric, metric or results_lib.sweep_metric(mine)
      # A direction that cannot apply names the flag the user passed, not a
      # field they did not (the rows' sweep metric, or their loss). Without
      # a metric, the field the rows' losses come from names the fit
      # (eval_loss, or the train loss), not a bare "loss".
      metric_info = metrics_lib.resolve(
          metric, direction, what=None if given or not metric else
          f"the sweep's metric {metric} (no --metric)")
      if not metric and results_lib.default_loss_field(mine):
        metric_info = metrics_lib.resolve(
            results_lib.default_loss_field(mine), direction)
      # The other families' rows (which may not log this metric) are not
      # read; an unknown --family keeps them all, for select_family to
      # list.
      runs = results_lib.runs_from_records(
          mine or records, param_key=param_key,
          source=os.path.basename(results), metric=metric,
          direction=direction)
      runs = results_lib.select_family(runs, family)
      n_before = len(runs)
      runs = results_lib.drop_highest_loss(runs, drop_highest_loss)
      fits = fit_runs(runs, metric=metric_info, **fit_kwargs)
  except ValueError as e:
    # The CLI prints them above the error: they often say why (a budget
    # excluded for a minimum outside its sizes).
    e.fit_warnings = [str(w.message) for w in caught
                      if issubclass(w.category, results_lib.FitWarning)]
    raise
  finally:
    # Re-issue the captured warnings (also when the fit failed) so callers
    # and the CLI still see them.
    for w in caught:
      warnings.warn_explicit(w.message, w.category, w.filename, w.lineno)
  messages = [str(w.message) for w in caught
              if issubclass(w.category, results_lib.FitWarning)]
  fits.summary["data"]["dropped_highest_loss"] = n_before - len(runs)
  # Which parameter count N means (scaling.run --optimal_from reads it).
  fits.summary["settings"]["param_key"] = param_key
  fits.summary["warnings"] = messages
  write_outputs(fits, out, command=command, caught=messages)
  return fits


FLAGS = flags.FLAGS
flags.DEFINE_string("results", None, "results.jsonl or CSV file.")
flags.DEFINE_string("out", None, "Output directory.")
flags.DEFINE_list("target_flops", [], "Budgets to extrapolate to (FLOPs).")
flags.DEFINE_integer("bootstrap", 100, "Bootstrap resamples (0 = none).",
                     lower_bound=0)
flags.DEFINE_float("level", bootstrap_lib.DEFAULT_LEVEL,
                   "Central interval level (0.8 = 10/50/90 percentiles).")
flags.DEFINE_integer("seed", 0, "Bootstrap seed.")
flags.DEFINE_integer("drop_highest_loss", 0,
                     "Drop the K highest-loss runs (Epoch used 5).",
                     lower_bound=0)
flags.DEFINE_string("family", None, "Family to fit when there are several.")
flags.DEFINE_string("param_key", "params",
                    "JSONL field used for N (e.g. params_non_embedding).")
flags.DEFINE_list("approaches", ["2", "3"], "Approaches to run.")
flags.DEFINE_list("budgets", [], "Budget centres for approach 2, or "
                  "'chinchilla' for Hoffmann et al.'s nine; default: the "
                  "runs' budget_flops, else detected centres.")
flags.DEFINE_float("budget_tol", approach2_lib.DEFAULT_TOL_DEX,
                   "Snapping tolerance in log10 C (dex).")
flags.DEFINE_float("detect_tol", approach2_lib.DEFAULT_DETECT_TOL_DEX,
                   "Budget-detection window half-width (dex).")
flags.DEFINE_integer("min_budget_runs", approach2_lib.DEFAULT_MIN_RUNS,
                     "Fewest runs a +-detect_tol window of log10 C needs "
                     "to count as a budget; used only when budgets are "
                     "detected (rows without budget_flops, e.g. a CSV, and "
                     "no --budgets).", lower_bound=1)
flags.DEFINE_integer("top_k", approach3_lib.DEFAULT_TOP_K,
                     "Approach-3 L-BFGS starts (0 = the whole 4500 grid).",
                     lower_bound=0)
flags.DEFINE_bool("check_full_grid", False, "Also fit approach 3 from all "
                  "grid starts and report the difference to --top_k.")
flags.DEFINE_string("metric", None, "Field fitted as the loss, e.g. eval_fid "
                    "or eval_psnr (default: the sweep spec's metric named in "
                    "the rows, else eval_loss, else the final train loss).")
flags.DEFINE_enum("metric_direction", "auto", list(metrics_lib.DIRECTIONS),
                  "Whether --metric improves downwards or upwards (auto: "
                  "PSNR, SSIM, precision, recall, accuracy and IS upwards).")
flags.DEFINE_string("compare", None, "'chinchilla': score published "
                    "Chinchilla/Epoch parameters on the data.")

flags.register_validator(
    "approaches", lambda v: bool(v) and set(v) <= {"2", "3"},
    "must be 2, 3 or 2,3.")
flags.register_validator(
    "target_flops", lambda v: results_lib.are_numbers(v, positive=True),
    "must be positive finite FLOP counts, e.g. 1e21,1e22.")
flags.register_validator(
    "budgets", lambda v: v == ["chinchilla"] or results_lib.are_numbers(
        v, positive=True),
    "must be positive finite FLOP counts (e.g. 1e18,3e18) or 'chinchilla'.")
flags.register_validator("level", lambda v: 0 < v < 1,
                         "must be a fraction in (0, 1), e.g. 0.8.")


def main(argv):
  config_lib.check_no_arguments(argv)
  if not FLAGS.results or not FLAGS.out:
    config_lib.usage_error("pass --results (a results.jsonl or CSV) and "
                           "--out (a directory)")
  if FLAGS.budgets == ["chinchilla"]:
    budgets = approach2_lib.CHINCHILLA_BUDGETS
  else:
    budgets = [float(b) for b in FLAGS.budgets] or None
  command = "python -m scaling.fit " + " ".join(
      shlex.quote(a) for a in sys.argv[1:])
  # The fit's warnings are printed below as one line each.
  warnings.simplefilter("ignore", results_lib.FitWarning)
  try:
    # Before the fit and its bootstrap, not after them.
    with paths.probed_output_dir(FLAGS.out):
      fits = run(FLAGS.results, FLAGS.out, family=FLAGS.family,
                 drop_highest_loss=FLAGS.drop_highest_loss,
                 param_key=FLAGS.param_key, metric=FLAGS.metric,
                 direction=FLAGS.metric_direction, command=command,
                 approaches=[int(a) for a in FLAGS.approaches],
                 budgets=budgets, budget_tol=FLAGS.budget_tol,
                 detect_tol=FLAGS.detect_tol,
                 min_budget_runs=FLAGS.min_budget_runs,
                 target_flops=[float(t) for t in FLAGS.target_flops] or None,
                 n_bootstrap=FLAGS.bootstrap, level=FLAGS.level,
                 seed=FLAGS.seed, top_k=FLAGS.top_k or None,
                 compare=FLAGS.compare,
                 check_full_grid=FLAGS.check_full_grid)
  except (ValueError, OSError) as e:
    for message in getattr(e, "fit_warnings", ()):
      print(f"warning: {message}", file=sys.stderr)
    print(f"error: {config_lib.error_line(e)}", file=sys.stderr)
    sys.exit(1)
  s = fits.summary
  for message in s.get("warnings", []):
    print(f"warning: {message}", file=sys.stderr)
  for line in report_lib.extrapolation_lines(s):
    print(line)
  for name in ("approach2", "approach3"):
    if name in s:
      keys = ("a", "b", "G") if name == "approach2" else (
          "E", "A", "B", "alpha", "beta", "a", "b")
      print(name + ": " + ", ".join(
          f"{k}={s[name][k]:.4g}" if s[name][k] is not None else f"{k}=n/a"
          for k in keys))
  print(f"wrote {FLAGS.out}/fit.json, report.md and plots")


if __name__ == "__main__":
  app.run(main, flags_parser=config_lib.parse_flags)
