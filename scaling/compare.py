r"""Families side by side: compute-optimal frontiers of one metric.

  python -m scaling.compare --results=sd.jsonl,r3gan.jsonl,pf.jsonl \
      --metric=eval_fid --out=DIR [--targets=20,10] [--target_flops=1e14]

Each family's runs (rows grouped by `family`; one file may hold several)
are fitted with approach 2 on the chosen metric (mapped onto a falling loss
for higher-is-better metrics, scaling/metrics.py): per budget the isoFLOP
parabola's minimum L*(C), then the frontier L*(C) = L0 C^gamma, with a
stratified bootstrap of both. From the frontiers:

  * the compute to reach each target metric value, C = (v / L0)^(1/gamma),
    per family with its bootstrap interval, and which families' intervals
    overlap (then the data do not say which is cheaper);
  * the metric each frontier predicts at --target_flops (default 100x the
    largest budget);
  * where two frontiers cross, C* = (L0_b / L0_a)^(1/(gamma_a - gamma_b));
  * sampling FLOPs per image of the compute-optimal size at the largest
    budget (from the rows' `sampling_flops_per_example`, a power law in N
    over the family's ladder).

Writes DIR/compare.png (metric against training FLOPs with bands; sampling
FLOPs per image against the metric), DIR/compare.json and DIR/compare.md,
and prints the table and one line per target naming the cheapest family.
"""

import dataclasses
import itertools
import json
import math
import os
import sys
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple

from absl import app
from absl import flags
import etils.epath as epath
import numpy as np

from jaxgen import config_lib
from jaxgen import jsonl
from jaxgen import paths as paths_lib
from scaling import approach2 as approach2_lib
from scaling import bootstrap as bootstrap_lib
from scaling import flops_law
from scaling import metrics as metrics_lib
from scaling import results as results_lib


@dataclasses.dataclass
class Frontier:
  """One family's compute-optimal frontier.

  Attributes:
    family: the family name.
    runs: its cleaned runs (losses in the metric's fitted space).
    fit: the approach-2 fit (`fit.loss_opt` is the frontier); None for a
      family left out (its runs are still drawn).
    boot: bootstrap of the fit, or None.
    sampling: (N, sampling FLOPs per image) of its runs that report them.
    left_out: for a family without a frontier, the line that says why.
    no_interval: why a bootstrapped family has no interval ("" if it has
      one or none was asked for).
  """
  family: str
  runs: results_lib.Runs
  fit: Optional[approach2_lib.IsoflopFit]
  boot: Optional[bootstrap_lib.Bootstrap]
  sampling: np.ndarray
  left_out: str = ""
  no_interval: str = ""

  @property
  def coef(self) -> float:
    return self.fit.loss_opt.coef

  @property
  def exponent(self) -> float:
    return self.fit.loss_opt.exponent

  @property
  def budget_range(self) -> Tuple[float, float]:
    """(smallest, largest) fitted budget: the frontier's own range (a
    budget whose parabola was excluded is not on it)."""
    budgets = [cv.budget for cv in self.fit.used]
    return float(min(budgets)), float(max(budgets))

  def samples(self, name: str) -> np.ndarray:
    """Bootstrap samples of a fit parameter (the point value if none)."""
    if self.boot is None or not len(self.boot.samples.get(name, ())):
      return np.array([{"loss_coef": self.coef,
                        "loss_exponent": self.exponent}[name]])
    return self.boot.samples[name]


def load_frontiers(paths: Sequence[str], metric: str, direction: str = "auto",
                   param_key: str = "params", n_bootstrap: int = 200,
                   seed: int = 0,
                   no_frontier: Optional[List[Frontier]] = None
                   ) -> List[Frontier]:
  """Reads results files and fits one frontier per family.

  Args:
    paths: results.jsonl (or CSV) files.
    metric: the field compared (e.g. "eval_fid").
    direction: "auto", "lower" or "higher" (`metrics.resolve`).
    param_key: the field used for N.
    n_bootstrap: resamples per family (0: no bands or intervals).
    seed: bootstrap seed.
    no_frontier: if given, gets the families left out, as Frontiers whose
      `fit` is None and whose `left_out` says why (their runs are plotted).

  Returns:
    The frontiers, in the order families first appear.

  Raises:
    ValueError: a file without the metric, a family in two files, or no
      family with a frontier. A family whose runs give no frontier (e.g.
      no budget with an interior minimum) is left out with a FitWarning
      that names it and says why.
  """
  by_family: Dict[str, List[Dict[str, Any]]] = {}
  where: Dict[str, str] = {}
  for path in paths:
    if str(path).endswith(".csv"):
      raise ValueError(f"{path}: scaling.compare reads results.jsonl files")
    records = jsonl.read(path)
    if not records:
      raise ValueError(f"{path} is empty (no rows); give a results.jsonl "
                       "with the family's runs (--results)")
    if not any(r.get(metric) is not None for r in records):
      raise ValueError(f"{path} has no {metric!r} in any row; pick a metric "
                       "every family logged (--metric)")
    for family in dict.fromkeys(str(r.get("family") or "") for r in records):
      if family in where:
        raise ValueError(f"family {family!r} is in both {where[family]} and "
                         f"{path}; give each family's runs once")
      where[family] = path
    for r in records:
      by_family.setdefault(str(r.get("family") or ""), []).append(r)
  out, skipped = [], []
  for family, records in by_family.items():
    runs = results_lib.runs_from_records(
        records, param_key=param_key, metric=metric, direction=direction,
        source=f"{os.path.basename(where[family])} ({family})")
    budget = approach2_lib.run_budgets(runs)
    sampling = np.array(
        [(float(r[param_key]), float(r["sampling_flops_per_example"]))
         for r in records if r.get("status", "ok") == "ok"
         and r.get("sampling_flops_per_example") and r.get(param_key)],
        float).reshape(-1, 2)
    fit = error = None
    with warnings.catch_warnings(record=True) as caught:
      warnings.simplefilter("always", results_lib.FitWarning)
      try:
        law = flops_law.FlopsLaw.fit(runs.n, runs.c, runs.d)
        if law.off_law():
          warnings.warn(law.off_law(), results_lib.FitWarning)
        fit = approach2_lib.fit_isoflops(runs.n, runs.loss, budget, k=law)
      except ValueError as e:
        error = e
    for w in caught:
      # Several families' budgets are fitted here: say whose budget it is.
      prefix = (f"family {family!r}: " if issubclass(
          w.category, results_lib.FitWarning) else "")
      warnings.warn(f"{prefix}{w.message}", w.category, stacklevel=2)
    if error is not None:
      skipped.append(Frontier(family, runs, None, None, sampling,
                              left_out=f"family {family!r}: {error}"))
      warnings.warn(f"{skipped[-1].left_out}; left out of the comparison",
                    results_lib.FitWarning, stacklevel=2)
      continue
    boot, no_interval = None, ""
    if n_bootstrap and bootstrap_lib.approach2_interval_is_degenerate(fit):
      no_interval = bootstrap_lib.NO_APPROACH2_INTERVAL
      warnings.warn(f"family {family!r}: no bootstrap interval "
                    f"({no_interval})", results_lib.FitWarning, stacklevel=2)
    elif n_bootstrap:
      boot = bootstrap_lib.bootstrap_approach2(
          runs.n, runs.loss, bootstrap_lib.used_budgets(budget, fit),
          k=fit.flops, n_resamples=n_bootstrap, seed=seed)
      bootstrap_lib.warn_if_few_resamples("approach 2", boot.n_failed,
                                          n_bootstrap, f"family {family!r}")
    out.append(Frontier(family, runs, fit, boot, sampling,
                        no_interval=no_interval))
  if not out:
    raise ValueError("no family has a frontier: "
                     + "; ".join(f.left_out for f in skipped))
  if no_frontier is not None:
    no_frontier.extend(skipped)
  return out


def compute_to_reach(coef, exponent, loss, c_min):
  """C with coef * C^exponent = loss (NaN where the frontier never gets there).

  A falling frontier (exponent < 0) reaches `loss` at that C. One that does
  not fall gets no better with compute and never reaches a `loss` below
  its value at its smallest fitted budget `c_min`. Either kind already at
  or below `loss` at `c_min` has reached it there: the answer is `c_min`
  (a bound; the power law below the data is not evidence, and a rising
  fit heads to zero there).

  Args:
    coef: L0 (scalar or samples).
    exponent: gamma (scalar or samples).
    loss: the target in the fitted space.
    c_min: the family's smallest fitted budget.

  Returns:
    The compute, same shape as the broadcast inputs.
  """
  coef, exponent = np.asarray(coef, float), np.asarray(exponent, float)
  with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
    c = np.exp(np.log(loss / coef) / exponent)
    reached = coef * c_min ** exponent <= loss
  return np.where(reached, c_min, np.where(exponent < 0, c, np.nan))


def crossing(a: Frontier, b: Frontier) -> Optional[float]:
  """Compute where two frontiers cross (None if parallel)."""
  if math.isclose(a.exponent, b.exponent, rel_tol=1e-12, abs_tol=1e-15):
    return None
  return float(math.exp(math.log(b.coef / a.coef)
                        / (a.exponent - b.exponent)))


def _interval(samples: np.ndarray, level: float):
  """(lo, hi) percentiles; NaN samples count as never (+inf): a resample
  whose frontier does not fall never reaches the target."""
  samples = np.where(np.isnan(samples), np.inf, samples)
  if not len(samples):
    return None
  # No interpolation between order statistics: inf - inf would be NaN.
  lo, hi = np.percentile(samples, [50 * (1 - level), 50 * (1 + level)],
                         method="inverted_cdf")
  return float(lo), float(hi)


def _json_interval(iv):
  """An interval for compare.json: +inf (never) as None."""
  return None if iv is None else [x if math.isfinite(x) else None
                                  for x in iv]


def summarize(frontiers: Sequence[Frontier], metric: metrics_lib.Metric,
              targets: Sequence[float], target_flops: float,
              level: float = bootstrap_lib.DEFAULT_LEVEL) -> Dict[str, Any]:
  """The comparison table as a JSON-ready dict.

  Args:
    frontiers: from `load_frontiers`.
    metric: the compared metric.
    targets: metric values to reach.
    target_flops: compute to extrapolate each frontier to.
    level: central interval level.

  Returns:
    {"metric", "targets", "target_flops", "families": [...],
     "reach": [...], "crossings": [...]}.
  """
  fams = []
  for f in frontiers:
    c_max = f.budget_range[1]
    n_opt = float(f.fit.n_opt(c_max))
    sampling = None
    if len(f.sampling) >= 2 and np.ptp(np.log(f.sampling[:, 0])) > 0:
      sampling = float(approach2_lib.PowerLaw.fit(
          f.sampling[:, 0], f.sampling[:, 1])(n_opt))
    elif len(f.sampling):
      sampling = float(np.median(f.sampling[:, 1]))
    at = f.samples("loss_coef") * target_flops ** f.samples("loss_exponent")
    fams.append({
        "family": f.family, "runs": len(f.runs),
        "budgets_used": [cv.budget for cv in f.fit.used],
        "loss_coef": f.coef, "loss_exponent": f.exponent,
        "n_opt_exponent": f.fit.n_opt.exponent,
        "c_range": [float(f.runs.c.min()), float(f.runs.c.max())],
        "metric_at_target_flops": float(metric.from_loss(
            f.coef * target_flops ** f.exponent)),
        "metric_at_target_flops_interval": (
            metric.interval_from_loss(*_interval(at, level))
            if f.boot is not None and _interval(at, level) else None),
        "n_opt_at_largest_budget": n_opt,
        "sampling_flops_per_image": sampling,
        "no_interval": f.no_interval,
    })
  no_interval = {f.family: bool(f.no_interval) for f in frontiers}
  reach = []
  for v in targets:
    loss = float(metric.to_loss(v))
    row = {"target": float(v), "families": {}}
    for f in frontiers:
      c_min = f.budget_range[0]
      c = float(compute_to_reach(f.coef, f.exponent, loss, c_min))
      samples = compute_to_reach(f.samples("loss_coef"),
                                 f.samples("loss_exponent"), loss, c_min)
      row["families"][f.family] = {
          "compute": c if math.isfinite(c) else None,
          # Met at its smallest fitted budget: "already there" (a bound),
          # not an extrapolation below the data.
          "already": bool(math.isfinite(c) and c <= c_min),
          "interval": _interval(samples, level) if f.boot else None}
    finite = {k: x for k, x in row["families"].items() if x["compute"]}
    if finite:
      best = min(finite, key=lambda k: finite[k]["compute"])
      row["cheapest"] = best
      lo_hi = finite[best]["interval"]
      # Bootstrapped, yet no interval (3 runs per budget): nothing rules
      # a competitor out, unless the best is "already" there (its compute
      # is then a measured bound).
      unknown = {k for k in finite if no_interval[k]
                 and not finite[k]["already"]}
      # An "already" compute is an upper bound (it may have got there with
      # less than its smallest fitted budget): it cannot be ruled out.
      row["overlaps"] = sorted(
          k for k, x in finite.items() if k != best and (
              (lo_hi and x["interval"] and x["interval"][0] <= lo_hi[1])
              or x["already"] or best in unknown or k in unknown))
    for x in row["families"].values():
      x["interval"] = _json_interval(x["interval"])
    reach.append(row)
  crossings = []
  for a, b in itertools.combinations(frontiers, 2):
    c = crossing(a, b)
    if c is None:
      continue
    # Inside both frontiers' fitted budgets (their union called a crossing
    # two decades below one family's runs "inside the data").
    lo = max(a.budget_range[0], b.budget_range[0])
    hi = min(a.budget_range[1], b.budget_range[1])
    crossings.append({
        "families": [a.family, b.family], "compute": c,
        "metric": float(metric.from_loss(a.coef * c ** a.exponent)),
        "inside_data": bool(lo <= c <= hi)})
  return {"metric": metric.name, "fitted": metric.fitted,
          "higher_is_better": metric.higher_is_better,
          "targets": [float(t) for t in targets],
          "target_flops": float(target_flops), "level": level,
          "families": fams, "reach": reach, "crossings": crossings}


def default_targets(frontiers: Sequence[Frontier],
                    metric: metrics_lib.Metric) -> List[float]:
  """Each family's frontier value at its own largest budget (3 digits)."""
  out = []
  for f in frontiers:
    c_max = f.budget_range[1]
    v = float(metric.from_loss(f.fit.loss_opt(c_max)))
    out.append(float(f"{v:.3g}"))
  return sorted(set(out), reverse=not metric.higher_is_better)


def _fmt(x, unit: str = "") -> str:
  if x is None or (isinstance(x, float) and not math.isfinite(x)):
    return "n/a"
  return f"{x:.3g}{unit}"


def _fmt_interval(iv) -> str:
  """' (lo to hi)'; None ends mean resamples that never reach it."""
  if not iv:
    return ""
  lo, hi = ("never" if x is None else _fmt(x) for x in iv)
  return " (never)" if lo == hi == "never" else f" ({lo} to {hi})"


def render(summary: Dict[str, Any], plot: Optional[str] = None) -> str:
  """compare.md: the tables and what they say."""
  m = summary["metric"]
  pct = f"{100 * summary['level']:.0f}%"
  lines = [f"# Families compared on {m}", ""]
  if summary.get("caveat"):
    lines += [f"**Caveat**: {summary['caveat']}.", ""]
  if summary["higher_is_better"]:
    lines += [f"{m} is higher-is-better; fitted as {summary['fitted']}.", ""]
  if plot:
    lines += [f"![frontiers]({plot})", ""]
  head = ["family", "runs", "budgets", "frontier exponent", "N_opt exponent",
          f"{m} at {summary['target_flops']:.3g} FLOPs ({pct})",
          "sampling FLOPs / image"]
  lines += ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
  for f in summary["families"]:
    iv = f["metric_at_target_flops_interval"]
    lines.append("| " + " | ".join([
        f["family"], str(f["runs"]), str(len(f["budgets_used"])),
        f"{f['loss_exponent']:.3f}", f"{f['n_opt_exponent']:.3f}",
        _fmt(f["metric_at_target_flops"])
        + (f" ({_fmt(iv[0])} to {_fmt(iv[1])})" if iv else "")
        + (" (no interval: too few runs per budget)"
           if f.get("no_interval") else ""),
        _fmt(f["sampling_flops_per_image"])]) + " |")
  for f in summary["families"]:
    if f["loss_exponent"] >= 0:
      lines += ["", f"{f['family']}: its frontier does not improve with "
                f"compute (exponent {f['loss_exponent']:+.3f}): a target "
                "it meets at its smallest fitted budget counts as reached "
                "there (or before), any other as never."]
  lines += ["", f"Training compute (FLOPs) to reach {m} ({pct} intervals):",
            ""]
  fam_names = [f["family"] for f in summary["families"]]
  lines += ["| target | " + " | ".join(fam_names) + " | cheapest |",
            "|" + "---|" * (len(fam_names) + 2)]
  for r in summary["reach"]:
    cells = []
    for name in fam_names:
      x = r["families"][name]
      iv = x["interval"]
      cells.append(("never" if x["compute"] is None else
                    ("≤ " if x.get("already") else "") + _fmt(x["compute"]))
                   + (" (already at its smallest fitted budget)"
                      if x.get("already") else _fmt_interval(iv)))
    best = r.get("cheapest", "none")
    if r.get("overlaps"):
      best += f" (overlaps {', '.join(r['overlaps'])}: not resolved)"
    lines.append(f"| {_fmt(r['target'])} | " + " | ".join(cells)
                 + f" | {best} |")
  if summary.get("left_out"):
    lines += ["", "Left out (no frontier):", ""]
    lines += [f"- {x}" for x in summary["left_out"]]
  if summary["crossings"]:
    lines += ["", "Frontier crossings:", ""]
    for x in summary["crossings"]:
      where = "inside the data" if x["inside_data"] else "extrapolated"
      lines.append(f"- {x['families'][0]} / {x['families'][1]}: "
                   f"{x['compute']:.3g} FLOPs at {m} {x['metric']:.4g} "
                   f"({where})")
  return "\n".join(lines) + "\n"


def result_lines(summary: Dict[str, Any]) -> List[str]:
  """One line per target: the cheapest family and any overlap."""
  out = []
  for r in summary["reach"]:
    if "cheapest" not in r:
      out.append(f"{summary['metric']}={r['target']:.4g}: no family's "
                 "frontier reaches it")
      continue
    best = r["families"][r["cheapest"]]
    text = (f"{summary['metric']}={r['target']:.4g}: cheapest "
            f"{r['cheapest']} at {best['compute']:.3g} FLOPs"
            + (" or less (already at its smallest fitted budget)"
               if best.get("already") else ""))
    if r.get("overlaps"):
      text += f" (interval overlaps {', '.join(r['overlaps'])})"
    out.append(text)
  return out


# Fields holding each family's own training loss.
OWN_LOSSES = ("eval_loss", "loss", "final_train_loss")


def run(paths: Sequence[str], out: str, metric: str, *,
        direction: str = "auto", targets: Sequence[float] = (),
        target_flops: Optional[float] = None, n_bootstrap: int = 200,
        level: float = bootstrap_lib.DEFAULT_LEVEL, seed: int = 0,
        param_key: str = "params") -> Dict[str, Any]:
  """Fits, tabulates and plots; writes compare.{json,md,png} under `out`.

  Args:
    paths: results files.
    out: output directory.
    metric: the compared field.
    direction: metric direction.
    targets: metric values to reach (default: `default_targets`).
    target_flops: extrapolation budget (default: 100x the largest run).
    n_bootstrap: resamples per family.
    level: interval level.
    seed: bootstrap seed.
    param_key: field used for N.

  Returns:
    The summary (`summarize`).
  """
  from scaling import plots  # pylint: disable=g-import-not-at-top
  m = metrics_lib.resolve(metric, direction)
  if target_flops is not None and not results_lib.are_numbers(
      [target_flops], positive=True):
    raise ValueError(f"target_flops={target_flops}: --target_flops must be "
                     "a positive finite FLOP count, e.g. 1e16")
  others: List[Frontier] = []
  frontiers = load_frontiers(paths, metric, direction, param_key,
                             n_bootstrap, seed, others)
  families = sorted({f.family for f in list(frontiers) + others})
  caveat = ""
  if metric in OWN_LOSSES and len(families) > 1:
    # Diffusion's ε-MSE, flow matching's velocity MSE and a GAN's D loss
    # share a field name, not a scale.
    caveat = (f"{metric} is each family's own training objective "
              f"({', '.join(families)}), not comparable across families; "
              "pass --metric= a sample metric every family logs (e.g. "
              "eval_fd_shapes or eval_fid)")
    warnings.warn(caveat, results_lib.FitWarning, stacklevel=2)
  if not target_flops:
    target_flops = 100 * max(float(f.runs.c.max()) for f in frontiers)
  targets = list(targets) or default_targets(frontiers, m)
  summary = summarize(frontiers, m, targets, target_flops, level)
  summary["left_out"] = [f.left_out for f in others]
  summary["caveat"] = caveat
  epath.Path(out).mkdir(parents=True, exist_ok=True)
  plot = plots.plot_families(frontiers, m, os.path.join(out, "compare.png"),
                             target_flops=target_flops, level=level,
                             others=others)
  jsonl.write_atomic(os.path.join(out, "compare.json"),
                     json.dumps(summary, indent=1))
  jsonl.write_atomic(os.path.join(out, "compare.md"),
                     render(summary, os.path.basename(plot)))
  return summary


FLAGS = flags.FLAGS


def _define_flags():
  """The command line (defined when run as a program: scaling.fit, imported
  beside this module, has flags of the same names)."""
  flags.DEFINE_list("results", [], "results.jsonl files (comma-separated).")
  flags.DEFINE_string("metric", "eval_loss", "The field compared, e.g. "
                      "eval_fid; every family must log it.")
  flags.DEFINE_enum("metric_direction", "auto", list(metrics_lib.DIRECTIONS),
                    "Whether higher or lower is better (auto: by name).")
  flags.DEFINE_string("out", None, "Output directory.")
  flags.DEFINE_list("targets", [], "Metric values to reach (default: each "
                    "family's frontier at its largest budget).")
  flags.register_validator(
      "targets", lambda v: results_lib.are_numbers(v) and all(
          math.isfinite(float(x)) for x in v),
      "must be finite metric values, e.g. 20,10.")
  flags.DEFINE_float("target_flops", None, "Compute to extrapolate to "
                     "(default: 100x the largest run).")
  flags.register_validator(
      "target_flops",
      lambda v: v is None or results_lib.are_numbers([v], positive=True),
      "must be a positive finite FLOP count, e.g. 1e16.")
  flags.DEFINE_integer("bootstrap", 200, "Bootstrap resamples per family.",
                       lower_bound=0)
  flags.DEFINE_float("level", bootstrap_lib.DEFAULT_LEVEL, "Interval level.")
  flags.register_validator("level", lambda v: 0 < v < 1,
                           "must be a fraction in (0, 1), e.g. 0.8.")
  flags.DEFINE_integer("seed", 0, "Bootstrap seed.")
  flags.DEFINE_string("param_key", "params", "Field used for N.")


def main(argv):
  config_lib.check_no_arguments(argv)
  if not FLAGS.results or not FLAGS.out:
    config_lib.usage_error("pass --results (results.jsonl files, "
                           "comma-separated) and --out (a directory)")
  with warnings.catch_warnings():
    warnings.simplefilter("always", results_lib.FitWarning)
    warnings.formatwarning = lambda msg, *_, **__: f"warning: {msg}\n"
    try:
      # Before the fit and its bootstrap, not after them.
      with paths_lib.probed_output_dir(FLAGS.out):
        summary = run(FLAGS.results, FLAGS.out, FLAGS.metric,
                      direction=FLAGS.metric_direction,
                      targets=[float(t) for t in FLAGS.targets],
                      target_flops=FLAGS.target_flops,
                      n_bootstrap=FLAGS.bootstrap, level=FLAGS.level,
                      seed=FLAGS.seed, param_key=FLAGS.param_key)
    except (ValueError, OSError) as e:
      print(f"error: {config_lib.error_line(e)}", file=sys.stderr)
      sys.exit(1)
  print(render(summary))
  for line in result_lines(summary):
    print(line)
  print(f"wrote {FLAGS.out}/compare.md, compare.json and compare.png")


if __name__ == "__main__":
  _define_flags()
  app.run(main, flags_parser=config_lib.parse_flags)
