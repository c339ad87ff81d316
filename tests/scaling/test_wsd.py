"""Warmup-stable-decay sweeps: one stable run per size, cooldown branches.

A branch must be the same run as a from-scratch run of its point with the
same wsd schedule (same data order, same step rngs), while training only its
cooldown; the steps actually run are counted from the metrics files.
"""

import json
import os
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from jaxgen import jsonl
from jaxgen.train import state as state_lib
from scaling import run as run_lib
from scaling import sweep as sweep_lib
from scaling import wsd
from tests.train import common

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))
SPEC = "configs/scaling/simple_diffusion.py:tiny"
SETS = [f"dataset.data_dir={common.DATA_DIR}"]


def _spec():
  spec = sweep_lib.load_config_file(SPEC)
  spec.schedule = "wsd"
  spec.decay_fraction = 0.5
  return spec


def _steps_logged(rundir):
  rows = jsonl.read(os.path.join(rundir, "metrics.jsonl"), missing_ok=True)
  return [r["step"] for r in rows if "loss" in r]


def test_point_configs_share_warmup_and_differ_only_in_length():
  spec = _spec()
  small, _ = sweep_lib.point_config(spec, 3e8, "w32d1")
  large, over = sweep_lib.point_config(spec, 6e8, "w32d1")
  assert large.optimizer.schedule == over["optimizer.schedule"] == "wsd"
  assert small.optimizer.warmup_steps == large.optimizer.warmup_steps == (
      round(spec.warmup_fraction * small.total_steps))
  assert large.optimizer.decay_fraction == 0.5
  assert large.total_steps > small.total_steps


def test_each_size_warms_up_over_a_fraction_of_its_shortest_run():
  # A window moving up the ladder brings the larger size in at the larger
  # budget only; its warmup is a fraction of its run there, as a cosine
  # sweep's shortest run of it (from the spec's smallest budget, which it
  # never runs, the warmup was half as long).
  spec = _spec()
  spec.points_per_budget = 1
  spec.window_shift = 1.0
  spec.warmup_fraction = 0.2
  spec.budgets = (3e9, 6e9)  # 60-130 steps: warmups of 7 and 14 differ.
  points = sweep_lib.plan(spec, budgets=list(spec.budgets) + [1.2e10])
  sizes = {p.size for p in points}
  assert len(sizes) == 2  # Each budget its own size, the last one's twice.
  for size in sizes:
    chain = sorted((p for p in points if p.size == size),
                   key=lambda p: p.budget)
    warmups = {sweep_lib.point_config(spec, p.budget, size)[0]
               .optimizer.warmup_steps for p in chain}
    assert warmups == {round(0.2 * chain[0].steps)}, (size, warmups)
  assert sweep_lib.first_budget(spec, max(
      sizes, key=lambda n: [p.params for p in points if p.size == n][0])) == (
          max(spec.budgets))


def test_savings_count_one_stable_run_and_the_cooldowns():
  spec = _spec()
  points = sweep_lib.plan(spec)
  s = wsd.savings(spec, points)
  want_full = sum(p.steps for p in points)
  want_wsd = 0
  for size in {p.size for p in points}:
    chain = [p for p in points if p.size == size]
    want_wsd += max(p.steps - round(0.5 * p.steps) for p in chain)
    want_wsd += sum(round(0.5 * p.steps) for p in chain)
  assert s["full_steps"] == want_full and s["wsd_steps"] == want_wsd
  assert 0 < s["saved_fraction"] < 1


def test_each_branch_is_counted_for_what_it_adds_to_its_chain():
  # The runner's ETA divided by whole budgets: 3m35s for a 48 s sweep.
  spec = _spec()
  points = sweep_lib.plan(spec)
  work = wsd.work(spec, points)
  assert sorted(work) == sorted(p.id for p in points)
  assert sum(work.values()) == pytest.approx(
      wsd.savings(spec, points)["wsd_flops"])
  for chain in wsd.chains(points).values():
    first, *rest = chain
    # The first branch runs its whole schedule; later ones less than theirs.
    assert work[first.id] == pytest.approx(first.planned_flops, rel=1e-9)
    assert all(work[p.id] < p.planned_flops for p in rest) and rest


def test_families_without_a_schedule_refuse_wsd():
  spec = sweep_lib.load_config_file("configs/scaling/r3gan.py:tiny")
  spec.schedule = "wsd"
  with pytest.raises(ValueError, match="sweep it with schedule 'cosine'"):
    sweep_lib.plan(spec)


def test_wsd_sweep_branches_from_stable_runs_and_matches_full_runs(
    tmp_path, monkeypatch):
  monkeypatch.setenv("XLA_FLAGS", "")
  spec = _spec()
  workdir = tmp_path / "sweep"
  lines = []
  out = run_lib.run_sweep(spec, sweep_arg=SPEC, workdir=str(workdir),
                          sets=SETS, sweep_flags=["--sweep.schedule=wsd",
                                                  "--sweep.decay_fraction=0.5"],
                          parallel=2, out=lines.append)
  assert out["failed"] == [], "\n".join(lines)
  assert any(ln.startswith("wsd: one stable run per size") for ln in lines)
  starts = [ln for ln in lines if ln.startswith("start ")]
  assert len(starts) == 2 and all("stable_" in ln for ln in starts)
  points = out["points"]
  rows = {r["point"]: r for r in map(
      json.loads, (workdir / "results.jsonl").read_text().splitlines())}
  assert sorted(rows) == sorted(p.id for p in points)
  run_steps = 0
  for size in {p.size for p in points}:
    chain = sorted((p for p in points if p.size == size),
                   key=lambda p: p.steps)
    stable = _steps_logged(workdir / "runs" / f"stable_{size}")
    # The stable run went up to the last branch point, once.
    assert stable == list(range(1, wsd.decay_start(spec, chain[-1]) + 1))
    run_steps += len(stable)
    for p in chain:
      row = rows[p.id]
      start = wsd.decay_start(spec, p)
      assert row["status"] == "ok"
      assert row["wsd"]["branched_at_step"] == start
      assert row["resumed_from_step"] == start
      assert row["steps_done"] == p.steps
      assert row["examples_seen"] == p.steps * p.batch_size
      branch = _steps_logged(workdir / "runs" / p.id)
      assert branch == list(range(start + 1, p.steps + 1))
      run_steps += len(branch)
  # Training steps actually run: what the plan says, fewer than full runs.
  s = wsd.savings(spec, points)
  assert run_steps == s["wsd_steps"] < s["full_steps"]

  # The longest branch equals a from-scratch run of its point's config
  # (on one device, as the sweep's workers).
  p = max(points, key=lambda p: p.steps)
  script = (
      "import sys; from jaxgen import families; "
      "from jaxgen.train import trainer; "
      "from scaling import spec_check, sweep; "
      f"spec = sweep.load_config_file({SPEC!r}); spec.schedule = 'wsd'; "
      "spec.decay_fraction = 0.5; "
      f"config, _ = sweep.point_config(spec, {p.budget!r}, {p.size!r}, "
      f"spec_check.parse_sets({SETS!r})); "
      "trainer.train_and_evaluate(config, sys.argv[1])")
  subprocess.run([sys.executable, "-c", script, str(tmp_path / "full")],
                 cwd=ROOT, check=True, capture_output=True,
                 env=dict(os.environ, XLA_FLAGS="", JAX_PLATFORMS="cpu"))
  full = [r for r in jsonl.read(tmp_path / "full" / "metrics.jsonl")
          if "eval_loss" in r][-1]
  assert full["step"] == p.steps
  assert full["eval_loss"] == pytest.approx(rows[p.id]["eval_loss"],
                                            rel=1e-5)

  # A rerun runs nothing.
  lines = []
  run_lib.run_sweep(spec, sweep_arg=SPEC, workdir=str(workdir), sets=SETS,
                    out=lines.append)
  assert not any(ln.startswith("start ") for ln in lines)


def test_a_branch_is_judged_against_its_stable_runs_first_loss():
  from scaling import rows as rows_lib  # pylint: disable=g-import-not-at-top
  spec = _spec()
  spec.diverged_loss_ratio = 1.0
  point = sweep_lib.plan(spec)[0]
  # A cooldown whose loss wobbles up from its (already trained) first row.
  metrics = [{"step": 5, "loss": 0.19}, {"step": 6, "loss": 0.2},
             {"step": 7, "loss": 0.2, "eval_loss": 0.21}]
  kw = dict(error=None, wall_time_s=1.0, resumed_from=4, command="")
  assert rows_lib.make_row(spec, point, metrics, **kw)["status"] == (
      "diverged")
  row = rows_lib.make_row(spec, point, metrics, first_loss=1.0, **kw)
  assert row["status"] == "ok"
  # Above the stable run's first loss it is still diverged.
  assert rows_lib.make_row(spec, point, metrics, first_loss=0.15,
                           **kw)["status"] == "diverged"


def test_bad_wsd_plans_fail_in_one_line():
  spec = _spec()
  spec.warmup_fraction = 0.9
  with pytest.raises(ValueError, match="warmup .* reaches its cooldown"):
    sweep_lib.plan(spec)
  spec = _spec()
  spec.budgets = ()
  with pytest.raises(ValueError, match="set spec.budgets"):
    sweep_lib.point_config(spec, 3e8, "w16d1")


def test_a_diverged_stable_run_marks_its_branches_diverged(tmp_path,
                                                           monkeypatch):
  from jaxgen.train import trainer  # pylint: disable=g-import-not-at-top

  def blow_up(config, workdir):
    raise FloatingPointError("non-finite loss at step 3")

  monkeypatch.setattr(trainer, "train_and_evaluate", blow_up)
  spec = _spec()
  chain = [p for p in sweep_lib.plan(spec) if p.size == "w16d1"]
  trained = []
  rows = wsd.run_chain(
      spec, chain, str(tmp_path), {}, "cmd", str(tmp_path / "local"),
      run_point=lambda *a, **k: trained.append(a) or {})
  assert not trained
  assert [r["status"] for r in rows] == ["diverged"] * len(chain)
  assert all("stable run: non-finite" in r["error"] for r in rows)
  for p in chain:
    saved = json.loads((tmp_path / "runs" / p.id / "result.json").read_text())
    assert saved["status"] == "diverged"


def test_run_point_returns_its_row(tmp_path, monkeypatch):
  from jaxgen.train import trainer  # pylint: disable=g-import-not-at-top

  def fake_train(config, workdir):
    with open(os.path.join(workdir, "metrics.jsonl"), "w") as f:
      for step in range(1, config.total_steps + 1):
        f.write(json.dumps({"step": step, "loss": 1.0 / step,
                            "examples_seen": step * config.batch_size,
                            "flops_seen": 1.0}) + "\n")

  monkeypatch.setattr(trainer, "train_and_evaluate", fake_train)
  spec = sweep_lib.load_config_file(SPEC)
  point = sweep_lib.plan(spec)[0]
  row = run_lib.run_point(spec, point, str(tmp_path), {}, "cmd",
                          str(tmp_path / "local"), extra={"x": 1})
  assert isinstance(row, dict) and row["status"] == "ok" and row["x"] == 1
  assert row["steps_done"] == point.steps
  assert json.loads((tmp_path / "runs" / point.id / "result.json")
                    .read_text()) == row


def _checkpointed(rundir, config, step=4):
  """A run directory as a preempted run of `config` leaves it."""
  from jaxgen.train import provenance  # pylint: disable=g-import-not-at-top
  (rundir / "checkpoints" / str(step)).mkdir(parents=True, exist_ok=True)
  provenance.write(str(rundir), config)


def test_checkpoints_of_another_spec_are_not_resumed(tmp_path, monkeypatch):
  # The trainer only refuses a changed model; a point or stable run
  # resumed under another learning rate would record the new spec for a
  # run that is half the old one.
  from jaxgen.train import trainer  # pylint: disable=g-import-not-at-top
  monkeypatch.setattr(trainer, "train_and_evaluate",
                      lambda *a: pytest.fail("trained"))
  spec = sweep_lib.load_config_file(SPEC)
  point = sweep_lib.plan(spec)[0]
  config, _ = sweep_lib.point_config(spec, point.budget, point.size)
  rundir = tmp_path / "runs" / point.id
  _checkpointed(rundir, config)
  spec.learning_rate *= 2
  with pytest.raises(ValueError, match=(
      f"{rundir} holds checkpoints of another config "
      r"\(optimizer.learning_rate: .*\); delete .* afresh")):
    run_lib.run_point(spec, point, str(tmp_path), {}, "cmd",
                      str(tmp_path / "local"))
  # Fields that change only what a run writes may differ.
  spec.learning_rate /= 2
  _checkpointed(rundir, dict_set(config, keep_checkpoints=7))
  monkeypatch.setattr(trainer, "train_and_evaluate", lambda *a: None)
  assert run_lib.run_point(spec, point, str(tmp_path), {}, "cmd",
                           str(tmp_path / "local"))["status"] == "diverged"
  # A wsd chain's stable run, resumed for its next branch, likewise.
  spec = _spec()
  chain = sorted((p for p in sweep_lib.plan(spec) if p.size == "w16d1"),
                 key=lambda p: p.steps)
  stable = tmp_path / "w" / "runs" / f"{wsd.STABLE_PREFIX}w16d1"
  _checkpointed(stable, wsd.stable_config(spec, chain[0], 1), step=1)
  spec.learning_rate *= 2
  with pytest.raises(ValueError, match=(
      r"another config \(optimizer.learning_rate: .*\); delete .*"
      r"\(the stable run of w16d1\)")):
    wsd.run_chain(spec, chain, str(tmp_path / "w"), {}, "cmd",
                  str(tmp_path / "local"),
                  run_point=lambda *a, **k: pytest.fail("branched"))


def dict_set(config, **fields):
  config = config.copy_and_resolve_references()
  config.update(fields)
  return config


def test_each_process_of_a_chain_takes_its_own_lock(tmp_path, monkeypatch):
  # As a point's (test_sweep_faults): one lock for all processes of a chain
  # over several hosts refused process 1 as "already running".
  import jax  # pylint: disable=g-import-not-at-top
  from scaling import workers  # pylint: disable=g-import-not-at-top
  spec = _spec()
  chain = [p for p in sweep_lib.plan(spec) if p.size == "w16d1"]
  for p in chain:  # Every branch finished: the chain has nothing to train.
    (tmp_path / "runs" / p.id).mkdir(parents=True)
    (tmp_path / "runs" / p.id / "result.json").write_text("{}")
  lock = tmp_path / "local" / "runs" / f"{wsd.STABLE_PREFIX}w16d1"
  lock.mkdir(parents=True)
  monkeypatch.setattr(jax, "process_index", lambda: 1)
  with workers.exclusive(str(lock / "lock"), "held by process 0"):
    assert wsd.run_chain(spec, chain, str(tmp_path), {}, "cmd",
                         str(tmp_path / "local"),
                         run_point=lambda *a, **k: pytest.fail("ran")) == []


def test_cooldown_steps_round_as_the_trainers_schedule():
  # Python's round(0.3 * 95) is 28; the schedule's float32 round is 29.
  totals = np.arange(2, 400)[:, None]
  steps = np.arange(401)[None, :]
  for fraction in (0.3, 0.15, 0.35, 0.7, 0.07, 0.2, 0.5):
    config = ml_collections.ConfigDict({
        "learning_rate": 1.0, "schedule": "wsd", "warmup_steps": 0,
        "decay_fraction": fraction})
    # Every run length at once (the schedule broadcasts its length).
    lr = np.asarray(state_lib.learning_rate_schedule(
        config, lambda: totals)(steps))
    # The cooldown starts at the last step at the peak rate (up to the
    # step after the run: all of them without a cooldown).
    peak = (lr == 1.0) & (steps <= totals)
    start = peak.shape[1] - 1 - np.argmax(peak[:, ::-1], axis=1)
    want = [int(t) - sweep_lib.cooldown_steps(fraction, int(t))
            for t in totals[:, 0]]
    np.testing.assert_array_equal(start, want, err_msg=str(fraction))
