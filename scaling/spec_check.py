"""Checking a sweep spec and applying its overrides to a run config.

A spec's fields and numbers are checked before any point is built; `--set`
values are parsed like the fields they replace; every error is one line
that names where the bad key came from (the spec, a size, `--set`).
"""

import ast
import difflib
import math
from typing import Any, Dict, Sequence

import ml_collections

from jaxgen import config_lib
from scaling import specs

# Run-config fields the sweep derives itself, with the spec field that sets
# them; overriding them would break steps = C / (F * batch) or the cosine
# horizon.
_LENGTH = "sweep.budgets (a point's length follows its budget)"
DERIVED = {
    "total_steps": _LENGTH, "total_examples": _LENGTH,
    "total_epochs": _LENGTH, "total_flops": _LENGTH,
    "optimizer.warmup_steps": "sweep.warmup_fraction",
    "optimizer.warmup_fraction": "sweep.warmup_fraction",
    "optimizer.schedule": "sweep.schedule",
    "optimizer.decay_fraction": "sweep.decay_fraction",
    "eval_every_steps": "nothing (each point evaluates once, at its end)",
}
# Run fields the spec sets for every point (a --set may still change them,
# as it changes any field; a value in the spec's `run` would be replaced).
_FROM_SPEC = {
    "batch_size": "sweep.batch_size",
    "optimizer.learning_rate": "sweep.learning_rate",
    "optimizer.end_lr_fraction": "sweep.end_lr_fraction",
}


# Integer / number fields of a spec and their ranges (check_range keywords):
# out-of-range values otherwise fail deep in a point (batch 0 divides by
# zero in the run length) or plan nonsense (a negative batch, negative
# FLOPs).
_SPEC_RANGES = {
    "batch_size": dict(low=1, integer=True),
    "learning_rate": dict(low=0, low_open=True),
    "warmup_fraction": dict(low=0, high=1, high_open=True),
    "end_lr_fraction": dict(low=0, high=1),
    "decay_fraction": dict(low=0, high=1, low_open=True),
    "final_loss_window": dict(low=1, integer=True),
    "diverged_loss_ratio": dict(low=0),
    "min_steps": dict(low=0, integer=True),
    "points_per_budget": dict(low=1, integer=True),
    "window_shift": dict(low=0),
}


def close(name: str, known) -> str:
  """"; did you mean 'x'?" for the nearest of `known`, else ""."""
  match = difflib.get_close_matches(name, list(known), n=1)
  return f"; did you mean {match[0]!r}?" if match else ""


def check_spec(spec: ml_collections.ConfigDict) -> None:
  """One-line ValueErrors for a sweep spec's unknown or out-of-range fields.

  Args:
    spec: a sweep spec (after any --sweep.x=y overrides).

  Raises:
    ValueError: a top-level field `specs.base_spec` does not define (a
      typo such as `budget` would otherwise be silently ignored), a number
      out of its range, a budget that is not a positive finite count, or a
      `run` field the sweep sets per point (batch size, learning rate,
      schedule, length, a size's model fields).
  """
  known = specs.base_spec("", "", "").keys()
  for name in spec.keys():
    if name not in known:
      raise ValueError(f"unknown sweep field {name!r}{close(name, known)} "
                       "(the fields: scaling/specs.py base_spec)")
  for name, bounds in _SPEC_RANGES.items():
    if name in spec:
      config_lib.check_range(f"sweep.{name}", spec[name], **bounds)
  cluster = spec.get("cluster") or {}
  if cluster.get("mfu") is not None:
    # The device-hour estimates divide by it (--dry-run prints them).
    config_lib.check_range("sweep.cluster.mfu", cluster["mfu"], low=0,
                           low_open=True, high=1, finite=True)
  if cluster.get("cpus_per_task") is not None:
    config_lib.check_range("sweep.cluster.cpus_per_task",
                           cluster["cpus_per_task"], low=0, integer=True)
  run = config_lib.flatten(spec.get("run") or {})
  for key, where in {**DERIVED, **_FROM_SPEC}.items():
    if key in run:
      raise ValueError(f"sweep.run.{key} is set per point by the sweep; "
                       f"remove it and set {where}")
  for size, fields in (spec.get("sizes") or {}).items():
    for key in config_lib.flatten(fields):
      if f"model.{key}" in run:
        raise ValueError(f"sweep.run.model.{key} is set per size (sweep."
                         f"sizes.{size}.{key}); remove it from sweep.run")
  for budget in spec.get("budgets") or ():
    if not (isinstance(budget, (int, float)) and not isinstance(budget, bool)
            and math.isfinite(budget) and budget > 0):
      raise ValueError(f"sweep.budgets holds {budget!r}: budgets must be "
                       "positive finite FLOP counts, e.g. (1e12, 2e12)")


def parse_sets(sets: Sequence[str]) -> Dict[str, str]:
  """["a.b=1", ...] -> {"a.b": "1"}; derived fields are refused."""
  out = {}
  for item in sets:
    key, sep, value = item.partition("=")
    if not sep or not key:
      raise ValueError(f"--set {item!r} is not key=value")
    if key in DERIVED:
      raise ValueError(f"--set {key} is derived by the sweep from the budget;"
                       " change the spec's budgets or batch_size instead")
    out[key] = value
  return out


_TRUE, _FALSE = ("1", "true", "yes"), ("0", "false", "no")


def cast(key: str, text: str, current: Any) -> Any:
  """Parses a --set value like the field it replaces.

  Args:
    key: the dotted field, for the error message.
    text: the value as given.
    current: the field's value now (None for a new or unset field).

  Returns:
    The value, of the field's type where it has one.

  Raises:
    ValueError: text that is no value of a bool or number field.
  """
  if isinstance(current, bool):
    if text.lower() not in _TRUE + _FALSE:
      raise ValueError(f"--set {key}={text}: {key} is true or false")
    return text.lower() in _TRUE
  if isinstance(current, str):
    return text
  try:
    value = ast.literal_eval(text)
  except (ValueError, SyntaxError):
    value = text
  is_number = isinstance(value, (int, float)) and not isinstance(value, bool)
  if isinstance(current, (int, float)) and not is_number:
    raise ValueError(f"--set {key}={text}: {key} is a number (now "
                     f"{current!r})")
  return float(value) if isinstance(current, float) and isinstance(
      value, int) else value


def exists(config, key: str) -> bool:
  """Whether dotted `key` is a field of `config` (even one set to None)."""
  *path, leaf = key.split(".")
  node = config
  for p in path:
    if p not in node:
      return False
    node = node[p]
  return leaf in node


def unknown_field(config, key: str) -> str:
  """"unknown config field 'x'; did you mean 'y'?" for a dotted key."""
  node = config
  for p in key.split("."):
    if not hasattr(node, "keys") or p not in node:
      known = node.keys() if hasattr(node, "keys") else ()
      return f"unknown config field {p!r}{close(p, known)}"
    node = node[p]
  return f"unknown config field {key!r}"


def apply(config, overrides: Dict[str, Any], open_sections,
           origin: Dict[str, str], added: Dict[str, str]) -> None:
  """`config_lib.apply_overrides` with one-line errors naming each key's
  origin (`origin[key]`, e.g. "--set model.width"); records keys new to
  an open section in `added` (key -> origin)."""
  for key, value in overrides.items():
    where = origin.get(key, key)
    is_new = not exists(config, key)
    try:
      config_lib.apply_overrides(config, {key: value}, open_sections)
    except ValueError:
      raise ValueError(f"{where}: {unknown_field(config, key)}") from None
    except TypeError:
      # ml_collections refuses a value of another type than the field's.
      current = type(get(config, key)).__name__
      raise ValueError(f"{where}={value!r}: the field holds {current} "
                       "values") from None
    if is_new:
      added[key] = where


def get(config, key):
  """The value at dotted `key`, or None where the key does not exist."""
  node = config
  for p in key.split("."):
    if p not in node:
      return None
    node = node[p]
  return node
