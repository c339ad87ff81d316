"""Plots of the scaling fits (matplotlib, Agg backend, PNG files).

- `plot_isoflops`: loss against N per budget, the fitted parabolas and their
  minima (excluded budgets drawn hollow, runs of no budget in grey).
- `plot_frontier`: N_opt, D_opt and L_opt against C: approach-2 minima and
  power laws, the approach-3 frontier, bootstrap bands and targets.
- `plot_contours`: approach-3 loss contours over (N, D) with the runs and the
  compute-optimal frontier.
"""

from typing import Optional, Sequence

import etils.epath as epath
import matplotlib

matplotlib.use("Agg")
# pylint: disable=g-import-not-at-top,wrong-import-position
from matplotlib import colors as mcolors
from matplotlib import pyplot as plt
from matplotlib import ticker
import numpy as np

from scaling import approach2 as approach2_lib
from scaling import approach3 as approach3_lib
from scaling import bootstrap as bootstrap_lib
from scaling import results as results_lib
# pylint: enable=g-import-not-at-top,wrong-import-position


def _save(fig, path: str) -> None:
  """Lays `fig` out and writes it as a PNG; log axes spanning 0.7-2.5
  decades get labels at 1x and 3x each power of 10.

  On such axes matplotlib labels every minor tick (2x, 3x, ... 10^k), and the
  labels overlap; shorter and longer axes keep the default labels.
  """
  for ax in fig.axes:
    for axis in (ax.xaxis, ax.yaxis):
      lo, hi = sorted(axis.get_view_interval())
      if axis.get_scale() == "log" and lo > 0 and 5 <= hi / lo <= 300:
        axis.set_major_locator(ticker.LogLocator(base=10, subs=(1.0, 3.0)))
        if not isinstance(axis.get_major_formatter(), ticker.FuncFormatter):
          # A plot's own formatter (plain numbers for losses) stays.
          axis.set_major_formatter(
              ticker.LogFormatterSciNotation(labelOnlyBase=False))
        axis.set_minor_formatter(ticker.NullFormatter())
  # The labels changed: lay out again so none overlaps a neighbour.
  fig.tight_layout()
  # Through epath, so `path` may be on an object store.
  with epath.Path(path).open("wb") as f:
    fig.savefig(f, format="png", dpi=120)


_A2_COLOR = "tab:blue"
_A3_COLOR = "tab:red"


def _budget_colors(budgets):
  logs = np.log10(budgets)
  span = np.ptp(logs) if len(logs) > 1 else 1.0
  return [plt.cm.viridis(0.9 * (x - logs.min()) / span) for x in logs]


def plot_isoflops(runs: results_lib.Runs, budget: np.ndarray,
                  fit: approach2_lib.IsoflopFit, path: str,
                  boot: Optional[bootstrap_lib.Bootstrap] = None,
                  level: float = bootstrap_lib.DEFAULT_LEVEL) -> str:
  """IsoFLOP curves: runs, fitted parabolas and minima per budget.

  Args:
    runs: the runs fitted.
    budget: budget per run (NaN = none), as used by the fit.
    fit: approach-2 result.
    path: PNG file to write.
    boot: approach-2 bootstrap; adds intervals on each minimum's N.
    level: interval level.

  Returns:
    `path`.
  """
  fig, ax = plt.subplots(figsize=(7.5, 5))
  free = ~np.isfinite(budget)
  if free.any():
    ax.scatter(runs.n[free], runs.loss[free], s=8, c="0.75",
               label=f"no budget ({int(free.sum())} runs)", zorder=1)
  budgets = np.array([cv.budget for cv in fit.curves])
  for curve, color in zip(fit.curves, _budget_colors(budgets)):
    sel = budget == curve.budget
    label = f"{curve.budget:.2g}" + ("" if curve.used else " (excluded)")
    ax.scatter(runs.n[sel], runs.loss[sel], s=18, zorder=2, label=label,
               facecolors=color if curve.used else "none", edgecolors=color)
    if curve.used:
      grid = np.geomspace(curve.n_min, curve.n_max, 100)
      ax.plot(grid, curve.loss(grid), color=color, lw=1.2, zorder=3)
      ax.scatter([curve.n_opt], [curve.loss_opt], marker="*", s=120,
                 color=color, edgecolors="k", linewidths=0.6, zorder=4)
      key = bootstrap_lib.budget_key(curve.budget, "N_opt")
      if boot is not None and key in boot.samples:
        lo, _, hi = boot.interval(key, level)
        if np.isfinite(lo):
          # The interval as a segment: a percentile interval need not hold
          # the point estimate (error bars would then be negative).
          ax.plot([lo, hi], [curve.loss_opt] * 2, color="k", lw=1,
                  marker="|", markersize=7, zorder=5)
  ax.set_xscale("log")
  ax.set_xlabel("parameters N")
  ax.set_ylabel("loss")
  ax.set_title("IsoFLOP profiles (approach 2); stars: parabola minima"
               + (f" with {100 * level:.0f}% intervals" if boot else ""))
  ax.legend(title="budget C (FLOPs)", fontsize=7, title_fontsize=8,
            ncol=2, loc="upper right")
  ax.grid(alpha=0.3, which="both")
  _save(fig, path)
  plt.close(fig)
  return path


def _band(boot, predict, c, key, level):
  samples = {k: v[:, None] for k, v in boot.samples.items()
             if "@" not in k}
  values = predict(samples, c[None, :])[key]
  q = 100 * np.array([(1 - level) / 2, (1 + level) / 2])
  return np.percentile(values, q, axis=0)


def plot_frontier(fit2: Optional[approach2_lib.IsoflopFit],
                  fit3: Optional[approach3_lib.ParametricFit],
                  path: str,
                  boot2: Optional[bootstrap_lib.Bootstrap] = None,
                  boot3: Optional[bootstrap_lib.Bootstrap] = None,
                  c_range: Sequence[float] = (1e18, 1e22),
                  targets: Sequence[float] = (),
                  level: float = bootstrap_lib.DEFAULT_LEVEL) -> str:
  """N_opt, D_opt and L_opt against compute, both approaches with bands.

  Args:
    fit2: approach-2 result or None.
    fit3: approach-3 result or None.
    path: PNG file to write.
    boot2: approach-2 bootstrap (bands) or None.
    boot3: approach-3 bootstrap (bands) or None.
    c_range: (low, high) compute range of the data.
    targets: target budgets, marked with dotted lines.
    level: band level.

  Returns:
    `path`.
  """
  hi = max([c_range[1], *targets]) * 2
  c = np.geomspace(c_range[0] / 2, hi, 200)
  fig, axes = plt.subplots(1, 3, figsize=(15, 4.6))
  keys = ("N_opt", "D_opt", "loss")
  labels = ("N_opt (parameters)", "D_opt", "loss at the optimum")
  lines = []
  if fit2 is not None:
    p2 = {"a": fit2.n_opt.exponent, "G": fit2.n_opt.coef,
          "b": fit2.d_opt.exponent, "H": fit2.d_opt.coef,
          "loss_exponent": fit2.loss_opt.exponent,
          "loss_coef": fit2.loss_opt.coef}
    used = fit2.used
    cb = np.array([cv.budget for cv in used])
    n_opt = np.array([cv.n_opt for cv in used])
    points = (n_opt, fit2.flops.data(cb, n_opt),
              [cv.loss_opt for cv in used])
    lines.append(("approach 2", _A2_COLOR, bootstrap_lib.approach2_predict,
                  p2, boot2, points))
  if fit3 is not None:
    p3 = fit3.params.to_dict()
    pred3 = lambda s, cc: bootstrap_lib.approach3_predict(s, cc, fit3.flops)
    lines.append(("approach 3", _A3_COLOR, pred3, p3, boot3, None))
  for ax, key, ylabel in zip(axes, keys, labels):
    for name, color, predict, params, boot, points in lines:
      ax.plot(c, predict(params, c)[key], color=color, label=name)
      if boot is not None and len(next(iter(boot.samples.values()))):
        lo, up = _band(boot, predict, c, key, level)
        ax.fill_between(c, lo, up, color=color, alpha=0.2, lw=0,
                        label=f"{name} {100 * level:.0f}% band")
      if points is not None:
        ax.scatter(cb, points[keys.index(key)], color=color, s=25,
                   zorder=3, label="isoFLOP minima")
      for t in targets:
        ax.scatter([t], [predict(params, t)[key]], color=color, marker="D",
                   s=30, zorder=4)
    for t in targets:
      ax.axvline(t, color="0.5", ls=":", lw=1)
    ax.set_xscale("log")
    ax.set_yscale("log")
    if key == "loss":
      # Losses span less than a decade: plain numbers read better than 10^x.
      ax.yaxis.set_major_formatter(
          ticker.FuncFormatter(lambda y, _: f"{y:.3g}"))
    ax.set_xlabel("compute C (FLOPs)")
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3, which="both")
  axes[0].legend(fontsize=7)
  fig.suptitle("Compute-optimal allocation (dotted: target budgets)")
  _save(fig, path)
  plt.close(fig)
  return path


def plot_contours(runs: results_lib.Runs,
                  fit3: approach3_lib.ParametricFit, path: str,
                  budgets: Sequence[float] = ()) -> str:
  """Approach-3 loss contours over (N, D), runs and the frontier.

  Args:
    runs: the runs fitted (drawn coloured by their loss).
    fit3: approach-3 result.
    path: PNG file to write.
    budgets: budgets to draw as iso-compute lines D = C / (kappa N^phi).

  Returns:
    `path`.
  """
  p, law = fit3.params, fit3.flops
  n = np.geomspace(runs.n.min() / 3, runs.n.max() * 3, 200)
  d = np.geomspace(runs.d.min() / 3, runs.d.max() * 3, 200)
  loss = p.loss(n[None, :], d[:, None])
  norm = mcolors.Normalize(vmin=runs.loss.min(), vmax=runs.loss.max())
  # Contours only over the range of the data's losses, where they can be
  # compared with the points.
  lo = max(runs.loss.min() * 0.97, p.E + 0.2 * (runs.loss.min() - p.E))
  levels = np.geomspace(lo, runs.loss.max() * 1.03, 14)
  fig, ax = plt.subplots(figsize=(7.5, 5.5))
  cs = ax.contour(n, d, loss, levels=levels, cmap="magma_r", norm=norm,
                  linewidths=0.9)
  ax.clabel(cs, fmt="%.2f", fontsize=6)
  sc = ax.scatter(runs.n, runs.d, c=runs.loss, cmap="magma_r", norm=norm,
                  s=14, edgecolors="k", linewidths=0.3, zorder=3)
  fig.colorbar(sc, ax=ax, label="loss")
  for b in budgets:
    ax.plot(n, law.data(b, n), color="0.6", lw=0.6, ls="--", zorder=1)
  c = np.geomspace(law.compute(n.min(), d.min()),
                   law.compute(n.max(), d.max()), 200)
  ax.plot(p.n_opt(c, law), p.d_opt(c, law), color=_A3_COLOR, lw=2,
          label=f"compute-optimal frontier (a={p.frontier(law)['a']:.3f})")
  ax.set_xlim(n[0], n[-1])
  ax.set_ylim(d[0], d[-1])
  ax.set_xscale("log")
  ax.set_yscale("log")
  ax.set_xlabel("parameters N")
  ax.set_ylabel("data D")
  ax.set_title(f"Approach 3: L = {p.E:.3f} + {p.A:.4g}/N^{p.alpha:.3f} + "
               f"{p.B:.4g}/D^{p.beta:.3f}", fontsize=9)
  ax.legend(fontsize=8, loc="lower right")
  _save(fig, path)
  plt.close(fig)
  return path


def plot_families(frontiers, metric, path: str, *, target_flops: float,
                  level: float = bootstrap_lib.DEFAULT_LEVEL,
                  others=()) -> str:
  """Families side by side (`scaling.compare`).

  Left: the metric against training compute, every run faint, each budget's
  isoFLOP minimum, the fitted frontier with its bootstrap band (dashed past
  the data, up to `target_flops`). Right: sampling FLOPs per image against
  the metric, one marker per run that reports them.

  Args:
    frontiers: `scaling.compare.Frontier`s.
    metric: the compared `metrics.Metric` (values are drawn in its units).
    path: PNG file to write.
    target_flops: how far the frontiers are extended.
    level: band level.
    others: families without a frontier (`fit` None): their runs only,
      drawn as crosses.

  Returns:
    `path`.
  """
  fig, (ax, ax2) = plt.subplots(1, 2, figsize=(13, 5))
  colors = plt.cm.tab10(np.arange(len(frontiers) + len(others)) % 10)
  for f, color in zip(others, colors[len(frontiers):]):
    shown = metric.from_loss(f.runs.loss)
    ax.scatter(f.runs.c, shown, color=color, marker="x", s=22,
               label=f"{f.family} (runs; no frontier)")
    by_n = {n: s for n, s in f.sampling}
    keep = np.array([n in by_n for n in f.runs.n], bool)
    if keep.any():
      ax2.scatter([by_n[n] for n in f.runs.n[keep]], shown[keep],
                  color=color, marker="x", s=22, label=f.family)
  for f, color in zip(frontiers, colors):
    shown = metric.from_loss(f.runs.loss)
    ax.scatter(f.runs.c, shown, color=color, alpha=0.25, s=12)
    used = f.fit.used
    cb = np.array([cv.budget for cv in used])
    ax.scatter(cb, metric.from_loss([cv.loss_opt for cv in used]),
               color=color, s=40, zorder=3, edgecolor="k", lw=0.5)
    c_hi = float(f.runs.c.max())
    for lo_c, hi_c, style in ((float(f.runs.c.min()), c_hi, "-"),
                              (c_hi, max(target_flops, c_hi), "--")):
      c = np.geomspace(lo_c, hi_c, 100)
      label = (f"{f.family} (exponent {f.exponent:.3f})" if style == "-"
               else None)
      ax.plot(c, metric.from_loss(f.fit.loss_opt(c)), style, color=color,
              label=label)
    if f.boot is not None and len(f.boot.samples.get("loss_coef", ())):
      c = np.geomspace(float(f.runs.c.min()), max(target_flops, c_hi), 100)
      lo, up = _band(f.boot, bootstrap_lib.approach2_predict, c, "loss",
                     level)
      ax.fill_between(c, metric.from_loss(lo), metric.from_loss(up),
                      color=color, alpha=0.15, lw=0)
    if len(f.sampling):
      by_n = {n: s for n, s in f.sampling}
      n_runs = f.runs.n
      keep = np.array([n in by_n for n in n_runs])
      ax2.scatter([by_n[n] for n in n_runs[keep]], shown[keep], color=color,
                  s=18, label=f.family)
  ax.axvline(target_flops, color="0.5", ls=":", lw=1)
  for a in (ax, ax2):
    a.set_xscale("log")
    if not metric.higher_is_better:
      a.set_yscale("log")
    a.set_ylabel(metric.name + (" (higher is better)"
                                if metric.higher_is_better else ""))
    a.grid(alpha=0.3, which="both")
  ax.set_xlabel("training compute C (FLOPs)")
  ax.set_title(f"Compute-optimal frontiers ({100 * level:.0f}% bands; "
               "dashed: extrapolated)", fontsize=10)
  ax.legend(fontsize=8)
  ax2.set_xlabel("sampling FLOPs per image")
  ax2.set_title("Sampling cost of every run", fontsize=10)
  if ax2.collections:
    ax2.legend(fontsize=8)
  _save(fig, path)
  plt.close(fig)
  return path
