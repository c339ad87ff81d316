"""Bootstrap intervals for approaches 2 and 3, and extrapolation to budgets.

Resampling (runs drawn with replacement, `n_resamples` times, seeded):
- Approach 3: all runs are resampled, as Epoch did (Besiroglu et al. 2024
  used 4000 full-size resamples). Each resample is refitted with L-BFGS from
  the full-data optimum plus the resample's `top_k` best grid starts
  (default 4) instead of the 100 used for the point fit: the full-data
  optimum is an excellent start for a resample, and the few grid starts
  catch resamples whose optimum moved to another basin.
- Approach 2: runs are resampled within each budget (stratified), since the
  budgets are a design choice, not a random draw; the runs' budget
  assignment is kept from the full data. A budget whose resampled parabola
  has no interior minimum is dropped from that resample (the same rule as
  the point fit); resamples with fewer than 2 usable budgets are counted as
  failed and skipped.

Intervals are percentiles of the resampled estimates: (1 - level)/2, 1/2 and
(1 + level)/2, i.e. 10/50/90 for the default level 0.8 (Chinchilla's Table 2
convention). Every fitted quantity gets one, and so do the extrapolated
N_opt, D_opt and loss at each target budget.
"""

import dataclasses
import warnings
from typing import Dict, Optional, Sequence

import numpy as np

from scaling import approach2 as approach2_lib
from scaling import approach3 as approach3_lib
from scaling import results as results_lib

DEFAULT_LEVEL = 0.8
DEFAULT_BOOTSTRAP_TOP_K = 4
_A2_KEYS = ("a", "G", "b", "H", "loss_exponent", "loss_coef")
_A3_KEYS = ("E", "A", "B", "alpha", "beta", "a", "b", "G")


@dataclasses.dataclass(frozen=True)
class Bootstrap:
  """Resampled estimates of one approach.

  Attributes:
    samples: quantity name -> (n_ok,) array of resampled estimates.
    n_resamples: resamples drawn.
    n_failed: resamples that could not be fitted (skipped).
    seed: the seed used.
  """

  samples: Dict[str, np.ndarray]
  n_resamples: int
  n_failed: int
  seed: int

  def interval(self, name: str, level: float = DEFAULT_LEVEL) -> np.ndarray:
    """(lo, median, hi) percentiles of a quantity at a central level.

    NaN samples (a budget excluded from a resample) are left out.
    """
    q = 100 * np.array([(1 - level) / 2, 0.5, (1 + level) / 2])
    values = self.samples[name]
    if not np.isfinite(values).any():
      return np.full(3, np.nan)
    return np.nanpercentile(values, q)

  def intervals(self, level: float = DEFAULT_LEVEL) -> Dict[str, Dict]:
    """All quantities' intervals as {name: {lo, median, hi}}."""
    out = {}
    for name in self.samples:
      lo, med, hi = self.interval(name, level)
      out[name] = {"lo": float(lo), "median": float(med), "hi": float(hi)}
    return out


def budget_key(budget: float, name: str) -> str:
  """Sample key of a per-budget quantity, e.g. 'budget 1e+20: N_opt'."""
  return f"budget {budget:.4g}: {name}"


def _isoflop_params(fit: approach2_lib.IsoflopFit) -> Dict[str, float]:
  out = {"a": fit.n_opt.exponent, "G": fit.n_opt.coef,
         "b": fit.d_opt.exponent, "H": fit.d_opt.coef,
         "loss_exponent": fit.loss_opt.exponent,
         "loss_coef": fit.loss_opt.coef}
  for cv in fit.curves:
    out[budget_key(cv.budget, "N_opt")] = cv.n_opt if cv.used else np.nan
    out[budget_key(cv.budget, "loss_opt")] = (cv.loss_opt if cv.used
                                              else np.nan)
  return out


def approach2_predict(params: Dict[str, np.ndarray],
                      c) -> Dict[str, np.ndarray]:
  """N_opt, D_opt and loss at compute `c` from approach-2 power laws.

  Args:
    params: dict with a, G, b, H, loss_exponent, loss_coef (scalars or
      arrays of samples).
    c: compute (scalar or array, broadcast against the samples).

  Returns:
    dict with N_opt, D_opt, loss.
  """
  c = np.asarray(c, float)
  return {"N_opt": params["G"] * c**params["a"],
          "D_opt": params["H"] * c**params["b"],
          "loss": params["loss_coef"] * c**params["loss_exponent"]}


def approach3_predict(params: Dict[str, np.ndarray], c,
                      k: approach3_lib.Flops) -> Dict[str, np.ndarray]:
  """N_opt, D_opt and loss on the approach-3 frontier at compute `c`.

  Args:
    params: dict with E, A, B, alpha, beta (scalars or arrays of samples).
    c: compute (broadcast against the samples).
    k: C = k N D constant, or a `flops_law.FlopsLaw`.

  Returns:
    dict with N_opt, D_opt, loss.
  """
  p = approach3_lib.LossParams(*(np.asarray(params[x], float) for x in
                                 ("E", "A", "B", "alpha", "beta")))
  # n_opt and d_opt vectorise over the samples (G is never a Python float).
  n_opt, d_opt = p.n_opt(c, k), p.d_opt(c, k)
  return {"N_opt": n_opt, "D_opt": d_opt, "loss": p.loss(n_opt, d_opt)}


def _add_targets(samples, predict, targets):
  for c in targets:
    for name, value in predict(samples, c).items():
      samples[f"{name}@{c:.4g}"] = value


# Why approach 2 gets no interval when every budget has only 3 runs.
NO_APPROACH2_INTERVAL = ("every resample that fits is the fit itself: too "
                         "few runs per budget")


# Why a resample of each approach is left out.
_RESAMPLE_FAILURE = {
    "approach 2": "too few usable budgets",
    "approach 3": "the fit failed or found no compute-optimal frontier"}


def warn_if_few_resamples(approach: str, failed: int, total: int,
                          who: Optional[str] = None) -> None:
  """Warns (FitWarning) when intervals rest on under half the resamples.

  Args:
    approach: "approach 2" or "approach 3" (names the reason resamples fail).
    failed: resamples that could not be fitted (`Bootstrap.n_failed`).
    total: resamples drawn.
    who: what the warning names (default `approach`; e.g. a family).
  """
  if total and failed > total / 2:
    warnings.warn(f"{who or approach}: only {total - failed} of {total} "
                  f"bootstrap resamples could be fitted (the others: "
                  f"{_RESAMPLE_FAILURE[approach]}); its intervals rest on "
                  "those and are too narrow if anything",
                  results_lib.FitWarning, stacklevel=2)


def approach2_interval_is_degenerate(fit) -> bool:
  """Whether resampling runs within budgets can only reproduce `fit`.

  With 3 runs per budget a resample fits a parabola only if it draws all 3,
  i.e. the original runs: the bootstrap's spread would be 0 by
  construction, not a measured certainty.

  Args:
    fit: an approach-2 fit (`approach2.fit_isoflops`).

  Returns:
    True when no budget the fit used has more runs than a parabola needs
    (the bootstrap resamples only those).
  """
  return all(cv.n_runs <= approach2_lib.MIN_SIZES_PER_BUDGET
             for cv in fit.used)


def used_budgets(budget, fit) -> np.ndarray:
  """Run budgets with those `fit` excluded set to NaN (not resampled).

  A budget the point fit excluded (its minimum outside its sizes) came
  back in the resamples whose parabola had a vertex just inside the range,
  pinned at its edge: intervals of another estimator than the point fit's,
  pulled away from it.

  Args:
    budget: budget per run (NaN = unassigned).
    fit: the approach-2 point fit of those runs.

  Returns:
    The budgets to pass to `bootstrap_approach2`.
  """
  budget = np.asarray(budget, float)
  return np.where(np.isin(budget, [cv.budget for cv in fit.used]), budget,
                  np.nan)


def bootstrap_approach2(n, loss, budget, *, k: approach3_lib.Flops,
                        n_resamples: int,
                        seed: int = 0,
                        targets: Sequence[float] = ()) -> Bootstrap:
  """Stratified (within-budget) bootstrap of approach 2.

  Args:
    n: parameter count per run.
    loss: loss per run.
    budget: budget per run (NaN = unassigned, ignored).
    k: C = k N D constant, or a `flops_law.FlopsLaw`.
    n_resamples: number of resamples.
    seed: RNG seed (same seed, same result).
    targets: budgets to extrapolate N_opt, D_opt, loss to.

  Returns:
    Bootstrap with samples of a, G, b, H, loss_exponent, loss_coef, each
    budget's parabola minimum ('budget C: N_opt', 'budget C: loss_opt';
    NaN in resamples that excluded the budget) and `N_opt@C`, `D_opt@C`,
    `loss@C` for each target C.
  """
  n, loss, budget = (np.asarray(v, float) for v in (n, loss, budget))
  rng = np.random.default_rng([seed, 2])
  groups = [np.flatnonzero(budget == b)
            for b in np.unique(budget[np.isfinite(budget)])]
  rows, failed = [], 0
  for _ in range(n_resamples):
    idx = np.concatenate([rng.choice(g, size=len(g)) for g in groups])
    try:
      fit = approach2_lib.fit_isoflops(n[idx], loss[idx], budget[idx], k=k,
                                       warn=False)
    except (ValueError, np.linalg.LinAlgError):
      failed += 1
      continue
    rows.append(_isoflop_params(fit))
  keys = list(_A2_KEYS) + [budget_key(b, name)
                            for b in np.unique(budget[np.isfinite(budget)])
                            for name in ("N_opt", "loss_opt")]
  samples = {key: np.array([r.get(key, np.nan) for r in rows])
             for key in keys}
  _add_targets(samples, approach2_predict, targets)
  return Bootstrap(samples, n_resamples, failed, seed)


def _refit_resamples(n, d, loss, point, n_resamples, rng, top_k, grid):
  rows, failed = [], 0
  for _ in range(n_resamples):
    idx = rng.integers(0, len(n), size=len(n))
    try:
      with warnings.catch_warnings():
        # Resamples can make L-BFGS overflow exp() on far-off starts.
        warnings.simplefilter("ignore", RuntimeWarning)
        fit = approach3_lib.fit_parametric(
            n[idx], d[idx], loss[idx], delta=point.delta, grid=grid,
            top_k=top_k, extra_starts=point.params.theta, k=point.flops)
    except ValueError:
      failed += 1
      continue
    p = fit.params
    if not p.has_frontier:
      # No N_opt, D_opt or G to sample: counted like an unfittable resample.
      failed += 1
      continue
    rows.append({**p.to_dict(), **p.frontier(point.flops)})
  return rows, failed


def bootstrap_approach3(n, d, loss, *, point: approach3_lib.ParametricFit,
                        n_resamples: int, seed: int = 0,
                        targets: Sequence[float] = (),
                        top_k: int = DEFAULT_BOOTSTRAP_TOP_K,
                        grid: Optional[Dict[str, np.ndarray]] = None
                        ) -> Bootstrap:
  """Full-resample bootstrap of approach 3 (Epoch's protocol).

  Args:
    n: parameter count per run.
    d: data per run.
    loss: loss per run.
    point: the full-data fit (its optimum seeds every refit; its FLOPs
      law and delta are reused).
    n_resamples: number of resamples.
    seed: RNG seed (same seed, same result).
    targets: budgets to extrapolate N_opt, D_opt, loss to.
    top_k: grid starts per refit besides the full-data optimum.
    grid: starting grid (default Chinchilla's).

  Returns:
    Bootstrap with samples of E, A, B, alpha, beta, a, b, G and the targets.
  """
  n, d, loss = (np.asarray(v, float) for v in (n, d, loss))
  rng = np.random.default_rng([seed, 3])
  rows, failed = _refit_resamples(n, d, loss, point, n_resamples, rng, top_k,
                                  grid)
  samples = {key: np.array([r[key] for r in rows]) for key in _A3_KEYS}
  _add_targets(samples, lambda s, c: approach3_predict(s, c, point.flops),
               targets)
  return Bootstrap(samples, n_resamples, failed, seed)
