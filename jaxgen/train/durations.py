"""Run lengths in steps, examples, epochs or FLOPs, turned into steps here only.

A scaling sweep asks for "1e15 FLOPs at this size"; a paper preset says "300
epochs"; a smoke test says "20 steps". Every other part of jaxgen deals in steps.
"""

import math
from typing import Optional

import ml_collections

UNITS = ("total_steps", "total_examples", "total_epochs", "total_flops")


def total_steps(config: ml_collections.ConfigDict, *,
                num_examples: Optional[int],
                flops_per_example: Optional[float]) -> int:
  """Converts the one run length the config sets into a number of steps.

  Steps are rounded up so a budget is never under-spent by more than one step.

  Args:
    config: run config with `batch_size` and exactly one of `UNITS` set
      (the others None or 0).
    num_examples: training-set size (needed for `total_epochs`).
    flops_per_example: training FLOPs per example (needed for `total_flops`).

  Returns:
    The number of training steps (>= 1).

  Raises:
    ValueError: none or several lengths set, or a missing conversion factor.
  """
  given = {u: config.get(u) for u in UNITS if config.get(u)}
  if len(given) != 1:
    raise ValueError(
        f"Set exactly one of config.{{{', '.join(UNITS)}}}; got "
        f"{given or 'none'}.")
  (unit, value), = given.items()
  if not float(value) > 0:
    raise ValueError(f"config.{unit}={value} must be positive.")
  batch = int(config.batch_size)
  if unit == "total_steps":
    examples = float(value) * batch
  elif unit == "total_examples":
    examples = float(value)
  elif unit == "total_epochs":
    if not num_examples:
      raise ValueError("config.total_epochs needs a dataset of known size; "
                       "use config.total_steps or total_examples instead.")
    examples = float(value) * num_examples
  else:
    if not flops_per_example:
      raise ValueError("config.total_flops needs the objective's FLOPs per "
                       "example; this family does not report them.")
    examples = float(value) / flops_per_example
  return max(1, int(math.ceil(examples / batch - 1e-9)))
