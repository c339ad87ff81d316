"""End-to-end trainer behaviour on the simple-diffusion family (8 CPU devices).

Sharded == unsharded losses, FSDP memory, checkpoint/resume identity, the
non-finite stop, one-line config errors before compilation, analytic FLOPs
against XLA's count, and a short run whose loss falls.
"""

import json
import os
import signal
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from jaxgen import config_lib
from jaxgen import registry
from jaxgen.data.pipeline import DatasetInfo
from jaxgen.diffusion import objective as sd_objective
from jaxgen.parallel import sharding as sharding_lib
from jaxgen.train import flops as flops_lib
from jaxgen.train import checks
from jaxgen.train import preemption
from jaxgen.train import run_record
from jaxgen.train import run_state
from jaxgen.train import trainer
from configs import r3gan
from configs import simple_diffusion
from tests.train import common


def test_sharded_losses_match_single_device():
  batches = common.random_batches(common.tiny_config(), 3)
  config1 = common.tiny_config(**{"mesh.data": 1})
  ref, _, _ = common.losses_on(config1, jax.devices()[:1], batches)
  assert np.all(np.isfinite(ref))
  for mesh in [(8, 1, 1), (2, 2, 2), (1, 4, 2)]:
    cfg = common.tiny_config(**dict(zip(("mesh.data", "mesh.fsdp",
                                         "mesh.tensor"), mesh)))
    losses, _, _ = common.losses_on(cfg, None, batches)
    np.testing.assert_allclose(losses, ref, rtol=2e-4, err_msg=str(mesh))


def test_fsdp_shards_parameters_evenly():
  config = common.tiny_config(**{"mesh.data": 1, "mesh.fsdp": 8})
  s = trainer.setup(config, data_info=DatasetInfo.synthetic(config.dataset))
  init_rng, base_rng = jax.random.split(jax.random.key(0))
  with jax.set_mesh(s.mesh), nn.logical_axis_rules(s.rules):
    init_fn, _, shardings, _, _ = trainer.compile_step(s, base_rng)
    state = sharding_lib.create_sharded(init_fn, shardings, init_rng)
  params = state.params["model"]
  total = sum(x.size * x.dtype.itemsize for x in jax.tree.leaves(params))
  assert sharding_lib.per_device_bytes(params) <= 1.1 * total / 8


def test_checkpoint_resume_gives_identical_losses(tmp_path, monkeypatch):
  config = common.tiny_config(total_steps=4, checkpoint_every_steps=2)
  full = tmp_path / "full"
  trainer.train_and_evaluate(config, str(full))
  # Second run: "preempted" when fetching the 3rd batch, then resumed.
  part = tmp_path / "part"
  common.preempted_then_resumed(config, part, monkeypatch)
  a, b = common.read_losses(full), common.read_losses(part)
  assert [r[0] for r in b] == [1, 2, 3, 4]
  np.testing.assert_allclose([r[1] for r in b], [r[1] for r in a], rtol=1e-6)


@registry.OBJECTIVES.register("simple_diffusion_nan_after_2")
class _NanAfterTwo(sd_objective.SimpleDiffusion):
  """Produces a NaN loss from step 3 on (to test the stop)."""

  def train_step(self, state, batch, rng):
    new_state, metrics = super().train_step(state, batch, rng)
    metrics["loss"] = jnp.where(state.step >= 2, jnp.nan, metrics["loss"])
    return new_state, metrics


@registry.OBJECTIVES.register("simple_diffusion_update_check")
class _UpdateCheck(sd_objective.SimpleDiffusion):
  """Logs the parameters' change computed from the two states."""

  def train_step(self, state, batch, rng):
    new_state, metrics = super().train_step(state, batch, rng)
    moved = jax.tree.map(lambda a, b: a.astype(jnp.float32) - b,
                         new_state.params, state.params)
    metrics["moved"] = jnp.sqrt(sum(jnp.sum(x * x)
                                    for x in jax.tree.leaves(moved)))
    return new_state, metrics


def test_update_norm_is_the_parameters_change(tmp_path):
  config = common.tiny_config(family="simple_diffusion_update_check",
                              total_steps=3, log_every_steps=1)
  config.optimizer.warmup_steps = 0  # A nonzero first step.
  trainer.train_and_evaluate(config, str(tmp_path))
  with open(tmp_path / "metrics.jsonl") as f:
    rows = [json.loads(line) for line in f if "update_norm" in line]
  assert len(rows) == 3
  for row in rows:
    assert row["update_norm"] > 0
    np.testing.assert_allclose(row["update_norm"], row["moved"], rtol=1e-4)


def test_non_finite_loss_stops_and_keeps_last_good_checkpoint(tmp_path):
  config = common.tiny_config(family="simple_diffusion_nan_after_2",
                              total_steps=6, checkpoint_every_steps=2)
  with pytest.raises(FloatingPointError) as e:
    trainer.train_and_evaluate(config, str(tmp_path))
  msg = str(e.value)
  assert "loss" in msg and "step 3" in msg and "checkpoint is step 2" in msg
  assert sorted(os.listdir(tmp_path / "checkpoints")) == ["2"]


@pytest.mark.parametrize("overrides,match", [
    ({"batch_size": 12}, "not divisible by the 8 data-parallel"),
    ({"mesh.data": 2, "mesh.fsdp": 2}, "has 4 devices but 8"),
    ({"family": "nope"}, "unknown family 'nope'"),
    ({"dataset.name": "nope:x"}, "nope"),
    ({"dataset.image_size": 18}, "18x18 is not divisible by patch_size"),
    ({"dataset.channels": 1}, "has 3 channels but the model is built for 1"),
    # NaN: a NaN loss; +-inf: every weight 1 or 0 (no learning). Silent.
    ({"diffusion.sigmoid_bias": float("nan")},
     "config.diffusion.sigmoid_bias=nan must be a finite number"),
    ({"diffusion.sigmoid_bias": float("-inf")},
     "config.diffusion.sigmoid_bias=-inf must be a finite number"),
    # grain named no field, and the in-memory path failed after compiling.
    ({"seed": -1}, r"^config.seed=-1 must be an integer in \[0, 2\*\*32\), "
     r"e.g. 0.$"),
    ({"seed": 2**32}, r"^config.seed=4294967296 must be an integer in "),
])
def test_bad_config_is_a_one_line_error_before_compilation(
    tmp_path, monkeypatch, overrides, match):
  def no_compile(*a, **k):
    raise AssertionError("compiled before validating")
  monkeypatch.setattr(trainer, "compile_step", no_compile)
  config = common.tiny_config(**overrides)
  with pytest.raises(ValueError, match=match) as e:
    trainer.train_and_evaluate(config, str(tmp_path))
  assert "\n" not in str(e.value)


def test_analytic_flops_match_xla_cost_analysis():
  """The whole train step (model, loss, optimizer) of the `tiny` preset."""
  config = simple_diffusion.get_config("tiny")
  config.batch_size, config.mesh.data = 8, 1
  s = trainer.setup(config, data_info=DatasetInfo.synthetic(config.dataset),
                    devices=jax.devices()[:1])
  with jax.set_mesh(s.mesh), nn.logical_axis_rules(s.rules):
    _, _, _, step, _ = trainer.compile_step(s, jax.random.key(0))
  xla = flops_lib.compiled_flops(step) / config.batch_size
  assert abs(s.flops_per_example / xla - 1) < 0.05, (s.flops_per_example, xla)


def test_short_run_loss_falls_and_writes_outputs(tmp_path):
  config = common.tiny_config(total_steps=60, log_every_steps=10,
                              num_samples=4, sample_every_steps=60,
                              eval_batches=1, eval_every_steps=60,
                              **{"optimizer.learning_rate": 3e-3,
                                 "diffusion.sample_steps": 8})
  last = trainer.train_and_evaluate(config, str(tmp_path))
  rows = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  for key in ("step", "loss", "examples_seen", "flops_seen", "steps_per_sec",
              "learning_rate", "tflops_per_device", "grad_norm"):
    assert key in rows[-1], key
  assert rows[-1]["examples_seen"] == 60 * config.batch_size
  # Passes over the 8192 training shapes (scaling.fit warns past one).
  assert rows[-1]["epochs"] == pytest.approx(60 * config.batch_size / 8192)
  assert rows[-1]["loss"] < 0.7 * rows[0]["loss"], (rows[0], rows[-1])
  assert "eval_loss" in last and np.isfinite(last["eval_loss"])
  assert os.listdir(tmp_path / "samples") == ["step_0000060.png"]
  assert "60" in os.listdir(tmp_path / "checkpoints")
  assert any(f.startswith("events.out.tfevents") for f in os.listdir(tmp_path))


def test_sample_grids_do_not_count_against_steps_per_sec(tmp_path,
                                                         monkeypatch):
  # The grid drawn after step 2's row took from step 4's steps/s and MFU
  # (imagenet256's 1000-step DDPM grids every 10k steps).
  monkeypatch.setattr(run_record, "write_samples",
                      lambda *a, **k: time.sleep(1.5))
  config = common.tiny_config(total_steps=4, log_every_steps=2, num_samples=4,
                              sample_every_steps=2)
  trainer.train_and_evaluate(config, str(tmp_path))
  rows = [json.loads(l) for l in open(tmp_path / "metrics.jsonl")]
  # Counted, 2 steps would take over 1.5 s: under 1.33 steps/s.
  assert [r["step"] for r in rows] == [2, 4]
  assert rows[1]["steps_per_sec"] > 4, rows[1]


def test_bf16_compute_keeps_float32_params_and_losses(tmp_path):
  """config.dtype=bfloat16 runs the networks in bf16; the stored
  parameters, optimizer moments and logged losses stay float32."""
  config = common.tiny_config(dtype="bfloat16", total_steps=2)
  result = trainer.train_and_evaluate(config, str(tmp_path))
  assert np.isfinite(result["loss"])
  s, step, state = run_state.restore(config, str(tmp_path))
  assert step == 2
  dtypes = {x.dtype for x in jax.tree.leaves(state.params)}
  assert dtypes == {jnp.dtype(jnp.float32)}
  assert s.objective.model.dtype == jnp.bfloat16
  # And it computes in bf16: its output differs from the f32 model's.
  model32 = s.objective.model.clone(dtype=jnp.float32)
  x = jax.random.normal(jax.random.key(0), (2, 16, 16, 3))
  args = (x, jnp.array([0.0, 1.0]), jnp.array([0, 1]))
  variables = {"params": state.params["model"]}
  # Compiled (run op by op, each op compiles a program of its own).
  out16 = jax.jit(lambda v, *a: s.objective.model.apply(v, *a, train=False))(
      variables, *args)
  out32 = jax.jit(lambda v, *a: model32.apply(v, *a, train=False))(
      variables, *args)
  assert out16.dtype == jnp.float32
  assert 0 < float(jnp.abs(out16 - out32).max()) < 0.1


@pytest.mark.parametrize("family", ["simple_diffusion", "r3gan"])
def test_mu_dtype_stores_adams_first_moment_in_bf16(family):
  """config.optimizer.mu_dtype=bfloat16 halves the first moment only."""
  config = (common.tiny_config if family == "simple_diffusion" else
            _r3gan_tiny)(**{"optimizer.mu_dtype": "bfloat16"})
  s = trainer.setup(config, data_info=DatasetInfo.synthetic(config.dataset))
  abstract = jax.eval_shape(lambda k: s.objective.init(
      k, trainer.example_batch(s.batch_spec)), jax.random.key(0))
  adam = [x for x in jax.tree.leaves(
      abstract.opt_state, is_leaf=lambda x: isinstance(
          x, optax.ScaleByAdamState))
          if isinstance(x, optax.ScaleByAdamState)]
  assert adam  # One per network for R3GAN (G and D).
  for state in adam:
    assert {x.dtype for x in jax.tree.leaves(state.mu)} == {
        jnp.dtype(jnp.bfloat16)}
    assert {x.dtype for x in jax.tree.leaves(state.nu)} == {
        jnp.dtype(jnp.float32)}


def _r3gan_tiny(**overrides):
  c = r3gan.get_config("tiny")
  c.dataset.data_dir = common.DATA_DIR
  config_lib.apply_overrides(c, overrides)
  return c


def test_bf16_params_and_bad_dtype_names():
  config = common.tiny_config(param_dtype="bfloat16")
  s = trainer.setup(config, data_info=DatasetInfo.synthetic(config.dataset))
  abstract = jax.eval_shape(lambda k: s.objective.init(
      k, trainer.example_batch(s.batch_spec)), jax.random.key(0))
  params = jax.tree.leaves(nn.unbox(abstract.params))
  assert {x.dtype for x in params} == {jnp.dtype(jnp.bfloat16)}
  # The EMA stays float32 (bfloat16 cannot hold a 1e-4 step).
  ema = jax.tree.leaves(nn.unbox(abstract.ema_params))
  assert ema and {x.dtype for x in ema} == {jnp.dtype(jnp.float32)}
  for key, value in (("dtype", "bf16"), ("param_dtype", "float16")):
    with pytest.raises(ValueError, match=f"config.{key}='{value}'") as e:
      checks.check_config(common.tiny_config(**{key: value}))
    assert "\n" not in str(e.value)


def test_a_finished_run_without_its_last_row_still_names_its_step(tmp_path):
  # Its metrics.jsonl removed: the rerun printed "done: step ?".
  from jaxgen.train import evaluation  # pylint: disable=g-import-not-at-top
  config = common.tiny_config(total_steps=2, eval_batches=0, num_samples=0)
  assert evaluation.at_end(config, str(tmp_path), [1, 2], 2) == (
      {"step": 2}, None)
  # A row of an older step is not reported as the finished one either.
  (tmp_path / "metrics.jsonl").write_text(json.dumps(
      {"step": 1, "loss": 0.5}) + "\n")
  assert evaluation.at_end(config, str(tmp_path), [1, 2], 2) == (
      {"step": 2}, None)
  (tmp_path / "metrics.jsonl").write_text(json.dumps(
      {"step": 2, "loss": 0.25}) + "\n")
  assert evaluation.at_end(config, str(tmp_path), [1, 2], 2) == (
      {"step": 2, "loss": 0.25}, None)


def test_a_shorter_rerun_of_an_unfinished_run_is_refused(tmp_path,
                                                         monkeypatch):
  # Stopped at step 3 of 8, rerun with total_steps=2: it printed "done:
  # step 3" with no final evaluation, and a sweep recorded it as a result.
  common.signal_at_batch(monkeypatch, 3, signal.SIGTERM)
  with pytest.raises(preemption.Preempted):
    trainer.train_and_evaluate(common.tiny_config(total_steps=8),
                               str(tmp_path))
  monkeypatch.undo()
  monkeypatch.setattr(trainer, "compile_step", common.no_compile)
  with pytest.raises(ValueError) as e:
    trainer.train_and_evaluate(common.tiny_config(total_steps=2),
                               str(tmp_path))
  assert str(e.value) == (
      f"{tmp_path} stopped at checkpoint 3 of a 8-step run, past the 2 steps "
      "this config asks for; train it on with a run length of at least 3 "
      "steps (it was 8), or pass another --workdir.")


def test_a_data_position_this_process_count_cannot_take_is_refused_first(
    tmp_path, monkeypatch):
  # Found by the restore, after compiling (minutes on a large model).
  from tests.train import test_checkpoint_faults  # pylint: disable=g-import-not-at-top
  trainer.train_and_evaluate(common.tiny_config(total_steps=2),
                             str(tmp_path))
  test_checkpoint_faults._as_saved_by_processes(  # pylint: disable=protected-access
      str(tmp_path / "checkpoints" / "2"),
      [{"next_index_in_cycle": 0, "iterators_in_use_states": [{}]}] * 2)
  monkeypatch.setattr(trainer, "compile_step", common.no_compile)
  with pytest.raises(ValueError, match=r"^checkpoint 2 in .* was saved by 2 "
                     r"process\(es\) and its data position .* cannot be "
                     r"carried to 1; resume it with 2 process\(es\)\.$"):
    trainer.train_and_evaluate(common.tiny_config(total_steps=4),
                               str(tmp_path))
