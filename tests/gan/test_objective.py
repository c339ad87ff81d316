"""The "r3gan" objective on the jaxgen trainer (8 fake CPU devices).

Burn-in schedules, one step's metrics / EMA / sampling, analytic FLOPs
against XLA's count, sharded == single-device losses, and checkpoint/resume.
"""

import dataclasses
import json
import math
import os

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import r3gan as r3gan_config
from jaxgen import config_lib
from jaxgen.data.pipeline import DatasetInfo
from jaxgen.data import pipeline as data_pipeline
from jaxgen.gan import objective as gan_objective
from jaxgen.parallel import multihost
from jaxgen.parallel import sharding as sharding_lib
from jaxgen.train import flops as flops_lib
from jaxgen.train import checks
from jaxgen.train import trainer
from tests.train import common


def _read_losses(workdir):
  """[(step, loss)] of the metric rows in WORKDIR/metrics.jsonl."""
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    rows = [json.loads(line) for line in f]
  return [(r["step"], r["loss"]) for r in rows if "loss" in r]


def _config(**overrides):
  """The tiny preset, batch 8, 3 steps, no samples/eval."""
  c = r3gan_config.get_config("tiny")
  c.dataset.data_dir = common.DATA_DIR
  c.batch_size = 8
  c.total_steps = 3
  c.log_every_steps = 1
  c.num_samples = 0
  c.eval_batches = 0
  c.checkpoint_every_steps = 1000
  config_lib.apply_overrides(c, overrides)
  return c


def _compiled(config, devices, with_shardings=False):
  """The trainer's compiled step and initial state (same rngs as a run)."""
  s = trainer.setup(config, data_info=DatasetInfo.synthetic(config.dataset),
                    devices=devices)
  init_rng, base_rng = jax.random.split(jax.random.key(config.seed))
  with jax.set_mesh(s.mesh), nn.logical_axis_rules(s.rules):
    init_fn, _, shardings, step, _ = trainer.compile_step(s, base_rng)
    state = sharding_lib.create_sharded(init_fn, shardings, init_rng)
  return (s, step, state, shardings) if with_shardings else (s, step, state)


def test_burn_in_schedule_is_the_references_cosine():
  f = gan_objective.burn_in_schedule(2e-4, 5e-5, burn_in_examples=1000,
                                     batch_size=10)
  np.testing.assert_allclose(f(0), 2e-4, rtol=1e-6)
  np.testing.assert_allclose(f(50), (2e-4 + 5e-5) / 2, rtol=1e-6)
  want = 2e-4 + (5e-5 - 2e-4) * (1 - 0.5 * (1 + math.cos(math.pi * 0.25)))
  np.testing.assert_allclose(f(25), want, rtol=1e-6)
  np.testing.assert_allclose(f(100), 5e-5, rtol=1e-6)
  np.testing.assert_allclose(f(10**6), 5e-5, rtol=1e-6)
  np.testing.assert_allclose(
      gan_objective.burn_in_schedule(1.0, 0.1, 0, 10)(0), 0.1, rtol=1e-6)


def test_burn_in_fraction_follows_the_runtime_run_length():
  # A quarter of the run: with 100 steps of batch 8 the ramp is 200 images
  # (25 steps); the compiled step's runtime length of 400 makes it 100.
  obj = gan_objective.R3GAN(_config(**{"gan.burn_in_fraction": 0.25}),
                            total_steps=100)
  o = obj.config.optimizer
  mid = (o.learning_rate + o.end_learning_rate) / 2
  np.testing.assert_allclose(obj.lr_fn(0), o.learning_rate, rtol=1e-6)
  np.testing.assert_allclose(obj.lr_fn(12.5), mid, rtol=1e-5)
  np.testing.assert_allclose(obj.lr_fn(25), o.end_learning_rate, rtol=1e-6)
  with obj.runtime_run_length(jnp.int32(400)):
    lr = jax.jit(obj.lr_fn)(50)
    gamma = jax.jit(obj.gamma_fn)(100)
  np.testing.assert_allclose(lr, mid, rtol=1e-5)
  np.testing.assert_allclose(gamma, obj.config.gan.end_gamma, rtol=1e-6)


def test_ema_half_life_fraction_follows_the_runtime_run_length():
  # 5% of the run's images after a burn-in of a quarter of it: 100 steps of
  # batch 8 give a half-life of 40 images, reached at step 25; a runtime
  # length of 400 steps makes it 160, reached at step 100.
  obj = gan_objective.R3GAN(_config(**{"gan.burn_in_fraction": 0.25,
                                       "gan.ema_half_life_fraction": 0.05}),
                            total_steps=100)
  assert obj.config.batch_size == 8
  np.testing.assert_allclose(obj.half_life_fn(0), 0.0, atol=1e-6)
  np.testing.assert_allclose(obj.half_life_fn(12.5), 20.0, rtol=1e-5)
  np.testing.assert_allclose(obj.half_life_fn(25), 40.0, rtol=1e-6)
  np.testing.assert_allclose(obj.half_life_fn(90), 40.0, rtol=1e-6)
  with obj.runtime_run_length(jnp.int32(400)):
    late = jax.jit(obj.half_life_fn)(100)
  np.testing.assert_allclose(late, 160.0, rtol=1e-6)
  # Off (0), the half-life in images stands.
  fixed = gan_objective.R3GAN(_config(), total_steps=100)
  np.testing.assert_allclose(
      fixed.half_life_fn(10**6), fixed.config.gan.ema_half_life_examples,
      rtol=1e-6)


@pytest.mark.parametrize("overrides,match", [
    ({"dataset.image_size": 32}, "make 16px images"),
    ({"model.group_width": 48}, "not multiples of config.model.group_width"),
    ({"dataset.num_classes": 0}, "class_conditional needs"),
    ({"gan.loss": "wgan"}, "unknown config.gan.loss"),
    ({"model.conv_impl": "fft"}, "unknown config.model.conv_impl"),
    ({"gan.burn_in_fraction": 1.5}, "must be in \\[0, 1\\]"),
    ({"gan.ema_half_life_fraction": -0.1}, "ema_half_life_fraction=-0.1 must "
     "be in \\[0, 1\\]"),
    ({"model.group_width": 0}, "group_width=0 must be an integer >= 1"),
    ({"model.widths": (32, 0, 16)}, "widths entry=0 must be an integer"),
    ({"gan.gamma": -1.0}, "config.gan.gamma=-1.0 must be a number >= 0"),
    ({"gan.augment_p": 1.5}, "augment_p=1.5 must be a number in \\[0, 1\\]"),
])
def test_bad_configs_are_one_line_errors(overrides, match):
  with pytest.raises(ValueError, match=match) as e:
    gan_objective.R3GAN(_config(**overrides)).validate(1)
  assert "\n" not in str(e.value)


def test_default_low_precision_stages_keep_the_4x4_stage_float32():
  # The reference: 3 stages at 32 px (of 4), 4 above; at 16 px (3 stages)
  # its rule would have put the 4x4 stage in bf16 too.
  for size, widths, expected in ((16, (32, 32, 32), 2),
                                 (32, (32, 32, 32, 32), 3),
                                 (64, (32,) * 5, 4)):
    config = r3gan_config.get_config("tiny")
    config.dataset.image_size = size
    config.model.widths = widths
    kwargs = gan_objective.network_kwargs(config)
    assert kwargs["low_precision_stages"] == expected, size


def test_grad_accumulation_is_refused_in_one_line():
  # The trainer's check (the two-phase step has no micro-batch loop).
  with pytest.raises(ValueError, match="grad_accum_steps=2: the r3gan step "
                     "does not accumulate") as e:
    checks.check_config(_config(grad_accum_steps=2))
  assert "\n" not in str(e.value)


def test_loss_options_change_the_flop_multipliers():
  rp = gan_objective.R3GAN(r3gan_config.get_config("tiny"))
  f_g, f_d = rp.forward_flops()
  assert rp.flops_per_example() == pytest.approx(4 * f_g + 15 * f_d)
  gan = gan_objective.R3GAN(r3gan_config.get_config("tiny,gan"))
  assert gan.flops_per_example() == pytest.approx(4 * f_g + 14 * f_d)
  r1 = gan_objective.R3GAN(r3gan_config.get_config("tiny,r1only"))
  assert r1.flops_per_example() == pytest.approx(4 * f_g + 12 * f_d)


LOSS_KEYS = ("loss", "g_loss", "r1", "r2")


def _run(s, step, state, batches):
  """Per-step LOSS_KEYS, and the state and metrics after the first step."""
  out, first = [], None
  with jax.set_mesh(s.mesh):
    for b in batches:
      batch = multihost.global_batch(s.mesh, b)
      state, m = step(state, batch)
      if first is None:
        first = jax.device_get((state, m))
      out.append([float(m[k]) for k in LOSS_KEYS])
  return np.array(out), first


def _losses_on(config, devices, batches):
  return _run(*_compiled(config, devices), batches)


@pytest.fixture(scope="module")
def single_device():
  """The tiny preset compiled by the trainer on 1 device.

  Shared by several tests, since compiling the double-backprop step
  dominates their time: the step's FLOPs, 3 steps on synthetic batches (the
  reference of the sharded runs), and 4 steps on the training pipeline's
  first batches (the uninterrupted run the resumed run must reproduce).
  """
  config = _config(**{"mesh.data": 1})
  s, step, state, shardings = _compiled(config, jax.devices()[:1],
                                        with_shardings=True)
  init_state = jax.device_get(state)
  # The G phase reads its own reals: train batches are 2 x batch_size.
  assert s.objective.batches_per_step == 2
  per_step = trainer.train_batch_size(config, s.objective)
  batches = common.random_batches(config, 3, per_step)
  losses, (state1, metrics1) = _run(s, step, state, batches)
  it, _ = data_pipeline.build_input(
      config.dataset, global_batch_size=per_step, seed=config.seed,
      process_index=0, process_count=1, split=config.dataset.split,
      train=True)
  pipeline_losses, _ = _run(s, step, jax.device_put(init_state, shardings),
                            [next(it) for _ in range(4)])
  return dict(config=config, setup=s, step=step,
              init_params=init_state.params, batches=batches, losses=losses,
              state1=state1, metrics1=metrics1,
              pipeline_losses=pipeline_losses[:, 0])


def test_bf16_storage_trains_with_a_float32_ema():
  # param_dtype=bfloat16 stopped at step 2: the traced EMA beta promoted the
  # bfloat16 EMA to float32, and the compiled step refused the state it had
  # returned. The EMA is kept in float32 (a bfloat16 one would not move).
  config = _config(**{"mesh.data": 1, "param_dtype": "bfloat16"})
  s, step, state = _compiled(config, jax.devices()[:1])
  dtypes = lambda tree: {x.dtype for x in jax.tree.leaves(tree)}
  assert dtypes(state.params) == {jnp.dtype(jnp.bfloat16)}
  assert dtypes(state.ema_params) == {jnp.dtype(jnp.float32)}
  batches = common.random_batches(
      config, 3, trainer.train_batch_size(config, s.objective))
  losses, (state1, _) = _run(s, step, state, batches)
  assert losses.shape == (3, len(LOSS_KEYS)) and np.all(np.isfinite(losses))
  assert dtypes(state1.ema_params) == {jnp.dtype(jnp.float32)}


def test_analytic_flops_match_xla_cost_analysis(single_device):
  s, step = single_device["setup"], single_device["step"]
  xla = flops_lib.compiled_flops(step) / single_device["config"].batch_size
  assert abs(s.flops_per_example / xla - 1) < 0.05, (s.flops_per_example, xla)
  # The totals agree within XLA's elementwise overhead (4.4% here), which
  # would hide a penalty counted at 4 F_D instead of 3. Their difference
  # does not: dropping R2 saves 6 - 3 = 3 F_D (XLA: 3.13 F_D).
  config = _config(**{"mesh.data": 1, "gan.r2": False})
  s2, step2, _ = _compiled(config, jax.devices()[:1])
  xla2 = flops_lib.compiled_flops(step2) / config.batch_size
  f_d = s.objective.forward_flops()[1]
  assert (s.flops_per_example - s2.flops_per_example) / f_d == pytest.approx(3)
  assert (xla - xla2) / f_d == pytest.approx(3, rel=0.06), (xla - xla2) / f_d


def test_first_step_metrics_schedules_ema_and_fixup(single_device):
  config = single_device["config"]
  metrics, new = single_device["metrics1"], single_device["state1"]
  for key in ("loss", "g_loss", "r1", "r2", "grad_norm",
              "learning_rate", "gamma", "b2", "ema_beta"):
    assert np.isfinite(metrics[key]), key
  assert "d_loss" not in metrics  # "loss" is the D loss; no duplicate.
  assert metrics["r1"] > 0 and metrics["r2"] > 0
  np.testing.assert_allclose(
      metrics["loss"],
      metrics["d_adv"] + 0.5 * metrics["gamma"] * (metrics["r1"] +
                                                   metrics["r2"]), rtol=1e-5)
  # Step 0 uses the start values of the burn-in schedules.
  np.testing.assert_allclose(metrics["learning_rate"],
                             config.optimizer.learning_rate, rtol=1e-6)
  np.testing.assert_allclose(metrics["gamma"], config.gan.gamma, rtol=1e-6)
  np.testing.assert_allclose(metrics["b2"], config.optimizer.b2, rtol=1e-6)
  # What the optimizers used is what the schedules say (injected, not only
  # logged): the step-0 rates of both networks' Adam.
  obj = single_device["setup"].objective
  for net in ("generator", "discriminator"):
    hyper = new.opt_state[net].hyperparams
    np.testing.assert_allclose(hyper["b2"], obj.b2_fn(0), rtol=1e-6)
    np.testing.assert_allclose(hyper["learning_rate"], obj.lr_fn(0),
                               rtol=1e-6)
  # The EMA half-life starts at 0: β = 0, so the EMA copies G.
  assert metrics["ema_beta"] == 0.0
  jax.tree.map(np.testing.assert_array_equal, new.ema_params["generator"],
               new.params["generator"])
  # Fix-up at step 0: only the zero-initialised last conv of each residual
  # branch gets a gradient inside the blocks; everything outside them moves.
  old = single_device["init_params"]
  for name in ("generator", "discriminator"):
    moved = jax.tree.map(lambda a, b: bool(np.any(a != b)), old[name],
                         new.params[name])
    for key, value in moved.items():
      if "_block" in key:
        assert value["conv_project"]["kernel"], (name, key)
        assert not value["conv_expand"]["kernel"], (name, key)
      else:
        assert all(jax.tree.leaves(value)), (name, key)


def test_sampling_and_eval_step(single_device):
  obj, new = single_device["setup"].objective, single_device["state1"]
  # Samples: EMA generator, classes in turn, clipped to [-1, 1].
  @jax.jit
  def sample_and_reference(state):
    rng = jax.random.key(5)
    z = jax.random.normal(rng, (10, obj.noise_dim))
    want = obj.generate(state.ema_params["generator"], z,
                        jnp.arange(10, dtype=jnp.int32) % 8)
    return obj.sample(state, rng, 10), jnp.clip(want, -1, 1)
  imgs, want = sample_and_reference(new)
  assert imgs.shape == (10, 16, 16, 3)
  assert float(jnp.max(jnp.abs(imgs))) <= 1.0
  np.testing.assert_allclose(imgs, want, atol=1e-5)
  batch = obj.split_batch(single_device["batches"][0])[0]
  ev = jax.jit(obj.eval_step)(new, batch, jax.random.key(6))
  assert {"loss", "g_loss", "r1", "r2", "d_adv"} <= set(ev)
  assert all(np.isfinite(float(v)) for v in ev.values())


def test_sharded_losses_match_single_device(single_device):
  ref = single_device["losses"]
  assert np.all(np.isfinite(ref))
  for mesh in [(8, 1, 1), (2, 2, 2)]:
    cfg = _config(**dict(zip(("mesh.data", "mesh.fsdp", "mesh.tensor"),
                             mesh)))
    losses, _ = _losses_on(cfg, None, single_device["batches"])
    np.testing.assert_allclose(losses, ref, rtol=1e-3, atol=1e-6,
                               err_msg=str(mesh))


def test_checkpoint_resume_gives_identical_losses(tmp_path, monkeypatch,
                                                  single_device):
  # One device, the fixture's config: the fixture stepped the same compiled
  # computation through the pipeline's first 4 batches without interruption.
  devices = jax.devices()[:1]
  config = _config(total_steps=4, checkpoint_every_steps=2,
                   **{"mesh.data": 1})
  # "Preempted" when fetching the 3rd batch (after the step-2 checkpoint),
  # then resumed.
  kept = common.preempted_then_resumed(config, tmp_path, monkeypatch,
                                       devices=devices)
  assert kept == ["2"]
  rows = _read_losses(tmp_path)
  assert [r[0] for r in rows] == [1, 2, 3, 4]
  np.testing.assert_allclose([r[1] for r in rows],
                             single_device["pipeline_losses"], rtol=1e-6)


def test_an_epoch_is_one_pass_over_the_data_of_two_batches_a_step():
  # The G phase reads its own batch: 2 x 8 images a step, so one epoch of
  # 800 images is 50 steps (it was 100: D's images counted as epochs).
  config = _config(total_steps=0, total_epochs=1.0)
  info = dataclasses.replace(DatasetInfo.synthetic(config.dataset),
                             num_examples=800)
  assert trainer.setup(config, data_info=info).total_steps == 50
  config.gan.g_own_real_batch = False
  assert trainer.setup(config, data_info=info).total_steps == 100


def test_split_batch_gives_each_part_every_kth_example():
  obj = gan_objective.R3GAN(_config())
  batch = {"image": np.arange(8.0).reshape(8, 1, 1, 1),
           "label": np.arange(8, dtype=np.int32)}
  d, g = obj.split_batch(batch)
  np.testing.assert_array_equal(d["label"], [0, 2, 4, 6])
  np.testing.assert_array_equal(g["label"], [1, 3, 5, 7])
  np.testing.assert_array_equal(g["image"][:, 0, 0, 0], [1, 3, 5, 7])


def test_the_g_phase_reads_its_own_reals_and_labels(single_device):
  """D's loss sees only the first part; G's loss is recomputed on the second.

  An independent check of the split: the D phase equals a step of the
  shared-batch objective on D's part, and the G loss equals `g_loss` on G's
  part against the updated D with the step's second noise draw.
  """
  own = single_device["setup"].objective
  shared = gan_objective.R3GAN(_config(**{"gan.g_own_real_batch": False}))
  assert shared.batches_per_step == 1
  init_rng, _ = jax.random.split(jax.random.key(single_device["config"].seed))
  state = own.init(init_rng, own.split_batch(single_device["batches"][0])[0])
  batch = jax.tree.map(jnp.asarray, single_device["batches"][0])
  d_part, g_part = own.split_batch(batch)
  rng = jax.random.key(11)
  new_own, m_own = jax.jit(own.train_step)(state, batch, rng)
  new_shared, m_shared = jax.jit(shared.train_step)(state, d_part, rng)
  np.testing.assert_allclose(m_own["loss"], m_shared["loss"], rtol=1e-6)
  jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-6),
               new_own.params["discriminator"],
               new_shared.params["discriminator"])
  n = d_part["image"].shape[0]
  z_g = jax.random.normal(rng, (2, n, own.noise_dim), jnp.float32)[1]
  want = jax.jit(own.g_loss)(state.params["generator"],
                             new_own.params["discriminator"],
                             g_part["image"], z_g, g_part["label"])
  np.testing.assert_allclose(m_own["g_loss"], want, rtol=1e-5)
  assert abs(float(m_own["g_loss"]) - float(m_shared["g_loss"])) > 1e-6
