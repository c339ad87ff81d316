"""Loads scaling-sweep results (results.jsonl or CSV) into one run table.

Accepted inputs
---------------
1. `results.jsonl`, one JSON object per run. The jaxgen sweep runner writes

   | field                  | meaning                                         |
   | ---------------------- | ----------------------------------------------- |
   | `family`               | model family; one fit uses one family           |
   | `params`               | parameter count N (all parameters)              |
   | `params_non_embedding` | N without embeddings (`param_key=` to use it)   |
   | `budget_flops`         | the run's nominal FLOP budget C (isoFLOP group) |
   | `flops`                | FLOPs actually spent                            |
   | `examples_seen`        | D, in examples                                  |
   | `final_train_loss`     | last training loss                              |
   | `eval_loss`            | held-out loss (preferred when present)          |
   | `status`               | "ok" or "diverged"                              |
   | `wall_time_s`, `config`| not used by the fit                             |

   Generic rows with `params`, `loss` or `final_loss`, `flops` / `budget`,
   `examples` or `D`, `family`, `status` are accepted too.
2. A CSV with columns `N`, `loss` and `D` and/or `C`, optionally `budget`,
   `family`, `status`.
3. Epoch AI's Chinchilla extraction (`Model Size`, `Training FLOP`, `loss`).

Field resolution (first present, non-empty name wins):
  N      params | N | Model Size            (param_key= overrides `params`)
  loss   eval_loss | final_train_loss | loss | final_loss
  D      examples_seen | examples | D | tokens
  C      flops | C | Training FLOP   (FLOPs spent)
  budget budget_flops | budget       (nominal isoFLOP budget)
Missing values are derived with C = 6 N D: C = budget or 6ND when no spent
FLOPs are given, D = C / (6 N) when D is missing. `budget` is used exactly
for isoFLOP grouping; when any run lacks one, approach 2 clusters log10 C
instead (see approach2.assign_budgets).

Cleaning. Runs whose `status` is not "ok" (e.g. "diverged") and runs with a
NaN, infinite or non-positive loss, N or D are dropped with one warning that
counts them. Nothing else is silently changed.
"""

import csv
import dataclasses
import io
import json
import math
import os
import warnings
from typing import Any, Dict, Iterable, List, Optional, Sequence

import etils.epath as epath
import numpy as np

from jaxgen import jsonl
from scaling import metrics as metrics_lib


class FitWarning(UserWarning):
  """A problem with the data that the fit worked around (and says how)."""


_N_KEYS = ("params", "N", "Model Size")
_LOSS_KEYS = ("eval_loss", "final_train_loss", "loss", "final_loss")
_D_KEYS = ("examples_seen", "examples", "D", "tokens")
_C_KEYS = ("flops", "C", "Training FLOP")
_BUDGET_KEYS = ("budget_flops", "budget")


@dataclasses.dataclass(frozen=True)
class Runs:
  """Cleaned runs, one entry per run (all arrays have the same length).

  Attributes:
    n: parameter count N.
    d: data D (tokens or examples).
    c: training compute in FLOPs (spent, else budget, else 6ND).
    budget: nominal isoFLOP budget, NaN where unknown.
    loss: final loss.
    family: model family per run ("" when the input has none).
    source: where the runs came from (file path or "arrays").
  """

  n: np.ndarray
  d: np.ndarray
  c: np.ndarray
  budget: np.ndarray
  loss: np.ndarray
  family: np.ndarray
  source: str = "arrays"

  def __len__(self) -> int:
    return len(self.n)

  def take(self, idx) -> "Runs":
    """The runs at integer or boolean index `idx` (repeats allowed)."""
    return dataclasses.replace(
        self, n=self.n[idx], d=self.d[idx], c=self.c[idx],
        budget=self.budget[idx], loss=self.loss[idx], family=self.family[idx])

  @property
  def has_budgets(self) -> bool:
    """True when every run carries a nominal budget."""
    return bool(len(self) and np.all(np.isfinite(self.budget)))

  @property
  def families(self) -> List[str]:
    return sorted(set(self.family.tolist()))


def make_runs(n, loss, d=None, c=None, budget=None,
              family: Optional[Sequence[str]] = None,
              source: str = "arrays") -> Runs:
  """Builds Runs from arrays, deriving D or C with C = 6 N D.

  Args:
    n: parameters per run.
    loss: final loss per run.
    d: data per run (optional if c or budget is given).
    c: FLOPs spent per run (optional).
    budget: nominal budget per run (optional; NaN entries allowed).
    family: family per run (optional).
    source: a label for reports.

  Returns:
    Runs, not yet cleaned: runs without D, C or budget get D = NaN, which
    `clean` drops.
  """
  n = np.asarray(n, float).ravel()
  loss = np.asarray(loss, float).ravel()
  size = len(n)
  nan = np.full(size, np.nan)
  budget = nan.copy() if budget is None else np.asarray(budget, float).ravel()
  c = nan.copy() if c is None else np.asarray(c, float).ravel()
  d = nan.copy() if d is None else np.asarray(d, float).ravel()
  c = np.where(np.isfinite(c), c, budget)
  d = np.where(np.isfinite(d), d, c / (6.0 * n))
  c = np.where(np.isfinite(c), c, 6.0 * n * d)
  family = np.array([""] * size if family is None else
                    [str(f) for f in family], dtype=object)
  return Runs(n=n, d=d, c=c, budget=budget, loss=loss, family=family,
              source=source)


def _first(record: Dict[str, Any], keys: Iterable[str]):
  for key in keys:
    value = record.get(key)
    if value is not None and value != "":
      return key, value
  return None, None


def _to_float(value) -> float:
  try:
    return float(value)
  except (TypeError, ValueError):
    return float("nan")


def are_numbers(values: Sequence[str], positive: bool = False) -> bool:
  """Whether every string parses as a number (list flags' validators).

  Args:
    values: strings, e.g. a list flag's items.
    positive: also require each to be finite and > 0 (FLOP budgets,
      parameter counts: nan, inf, 0 or a negative one fails later, deep in
      a fit or a plan).

  Returns:
    True if `float` accepts each of them (and each is positive and finite).
  """
  try:
    numbers = [float(v) for v in values]
  except (TypeError, ValueError):
    return False
  return not positive or all(math.isfinite(x) and x > 0 for x in numbers)


def _drop_duplicates(records: Sequence[Dict[str, Any]], source: str
                     ) -> List[Dict[str, Any]]:
  """The records with one row per point, the last kept, with a warning.

  Two rows of one point (the same family, sweep and point id: results
  files concatenated twice) would count as two measurements and narrow the
  intervals. Rows without ids (CSV) that are identical are only warned
  about: nothing says they are not two runs.
  """
  last, identical = {}, {}
  for i, rec in enumerate(records):
    if rec.get("point"):
      last[(rec.get("family"), rec.get("sweep"), rec["point"])] = i
    else:
      text = json.dumps(rec, sort_keys=True, default=str)
      identical[text] = identical.get(text, 0) + 1
  copies = sum(n - 1 for n in identical.values())
  if copies:
    warnings.warn(f"{source}: {copies} rows repeat another row exactly; if "
                  "a run was given twice, remove its copies", FitWarning,
                  stacklevel=3)
  with_id = sum(1 for rec in records if rec.get("point"))
  if len(last) == with_id:
    return list(records)
  warnings.warn(f"{source}: {with_id - len(last)} repeated rows of the same "
                "point dropped; the last of each is fitted", FitWarning,
                stacklevel=3)
  keep = set(last.values())
  return [rec for i, rec in enumerate(records)
          if not rec.get("point") or i in keep]


def runs_from_records(records: Sequence[Dict[str, Any]],
                      param_key: str = "params",
                      source: str = "records",
                      metric: Optional[str] = None,
                      direction: str = "auto") -> Runs:
  """Builds cleaned Runs from dict rows (JSONL objects or CSV rows).

  Args:
    records: one dict per run; field names as in the module docstring.
    param_key: the field used for N first (e.g. "params_non_embedding").
    source: a label for reports.
    metric: the field fitted as the loss (e.g. "eval_fid"); default: the
      first of eval_loss, final_train_loss, loss, final_loss. A
      higher-is-better metric (e.g. "eval_psnr") is stored through its map
      onto a falling loss (scaling/metrics.py).
    direction: "auto", "lower" or "higher" (see `metrics.resolve`).

  Returns:
    Cleaned Runs (see `clean`).

  Raises:
    ValueError: no usable N or loss in any "ok" row, or an "ok" row with
      neither D nor C.
  """
  to_loss = metrics_lib.resolve(metric, direction).to_loss
  if param_key != "params" and records and not any(
      param_key in rec for rec in records):
    # A typo would silently fall back to the other N fields.
    have = sorted({k for rec in records for k in rec
                   if k in _N_KEYS or k.startswith("params")})
    raise ValueError(f"{source}: no row has param_key {param_key!r}; N "
                     f"fields in this file: {', '.join(have) or 'none'}")
  records = _drop_duplicates(records, source)
  # Another N than the total (non-embedding counts) is read from that field
  # alone: a row without it falling back to its total would mix two
  # definitions of N in one fit (it is NaN, dropped with a count).
  n_keys = ((param_key,) + tuple(k for k in _N_KEYS if k != param_key)
            if param_key == "params" else (param_key,))
  loss_fields = (metric,) if metric else _LOSS_KEYS
  cols = {k: [] for k in ("n", "loss", "d", "c", "budget")}
  families, statuses, loss_keys = [], [], set()
  for rec in records:
    key_n, n = _first(rec, n_keys)
    key_l, loss = _first(rec, loss_fields)
    # A missing value in one row (e.g. a diverged run without a loss) is
    # NaN, dropped by `clean` with a count; a column missing everywhere is
    # an error below.
    if key_l is not None:
      loss_keys.add(key_l)
    cols["n"].append(_to_float(n))
    cols["loss"].append(float(to_loss(_to_float(loss))))
    cols["d"].append(_to_float(_first(rec, _D_KEYS)[1]))
    cols["c"].append(_to_float(_first(rec, _C_KEYS)[1]))
    cols["budget"].append(_to_float(_first(rec, _BUDGET_KEYS)[1]))
    families.append(str(rec.get("family") or ""))
    statuses.append(str(rec.get("status") or "ok"))
  ok = np.array(statuses) == "ok"
  missing = [str(rec.get("point") or f"row {i + 1}")
             for i, rec in enumerate(records) if ok[i] and metric
             and _first(rec, loss_fields)[0] is None]
  if missing and len(missing) < ok.sum():
    # Some rows have it: a point ran without the metric turned on (or with
    # another config); it is dropped, by name.
    warnings.warn(f"{source}: {metric} missing from {len(missing)} ok rows, "
                  f"dropped: {', '.join(missing)}", FitWarning, stacklevel=2)
  for name, keys, values in (("N", n_keys, cols["n"]),
                              ("loss", loss_fields, cols["loss"])):
    # Judged on "ok" runs only: diverged runs often have no loss.
    if ok.any() and not np.isfinite(np.array(values)[ok]).any():
      there = ""
      if name == "loss" and metric:
        # A --metric typo or a metric the sweep did not log: say which
        # ones it did.
        fields = sorted({k for rec in records for k, v in rec.items()
                         if (k.startswith("eval_") or k in _LOSS_KEYS)
                         and isinstance(v, (int, float))
                         and not isinstance(v, bool)})
        there = ("; metrics in this file: " + ", ".join(fields)
                 if fields else "; this file has no metric fields")
      raise ValueError(f"{source}: no run has a usable {name} (fields "
                       f"{', '.join(keys)}){there}")
  placed = np.isfinite(np.array([cols[k] for k in ("d", "c", "budget")]))
  unplaced = ok & ~placed.any(axis=0)
  if unplaced.any():
    raise ValueError(f"{source}: {int(unplaced.sum())} runs have neither D "
                     f"({', '.join(_D_KEYS)}) nor C ({', '.join(_C_KEYS)}, "
                     f"{', '.join(_BUDGET_KEYS)})")
  if len(loss_keys) > 1:
    warnings.warn(f"{source}: losses come from different fields "
                  f"({', '.join(sorted(loss_keys))}); they may not be "
                  "comparable", FitWarning, stacklevel=2)
  runs = make_runs(cols["n"], cols["loss"], d=cols["d"], c=cols["c"],
                   budget=cols["budget"], family=families, source=source)
  runs = clean(runs, np.array(statuses, dtype=object))
  with_budget = int(np.isfinite(runs.budget).sum())
  if 0 < with_budget < len(runs):
    warnings.warn(f"{source}: only {with_budget} of {len(runs)} runs give a "
                  "budget; approach 2 will cluster log10 C instead",
                  FitWarning, stacklevel=2)
  return runs


def clean(runs: Runs, status: Optional[np.ndarray] = None) -> Runs:
  """Drops runs that are not "ok" or have unusable numbers, with a warning.

  Args:
    runs: runs to clean.
    status: optional status per run; anything but "ok" is dropped.

  Returns:
    The usable runs.
  """
  status = (np.full(len(runs), "ok", dtype=object) if status is None
            else np.asarray(status, dtype=object))
  not_ok = status != "ok"
  finite = lambda x: np.isfinite(x) & (x > 0)
  bad_loss = ~not_ok & ~finite(runs.loss)
  bad_nd = ~not_ok & ~bad_loss & ~(finite(runs.n) & finite(runs.d)
                                   & finite(runs.c))
  drop = not_ok | bad_loss | bad_nd
  if drop.any():
    parts = [f"{int(np.sum(status == s))} with status {s!r}"
             for s in sorted(set(status[not_ok].tolist()))]
    if bad_loss.any():
      parts.append(f"{int(bad_loss.sum())} with NaN/inf/non-positive loss")
    if bad_nd.any():
      parts.append(f"{int(bad_nd.sum())} with unusable N, D or C")
    warnings.warn(f"{runs.source}: dropped {int(drop.sum())} of {len(runs)} "
                  f"runs: {', '.join(parts)}", FitWarning, stacklevel=2)
  return runs.take(~drop)


def read_records(path: str) -> List[Dict[str, Any]]:
  """The rows of a results.jsonl or CSV file, as dicts.

  Args:
    path: `.jsonl` (or `.json` lines) or `.csv` file.

  Returns:
    One dict per row (CSV values are stripped strings).

  Raises:
    ValueError: a directory, a line that is not JSON, or a CSV row with
      fewer fields than its header.
  """
  if epath.Path(path).is_dir():
    inside = epath.Path(path) / "results.jsonl"
    raise ValueError(f"{path} is a directory; pass "
                     + (f"{inside}" if inside.exists() else
                        "a results.jsonl or CSV file"))
  if not str(path).endswith(".csv"):
    try:
      return jsonl.read(path)
    except ValueError as e:
      # A runner killed mid-append leaves a torn line; it repairs it.
      raise ValueError(f"{e}; if scaling.run wrote it, rerun it (or with "
                       "--collect) to repair the file") from None
  text = epath.Path(path).read_text(encoding="utf-8")
  reader = csv.DictReader(io.StringIO(text, newline=""))
  records = []
  for row in reader:
    if None in row.values():
      raise ValueError(f"{path} line {reader.line_num}: "
                       f"{sum(v is not None for v in row.values())} fields "
                       f"where the header has {len(reader.fieldnames)}; fix "
                       "or remove that row")
    records.append({k.strip(): v.strip() for k, v in row.items()
                    if k and isinstance(v, str)})
  return records


def sweep_metric(records: Sequence[Dict[str, Any]]) -> Optional[str]:
  """The metric the rows' sweep spec fits (their `metric` field), if one.

  Args:
    records: results rows (scaling.run writes `metric` in each).

  Returns:
    The field name, or None (rows of older runs or CSV files, rows of
    several metrics, or the default loss). Rows without the field (of an
    older run, beside newer rows of the same sweep) do not decide.
  """
  names = {r.get("metric") for r in records} - {None, ""}
  if len(names) != 1:
    return None
  name = names.pop()
  return None if name in (None, "", "eval_loss", "loss") else str(name)


def default_loss_field(records: Sequence[Dict[str, Any]]) -> Optional[str]:
  """The field the default loss comes from, when every row takes the same.

  Args:
    records: results rows.

  Returns:
    The first of eval_loss, final_train_loss, loss, final_loss that each
    row has, if it is one field for all; else None.
  """
  # Rows without any (a diverged run) name nothing.
  keys = {_first(rec, _LOSS_KEYS)[0] for rec in records} - {None}
  return keys.pop() if len(keys) == 1 else None


def load_runs(path: str, param_key: str = "params",
              metric: Optional[str] = None, direction: str = "auto") -> Runs:
  """Loads a results.jsonl or CSV file into cleaned Runs.

  Args:
    path: `.jsonl` (or `.json` lines) or `.csv` file.
    param_key: field used for N in JSONL rows (e.g. "params_non_embedding").
    metric: field fitted as the loss (default: eval_loss or the train loss).
    direction: "auto", "lower" or "higher" (see `metrics.resolve`).

  Returns:
    Cleaned Runs.

  Raises:
    ValueError: unreadable rows or missing columns.
  """
  records = read_records(path)
  return runs_from_records(records, param_key=param_key,
                           source=os.path.basename(str(path)), metric=metric,
                           direction=direction)


def select_family(runs: Runs, family: Optional[str]) -> Runs:
  """Keeps one family's runs, or checks there is only one family.

  Args:
    runs: runs, possibly of several families.
    family: family to keep; None requires the runs to be of one family.

  Returns:
    Runs of a single family.

  Raises:
    ValueError: several families and none chosen, or an unknown family.
  """
  if family is not None:
    if family not in runs.families:
      raise ValueError(f"family {family!r} not in the results; have "
                       + ", ".join(repr(f) for f in runs.families))
    return runs.take(runs.family == family)
  if len(runs.families) > 1:
    raise ValueError(f"runs of {len(runs.families)} families in one fit: "
                     + ", ".join(repr(f) for f in runs.families)
                     + "; fit one family at a time (--family=NAME)")
  return runs


def drop_highest_loss(runs: Runs, k: int) -> Runs:
  """Drops the `k` runs with the highest loss (Epoch's outlier rule, k=5).

  Args:
    runs: runs.
    k: how many to drop (0 keeps all).

  Returns:
    The remaining runs, in their original order.
  """
  if k <= 0:
    return runs
  order = np.argsort(runs.loss, kind="stable")
  keep = np.zeros(len(runs), bool)
  keep[order[:max(0, len(runs) - k)]] = True
  return runs.take(keep)
