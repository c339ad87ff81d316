"""Chinchilla approach 3: parametric loss L(N, D) = E + A/N^alpha + B/D^beta.

The fit follows Hoffmann et al. (2022, App. D.2) as re-run by Besiroglu et al.
(Epoch AI, 2024):

  min over theta = (a, b, e, alpha, beta) of
    sum_i Huber_delta(LSE(a - alpha ln N_i, b - beta ln D_i, e) - ln L_i)

with A = exp(a), B = exp(b), E = exp(e), delta = 1e-3 and L-BFGS (scipy's
L-BFGS-B with an analytic gradient) from the Chinchilla grid of starting
points: alpha, beta in {0, 0.5, ..., 2}, e in {-1, -0.5, ..., 1}, a, b in
{0, 5, ..., 25} (4500 starts). The Huber terms are SUMMED, not averaged:
averaging makes the objective ~n times smaller, so L-BFGS's absolute stopping
tolerances fire early (Epoch's diagnosis of the original fit).

Speed. Plain scipy (numerical gradients) from all 4500 starts took 2.3 min
in the research notes; with the analytic, vectorised gradient here the full
grid takes ~25 s on the Epoch data. The default evaluates the objective of
every grid point at once (one numpy pass) and runs L-BFGS only from the
`top_k` best starts (`DEFAULT_TOP_K` = 100): under 1 s. Many starts share the
optimum's basin (1425 of 4500 on the Epoch data), and there the top-100 fit
matches the full grid to 1e-6 in every parameter (`--check_full_grid`, see
experiments/scaling_chinchilla/report.md; `top_k=None` runs the full grid).
BLAS is held to one thread during L-BFGS (see `single_blas_thread`).

Compute-optimal frontier. With training compute C = k N D (k = 6 for
language models counted in tokens):

  N_opt(C) = G (C/k)^a,  D_opt(C) = (C/k)^b / G,
  G = (alpha A / (beta B))^(1/(alpha+beta)),
  a = beta/(alpha+beta), b = alpha/(alpha+beta).

Image models spend FLOPs per example that are not proportional to N; the
frontier then takes C = kappa N^phi D fitted over the runs (see
`scaling.flops_law`, which also gives the closed form).
"""

import contextlib
import dataclasses
import itertools
from typing import Dict, Optional, Sequence, Union

import numpy as np
from scipy import optimize

from scaling import flops_law

try:
  import threadpoolctl  # pylint: disable=g-import-not-at-top
except ImportError:  # Optional: only a speed-up.
  threadpoolctl = None

HUBER_DELTA = 1e-3
DEFAULT_TOP_K = 100
# Approach 3 has five parameters; fewer than six runs would interpolate.
MIN_POINTS = 6

# The Chinchilla initialisation grid (Hoffmann et al. 2022, App. D.2).
CHINCHILLA_GRID = {
    "a": np.arange(0.0, 25.0 + 1e-9, 5.0),
    "b": np.arange(0.0, 25.0 + 1e-9, 5.0),
    "e": np.arange(-1.0, 1.0 + 1e-9, 0.5),
    "alpha": np.arange(0.0, 2.0 + 1e-9, 0.5),
    "beta": np.arange(0.0, 2.0 + 1e-9, 0.5),
}
_THETA_NAMES = ("a", "b", "e", "alpha", "beta")
# C = k N D as a plain k, or C = kappa N^phi D.
Flops = Union[float, flops_law.FlopsLaw]


@dataclasses.dataclass(frozen=True)
class LossParams:
  """Parameters of L(N, D) = E + A / N^alpha + B / D^beta."""

  E: float  # pylint: disable=invalid-name
  A: float  # pylint: disable=invalid-name
  B: float  # pylint: disable=invalid-name
  alpha: float
  beta: float

  @classmethod
  def from_theta(cls, theta: Sequence[float]) -> "LossParams":
    """Builds parameters from the log-space vector (a, b, e, alpha, beta)."""
    a, b, e, alpha, beta = (float(v) for v in theta)
    # A fit the runs do not pin may overflow to inf (warned about by name
    # in scaling.fit, not by numpy).
    with np.errstate(over="ignore"):
      return cls(E=float(np.exp(e)), A=float(np.exp(a)), B=float(np.exp(b)),
                 alpha=alpha, beta=beta)

  @property
  def theta(self) -> np.ndarray:
    """The log-space vector (ln A, ln B, ln E, alpha, beta)."""
    return np.array([np.log(self.A), np.log(self.B), np.log(self.E),
                     self.alpha, self.beta])

  def loss(self, n, d) -> np.ndarray:
    """Predicted loss at parameters `n` and data `d` (broadcasting)."""
    n = np.asarray(n, float)
    d = np.asarray(d, float)
    with np.errstate(over="ignore", invalid="ignore"):
      return self.E + self.A / n**self.alpha + self.B / d**self.beta

  @property
  def has_frontier(self) -> bool:
    """Whether L falls with both N and D (alpha, beta > 0 and A, B finite).

    Only then does loss along C = k N D have a minimum, i.e. a
    compute-optimal frontier; otherwise G would be a fractional power of
    a negative number (or 0 / inf) and a, b meaningless.
    """
    return bool(np.all(np.isfinite([self.A, self.B, self.alpha, self.beta]))
                and self.alpha > 0 and self.beta > 0 and self.A > 0
                and self.B > 0)

  @property
  def a(self) -> float:
    """Exponent of N_opt ~ C^a under C = k N D: beta / (alpha + beta)."""
    return self.frontier()["a"]

  @property
  def b(self) -> float:
    """Exponent of D_opt ~ C^b under C = k N D: alpha / (alpha + beta)."""
    return self.frontier()["b"]

  @property
  def G(self) -> float:  # pylint: disable=invalid-name
    """Frontier coefficient (alpha A / (beta B))^(1 / (alpha + beta)) under
    C = k N D; NaN without a frontier (see `has_frontier`)."""
    return self.frontier()["G"] if self.has_frontier else float("nan")

  def n_opt(self, c, k: Flops = 6.0) -> np.ndarray:
    """Loss-minimising N at compute `c` under C = k N D (or a FlopsLaw).

    Vectorises over array-valued parameters (bootstrap samples).
    """
    law = flops_law.FlopsLaw.of(k)
    g, a = law.frontier(self.alpha, self.beta, self.A, self.B)
    return g * (np.asarray(c, float) / law.kappa)**a

  def d_opt(self, c, k: Flops = 6.0) -> np.ndarray:
    """Loss-minimising D at compute `c` under C = k N D (or a FlopsLaw)."""
    law = flops_law.FlopsLaw.of(k)
    return law.data(c, self.n_opt(c, law))

  def loss_opt(self, c, k: Flops = 6.0) -> np.ndarray:
    """Loss on the compute-optimal frontier at compute `c`."""
    return self.loss(self.n_opt(c, k), self.d_opt(c, k))

  def frontier(self, k: Flops = 6.0) -> Dict[str, float]:
    """G, a and b of N_opt = G (C/kappa)^a, D_opt ∝ C^b under `k`."""
    law = flops_law.FlopsLaw.of(k)
    g, a = law.frontier(self.alpha, self.beta, self.A, self.B)
    return {"G": float(g), "a": float(a), "b": float(1 - law.phi * a)}

  def to_dict(self) -> Dict[str, float]:
    return {"E": self.E, "A": self.A, "B": self.B, "alpha": self.alpha,
            "beta": self.beta}


# Published parameter sets, for comparison on the same objective.
# Hoffmann et al. 2022 unrounded values from the paper's TeX source (as used
# by Epoch's notebook) and the rounded values printed in App. D.2.
HOFFMANN_UNROUNDED = LossParams.from_theta(
    [6.0073404, 6.0179186, 0.5267228, 0.33917084, 0.2849083])
HOFFMANN_ROUNDED = LossParams(E=1.69, A=406.4, B=410.7, alpha=0.34, beta=0.28)
# Besiroglu et al. 2024, Table 1 (240 points).
EPOCH_2024 = LossParams(E=1.8172, A=482.01, B=2085.43, alpha=0.3478,
                        beta=0.3658)


@dataclasses.dataclass(frozen=True)
class ParametricFit:
  """Result of `fit_parametric`.

  Attributes:
    params: fitted LossParams (full precision).
    objective: summed Huber objective at the optimum.
    n_points: runs used.
    flops: the training-compute law the frontier takes (C = kappa N^phi D).
    delta: Huber delta.
    start: the first start (a, b, e, alpha, beta) that reached the optimum.
    n_starts: L-BFGS runs made.
    n_at_best: runs that ended within a relative 1e-6 of the best objective;
      1 means the optimum was found once only, so a wider or denser grid
      (or `top_k=None`) is worth a try.
    converged: scipy's success flag for the best run.
  """

  params: LossParams
  objective: float
  n_points: int
  delta: float
  start: np.ndarray
  n_starts: int
  n_at_best: int
  converged: bool
  flops: flops_law.FlopsLaw = flops_law.FlopsLaw()

  def to_dict(self) -> Dict[str, object]:
    """A JSON-ready summary: parameters, exponents, G and settings."""
    p = self.params
    frontier = p.has_frontier
    shape = (p.frontier(self.flops) if frontier
             else dict.fromkeys(("G", "a", "b")))
    return {
        **p.to_dict(), **shape, "frontier": frontier,
        "flops": self.flops.to_dict(),
        "objective": self.objective, "n_points": self.n_points,
        "huber_delta": self.delta, "n_starts": self.n_starts,
        "converged": self.converged,
        "n_at_best": self.n_at_best,
        "start": dict(zip(_THETA_NAMES, map(float, self.start))),
    }


def init_grid(grid: Optional[Dict[str, np.ndarray]] = None) -> np.ndarray:
  """All combinations of a starting grid as rows (a, b, e, alpha, beta).

  Args:
    grid: dict with keys a, b, e, alpha, beta; default the Chinchilla grid.

  Returns:
    (M, 5) array of starting points.
  """
  grid = CHINCHILLA_GRID if grid is None else grid
  axes = [np.asarray(grid[name], float) for name in _THETA_NAMES]
  return np.array(list(itertools.product(*axes)))


def _huber(r: np.ndarray, delta: float) -> np.ndarray:
  absr = np.abs(r)
  return np.where(absr <= delta, 0.5 * r * r, delta * (absr - 0.5 * delta))


def grid_objective(thetas: np.ndarray, log_n: np.ndarray, log_d: np.ndarray,
                   log_loss: np.ndarray,
                   delta: float = HUBER_DELTA) -> np.ndarray:
  """Summed Huber objective for many parameter vectors at once.

  Args:
    thetas: (M, 5) rows (a, b, e, alpha, beta).
    log_n: (P,) ln N of the runs.
    log_d: (P,) ln D.
    log_loss: (P,) ln L.
    delta: Huber delta.

  Returns:
    (M,) objective values.
  """
  thetas = np.atleast_2d(np.asarray(thetas, float))
  out = np.empty(len(thetas))
  # Chunk so that the (rows, P) temporaries stay around 16 MB.
  step = max(1, 2_000_000 // max(1, len(log_n)))
  for i in range(0, len(thetas), step):
    t = thetas[i:i + step]
    t1 = t[:, 0:1] - t[:, 3:4] * log_n
    t2 = t[:, 1:2] - t[:, 4:5] * log_d
    t3 = np.broadcast_to(t[:, 2:3], t1.shape)
    lse = np.logaddexp(np.logaddexp(t1, t2), t3)
    out[i:i + step] = _huber(lse - log_loss, delta).sum(axis=1)
  return out


def objective_and_grad(theta: np.ndarray, log_n: np.ndarray,
                       log_d: np.ndarray, log_loss: np.ndarray,
                       delta: float = HUBER_DELTA):
  """Summed Huber objective and its analytic gradient at one theta.

  Args:
    theta: (a, b, e, alpha, beta).
    log_n: (P,) ln N.
    log_d: (P,) ln D.
    log_loss: (P,) ln L.
    delta: Huber delta.

  Returns:
    (objective, gradient of shape (5,)).
  """
  a, b, e, alpha, beta = theta
  t1 = a - alpha * log_n
  t2 = b - beta * log_d
  m = np.maximum(np.maximum(t1, t2), e)
  w1 = np.exp(t1 - m)
  w2 = np.exp(t2 - m)
  w3 = np.exp(e - m)
  s = w1 + w2 + w3
  r = m + np.log(s) - log_loss
  absr = np.abs(r)
  inside = absr <= delta
  f = np.where(inside, 0.5 * r * r, delta * (absr - 0.5 * delta)).sum()
  # Huber'(r) = clip(r, -delta, delta); dLSE/dt_j = softmax weight j.
  h = np.clip(r, -delta, delta) / s
  g1 = h * w1
  g2 = h * w2
  grad = np.array([g1.sum(), g2.sum(), (h * w3).sum(),
                   -(g1 * log_n).sum(), -(g2 * log_d).sum()])
  return f, grad


def score(params: LossParams, n, d, loss, delta: float = HUBER_DELTA) -> float:
  """The approach-3 objective of a given parameter set on data.

  Args:
    params: parameters to score (e.g. HOFFMANN_UNROUNDED).
    n: parameters N per run.
    d: data D per run.
    loss: final losses.
    delta: Huber delta.

  Returns:
    Summed Huber loss of ln residuals.
  """
  return float(grid_objective(params.theta[None], np.log(n), np.log(d),
                              np.log(loss), delta)[0])


def can_fit(n, d, loss) -> bool:
  """Whether `fit_parametric` takes these runs (enough of them, finite and
  positive, at least 2 distinct N and D).

  Args:
    n, d, loss: the runs' parameters, examples and losses.

  Returns:
    True if approach 3 can be offered for them.
  """
  try:
    _check_inputs(n, d, loss)
  except ValueError:
    return False
  return True


def _check_inputs(n, d, loss):
  n, d, loss = (np.asarray(x, float).ravel() for x in (n, d, loss))
  if not n.shape == d.shape == loss.shape:
    raise ValueError(f"approach 3: n, d, loss lengths differ: {len(n)}, "
                     f"{len(d)}, {len(loss)}")
  if len(n) < MIN_POINTS:
    raise ValueError(f"approach 3 needs at least {MIN_POINTS} runs "
                     f"(5 parameters); got {len(n)}")
  bad = ~(np.isfinite(n) & np.isfinite(d) & np.isfinite(loss)
          & (n > 0) & (d > 0) & (loss > 0))
  if bad.any():
    raise ValueError(f"approach 3: {int(bad.sum())} runs have non-finite or "
                     "non-positive N, D or loss; clean them first")
  if len(np.unique(n)) < 2 or len(np.unique(d)) < 2:
    raise ValueError("approach 3 needs at least 2 distinct N and 2 distinct "
                     f"D; got {len(np.unique(n))} and {len(np.unique(d))}")
  return n, d, loss


def single_blas_thread():
  """Context limiting BLAS to one thread (a no-op without threadpoolctl).

  scipy's L-BFGS-B calls BLAS on 5-vectors; OpenBLAS threads then spin for
  work and, on a shared 2-core machine, made the Epoch fit ~10x slower
  (0.6 s -> 6-9 s wall) in our measurements.
  """
  if threadpoolctl is None:
    return contextlib.nullcontext()
  return threadpoolctl.threadpool_limits(1, user_api="blas")


def _lbfgs(x0, args, maxiter):
  # ftol is absolute here since the objective is ~1e-3 (< 1), so it is set
  # far below the objective's scale; gtol stops once the gradient is flat.
  return optimize.minimize(
      objective_and_grad, x0, args=args, jac=True, method="L-BFGS-B",
      options={"maxiter": maxiter, "ftol": 1e-14, "gtol": 1e-9})


def fit_parametric(n, d, loss, *, delta: float = HUBER_DELTA,
                   grid: Optional[Dict[str, np.ndarray]] = None,
                   top_k: Optional[int] = DEFAULT_TOP_K,
                   extra_starts: Optional[np.ndarray] = None,
                   k: Flops = 6.0, maxiter: int = 1000) -> ParametricFit:
  """Fits L(N, D) = E + A/N^alpha + B/D^beta the Chinchilla/Epoch way.

  Args:
    n: parameters N per run.
    d: data D per run (tokens, or examples for image models).
    loss: final loss per run.
    delta: Huber delta (Chinchilla: 1e-3).
    grid: starting grid (default CHINCHILLA_GRID).
    top_k: run L-BFGS from the `top_k` grid points with the lowest initial
      objective; None runs it from every grid point.
    extra_starts: optional (S, 5) extra starting points (a, b, e, alpha,
      beta), always run (the bootstrap passes the full-data optimum).
    k: the frontier's training compute: C = k N D, or a FlopsLaw.
    maxiter: L-BFGS iteration cap per start.

  Returns:
    ParametricFit with the best optimum over all starts.

  Raises:
    ValueError: too few runs, or non-finite / non-positive inputs.
  """
  n, d, loss = _check_inputs(n, d, loss)
  args = (np.log(n), np.log(d), np.log(loss), delta)
  starts = init_grid(grid)
  if top_k is not None and top_k < len(starts):
    f0 = grid_objective(starts, *args)
    # Stable sort keeps grid order among ties, so results are reproducible.
    starts = starts[np.argsort(f0, kind="stable")[:top_k]]
  if extra_starts is not None:
    starts = np.concatenate([np.atleast_2d(extra_starts), starts])
  with single_blas_thread():
    results = [_lbfgs(x0, args, maxiter) for x0 in starts]
  fun = np.array([r.fun if np.isfinite(r.fun) else np.inf for r in results])
  # The first start within a relative 1e-12 of the minimum wins, so
  # near-ties resolve to the same start whatever the floating-point noise.
  # (The absolute floors matter only for noise-free data, objective ~0.)
  i = int(np.argmax(fun <= fun.min() * (1 + 1e-12) + 1e-18))
  best = results[i]
  return ParametricFit(
      params=LossParams.from_theta(best.x), objective=float(best.fun),
      n_points=len(n), flops=flops_law.FlopsLaw.of(k), delta=delta,
      start=starts[i],
      n_starts=len(starts),
      n_at_best=int(np.sum(fun <= fun.min() * (1 + 1e-6) + 1e-12)),
      converged=bool(best.success))


def simulate_isoflops(params: LossParams, budgets: Sequence[float],
                      n_per_budget: int = 8, span: float = 8.0,
                      noise: float = 0.0, seed: int = 0, k: Flops = 6.0):
  """Synthetic isoFLOP sweep drawn from a known loss surface (for tests).

  Args:
    params: the true surface.
    budgets: compute budgets C.
    n_per_budget: model sizes per budget.
    span: sizes run from N_opt/span to N_opt*span (log-spaced).
    noise: multiplicative log-normal noise sigma on the loss.
    seed: RNG seed.
    k: C = k N D, or a FlopsLaw.

  Returns:
    (n, d, c, loss) arrays, one entry per run.
  """
  rng = np.random.default_rng(seed)
  c = np.repeat(np.asarray(budgets, float), n_per_budget)
  factor = np.tile(np.geomspace(1 / span, span, n_per_budget), len(budgets))
  n = params.n_opt(c, k) * factor
  d = flops_law.FlopsLaw.of(k).data(c, n)
  loss = params.loss(n, d) * np.exp(noise * rng.standard_normal(len(n)))
  return n, d, c, loss
