"""Training compute as a function of model size: C = kappa N^phi D.

Chinchilla's frontier takes C = 6 N D: a language model spends 6 FLOPs per
parameter per token whatever its size. An image model does not: its
activations live at full resolution, so FLOPs per example grow slower (or
faster) than its parameter count, and C / (N D) drifts with N (on the CPU
simple-diffusion ladder it is 225-227 for the one-block transformers and 176
for the two-block ones). One median k then biases N_opt by tens of percent.

The law is fitted on the runs, each run one point, and held fixed in the
bootstrap (its intervals leave out the law's own uncertainty). Over a
ladder whose architecture changes in steps (depth), it is a straight line
through the steps: it may miss a rung beyond the fitted ones.

`FlopsLaw` models the FLOPs per unit of D as a power law in N,
F(N) = C / D = kappa N^phi, fitted by least squares of ln(C / D) on ln N
over the runs; phi = 1 is Chinchilla's C = k N D. When C / (N D) is the same
for every run (within `CONSTANT_TOL`) the law is that constant, phi = 1
exactly, so language-model data keep k = 6 to the last digit.

Under this law the frontier of L(N, D) = E + A/N^alpha + B/D^beta follows by
setting dL/dN = 0 along D = C / (kappa N^phi):

  N_opt(C) = G (C/kappa)^a,  G = (alpha A / (phi beta B))^(1/(alpha + phi beta)),
  a = beta / (alpha + phi beta),  D_opt = C / (kappa N_opt^phi) ∝ C^(1 - phi a),

which is Chinchilla's closed form at phi = 1.
"""

import dataclasses
from typing import Dict, Mapping, Optional, Union

import numpy as np

# C / (N D) spread (max / min) under which the runs share one k: float noise
# and rounding of recorded FLOPs, not a size dependence.
CONSTANT_TOL = 1.01
# Worst factor by which a run's C / D may miss the fitted power law before
# the fit says the law does not describe the runs.
POWER_LAW_TOL = 1.2


@dataclasses.dataclass(frozen=True)
class FlopsLaw:
  """C = kappa N^phi D: training FLOPs of N parameters on D examples.

  Attributes:
    kappa: FLOPs per unit of D at N = 1 (with phi = 1, Chinchilla's k).
    phi: exponent of N in the FLOPs per unit of D (1 for language models).
    max_miss: worst factor by which a fitted run's C / D missed the law
      (1 for an exact law; informational).
  """

  kappa: float = 6.0
  phi: float = 1.0
  max_miss: float = 1.0

  @classmethod
  def of(cls, k: Union[float, "FlopsLaw"]) -> "FlopsLaw":
    """A law from a plain k (C = k N D) or a law itself."""
    return k if isinstance(k, FlopsLaw) else cls(float(k), 1.0)

  @classmethod
  def fit(cls, n, c, d) -> "FlopsLaw":
    """Least-squares fit of ln(C / D) = ln kappa + phi ln N over runs.

    Args:
      n: parameters per run.
      c: training FLOPs per run.
      d: data (examples or tokens) per run.

    Returns:
      The law; phi = 1 and kappa = median C / (N D) when that ratio is
      constant within `CONSTANT_TOL` or the runs have a single size (then
      `max_miss` is the worst run's distance from that k).

    Raises:
      ValueError: no runs, a non-positive or non-finite value, or FLOPs
        per example that do not grow with N (phi <= 0: no compute-optimal
        trade-off exists under such a law).
    """
    n, c, d = (np.asarray(v, float).ravel() for v in (n, c, d))
    if not len(n) or not all(np.all(np.isfinite(v) & (v > 0))
                             for v in (n, c, d)):
      raise ValueError("the training-compute law needs runs with positive, "
                       "finite N, C and D")
    ratio, per_example = c / (n * d), c / d
    if (len(np.unique(n)) < 2
        or ratio.max() <= CONSTANT_TOL * ratio.min()):
      k = float(np.median(ratio))
      miss = np.maximum(ratio / k, k / ratio)
      return cls(k, 1.0, float(miss.max()))
    phi, log_kappa = np.polyfit(np.log(n), np.log(per_example), 1)
    # FLOPs per example the same for every size (C/D constant) fit a slope
    # of +-1e-15, whose sign is rounding: decided on the data, not on it.
    if (per_example.max() <= CONSTANT_TOL * per_example.min()
        or phi <= 0):
      shown = 0.0 if abs(phi) < 5e-4 else phi  # Not "-0.000".
      raise ValueError(
          f"FLOPs per example do not grow with N over these runs (C/D ∝ "
          f"N^{shown:.3f}): no "
          "compute-optimal trade-off exists; check the runs' C (flops, "
          "flops_per_example) and D columns")
    miss = np.exp(np.abs(np.log(c / d) - (log_kappa + phi * np.log(n))))
    return cls(float(np.exp(log_kappa)), float(phi), float(miss.max()))

  @classmethod
  def from_json(cls, section: Mapping[str, object]) -> "FlopsLaw":
    """The law of a fit.json section: "flops" ({kappa, phi}) or an older
    file's plain "k"."""
    if "flops" in section:
      return cls(**section["flops"])
    return cls.of(section["k"])

  @property
  def is_linear(self) -> bool:
    """Whether this is Chinchilla's C = k N D (phi = 1)."""
    return self.phi == 1.0

  def data(self, c, n):
    """D that spends compute `c` on a model of `n` parameters."""
    return np.asarray(c, float) / (self.kappa * np.asarray(n, float)**self.phi)

  def compute(self, n, d):
    """Training FLOPs of `n` parameters on `d` examples."""
    return self.kappa * np.asarray(n, float)**self.phi * np.asarray(d, float)

  def frontier(self, alpha, beta, A, B):  # pylint: disable=invalid-name
    """(G, a) of N_opt = G (C/kappa)^a for L = E + A/N^alpha + B/D^beta.

    Vectorises over arrays of parameters (bootstrap samples); NaN where
    the loss has no frontier.
    """
    alpha, beta, A, B = (np.asarray(v, float) for v in (alpha, beta, A, B))
    with np.errstate(divide="ignore", invalid="ignore", over="ignore"):
      expo = alpha + self.phi * beta
      g = (alpha * A / (self.phi * beta * B))**(1.0 / expo)
      return g, beta / expo

  def off_law(self) -> Optional[str]:
    """A one-line warning when some run misses the law by more than
    `POWER_LAW_TOL`, else None."""
    if self.max_miss <= POWER_LAW_TOL:
      return None
    return (f"FLOPs per example miss the fitted {self} by up to "
            f"{self.max_miss:.2f}x on some runs (not a power law in N: mixed "
            "resolutions or patch sizes?): treat N_opt / D_opt as "
            "approximate")

  def to_dict(self) -> Dict[str, float]:
    """{kappa, phi, max_miss}, as fit.json stores it (`from_json` reads it)."""
    return dataclasses.asdict(self)

  def __str__(self) -> str:
    if self.is_linear:
      return f"C = {self.kappa:.4g} N D"
    return f"C = {self.kappa:.4g} N^{self.phi:.3f} D"
