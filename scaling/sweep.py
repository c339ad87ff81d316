"""IsoFLOP sweep specs -> points, each with its full run config.

A sweep spec (`configs/scaling/*.py`, see simple_diffusion.py there) names a
family config, a size ladder, compute budgets and how many sizes each budget
gets. A *point* is one (budget C, size) pair. Its run config is the family
config with, in order: the spec's `run` fields, its optimizer fields, the
size's `model` fields and any `--set` overrides; then the length is derived
here, in one place:

  F     = objective.flops_per_example()   (training FLOPs, 3 x forward)
  steps = ceil(C / (F * batch_size))      (jaxgen.train.durations)
  warmup = warmup_fraction * steps; cosine decay ends at `steps`

so every point's learning-rate schedule spans exactly its own run, as
Chinchilla's approach 2 requires. A family with schedules of its own must
make them span the run too (`Objective.follows_run_length`; R3GAN's burn-in
with `gan.burn_in_fraction` in the spec's `run`), else the point is refused.
Points are named `C<budget>_<size>`, e.g. `C2e12_w96d2`; the id alone (with
the spec) rebuilds the point, so it also names the point's directory
`WORKDIR/runs/<id>/`.

Parameters are counted from `jax.eval_shape` of the objective's init
(nothing is allocated). "Embeddings" are the parameters whose path matches
the spec's `embedding_params` regexes (for the U-ViT: the class-embedding
table and the learned position embeddings).
"""

import bisect
import dataclasses
import json
import math
import re
import warnings
from typing import Any, Dict, List, Optional, Sequence, Tuple

import ml_collections

from jaxgen import config_lib
from scaling import spec_check


class SweepWarning(UserWarning):
  """A sweep that will run but may not give a usable fit."""


@dataclasses.dataclass(frozen=True)
class Point:
  """One (budget, size) run of a sweep.

  Attributes:
    id: stable name, `C<budget>_<size>`; also the run's directory name.
    budget: nominal compute budget C in FLOPs.
    size: name of the size in the spec's ladder.
    steps: training steps, ceil(C / (flops_per_example * batch_size)).
    batch_size: global batch size.
    flops_per_example: training FLOPs per example (the objective's count).
    params: all parameters N.
    params_embedding: parameters matching the spec's `embedding_params`.
    overrides: dotted config keys -> values, relative to the spec's `base`.
    sampling_flops_per_example: FLOPs to sample one image with the point's
      sampler settings (None for families that do not sample).
  """
  id: str
  budget: float
  size: str
  steps: int
  batch_size: int
  flops_per_example: float
  params: int
  params_embedding: int
  overrides: Dict[str, Any]
  sampling_flops_per_example: Optional[float] = None

  @property
  def params_non_embedding(self) -> int:
    return self.params - self.params_embedding

  @property
  def planned_flops(self) -> float:
    """FLOPs the run will spend (>= budget by less than one step)."""
    return self.steps * self.batch_size * self.flops_per_example


# -- spec and config files ----------------------------------------------------


# Loads `path.py[:arg]` as `--config=` does (kept here for existing callers).
load_config_file = config_lib.load_config_file


def budget_tag(budget: float) -> str:
  """Short, stable text for a budget: 1e12 -> "1e12", 2.5e12 -> "2.5e12".

  Three significant digits, or as many more as the budget needs to be read
  back exactly (6.0049e8 -> "6.0049e8"): a worker rebuilds its point's
  budget from the id, and two budgets must not share one id.

  Args:
    budget: a positive finite FLOP count.

  Returns:
    The tag used in point ids.

  Raises:
    ValueError: a budget that is not a positive finite number.
  """
  budget = float(budget)
  if not (math.isfinite(budget) and budget > 0):
    raise ValueError(f"budget {budget!r}: budgets must be positive finite "
                     "FLOP counts, e.g. 1e12")
  for digits in range(3, 18):
    text = f"{budget:.{digits}g}"
    if float(text) == budget:
      break
  mantissa, _, exponent = text.partition("e")
  return f"{mantissa}e{int(exponent or 0)}"


def point_id(budget: float, size: str) -> str:
  """The point's name, `C<budget>_<size>` (also its run directory)."""
  return f"C{budget_tag(budget)}_{size}"


def parse_point_id(pid: str) -> Tuple[float, str]:
  """Inverse of `point_id`: "C2e12_w96d2" -> (2e12, "w96d2")."""
  m = re.fullmatch(r"C([0-9.]+e-?[0-9]+)_(.+)", pid)
  if not m:
    raise ValueError(f"bad point id {pid!r}; expected C<budget>_<size>, "
                     "e.g. C1e12_w64d2")
  return float(m.group(1)), m.group(2)


# -- building a point's config ------------------------------------------------


def _objective_flops(config, added: Dict[str, str]) -> float:
  """FLOPs per example; a field new to an open section that the model does
  not take is reported as the typo it usually is."""
  try:
    return float(_objective(config).flops_per_example())
  except TypeError as e:
    bad = re.search(r"unexpected keyword argument '(\w+)'", str(e))
    keys = [k for k in added if bad and k.split(".")[-1] == bad.group(1)]
    if not keys:
      raise
    section = keys[0].rsplit(".", 1)[0]
    known = [k for k in spec_check.get(config, section).keys()
             if f"{section}.{k}" not in added]
    raise ValueError(f"{added[keys[0]]}: unknown config field "
                     f"{bad.group(1)!r}"
                     f"{spec_check.close(bad.group(1), known)}"
                     ) from None


def _objective_class(config):
  # pylint: disable-next=g-import-not-at-top,unused-import
  from jaxgen import families
  from jaxgen import registry  # pylint: disable=g-import-not-at-top
  return registry.OBJECTIVES.get(config.family)


def _objective(config):
  return _objective_class(config)(config, total_steps=1)


def count_params(config: ml_collections.ConfigDict,
                 embedding_patterns: Sequence[str] = ()) -> Tuple[int, int]:
  """(all, embedding) parameter counts of a run config, without allocating.

  Args:
    config: a run config.
    embedding_patterns: regexes over "/"-joined parameter paths.

  Returns:
    (params, params_embedding), counted over `state.params`.
  """
  key = json.dumps({k: v for k, v in config_lib.flatten(config).items()
                    if k not in spec_check.DERIVED},
                   sort_keys=True, default=str)
  key += json.dumps(list(embedding_patterns))
  if key not in _PARAM_CACHE:
    _PARAM_CACHE[key] = _count_params(config, embedding_patterns)
  return _PARAM_CACHE[key]


# Counts by config (without the run length): the ladder and every budget
# share them, and tracing the init once per size is enough.
_PARAM_CACHE: Dict[str, Tuple[int, int]] = {}


def _count_params(config, embedding_patterns):
  import jax  # pylint: disable=g-import-not-at-top
  from jaxgen.data.pipeline import DatasetInfo  # pylint: disable=g-import-not-at-top
  from jaxgen.train import trainer  # pylint: disable=g-import-not-at-top
  objective = _objective(config)
  spec = trainer.batch_spec(DatasetInfo.synthetic(config.dataset), 1)
  state = jax.eval_shape(objective.init, jax.random.key(0), spec)
  patterns = [re.compile(p) for p in embedding_patterns]
  total = embedding = 0
  for path, leaf in jax.tree_util.tree_flatten_with_path(state.params)[0]:
    name = "/".join(str(getattr(k, "key", getattr(k, "name", k)))
                    for k in path)
    total += math.prod(leaf.shape)
    if any(p.search(name) for p in patterns):
      embedding += math.prod(leaf.shape)
  return total, embedding


def point_config(spec: ml_collections.ConfigDict, budget: float, size: str,
                 sets: Optional[Dict[str, str]] = None
                 ) -> Tuple[ml_collections.ConfigDict, Dict[str, Any]]:
  """The run config of one point and its overrides relative to `spec.base`.

  Args:
    spec: a sweep spec.
    budget: compute budget C in FLOPs.
    size: a key of `spec.sizes`.
    sets: --set overrides (text values), applied after the spec's fields.

  Returns:
    (config, overrides); config.total_steps and the optimizer schedule are
    derived from the budget.
  """
  spec_check.check_spec(spec)
  if size not in spec.sizes:
    raise ValueError(f"unknown size {size!r}; the ladder has "
                     + ", ".join(spec.sizes.keys()))
  from jaxgen.train import durations  # pylint: disable=g-import-not-at-top
  config = load_config_file(spec.base)
  config.unlock()
  if config.family != spec.family:
    raise ValueError(f"spec family {spec.family!r} but {spec.base} is "
                     f"family {config.family!r}")
  overrides = config_lib.flatten(spec.run)
  origin = {k: f"sweep.run.{k}" for k in overrides}
  overrides["batch_size"] = int(spec.batch_size)
  # Families with schedules of their own (R3GAN's burn-in) have no cosine
  # fields; the spec's `run` sets their end values.
  overrides.update(_fields_it_has(config, {
      "optimizer.learning_rate": float(spec.learning_rate),
      "optimizer.end_lr_fraction": float(spec.end_lr_fraction)}))
  size_fields = config_lib.flatten(spec.sizes[size])
  overrides.update({f"model.{k}": v for k, v in size_fields.items()})
  origin.update({f"model.{k}": f"sweep.sizes.{size}.{k}"
                 for k in size_fields})
  added = {}  # Keys new to an open section -> where they came from.
  spec_check.apply(config, overrides, spec.open_sections, origin, added)
  sets = {k: spec_check.cast(k, v, spec_check.get(config, k))
          for k, v in (sets or {}).items()}
  spec_check.apply(config, sets, spec.open_sections,
                   {k: f"--set {k}" for k in sets}, added)
  overrides.update({k: spec_check.get(config, k) for k in sets})
  if not _objective_class(config).follows_run_length(config):
    raise ValueError(
        f"{spec.base} (family {config.family!r}) has schedules that do not "
        "span the run, and a sweep needs each point's schedule to end with "
        "it (R3GAN: set gan.burn_in_fraction in the spec's run)")

  for unit in durations.UNITS:
    config[unit] = type(config[unit])(0)
  flops = _objective_flops(config, added)

  def steps_at(c):
    return durations.total_steps(
        ml_collections.ConfigDict(dict(batch_size=config.batch_size,
                                       total_flops=float(c))),
        num_examples=None, flops_per_example=flops)

  steps = steps_at(budget)
  schedule = {"optimizer.schedule": "cosine", "optimizer.warmup_steps": 0,
              "optimizer.warmup_fraction": float(spec.warmup_fraction)}
  if spec.get("schedule", "cosine") == "wsd":
    if spec_check.get(config, "optimizer.schedule") is None:
      raise ValueError(f"spec.schedule='wsd': family {config.family!r} has "
                       "no optimizer.schedule (its schedules follow the "
                       "run); sweep it with schedule 'cosine'")
    # The same warmup for every budget of a size (a fraction of its run at
    # the smallest budget whose window has it), so all of them share the
    # stable run; the spec's smallest budget gave sizes that enter the
    # window later a far shorter warmup than a cosine sweep's.
    if not spec.budgets:
      raise ValueError("spec.schedule='wsd' derives each size's warmup from "
                       "the spec's budgets; set spec.budgets")
    warmup = round(float(spec.warmup_fraction)
                   * steps_at(first_budget(spec, size, sets)))
    cooldown = cooldown_steps(spec.decay_fraction, steps)
    if warmup >= steps - cooldown:
      raise ValueError(
          f"point {point_id(budget, size)}: the warmup ({warmup} steps) "
          f"reaches its cooldown (from step {steps - cooldown} of {steps}); "
          "lower --sweep.warmup_fraction or --sweep.decay_fraction")
    schedule = {"optimizer.schedule": "wsd",
                "optimizer.warmup_steps": warmup,
                "optimizer.warmup_fraction": 0.0,
                "optimizer.decay_fraction": float(spec.decay_fraction)}
  elif spec.get("schedule", "cosine") != "cosine":
    raise ValueError(f"spec.schedule={spec.schedule!r}: use 'cosine' or "
                     "'wsd'")
  derived = {
      "total_steps": steps,
      **_fields_it_has(config, schedule),
      # One evaluation, at the end (the trainer always evaluates the last
      # step when eval_batches > 0).
      "eval_every_steps": steps,
  }
  config_lib.apply_overrides(config, derived)
  overrides.update(derived)
  return config, {k: (list(v) if isinstance(v, tuple) else v)
                  for k, v in overrides.items()}


def _fields_it_has(config, values: Dict[str, Any]) -> Dict[str, Any]:
  """The entries of `values` whose dotted key exists in `config`."""
  return {k: v for k, v in values.items()
          if spec_check.get(config, k) is not None}


def make_point(spec: ml_collections.ConfigDict, budget: float, size: str,
               sets: Optional[Dict[str, str]] = None) -> Point:
  """Resolves one point (its config, steps and parameter counts).

  Args:
    spec: a sweep spec.
    budget: compute budget C in FLOPs.
    size: a key of `spec.sizes`.
    sets: --set overrides.

  Returns:
    The Point.
  """
  config, overrides = point_config(spec, budget, size, sets)
  # The trainer's checks that need neither devices nor data: a bad --set
  # (dataset name, learning rate, sample metrics) is one line here, not
  # one failed worker per point.
  from jaxgen.data import config as data_config  # pylint: disable=g-import-not-at-top
  from jaxgen.train import checks  # pylint: disable=g-import-not-at-top
  checks.check_trainer_fields(config)
  data_config.validate_dataset_config(config.dataset)
  params, emb = count_params(config, tuple(spec.embedding_params))
  objective = _objective(config)
  return Point(id=point_id(budget, size), budget=float(budget), size=size,
               steps=int(config.total_steps),
               batch_size=int(config.batch_size),
               flops_per_example=float(objective.flops_per_example()),
               params=params, params_embedding=emb, overrides=overrides,
               sampling_flops_per_example=(
                   objective.sampling_flops_per_example()))


def ladder(spec: ml_collections.ConfigDict,
           sets: Optional[Dict[str, str]] = None,
           param_key: str = "params") -> List[Tuple[str, int]]:
  """The spec's sizes as (name, params), smallest first.

  Args:
    spec: a sweep spec.
    sets: --set overrides (they may change the model).
    param_key: "params" (all) or "params_non_embedding".

  Returns:
    (name, parameter count) per size, sorted by parameters.
  """
  if param_key not in ("params", "params_non_embedding"):
    raise ValueError(f"param_key {param_key!r}: use 'params' or "
                     "'params_non_embedding'")
  out = []
  for name in spec.sizes.keys():
    config, _ = point_config(spec, min(spec.budgets or (1.0,)), name, sets)
    total, embedding = count_params(config, tuple(spec.embedding_params))
    out.append((name, total if param_key == "params" else total - embedding))
  return sorted(out, key=lambda x: x[1])


def first_budget(spec: ml_collections.ConfigDict, size: str,
                 sets: Optional[Dict[str, str]] = None) -> float:
  """The smallest of the spec's budgets whose window holds `size` (the
  smallest budget if none does, e.g. sizes chosen with --sizes).

  Args:
    spec: a sweep spec.
    size: a size name of its ladder.
    sets: --set overrides (they may reorder the ladder).

  Returns:
    The budget, as its point ids read it back.
  """
  own = sorted({float(budget_tag(b)) for b in spec.budgets})
  cosine = spec.copy_and_resolve_references()
  cosine.schedule = "cosine"  # The ladder's order does not depend on it.
  names = [n for n, _ in ladder(cosine, sets)]
  for index, budget in enumerate(own):
    if size in budget_sizes(spec, names, index):
      return budget
  return own[0]


def cooldown_steps(decay_fraction: float, steps: int) -> int:
  """Steps of a WSD run's cooldown, rounded as the trainer's schedule does
  (`jaxgen.train.state.fraction_of_steps`; Python's float64 `round` put
  branch points and the planned steps one step off the runs).

  Args:
    decay_fraction: the cooldown's fraction of the run.
    steps: the run's length.

  Returns:
    The cooldown's length in steps.
  """
  from jaxgen.train import state as state_lib  # pylint: disable=g-import-not-at-top
  return state_lib.fraction_of_steps(decay_fraction, steps)


def budget_sizes(spec: ml_collections.ConfigDict, names: Sequence[str],
                 index: int) -> List[str]:
  """The window of sizes the `index`-th budget (ascending) gets.

  Args:
    spec: a sweep spec (`points_per_budget`, `window_shift`).
    names: the ladder's size names, smallest first.
    index: budget index in ascending order.

  Returns:
    `points_per_budget` consecutive names, moved up by `window_shift` rungs
    per budget and clipped to the ladder's end.
  """
  k = min(int(spec.points_per_budget), len(names))
  # Floor: a shift of 0.5 moves up one rung every second budget, starting
  # at the second pair (round() took halves to the even number: 0, 0, 1,
  # 2, 2 for five budgets).
  start = int(math.floor(index * float(spec.window_shift) + 1e-9))
  start = max(0, min(start, len(names) - k))
  return list(names[start:start + k])


# More steps than any run takes (a budget typed with the wrong exponent).
MAX_STEPS = 10**9


def plan(spec: ml_collections.ConfigDict, *,
         budgets: Optional[Sequence[float]] = None,
         sizes: Optional[Sequence[str]] = None,
         sets: Optional[Dict[str, str]] = None) -> List[Point]:
  """All points of a sweep, ordered by budget then size.

  Args:
    spec: a sweep spec.
    budgets: budgets to run instead of `spec.budgets`.
    sizes: sizes to run at every budget instead of the spec's windows.
    sets: --set overrides for every point.

  Returns:
    The points. Warns (SweepWarning) about budgets with fewer than three
    sizes (no parabola vertex) and points shorter than `spec.min_steps`.
  """
  spec_check.check_spec(spec)
  # Read back from their point ids (exact: see budget_tag), so a worker
  # rebuilding a point from its id gets the same budget; a budget given
  # twice is one point.
  budgets = sorted({float(budget_tag(b)) for b in (budgets or spec.budgets)})
  if not budgets:
    raise ValueError("the sweep has no budgets (set sweep.budgets, or pass "
                     "--only_budgets)")
  names = [n for n, _ in ladder(spec, sets)]
  # A size given twice is one point (it ran twice, counted once).
  sizes = list(dict.fromkeys(sizes)) if sizes else sizes
  for name in sizes or ():
    if name not in names:
      raise ValueError(f"unknown size {name!r}; the ladder has "
                       + ", ".join(names))
  # A budget's window follows its place among the spec's budgets, so that
  # --only_budgets narrows a sweep to some of its points instead of moving
  # them (a budget between or beyond the spec's takes the next window up).
  own = sorted({float(budget_tag(b)) for b in spec.budgets})
  points = []
  for i, budget in enumerate(budgets):
    index = bisect.bisect_left(own, budget) if own else i
    chosen = list(sizes) if sizes else budget_sizes(spec, names, index)
    chosen.sort(key=names.index)
    for size in chosen:
      p = make_point(spec, budget, size, sets)
      # One step costing more than the budget (points of one budget would
      # then spend different compute), or a count no run reaches: said at
      # the first such point, before the others are built.
      step_flops = p.batch_size * p.flops_per_example
      if p.budget < step_flops:
        raise ValueError(
            f"budget {p.budget:.3g} FLOPs is below one step of size "
            f"{p.size} ({step_flops:.3g} FLOPs); pass budgets of at least a "
            "few steps")
      if p.steps > MAX_STEPS:
        raise ValueError(f"budget {p.budget:.3g} FLOPs is {p.steps:.3g} "
                         f"steps of size {p.size}; pass a budget this sweep "
                         "can run")
      points.append(p)
  per_budget = len(points) // len(budgets)
  if per_budget < 3 and not sizes:
    warnings.warn(f"{per_budget} sizes per budget: approach 2 needs at least"
                  " 3 for a parabola vertex", SweepWarning, stacklevel=2)
  short = [p.id for p in points if p.steps < int(spec.min_steps)]
  if short:
    warnings.warn(f"{len(short)} points run fewer than min_steps="
                  f"{spec.min_steps} steps: {', '.join(short)}",
                  SweepWarning, stacklevel=2)
  return points


def nearest_size(spec: ml_collections.ConfigDict, params: float,
                 sets: Optional[Dict[str, str]] = None,
                 param_key: str = "params") -> Tuple[str, int]:
  """The ladder size whose parameter count is nearest `params` in log.

  Args:
    spec: a sweep spec.
    params: target parameter count (e.g. a fitted N_opt).
    sets: --set overrides.
    param_key: which count `params` is ("params" or "params_non_embedding").

  Returns:
    (size name, its parameter count).
  """
  return min(ladder(spec, sets, param_key),
             key=lambda x: abs(math.log(x[1]) - math.log(params)))


def device_hours(spec: ml_collections.ConfigDict,
                 point: Point) -> Optional[Tuple[float, float]]:
  """Estimated (device-hours, wall-clock hours) of one point.

  FLOPs / (peak x MFU) with the dense bf16 peak of `spec.cluster.device_kind`
  and the spec's assumed `spec.cluster.mfu`; the wall-clock hours divide by
  the point's `devices_per_point`.

  Args:
    spec: a sweep spec.
    point: one of its points.

  Returns:
    The two estimates, or None for a CPU spec (no device kind).

  Raises:
    ValueError: an unknown device kind or an MFU outside (0, 1].
  """
  from jaxgen.train import flops  # pylint: disable=g-import-not-at-top
  cluster = spec.get("cluster") or {}
  kind = cluster.get("device_kind", "")
  if not kind:
    return None
  peak = flops.peak_flops_for_kind(kind)
  if peak is None:
    raise ValueError(
        f"sweep.cluster.device_kind={kind!r} has no known peak; use one of "
        + ", ".join(sorted({p for p, v in flops.PEAK_BF16_FLOPS if v})))
  mfu = float(cluster.mfu)
  if not 0 < mfu <= 1:
    raise ValueError(f"sweep.cluster.mfu={mfu}: use a fraction in (0, 1], "
                     "e.g. --sweep.cluster.mfu=0.4")
  hours = point.planned_flops / (peak * mfu) / 3600
  return hours, hours / max(1, int(cluster.devices_per_point))
