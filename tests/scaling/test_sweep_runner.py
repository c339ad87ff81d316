"""The sweep spec and runner: steps and schedule per budget, --dry-run, a
tiny real sweep in parallel with restart, divergence, and bad restarts (the
runner under faults: test_sweep_faults.py).
"""

import json
import math
import os
import shlex
import types

import jax.numpy as jnp
import ml_collections
import pytest

from jaxgen.diffusion import objective as sd_objective
from jaxgen.train import durations
from jaxgen.train import state as state_lib
from scaling import check as check_lib
from scaling import results as results_lib
from scaling import rows as rows_lib
from scaling import run as run_lib
from scaling import spec_check
from scaling import sweep as sweep_lib
from scaling import workers
from tests.train import common

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
SPEC = "configs/scaling/simple_diffusion.py:tiny"
SETS = [f"dataset.data_dir={common.DATA_DIR}"]
SCHEMA = ("family", "params", "params_non_embedding", "budget_flops", "flops",
          "examples_seen", "final_train_loss", "eval_loss", "status",
          "wall_time_s", "config", "provenance")


def _spec():
  return sweep_lib.load_config_file(SPEC)


def _sweep(workdir, lines=None, **kwargs):
  kwargs.setdefault("sets", SETS)
  return run_lib.run_sweep(_spec(), sweep_arg=SPEC, workdir=str(workdir),
                           out=(lines.append if lines is not None else
                                lambda _: None), **kwargs)


def _rows(workdir):
  with open(os.path.join(workdir, "results.jsonl")) as f:
    return [json.loads(line) for line in f]


@pytest.mark.parametrize("budget", [3e8, 1e9, 2.5e12])
def test_steps_and_learning_rate_horizon_follow_the_budget(budget):
  spec = _spec()
  config, overrides = sweep_lib.point_config(spec, budget, "w32d1")
  flops = sd_objective.SimpleDiffusion(config).flops_per_example()
  steps = math.ceil(budget / (flops * config.batch_size))
  assert config.total_steps == overrides["total_steps"] == steps
  # The trainer derives the same length from this config.
  assert durations.total_steps(config, num_examples=None,
                               flops_per_example=flops) == steps
  # Warmup is a fraction of this run; the cosine ends at its last step.
  lr = state_lib.learning_rate_schedule(config.optimizer, steps)
  peak = spec.learning_rate
  warmup = round(spec.warmup_fraction * steps)
  if warmup:
    assert float(lr(0)) == 0.0
  assert float(lr(warmup)) == pytest.approx(peak, rel=1e-6)
  assert float(lr((warmup + steps) // 2)) == pytest.approx(
      peak / 2, abs=peak * 2 / (steps - warmup) + 1e-9)
  # 90% of the way through the decay the cosine is still on (its horizon is
  # this run, not a longer one): peak * (1 + cos(0.9 pi)) / 2.
  k = warmup + (9 * (steps - warmup)) // 10
  frac = (k - warmup) / (steps - warmup)
  assert float(lr(k)) == pytest.approx(
      peak * 0.5 * (1 + math.cos(math.pi * frac)), rel=1e-3)
  assert float(lr(steps)) == pytest.approx(peak * spec.end_lr_fraction,
                                           abs=1e-12)


def test_point_ids_round_trip_and_windows_move_up_the_ladder():
  for budget in (1e12, 2.5e12, 4e17, 3e8):
    pid = sweep_lib.point_id(budget, "w64d2")
    assert sweep_lib.parse_point_id(pid) == (budget, "w64d2")
  spec = _spec()
  spec.points_per_budget, spec.window_shift = 2, 1
  names = ["a", "b", "c"]
  assert [sweep_lib.budget_sizes(spec, names, i) for i in range(4)] == [
      ["a", "b"], ["b", "c"], ["b", "c"], ["b", "c"]]
  # The paper presets' 0.5: one rung per second budget (per decade of
  # 1e19, 3e19, 1e20, 3e20, 1e21). round() gave 0, 0, 1, 2, 2: 3e20 had
  # 1e21's window.
  spec.points_per_budget, spec.window_shift = 1, 0.5
  assert [sweep_lib.budget_sizes(spec, list("abcde"), i)
          for i in range(5)] == [["a"], ["a"], ["b"], ["b"], ["c"]]


def test_only_budgets_keeps_each_budgets_window():
  # The window followed the budget's rank among those passed: one budget of
  # the cpu sweep got the smallest sizes, new points around no minimum.
  spec = sweep_lib.load_config_file("configs/scaling/simple_diffusion.py:cpu")
  spec.window_shift = 1
  full = sweep_lib.plan(spec)
  budgets = sorted({p.budget for p in full})
  assert len(budgets) >= 3
  for budget in budgets[1:]:
    assert [p.id for p in sweep_lib.plan(spec, budgets=[budget])] == [
        p.id for p in full if p.budget == budget]
  # Beyond the spec's budgets: the window keeps moving up.
  beyond = [p.size for p in sweep_lib.plan(spec, budgets=[budgets[-1] * 4])]
  last = [p.size for p in full if p.budget == budgets[-1]]
  names = [n for n, _ in sweep_lib.ladder(spec)]
  assert names.index(beyond[0]) >= names.index(last[0])


def test_dry_run_prints_one_command_per_point(tmp_path):
  lines = []
  out = _sweep(tmp_path / "sweep", lines, dry_run=True)
  commands = [shlex.split(ln) for ln in lines if not ln.startswith("#")]
  ids = [p.id for p in out["points"]]
  assert len(ids) == 4 and len(set(ids)) == 4
  assert len(commands) == 4
  for pid, argv in zip(ids, commands):
    assert f"--point={pid}" in argv
    # The spec file travels as an absolute path (workers run from the repo).
    path, _, preset = SPEC.partition(":")
    assert "scaling.run" in argv
    assert f"--sweep={os.path.abspath(path)}:{preset}" in argv
    assert f"--set={SETS[0]}" in argv
  assert not (tmp_path / "sweep").exists()  # No side effects.


def test_tiny_sweep_in_parallel_writes_rows_and_skips_finished(
    tmp_path, monkeypatch):
  # Workers get one CPU device (the test process has 8 fake ones).
  monkeypatch.setenv("XLA_FLAGS", "")
  workdir = tmp_path / "sweep"
  lines = []
  out = _sweep(workdir, lines, parallel=2)
  assert out["failed"] == [], "\n".join(lines)
  # Two points were started before the first one finished, each pinned to
  # its own cores (where there are two).
  first_done = next(i for i, ln in enumerate(lines) if ln.startswith("["))
  starts = [ln for ln in lines[:first_done] if ln.startswith("start ")]
  assert len(starts) == 2
  if len(os.sched_getaffinity(0)) >= 2:
    cores = [ln.rsplit(", cores ", 1)[1] for ln in starts]
    assert len(set(cores)) == 2, starts
  assert any("ETA" in ln for ln in lines)
  rows = _rows(workdir)
  assert sorted(r["point"] for r in rows) == sorted(p.id for p in
                                                     out["points"])
  for r in rows:
    assert set(SCHEMA) <= set(r)
    assert r["status"] == "ok" and r["family"] == "simple_diffusion"
    assert math.isfinite(r["eval_loss"]) and math.isfinite(
        r["final_train_loss"])
    assert 0 < r["params_non_embedding"] < r["params"]
    step_flops = r["flops_per_example"] * r["batch_size"]
    assert r["budget_flops"] <= r["flops"] < r["budget_flops"] + step_flops
    assert r["examples_seen"] == r["steps"] * r["batch_size"]
    # Passes over the 8192 training shapes, for the fit's repeated-data
    # warning.
    assert r["epochs"] == pytest.approx(r["examples_seen"] / 8192)
    assert os.path.exists(workdir / "runs" / r["point"] / "metrics.jsonl")
  runs = results_lib.load_runs(str(workdir / "results.jsonl"))
  assert len(runs) == 4 and runs.families == ["simple_diffusion"]

  # A restart runs nothing and appends nothing.
  before = (workdir / "results.jsonl").read_text()
  lines = []
  _sweep(workdir, lines, parallel=2)
  assert not any(ln.startswith("start ") for ln in lines)
  assert (workdir / "results.jsonl").read_text() == before
  # Rows of points finished elsewhere (runs/<id>/result.json) are collected.
  os.remove(workdir / "results.jsonl")
  lines = []
  _sweep(workdir, lines)
  assert not any(ln.startswith("start ") for ln in lines)
  assert len(_rows(workdir)) == 4


def test_non_finite_loss_is_recorded_as_diverged(tmp_path, monkeypatch):
  real_step = sd_objective.SimpleDiffusion.train_step

  def nan_from_step_2(self, state, batch, rng):
    new_state, metrics = real_step(self, state, batch, rng)
    metrics["loss"] = jnp.where(state.step >= 1, jnp.nan, metrics["loss"])
    return new_state, metrics

  monkeypatch.setattr(sd_objective.SimpleDiffusion, "train_step",
                      nan_from_step_2)
  workdir = tmp_path / "sweep"
  out = _sweep(workdir, budgets=[3e8], sizes=["w16d1"], in_process=True)
  assert out["failed"] == []
  (row,) = _rows(workdir)
  assert row["status"] == "diverged"
  assert "Non-finite loss" in row["error"]
  assert row["eval_loss"] is None and row["final_train_loss"] is None
  with pytest.warns(results_lib.FitWarning, match="1 with status 'diverged'"):
    assert len(results_lib.load_runs(str(workdir / "results.jsonl"))) == 0
  # Diverged points count as finished.
  lines = []
  _sweep(workdir, lines, budgets=[3e8], sizes=["w16d1"], in_process=True)
  assert len(_rows(workdir)) == 1


def test_a_run_that_did_not_train_is_diverged():
  spec = _spec()
  spec.diverged_loss_ratio = 1.0
  point = sweep_lib.make_point(spec, 3e8, "w16d1", spec_check.parse_sets(SETS))

  def row(losses):
    metrics = [{"step": i + 1, "loss": x, "examples_seen": 8 * (i + 1),
                "flops_seen": 1.0} for i, x in enumerate(losses)]
    metrics[-1]["eval_loss"] = losses[-1]
    return rows_lib.make_row(spec, point, metrics, error=None,
                            wall_time_s=1.0, resumed_from=0, command="")

  assert row([0.9, 0.5, 0.4])["status"] == "ok"
  bad = row([0.9, 5.0, 7.0])
  assert bad["status"] == "diverged" and "did not train" in bad["error"]


def test_rows_carry_the_last_sample_metrics_and_fit_reads_them():
  spec = _spec()
  point = sweep_lib.make_point(spec, 3e8, "w16d1", spec_check.parse_sets(SETS))
  metrics = [{"step": 1, "loss": 0.5, "examples_seen": 8, "flops_seen": 1.0,
              "eval_fid": 90.0, "eval_kid": 0.1},
             {"step": 2, "loss": 0.4, "examples_seen": 16, "flops_seen": 2.0,
              "eval_loss": 0.4, "eval_fid": 70.0}]
  row = rows_lib.make_row(spec, point, metrics, error=None, wall_time_s=1.0,
                         resumed_from=0, command="")
  assert row["eval_fid"] == 70.0 and row["eval_kid"] == 0.1
  assert row["eval_loss"] == 0.4
  records = [dict(row, params=n, eval_fid=f, flops=c, point=f"C1e12_{n:g}")
             for n, f, c in [(1e6, 70.0, 1e12), (2e6, 60.0, 1e12)]]
  runs = results_lib.runs_from_records(records, metric="eval_fid")
  assert list(runs.loss) == [70.0, 60.0]
  assert list(results_lib.runs_from_records(records).loss) == [0.4, 0.4]
  with pytest.raises(ValueError, match="no run has a usable loss.*eval_is"):
    results_lib.runs_from_records(records, metric="eval_is")


def test_restart_refuses_other_families_and_changed_configs(tmp_path):
  workdir = tmp_path / "sweep"
  os.makedirs(workdir)
  point = _sweep(workdir, dry_run=True)["points"][0]
  row = {"family": "r3gan", "point": point.id, "status": "ok"}
  (workdir / "results.jsonl").write_text(json.dumps(row) + "\n")
  with pytest.raises(ValueError, match="family 'r3gan'"):
    _sweep(workdir)
  row = {"family": "simple_diffusion", "point": point.id, "status": "ok",
         "config": {"overrides": dict(point.overrides, batch_size=64)}}
  (workdir / "results.jsonl").write_text(json.dumps(row) + "\n")
  with pytest.raises(ValueError, match="different config.*batch_size"):
    _sweep(workdir)
  # A row of a point outside this plan (--only_budgets of another batch
  # size) was kept beside the new rows, and the fit mixed the two.
  points = _sweep(workdir, dry_run=True, budgets=[3e8])["points"]
  other = {"family": "simple_diffusion", "point": "C9e9_w16d1",
           "status": "ok", "config": {"base": _spec().base, "overrides": dict(
               points[0].overrides, batch_size=64, total_steps=5,
               **{"model.transformer_width": 99})}}
  (workdir / "results.jsonl").write_text(json.dumps(other) + "\n")
  with pytest.raises(ValueError, match=(
      r"holds point C9e9_w16d1 of another sweep config \(batch_size\), "
      "which a fit would mix")):
    _sweep(workdir, budgets=[3e8])
  # Its own length and size fields are its own.
  other["config"]["overrides"]["batch_size"] = points[0].overrides[
      "batch_size"]
  (workdir / "results.jsonl").write_text(json.dumps(other) + "\n")
  assert rows_lib.load_finished(str(workdir), _spec(), points,
                                out=lambda _: None) == {}
  other["config"]["base"] = "configs/other.py"
  (workdir / "results.jsonl").write_text(json.dumps(other) + "\n")
  with pytest.raises(ValueError, match=r"another sweep config \(base "):
    rows_lib.load_finished(str(workdir), _spec(), points, out=lambda _: None)


def test_check_report_compares_predictions_with_the_measured_loss():
  fit = {"approach2": {"a": 0.5, "G": 1e-3, "b": 0.5, "H": 10.0,
                       "loss_coef": 2.0, "loss_exponent": -0.05},
         "approach3": {"E": 0.1, "A": 10.0, "B": 10.0, "alpha": 0.3,
                       "beta": 0.3, "k": 100.0}}
  row = {"point": "C1e12_w64d2", "budget_flops": 1e12, "params": 2e5,
         "examples_seen": 5e4, "status": "ok", "eval_loss": 0.5}
  report = check_lib.check_report(fit, row)
  loss2 = 2.0 * 1e12**-0.05
  assert report["predictions"]["approach2"]["N_opt"] == pytest.approx(1e3)
  assert report["errors"]["approach2_loss_at_optimum"] == pytest.approx(
      loss2 / 0.5 - 1)
  at_run = 0.1 + 10 / 2e5**0.3 + 10 / 5e4**0.3
  assert report["errors"]["approach3_loss_at_run"] == pytest.approx(
      at_run / 0.5 - 1)
  # A fit on non-embedding counts is evaluated at the run's non-embedding N.
  fit["settings"] = {"param_key": "params_non_embedding"}
  row["params_non_embedding"] = 1e5
  report = check_lib.check_report(fit, row)
  at_run = 0.1 + 10 / 1e5**0.3 + 10 / 5e4**0.3
  assert report["errors"]["approach3_loss_at_run"] == pytest.approx(
      at_run / 0.5 - 1)
  # A check run that diverged is an error, not a comparison.
  with pytest.raises(ValueError, match="diverged"):
    check_lib.check_report(fit, dict(row, status="diverged", eval_loss=None))
  # A fit of a sample metric is checked against that metric, not against
  # the run's eval_loss (R3GAN: +335% where the error was -3%).
  fit["settings"] = {"metric": "eval_fd_shapes", "fitted": "eval_fd_shapes",
                     "higher_is_better": False}
  report = check_lib.check_report(fit, dict(row, eval_fd_shapes=3.1))
  assert report["measured_loss"] == 3.1 and report["metric"] == (
      "eval_fd_shapes")
  assert report["errors"]["approach2_loss_at_optimum"] == pytest.approx(
      loss2 / 3.1 - 1)
  # Higher-is-better: compared in the fitted space (1 / IS).
  fit["settings"] = {"metric": "eval_is", "fitted": "1 / eval_is",
                     "higher_is_better": True}
  report = check_lib.check_report(fit, dict(row, eval_is=4.0))
  assert report["measured_metric"] == 4.0
  assert report["measured_loss"] == pytest.approx(0.25)
  assert report["errors"]["approach2_loss_at_optimum"] == pytest.approx(
      loss2 / 0.25 - 1)
  with pytest.raises(ValueError, match=r"^the fit predicts eval_is and the "
                     r"check run C1e12_w64d2 logged none; nothing to compare"):
    check_lib.check_report(fit, row)


def test_schedules_must_span_the_run_r3gan_via_burn_in_fraction():
  # R3GAN's lr, γ and β2 follow a burn-in in images unless it is a fraction
  # of the run: without one, a one-line error before anything runs.
  spec = _spec()
  spec.base, spec.family = "configs/r3gan.py:tiny", "r3gan"
  spec.run = ml_collections.ConfigDict({"num_samples": 0})
  spec.sizes = ml_collections.ConfigDict(
      {"w16": {"widths": (16, 16, 16)}, "w32": {"widths": (32, 32, 32)}})
  with pytest.raises(ValueError, match="gan.burn_in_fraction") as e:
    sweep_lib.point_config(spec, 3e8, "w16")
  assert "\n" not in str(e.value)
  spec.run.gan = ml_collections.ConfigDict({"burn_in_fraction": 0.5})
  small, _ = sweep_lib.point_config(spec, 3e11, "w16")
  big, overrides = sweep_lib.point_config(spec, 3e11, "w32")
  assert overrides["gan.burn_in_fraction"] == 0.5
  assert small.gan.burn_in_fraction == big.gan.burn_in_fraction == 0.5
  # Same budget: the larger rung gets fewer steps (and so a shorter ramp).
  assert 0 < big.total_steps < small.total_steps


def test_core_slots_split_the_cores(monkeypatch):
  monkeypatch.setattr(os, "sched_getaffinity", lambda _: {0, 1, 2, 3, 4})
  assert workers.core_slots(2) == [frozenset({0, 1, 2}), frozenset({3, 4})]
  assert workers.core_slots(1) is None  # One worker: all cores anyway.
  assert workers.core_slots(6) is None  # More workers than cores.
  # An adopted worker keeps the slot it is pinned to (the next worker is
  # pinned to the other one, not beside it).
  slots = workers.core_slots(2)
  affinity = {41: {3, 4}, 42: {0, 1, 2, 3, 4}}

  def getaffinity(pid):
    if pid not in affinity:
      raise ProcessLookupError(pid)
    return affinity[pid]

  monkeypatch.setattr(os, "sched_getaffinity", getaffinity)
  assert workers.slot_of(41, slots) == frozenset({3, 4})
  assert workers.slot_of(42, slots) is None  # Not pinned.
  assert workers.slot_of(43, slots) is None  # Ended.
  assert workers.slot_of(41, None) is None  # This runner does not pin.


def test_point_ids_keep_every_budget_exact_and_distinct():
  # Three digits are enough for ordinary budgets (the committed ids) ...
  assert sweep_lib.point_id(2.5e11, "w16d1") == "C2.5e11_w16d1"
  assert sweep_lib.point_id(6e8, "w16d1") == "C6e8_w16d1"
  # ... and a budget needing more keeps them: a worker rebuilds it from
  # the id, and two budgets must not share a point.
  for budget in (6.0049e8, 6.0051e8, 6.0011e8, 6.0012e8, 1 / 3 * 1e12):
    pid = sweep_lib.point_id(budget, "w16d1")
    assert sweep_lib.parse_point_id(pid) == (budget, "w16d1")
  with pytest.warns(sweep_lib.SweepWarning, match="2 sizes per budget"):
    points = sweep_lib.plan(_spec(), budgets=[6.0012e8, 6.0011e8, 6.0011e8])
  assert sorted({p.budget for p in points}) == [6.0011e8, 6.0012e8]
  assert len({p.id for p in points}) == len(points) == 4
  for bad in (float("nan"), float("inf"), 0.0, -1e12):
    with pytest.raises(ValueError, match="positive finite"):
      sweep_lib.budget_tag(bad)


@pytest.mark.parametrize("path", sorted(
    os.path.relpath(os.path.join(d, f), ROOT)
    for d, _, files in os.walk(os.path.join(ROOT, "experiments"))
    for f in files if f.startswith("results") and f.endswith(".jsonl")))
def test_committed_point_ids_still_name_their_budgets(path):
  with open(os.path.join(ROOT, path)) as f:
    rows = [json.loads(line) for line in f if line.strip()]
  assert rows
  for row in rows:
    assert sweep_lib.parse_point_id(row["point"]) == (row["budget_flops"],
                                                      row["size"])
    assert sweep_lib.point_id(row["budget_flops"], row["size"]) == row[
        "point"]


def test_bad_overrides_and_spec_fields_are_one_line_errors():
  def error(spec, sets=None):
    with pytest.raises(ValueError) as e:
      sweep_lib.point_config(spec, 3e8, "w16d1", sets)
    assert "\n" not in str(e.value)
    return str(e.value)

  # `model` is an open section: a new key passes apply_overrides and is
  # only refused by the model, which names the typo.
  assert error(_spec(), {"model.transformer_widht": "3"}) == (
      "--set model.transformer_widht: unknown config field "
      "'transformer_widht'; did you mean 'transformer_width'?")
  spec = _spec()
  spec.sizes.w16d1.transformer_widht = 24
  assert error(spec) == (
      "sweep.sizes.w16d1.transformer_widht: unknown config field "
      "'transformer_widht'; did you mean 'transformer_width'?")
  assert error(_spec(), {"dataset.imag_size": "8"}) == (
      "--set dataset.imag_size: unknown config field 'imag_size'; did you "
      "mean 'image_size'?")
  assert error(_spec(), {"model.transformer_width": "abc"}) == (
      "--set model.transformer_width=abc: model.transformer_width is a "
      "number (now 16)")
  assert "is true or false" in error(_spec(), {"tensorboard": "maybe"})
  for value in (0, -3):
    spec = _spec()
    spec.batch_size = value
    assert error(spec) == (f"sweep.batch_size={value} must be an integer "
                           ">= 1.")
  spec = _spec()
  spec.budget = (1e9,)  # A typo of `budgets`.
  assert error(spec).startswith("unknown sweep field 'budget'; did you mean "
                                "'budgets'?")
  spec = _spec()
  spec.budgets = (3e8, float("nan"))
  assert "budgets must be positive finite" in error(spec)
  # Fields each point derives from the spec would be silently replaced.
  for key, where in (("total_steps", "sweep.budgets"),
                     ("optimizer.learning_rate", "sweep.learning_rate"),
                     ("optimizer.warmup_steps", "sweep.warmup_fraction"),
                     ("eval_every_steps", "nothing")):
    spec = _spec()
    *sections, name = key.split(".")
    run = spec.run
    for section in sections:
      run[section] = ml_collections.ConfigDict()
      run = run[section]
    run[name] = 5
    assert error(spec).startswith(f"sweep.run.{key} is set per point by the "
                                  f"sweep; remove it and set {where}")
  spec = _spec()
  spec.run.model = ml_collections.ConfigDict({"transformer_width": 8})
  assert error(spec) == (
      "sweep.run.model.transformer_width is set per size (sweep.sizes.w16d1."
      "transformer_width); remove it from sweep.run")


@pytest.mark.parametrize("flag,message,status", [
    ("--only_budgets=nan", "--only_budgets=['nan']: must be positive finite "
     "FLOP counts", 2),
    ("--only_budgets=0", "--only_budgets=['0']: must be positive finite", 2),
    ("--nearest_params=-5", "--nearest_params=-5.0: must be a positive "
     "parameter count", 2),
    ("--parallel=0", "--parallel=0: 0 is not a positive integer", 2),
    ("--sweep.batch_size=0", "sweep.batch_size=0 must be an integer >= 1",
     1),
    ("--set=model.transformer_widht=3", "did you mean 'transformer_width'?",
     1),
    # Checked with the spec, not while the plan prints its device-hours.
    ("--sweep.cluster.mfu=5", "sweep.cluster.mfu=5.0 must be a finite "
     "number in (0, 1]", 1),
])
def test_command_line_refuses_bad_values_in_one_line(tmp_path, flag, message,
                                                     status):
  proc = common.run_module("scaling.run", f"--sweep={SPEC}",
                           f"--workdir={tmp_path / 'w'}", "--dry-run", flag,
                           timeout=120)
  assert proc.returncode == status, proc.stderr
  assert proc.stderr.strip().count("\n") == 0, proc.stderr
  assert proc.stderr.startswith("error: ") and message in proc.stderr
  assert not (tmp_path / "w").exists()


def test_a_fit_of_another_family_or_metric_is_refused_as_the_optimum(
    tmp_path):
  spec = sweep_lib.load_config_file("configs/scaling/r3gan.py:cpu")
  fit = {"data": {"family": "simple_diffusion"},
         "settings": {"metric": "loss"}}
  with pytest.raises(ValueError, match="fits simple_diffusion runs and this "
                     "sweep trains r3gan"):
    check_lib.check_fit_matches(fit, spec, "f.json")
  fit["data"]["family"] = "r3gan"
  # The fit's default ("loss": eval_loss first) is not this spec's sample
  # metric.
  assert spec.metric != "eval_loss"
  with pytest.raises(ValueError, match=f"fits eval_loss and this sweep's "
                     f"metric is {spec.metric}"):
    check_lib.check_fit_matches(fit, spec, "f.json")
  sd = sweep_lib.load_config_file("configs/scaling/simple_diffusion.py:cpu")
  check_lib.check_fit_matches({"data": {"family": "simple_diffusion"},
                               "settings": {"metric": "loss"}}, sd, "f.json")
  fit["settings"]["metric"] = spec.metric
  check_lib.check_fit_matches(fit, spec, "f.json")
  fit["settings"]["metric"] = "eval_accuracy_shapes"
  with pytest.raises(ValueError, match="fits eval_accuracy_shapes and this "
                     f"sweep's metric is {spec.metric}"):
    check_lib.check_fit_matches(fit, spec, "f.json")
  # On the command line: before anything runs, one line each.
  bad = tmp_path / "fit.json"
  bad.write_text("not json")
  # A bad file exits 1; two flags that exclude each other are a usage
  # error (2), as every other misuse of flags is.
  for extra, expected, status in [
      ([f"--optimal_from={bad}"], "is not JSON", 1),
      ([f"--optimal_from={bad}", "--nearest_params=1e5"],
       "pass --nearest_params or --optimal_from, not both", 2)]:
    out = common.run_module(
        "scaling.run", "--sweep=configs/scaling/r3gan.py:cpu",
        f"--workdir={tmp_path / 'w'}", "--dry-run", "--only_budgets=4e12",
        *extra, timeout=120)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == status and len(lines) == 1, out.stderr[-2000:]
    assert expected in lines[0], lines[0]


def test_budgets_below_one_step_or_beyond_any_run_are_refused():
  spec = sweep_lib.load_config_file("configs/scaling/simple_diffusion.py:tiny")
  # 1e3 FLOPs: one step of the smallest size costs ~5.8e7.
  with pytest.raises(ValueError, match=r"budget 1e\+03 FLOPs is below one "
                     r"step of size w16d1 \(5\.\d+e\+07 FLOPs\)"):
    sweep_lib.plan(spec, budgets=[1e3])
  with pytest.raises(ValueError, match=r"budget 1e\+30 FLOPs is .* steps of "
                     "size w16d1; pass a budget this sweep can run"):
    sweep_lib.plan(spec, budgets=[1e30])
  # The spec's own budgets plan as before.
  assert sweep_lib.plan(spec)


@pytest.mark.parametrize("setting,message", [
    ("dataset.name=nope", "unknown dataset 'nope'"),
    # Trained (ascending) to an "ok" row when the divergence test is off.
    ("optimizer.learning_rate=-1", "config.optimizer.learning_rate=-1.0 "
                                   "must be a finite number > 0"),
])
def test_a_bad_set_is_refused_at_planning_not_in_every_worker(
    tmp_path, setting, message):
  # Each worker failed in turn with the same line ("4 points failed").
  with pytest.raises(ValueError, match=message):
    _sweep(tmp_path / "w", sets=SETS + [setting], dry_run=True)
  assert not (tmp_path / "w").exists()


def test_a_sweep_whose_points_would_not_log_its_metric_is_refused(tmp_path):
  # R3GAN fits a sample metric; without sample metrics every row held only
  # the adversarial eval_loss, and scaling.fit fitted that.
  spec = sweep_lib.load_config_file("configs/scaling/r3gan.py:tiny")
  kwargs = dict(sweep_arg="configs/scaling/r3gan.py:tiny",
                workdir=str(tmp_path / "w"), dry_run=True, out=lambda _: None)
  with pytest.raises(ValueError, match=(
      r"^sweep.metric=eval_fd_shapes \(what scaling.fit fits\) would be in "
      r"no row: config.eval.sample_metrics is off; pass --set=eval.sample_"
      r"metrics.enabled=True .*classifier_weights=FILE.*, or fit the loss "
      r"with --sweep.metric=eval_loss$")):
    run_lib.run_sweep(spec, **kwargs)
  on = ["eval.sample_metrics.enabled=True",
        "eval.sample_metrics.classifier_weights=/w.msgpack"]
  with pytest.raises(ValueError, match="the points score inception features;"
                     " pass --set=eval.sample_metrics.features=shape_"
                     "classifier"):
    run_lib.run_sweep(spec, sets=on + [
        "eval.sample_metrics.inception_weights=/i.npz",
        "eval.sample_metrics.reference_stats=/s.npz"], **kwargs)
  assert run_lib.run_sweep(spec, sets=on + [
      "eval.sample_metrics.features=shape_classifier"], **kwargs)["points"]
  spec.metric = "eval_loss"
  assert run_lib.run_sweep(spec, **kwargs)["points"]
  # The held-out loss's parts (logged with it) need no sample metrics.
  spec.metric = "eval_r1"
  assert run_lib.run_sweep(spec, **kwargs)["points"]
  # An autoencoder without Inception files logs PSNR / SSIM, no rFID.
  ae = sweep_lib.load_config_file("configs/scaling/autoencoder.py:tiny")
  kwargs["sweep_arg"] = "configs/scaling/autoencoder.py:tiny"
  ae.metric = "eval_rfid"
  with pytest.raises(ValueError, match=(
      r"would be in no row: no Inception weights are set \(PSNR / SSIM "
      r"alone\); pass --set=eval.sample_metrics.inception_weights=FILE")):
    run_lib.run_sweep(ae, sets=["eval.sample_metrics.enabled=True"],
                      **kwargs)
  ae.metric = "eval_psnr"
  assert run_lib.run_sweep(ae, sets=["eval.sample_metrics.enabled=True"],
                           **kwargs)["points"]


def test_a_size_given_twice_is_one_point():
  # --only_sizes=w16d1,w16d1 planned (and ran) the same point twice.
  points = sweep_lib.plan(_spec(), budgets=[3e8], sizes=["w16d1", "w16d1"])
  assert [p.id for p in points] == ["C3e8_w16d1"]


def test_progress_names_the_sweep_metric_and_skips_what_was_not_logged():
  lines = []
  progress = run_lib._Progress(2, 0, lines.append)
  point = types.SimpleNamespace(id="C1e9_w8", budget=1e9)
  progress.finished(point, {"status": "ok", "metric": "eval_fd_shapes",
                            "eval_fd_shapes": 12.5, "eval_loss": 0.69,
                            "final_train_loss": 0.7}, 3.0, 1e9, 1)
  # eval_batches=0: no eval_loss (formatting None raised TypeError).
  progress.finished(point, {"status": "ok", "eval_loss": None,
                            "final_train_loss": 0.25}, 3.0, 0, 0)
  assert lines[0].startswith("[  1/2] C1e9_w8 ok eval_fd_shapes 12.5000 "
                             "eval_loss 0.6900 train 0.7000 (")
  assert lines[1].startswith("[  2/2] C1e9_w8 ok train 0.2500 (")
  # A failed point adds nothing to the work done: the ETA of fast crashes
  # is unknown, not zero; after a finished point it scales its time.
  lines.clear()
  progress = run_lib._Progress(3, 0, lines.append)
  progress.finished(point, None, 1.0, 2e9, 1)
  assert "FAILED" in lines[0] and "ETA unknown" in lines[0]
  progress.start -= 100.0
  progress.finished(point, {"status": "ok"}, 1.0, 1e9, 0)
  assert "ETA 1m4" in lines[1]  # 100 s for 1e9 FLOPs, 1e9 to go.
