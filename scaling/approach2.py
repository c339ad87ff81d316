"""Chinchilla approach 2: isoFLOP profiles (Hoffmann et al. 2022, Sec. 3.2).

1. Group runs by compute budget. Runs from the jaxgen sweep carry their
   nominal `budget_flops`, used exactly. Runs without budgets (external CSVs)
   are snapped to budget centres in log10 C: either given centres
   (`budgets=`, e.g. Chinchilla's nine) or centres detected by mode seeking:
   repeatedly take the densest window of half-width `detect_tol` (0.02 dex,
   +-5%) holding at least `min_runs` (8) runs not yet taken; its centre is
   the median log10 C of those runs. The narrow window and the run count
   pick out the tight clusters that isoFLOP sweeps leave, not chance
   coincidences of scattered runs (on Epoch's Chinchilla extraction this
   finds exactly the nine budgets, ~5% below their nominal values). Each run
   then goes to the nearest centre within `tol` (0.05 dex, +-12%); runs
   further from every centre are left out of approach 2, with a warning that
   counts them. The centre, not each run's own C, is the budget C.
2. Per budget, fit loss = c2 x^2 + c1 x + c0 with x = ln N (numpy polyfit).
   The vertex N_opt is used only when c2 > 0 and the vertex lies inside the
   sampled range of N and the budget has at least 3 distinct N; otherwise a
   FitWarning names the budget and it is excluded.
3. OLS in log space over the usable budgets: N_opt = G C^a, D_opt = H C^b
   with D_opt = C / (k N_opt) (k = 6 for C = 6ND; C / (kappa N_opt^phi)
   under a size-dependent `scaling.flops_law.FlopsLaw`), and L_opt = L0 C^gamma
   with L_opt the parabola's minimum loss.
"""

import dataclasses
import warnings
from typing import Dict, List, Optional, Sequence, Union

import numpy as np

from scaling import flops_law
from scaling import results as results_lib

DEFAULT_TOL_DEX = 0.05
DEFAULT_DETECT_TOL_DEX = 0.02
DEFAULT_MIN_RUNS = 8
# A parabola has three coefficients.
MIN_SIZES_PER_BUDGET = 3
# A power law through fewer than two budgets is undetermined.
MIN_BUDGETS = 2
# Hoffmann et al.'s nine isoFLOP budgets (Sec. 3.2).
CHINCHILLA_BUDGETS = (6e18, 1e19, 3e19, 6e19, 1e20, 3e20, 6e20, 1e21, 3e21)


def detect_budgets(c, tol: float = DEFAULT_DETECT_TOL_DEX,
                   min_runs: int = DEFAULT_MIN_RUNS) -> np.ndarray:
  """Finds isoFLOP budget centres in a set of compute values.

  Args:
    c: FLOPs per run.
    tol: half-width of a budget window in log10 C (dex).
    min_runs: fewest runs a window needs to count as a budget.

  Returns:
    Sorted budget centres in FLOPs (10 ** median log10 C of each window).
  """
  x = np.log10(np.asarray(c, float))
  free = np.ones(len(x), bool)
  centres = []
  while free.sum() >= min_runs:
    xf = x[free]
    counts = (np.abs(xf[:, None] - xf[None, :]) <= tol).sum(axis=1)
    if counts.max() < min_runs:
      break
    centre = xf[np.argmax(counts)]
    # Mean-shift style refinement: re-centre on the window's median.
    for _ in range(10):
      new = np.median(xf[np.abs(xf - centre) <= tol])
      if new == centre:
        break
      centre = new
    if np.sum(np.abs(xf - centre) <= tol) < min_runs:
      # The refined window lost runs; keep the original window instead.
      centre = xf[np.argmax(counts)]
    # Taking runs out to twice the window keeps a second centre from forming
    # on the same budget's tail.
    free &= ~(np.abs(x - centre) <= 2 * tol)
    centres.append(centre)
  return np.sort(10.0**np.array(centres))


def assign_budgets(c, budgets: Optional[Sequence[float]] = None,
                   tol: float = DEFAULT_TOL_DEX,
                   detect_tol: float = DEFAULT_DETECT_TOL_DEX,
                   min_runs: int = DEFAULT_MIN_RUNS) -> np.ndarray:
  """Snaps each run's compute to the nearest budget centre within `tol`.

  Args:
    c: FLOPs per run.
    budgets: budget centres; None detects them with `detect_budgets`.
    tol: largest |log10 C - log10 budget| for a run to join a budget.
    detect_tol: window half-width for `detect_budgets`.
    min_runs: passed to `detect_budgets`.

  Returns:
    Budget per run, NaN for runs near no budget.
  """
  c = np.asarray(c, float)
  if budgets is None:
    budgets = detect_budgets(c, detect_tol, min_runs)
  budgets = np.asarray(budgets, float)
  out = np.full(len(c), np.nan)
  if len(budgets) == 0:
    return out
  dist = np.abs(np.log10(c)[:, None] - np.log10(budgets)[None, :])
  nearest = np.argmin(dist, axis=1)
  ok = dist[np.arange(len(c)), nearest] <= tol
  out[ok] = budgets[nearest[ok]]
  return out


def run_budgets(runs: results_lib.Runs,
                budgets: Optional[Sequence[float]] = None,
                tol: float = DEFAULT_TOL_DEX,
                detect_tol: float = DEFAULT_DETECT_TOL_DEX,
                min_runs: int = DEFAULT_MIN_RUNS) -> np.ndarray:
  """Budget per run: the runs' own budgets when all have one, else snapped.

  Args:
    runs: runs.
    budgets: explicit centres to snap C to (overrides the runs' budgets).
    tol: snapping tolerance in dex.
    detect_tol: window half-width for budget detection.
    min_runs: fewest runs per detected budget.

  Returns:
    Budget per run, NaN where a run belongs to none.
  """
  if budgets is None and runs.has_budgets:
    return runs.budget.copy()
  return assign_budgets(runs.c, budgets, tol, detect_tol, min_runs)


@dataclasses.dataclass(frozen=True)
class PowerLaw:
  """y = coef * x ** exponent, fitted by OLS of ln y on ln x."""

  coef: float
  exponent: float

  @classmethod
  def fit(cls, x, y) -> "PowerLaw":
    slope, intercept = np.polyfit(np.log(x), np.log(y), 1)
    return cls(coef=float(np.exp(intercept)), exponent=float(slope))

  def __call__(self, x) -> np.ndarray:
    return self.coef * np.asarray(x, float)**self.exponent


@dataclasses.dataclass(frozen=True)
class IsoflopCurve:
  """One budget's parabola L = curvature (ln N - ln N_opt)^2 + loss_opt."""

  budget: float
  n_runs: int
  n_min: float
  n_max: float
  curvature: float
  n_opt: float
  loss_opt: float
  used: bool
  reason: str = ""
  # OLS standard error of the curvature (NaN with 3 runs: no residual).
  curvature_se: float = float("nan")

  @property
  def weak(self) -> bool:
    """The curvature is within 2 standard errors of 0: the loss is so flat
    against ln N that noise may place the vertex (pitfall 12 of the
    notes: diffusion losses are flat in N)."""
    return bool(self.curvature < 2 * self.curvature_se)

  def loss(self, n) -> np.ndarray:
    """The fitted parabola at parameter counts `n`."""
    return self.curvature * (np.log(n) - np.log(self.n_opt))**2 + (
        self.loss_opt)


def fit_parabola(budget: float, n, loss) -> IsoflopCurve:
  """Fits one isoFLOP parabola of loss against ln N and checks its minimum.

  Args:
    budget: the budget (for messages).
    n: parameter counts of the budget's runs.
    loss: their losses.

  Returns:
    IsoflopCurve; `used` is False (with `reason`) when there are fewer than
    3 distinct N, the parabola is not convex, its vertex lies outside the
    sampled range of N, or its minimum loss is not positive.
  """
  n = np.asarray(n, float)
  loss = np.asarray(loss, float)
  x = np.log(n)
  common = dict(budget=float(budget), n_runs=len(n),
                n_min=float(n.min()), n_max=float(n.max()))
  sizes = len(np.unique(n))
  if sizes < MIN_SIZES_PER_BUDGET:
    return IsoflopCurve(curvature=np.nan, n_opt=np.nan, loss_opt=np.nan,
                        used=False, reason=f"{sizes} distinct model sizes, "
                        f"a parabola needs {MIN_SIZES_PER_BUDGET}", **common)
  # Centring x keeps the 3x3 normal equations well conditioned.
  x0 = x.mean()
  if len(x) > 3:
    # numpy scales the covariance by RSS / (runs - 3): OLS's standard error.
    (c2, c1, c0), cov = np.polyfit(x - x0, loss, 2, cov=True)
    common["curvature_se"] = float(np.sqrt(cov[0, 0]))
  else:  # No residual to estimate the noise from.
    c2, c1, c0 = np.polyfit(x - x0, loss, 2)
  if not c2 > 0:
    return IsoflopCurve(curvature=float(c2), n_opt=np.nan, loss_opt=np.nan,
                        used=False, reason=f"parabola not convex "
                        f"(c2={c2:.3g})", **common)
  x_opt = x0 - c1 / (2 * c2)
  curve = IsoflopCurve(curvature=float(c2), n_opt=float(np.exp(x_opt)),
                       loss_opt=float(c0 - c1 * c1 / (4 * c2)), used=True,
                       **common)
  if not x.min() <= x_opt <= x.max():
    return dataclasses.replace(
        curve, used=False, reason=f"minimum at N={np.exp(x_opt):.3g} outside "
        f"the sampled N range [{n.min():.3g}, {n.max():.3g}]")
  if not curve.loss_opt > 0:
    # The loss law is a power law (fitted in log space): one such minimum
    # made the whole frontier NaN. Happens for 1 - accuracy near 0.
    return dataclasses.replace(
        curve, used=False, reason=f"the parabola's minimum loss "
        f"{curve.loss_opt:.3g} is not positive (a power law of the loss "
        "needs it; a metric near its best, e.g. 1 - accuracy near 0, cannot "
        "be extrapolated)")
  return curve


@dataclasses.dataclass(frozen=True)
class IsoflopFit:
  """Result of `fit_isoflops`.

  Attributes:
    curves: every budget's parabola (used or not), by budget.
    n_opt: N_opt = G C^a (coef G, exponent a).
    d_opt: D_opt = H C^b.
    loss_opt: L_opt = L0 C^gamma.
    flops: the training-compute law D_opt = flops.data(C, N_opt) takes.
    n_unassigned: runs that belonged to no budget.
  """

  curves: List[IsoflopCurve]
  n_opt: PowerLaw
  d_opt: PowerLaw
  loss_opt: PowerLaw
  flops: flops_law.FlopsLaw
  n_unassigned: int = 0

  @property
  def used(self) -> List[IsoflopCurve]:
    return [cv for cv in self.curves if cv.used]

  def to_dict(self) -> Dict[str, object]:
    """JSON-ready summary: exponents, coefficients and per-budget minima."""
    return {
        "a": self.n_opt.exponent, "G": self.n_opt.coef,
        "b": self.d_opt.exponent, "H": self.d_opt.coef,
        "loss_exponent": self.loss_opt.exponent,
        "loss_coef": self.loss_opt.coef, "flops": self.flops.to_dict(),
        "n_budgets_used": len(self.used),
        "n_runs_used": int(sum(cv.n_runs for cv in self.used)),
        "n_runs_unassigned": self.n_unassigned,
        "budgets": [dataclasses.asdict(cv) for cv in self.curves],
    }


def fit_isoflops(n, loss, budget, *,
                 k: Union[float, flops_law.FlopsLaw] = 6.0,
                 warn: bool = True) -> IsoflopFit:
  """Approach 2 on runs already assigned to budgets.

  Args:
    n: parameter count per run.
    loss: final loss per run.
    budget: budget per run (NaN = belongs to no budget, ignored).
    k: C = k N D constant, for D_opt = C / (k N_opt), or a
      `flops_law.FlopsLaw` (D_opt = C / (kappa N_opt^phi)).
    warn: emit a FitWarning for each excluded budget (the bootstrap turns
      this off).

  Returns:
    IsoflopFit.

  Raises:
    ValueError: fewer than 2 budgets with an interior minimum.
  """
  n, loss, budget = (np.asarray(v, float).ravel() for v in (n, loss, budget))
  assigned = np.isfinite(budget)
  curves = []
  for b in np.unique(budget[assigned]):
    sel = budget == b
    curve = fit_parabola(b, n[sel], loss[sel])
    if not curve.used and warn:
      warnings.warn(f"approach 2: budget {b:.3g} FLOPs excluded: "
                    f"{curve.reason}", results_lib.FitWarning, stacklevel=2)
    elif curve.weak and warn:
      warnings.warn(
          f"approach 2: budget {b:.3g} FLOPs: the parabola's curvature "
          f"{curve.curvature:.3g} is within 2 standard errors "
          f"({curve.curvature_se:.3g}) of 0, so noise may place its minimum; "
          "add runs, or sizes farther from the minimum",
          results_lib.FitWarning, stacklevel=2)
    curves.append(curve)
  used = [cv for cv in curves if cv.used]
  if len(used) < MIN_BUDGETS:
    raise ValueError(
        f"approach 2 needs isoFLOP minima at >= {MIN_BUDGETS} budgets "
        f"(each >= {MIN_SIZES_PER_BUDGET} model sizes); got {len(used)} of "
        f"{len(curves)} budgets from {int(assigned.sum())} runs (the "
        "warnings say why each was left out); add sizes around each "
        "minimum")
  c = np.array([cv.budget for cv in used])
  n_opt = np.array([cv.n_opt for cv in used])
  law = flops_law.FlopsLaw.of(k)
  return IsoflopFit(
      curves=curves, n_opt=PowerLaw.fit(c, n_opt),
      d_opt=PowerLaw.fit(c, law.data(c, n_opt)),
      loss_opt=PowerLaw.fit(c, [cv.loss_opt for cv in used]), flops=law,
      n_unassigned=int((~assigned).sum()))
