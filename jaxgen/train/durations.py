"""Run lengths in steps, examples, epochs or FLOPs, turned into steps here only.

A scaling sweep asks for "1e15 FLOPs at this size"; a paper preset says "300
epochs"; a smoke test says "20 steps". Every other part of jaxgen deals in steps.
"""

import math
from typing import Optional

import ml_collections

UNITS = ("total_steps", "total_examples", "total_epochs", "total_flops")


def check_length(config: ml_collections.ConfigDict) -> str:
  """The one run-length field the config sets, checked without the data.

  Args:
    config: run config (0 or None leaves a length unset).

  Returns:
    Its name, one of `UNITS`.

  Raises:
    ValueError: none or several lengths set, or a non-positive one.
  """
  given = {u: config.get(u) for u in UNITS if config.get(u)}
  if not given:
    raise ValueError(
        f"set one of config.{{{', '.join(UNITS)}}} (0 = unset), e.g. "
        f"--config.total_steps=1000.")
  if len(given) > 1:
    names = list(given)
    got = ", ".join(f"{u}={v}" for u, v in given.items())
    raise ValueError(
        f"Set exactly one of config.{{{', '.join(UNITS)}}}; got {got}. Set "
        f"the others to 0, e.g. --config.{names[0]}=0.")
  (unit, value), = given.items()
  if not float(value) > 0:
    raise ValueError(f"config.{unit}={value} must be positive.")
  return unit


def command_line_length(config: ml_collections.ConfigDict,
                        overrides) -> None:
  """Lets a run length given on the command line replace the preset's.

  `--config.total_flops=1e15` on a preset that sets `total_steps` means
  "this many FLOPs instead": the preset's other lengths are set to 0 (the
  ones also given on the command line are kept, so two given there are
  still an error).

  Args:
    config: the loaded config (changed in place).
    overrides: the dotted names the command line set.
  """
  given = [u for u in UNITS if u in overrides and config.get(u)]
  if not given:
    return
  for unit in UNITS:
    if unit not in overrides and config.get(unit):
      config[unit] = type(config[unit])(0)


def total_steps(config: ml_collections.ConfigDict, *,
                num_examples: Optional[int],
                flops_per_example: Optional[float],
                batches_per_step: int = 1) -> int:
  """Converts the one run length the config sets into a number of steps.

  Steps are rounded up so a budget is never under-spent by more than one step.

  Args:
    config: run config with `batch_size` and exactly one of `UNITS` set
      (the others None or 0).
    num_examples: training-set size (needed for `total_epochs`).
    flops_per_example: training FLOPs per example (needed for `total_flops`).
    batches_per_step: batches of `batch_size` a step reads from the data
      (R3GAN's G phase reads its own: 2). An epoch is a pass over the data,
      so it lasts that many times fewer steps; examples and FLOPs count one
      batch a step (R3GAN: D's images, the paper's kimg).

  Returns:
    The number of training steps (>= 1).

  Raises:
    ValueError: none or several lengths set, or a missing conversion factor.
  """
  unit = check_length(config)
  value = config.get(unit)
  batch = int(config.batch_size)
  if unit == "total_steps":
    examples = float(value) * batch
  elif unit == "total_examples":
    examples = float(value)
  elif unit == "total_epochs":
    if not num_examples:
      raise ValueError("config.total_epochs needs a dataset of known size; "
                       "use config.total_steps or total_examples instead.")
    examples = float(value) * num_examples / int(batches_per_step)
  else:
    if not flops_per_example:
      raise ValueError("config.total_flops needs the objective's FLOPs per "
                       "example; this family does not report them.")
    examples = float(value) / flops_per_example
  return max(1, int(math.ceil(examples / batch - 1e-9)))
