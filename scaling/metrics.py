"""Which way a fitted metric improves, and the loss-like quantity fitted.

The Chinchilla forms (approach 3's E + A/N^α + B/D^β, approach 2's power law
of the compute-optimal loss) describe a quantity that falls with compute
towards a floor ≥ 0. Lower-is-better metrics (losses, FID, KID, LPIPS, rFID,
the shape classifier's FD) are fitted as they are. A higher-is-better metric
is fitted through a monotone map onto such a quantity, and its predictions
are mapped back:

  PSNR (dB)                            10^(-PSNR/10)  (MSE / peak², the
                                       error PSNR is a log of)
  SSIM, precision, recall, accuracy    1 - value
  Inception score                      1 / IS

Names match with or without the `eval_` prefix (`eval_psnr`, `psnr`).
"""

import dataclasses
from typing import Callable, Optional

import numpy as np

DIRECTIONS = ("auto", "lower", "higher")


def _identity(x):
  return np.asarray(x, dtype=float)


def _one_minus(x):
  return 1.0 - np.asarray(x, dtype=float)


def _reciprocal(x):
  return 1.0 / np.asarray(x, dtype=float)


# base name -> (what is fitted, metric -> loss, loss -> metric).
_HIGHER_IS_BETTER = {
    "psnr": ("10^(-{}/10)", lambda m: 10.0 ** (-np.asarray(m, float) / 10),
             lambda l: -10.0 * np.log10(np.asarray(l, float))),
    "ssim": ("1 - {}", _one_minus, _one_minus),
    "precision": ("1 - {}", _one_minus, _one_minus),
    "recall": ("1 - {}", _one_minus, _one_minus),
    "accuracy": ("1 - {}", _one_minus, _one_minus),
    # The shape classifier's accuracy on class-conditional samples.
    "accuracy_shapes": ("1 - {}", _one_minus, _one_minus),
    "is": ("1 / {}", _reciprocal, _reciprocal),
    "inception_score": ("1 / {}", _reciprocal, _reciprocal),
}


@dataclasses.dataclass(frozen=True)
class Metric:
  """A fitted metric and its map onto the loss-like quantity fitted.

  Attributes:
    name: the results field (e.g. "eval_psnr"); "loss" for the default.
    higher_is_better: whether larger values are better.
    fitted: the quantity fitted, in words (e.g. "10^(-eval_psnr/10)").
    to_loss: metric values -> fitted values (decreasing if higher is better).
    from_loss: the inverse map.
  """
  name: str
  higher_is_better: bool
  fitted: str
  to_loss: Callable[[np.ndarray], np.ndarray]
  from_loss: Callable[[np.ndarray], np.ndarray]

  def interval_from_loss(self, lo: float, hi: float):
    """A fitted-space interval [lo, hi] as a metric interval (ordered)."""
    a, b = float(self.from_loss(lo)), float(self.from_loss(hi))
    return (min(a, b), max(a, b))


def resolve(name: Optional[str], direction: str = "auto",
            what: Optional[str] = None) -> Metric:
  """The Metric for a results field.

  Args:
    name: the field fitted (None: the default loss fields).
    direction: "auto" (higher-is-better for the names this module maps,
      lower otherwise), "lower" or "higher".
    what: how errors name the metric (default: `--metric=<name>`, or the
      loss when there is no name).

  Returns:
    The Metric.

  Raises:
    ValueError: an unknown direction, or "higher" for a metric with no map.
  """
  if direction not in DIRECTIONS:
    raise ValueError(f"metric direction {direction!r}: choose one of "
                     f"{', '.join(DIRECTIONS)}")
  label = name or "loss"
  base = label[len("eval_"):] if label.startswith("eval_") else label
  known = _HIGHER_IS_BETTER.get(base)
  if direction == "lower" or (direction == "auto" and known is None):
    return Metric(label, False, label, _identity, _identity)
  if known is None:
    # Only a forced direction gets here ("auto" fits unknown names as
    # lower-is-better).
    what = what or (f"--metric={name}" if name else "the loss (no --metric)")
    raise ValueError(f"--metric_direction=higher for {what}: no map onto a "
                     "falling loss is known for it (known: "
                     f"{', '.join(sorted(_HIGHER_IS_BETTER))}, with or "
                     "without eval_); pass "
                     "--metric_direction=auto or lower, or a --metric "
                     "of those")
  fitted, to_loss, from_loss = known
  return Metric(label, True, fitted.format(label), to_loss, from_loss)
