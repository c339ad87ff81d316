"""The "autoencoder" family on the trainer: FLOPs, training, SE, errors."""

import json

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import autoencoder as ae_config
from jaxgen import config_lib
from jaxgen.autoencoders import dc_ae
from jaxgen.autoencoders import objective as ae_objective
from jaxgen.autoencoders import preview
from jaxgen.data.pipeline import DatasetInfo
from jaxgen.eval import perceptual
from jaxgen.train import flops as flops_lib
from jaxgen.train import checks
from jaxgen.train import state as state_lib
from jaxgen.train import run_state
from jaxgen.train import trainer
from tests.train import common


# Two stages (one ResBlock, one EfficientViT block) instead of tiny's four,
# for tests of properties that do not depend on depth (sharding, batch-norm
# statistics, the GAN step): each compile takes half as long.
TWO_STAGES = {
    f"model.{side}_{field}": value
    for side in ("encoder", "decoder")
    for field, value in (("block_types", ("ResBlock", "EfficientViTBlock")),
                         ("block_out_channels", (16, 32)),
                         ("layers_per_block", (1, 1)),
                         ("qkv_multiscales", ((), (5,))))}


def _config(**overrides):
  c = ae_config.get_config("tiny")
  c.dataset.data_dir = common.DATA_DIR
  c.batch_size = 8
  c.total_steps = 30
  c.log_every_steps = 10
  c.eval_every_steps = 30
  c.eval_batches = 1
  c.checkpoint_every_steps = 1000
  # The tiny preset names one decoder norm for every stage (a str field):
  # a per-stage tuple replaces the field rather than overriding it.
  norms = overrides.pop("model.decoder_norm_types", None)
  config_lib.apply_overrides(c, overrides)
  if norms is not None:
    with c.unlocked():
      del c.model["decoder_norm_types"]
      c.model.decoder_norm_types = norms
  return c


def test_analytic_forward_flops_match_xla():
  """Encoder and decoder forward passes, and the whole training step,
  against XLA's cost analysis (depthwise convs are computed tap by tap, so
  XLA counts their gradients as what they are). The analytic count is the
  direct convolution's, so XLA's runs the convs through lax (Winograd does
  fewer multiplies for the same model FLOPs)."""
  obj = ae_objective.Autoencoder(
      _config(**{"autoencoder.conv_impl": "lax"}), total_steps=10)
  x = jnp.zeros((1, 32, 32, 3))
  params = obj.model.init(jax.random.key(0), x)
  z = jnp.zeros((1, 4, 4, 8))
  enc = jax.jit(lambda p, x: obj.model.apply(
      p, x, method=obj.model.encode)).lower(params, x).compile()
  dec = jax.jit(lambda p, z: obj.model.apply(
      p, z, method=obj.model.decode)).lower(params, z).compile()
  want = 2 * dc_ae.encoder_macs(obj.arch, 32)
  assert abs(want / flops_lib.compiled_flops(enc) - 1) < 0.05
  want = 2 * dc_ae.decoder_macs(obj.arch, 4)
  assert abs(want / flops_lib.compiled_flops(dec) - 1) < 0.05
  assert obj.flops_per_example() == pytest.approx(
      3 * 2 * (dc_ae.encoder_macs(obj.arch, 32)
               + dc_ae.decoder_macs(obj.arch, 4)))
  config = _config(**{"mesh.data": 1, "autoencoder.conv_impl": "lax"})
  s = trainer.setup(config, data_info=DatasetInfo.synthetic(config.dataset),
                    devices=jax.devices()[:1])
  with jax.set_mesh(s.mesh), nn.logical_axis_rules(s.rules):
    step = trainer.compile_step(s, jax.random.key(0)).step
  per_example = flops_lib.compiled_flops(step) / config.batch_size
  assert abs(s.flops_per_example / per_example - 1) < 0.05


@pytest.mark.parametrize("arg", [p + (",gan" if p.startswith("tiny") else "")
                                 for p in ae_config.PRESETS])
def test_init_at_one_latent_pixel_gives_the_full_size_weights(arg):
  """The state is initialised on an image of one latent pixel; its weights
  (and the discriminator's) are those the full-size image gives (shapes
  and names, abstractly), for every preset."""
  config = ae_config.get_config(arg)
  obj = ae_objective.Autoencoder(config, total_steps=10)
  info = DatasetInfo.synthetic(config.dataset)
  batch = trainer.batch_spec(info, 2)
  state = jax.eval_shape(obj.init, jax.random.key(0), batch)
  x = batch[obj.key]
  full = jax.eval_shape(obj.model.init, jax.random.key(0),
                        jax.ShapeDtypeStruct((1,) + x.shape[1:], x.dtype))
  shapes = lambda tree: jax.tree.map(lambda a: a.shape, nn.unbox(tree))  # noqa: E731
  assert shapes(state.params["model"]) == shapes(full["params"])
  if obj.gan_weight:
    frames = x if x.ndim == 4 else jax.ShapeDtypeStruct(
        (x.shape[1],) + x.shape[2:], x.dtype)
    disc = jax.eval_shape(obj.discriminator.init, jax.random.key(0), frames)
    assert shapes(state.params[ae_objective.DISC]) == shapes(disc["params"])
  assert x.shape[-2] > obj.arch.compression  # The crop did something.


def test_tiny_training_reconstructs_better(tmp_path):
  config = _config()
  last = trainer.train_and_evaluate(config, str(tmp_path / "run"))
  rows = common.read_losses(str(tmp_path / "run"))
  assert rows[-1][1] < 0.8 * rows[0][1]
  assert np.isfinite(last["eval_loss"])
  # The learning rate is logged like every family's (the schedule's value
  # at the row's last step, averaged with the steps since the last row).
  with open(tmp_path / "run" / "metrics.jsonl") as f:
    logged = [json.loads(line) for line in f]
  schedule = state_lib.learning_rate_schedule(config.optimizer,
                                              config.total_steps)
  every = config.log_every_steps
  for row in logged:
    want = np.mean([schedule(s - 1) for s in
                    range(row["step"] - every + 1, row["step"] + 1)])
    np.testing.assert_allclose(row["learning_rate"], want, rtol=1e-5)
    assert row["param_norm"] > 0 and row["update_norm"] > 0


def test_se_loss_is_zero_for_a_scale_equivariant_decoder():
  x = jnp.full((1, 16, 16, 3), 0.3)
  z = x[:, ::4, ::4]  # a 4x "encoder" of a constant image
  nearest = lambda zz: jnp.repeat(jnp.repeat(zz, 4, 1), 4, 2)
  l1 = lambda a, b: jnp.mean(jnp.abs(a - b))
  for f in ae_objective.SE_FACTORS:
    assert float(ae_objective.se_loss(x, z, nearest, l1, f)) < 1e-7
  # A decoder that adds a fixed pattern is not equivariant.
  pattern = lambda zz: nearest(zz) + 0.1 * (jnp.arange(zz.shape[2] * 4) % 2
                                            )[None, None, :, None]
  assert float(ae_objective.se_loss(x, z, pattern, l1, 2)) > 0.01


def _np_halve(x):
  """Antialiased bilinear 2x downsampling of [H, W] by hand: the [1, 3, 3,
  1] / 8 triangle over inputs 2i-1 .. 2i+2, renormalised at the border."""
  def along(a):
    n = a.shape[0]
    out = []
    for i in range(n // 2):
      taps = [(j, w) for j, w in zip(range(2 * i - 1, 2 * i + 3), (1, 3, 3, 1))
              if 0 <= j < n]
      out.append(sum(w * a[j] for j, w in taps) / sum(w for _, w in taps))
    return np.stack(out)
  return along(along(x).T).T


def test_se_loss_compares_downsampled_images_with_decoded_downsampled_latents():
  # A constant image passed for any resampling, or for none at all.
  x = jax.random.uniform(jax.random.key(0), (1, 16, 16, 3))
  z = jax.random.normal(jax.random.key(1), (1, 4, 4, 8))
  seen = {}

  def decode(zz):
    seen["z"] = zz
    return jnp.repeat(jnp.repeat(zz[..., :3], 4, 1), 4, 2)

  def distance(a, b):
    seen["x"], seen["y"] = a, b
    return jnp.mean(jnp.abs(a - b))

  for f in ae_objective.SE_FACTORS:
    loss = ae_objective.se_loss(x, z, decode, distance, f)
    assert seen["x"].shape == (1, 16 // f, 16 // f, 3)
    assert seen["z"].shape == (1, 4 // f, 4 // f, 8)
    assert float(loss) == pytest.approx(
        float(jnp.mean(jnp.abs(seen["x"] - seen["y"]))))
  ae_objective.se_loss(x, z, decode, distance, 2)
  for c in range(3):
    np.testing.assert_allclose(seen["x"][0, ..., c], _np_halve(
        np.asarray(x[0, ..., c], np.float64)), atol=1e-6)
  np.testing.assert_allclose(seen["z"][0, ..., 5], _np_halve(
      np.asarray(z[0, ..., 5], np.float64)), atol=1e-6)


def test_the_se_term_enters_the_loss_at_its_weight_and_drawn_factor():
  obj = ae_objective.Autoencoder(_config(**{"autoencoder.se_weight": 0.25}),
                                 total_steps=2)
  x = jax.random.uniform(jax.random.key(0), (2, 32, 32, 3), minval=-1,
                         maxval=1)
  state = obj.init(jax.random.key(1), {"image": x})
  params, stats = state.params["model"], state.model_state.get("batch_stats")
  decode = lambda zz: obj._decode(params, stats, zz, False)[0]  # pylint: disable=protected-access
  z = obj._encode(params, x, None)[0]  # pylint: disable=protected-access
  by_factor = {f: float(ae_objective.se_loss(x, z, decode, obj._distance, f))  # pylint: disable=protected-access
               for f in ae_objective.SE_FACTORS}
  assert by_factor[2] != pytest.approx(by_factor[4])
  drawn = set()
  for seed in range(6):
    loss, (aux, _, _) = obj._losses(params, stats, x, jax.random.key(seed),  # pylint: disable=protected-access
                                    False)
    se = float(aux["se"])
    (f,) = [f for f, v in by_factor.items() if v == pytest.approx(se,
                                                                 rel=1e-5)]
    drawn.add(f)
    assert float(loss) == pytest.approx(
        float(aux["reconstruction"]) + 0.25 * se, rel=1e-5)
  assert drawn == set(ae_objective.SE_FACTORS)  # Both factors are drawn.


def test_conv_impl_reaches_the_model():
  """config.autoencoder.conv_impl picks the model's convs; "auto" is
  Winograd on this CPU backend."""
  assert jax.default_backend() == "cpu"
  for impl, want in (("auto", "winograd"), ("lax", "lax"),
                     ("winograd", "winograd")):
    obj = ae_objective.Autoencoder(
        _config(**{"autoencoder.conv_impl": impl}), total_steps=2)
    assert obj.model.conv_impl == want


@pytest.mark.parametrize("arg", ["tiny", "tiny_cosmos"])
def test_config_dtype_is_the_compute_dtype(arg):
  # The family ran in float32 whatever config.dtype said (the H200 row of
  # DC-AE listed under bf16 computed in float32).
  c = ae_config.get_config(arg)
  c.dtype = "bfloat16"
  obj = ae_objective.Autoencoder(c, total_steps=2)
  assert obj.model.dtype == jnp.bfloat16
  size = int(c.dataset.image_size)
  x = jax.random.uniform(jax.random.key(0), (2, size, size, 3), minval=-1,
                         maxval=1)
  model32 = obj.model.clone(dtype=jnp.float32)
  variables = model32.init(jax.random.key(1), x)
  z16, out16 = jax.jit(lambda v, x: (
      obj.model.apply(v, x, method=obj.model.encode), obj.model.apply(v, x))
                      )(variables, x)
  z32, out32 = jax.jit(lambda v, x: (
      model32.apply(v, x, method=model32.encode), model32.apply(v, x)))(
          variables, x)
  # Float32 out (losses and written latents), bf16 inside: they differ.
  assert z16.dtype == out16.dtype == jnp.float32
  for a16, a32 in ((z16, z32), (out16, out32)):
    err = float(jnp.abs(a16 - a32).max() / jnp.abs(a32).max())
    assert 0 < err < 0.1, err
  disc = ae_objective.Autoencoder(
      ae_config.get_config("tiny,gan"), total_steps=2).discriminator
  assert disc.dtype == jnp.float32  # CPU: "auto" is float32.


@pytest.mark.parametrize("overrides,match", [
    ({"dataset.image_size": 36}, "not divisible by 8"),
    ({"autoencoder.se_weight": 0.25, "dataset.image_size": 48},
     "x the SE factor 4"),
    ({"autoencoder.gan_weight": 0.5, "autoencoder.gan_loss": "wgan"},
     "gan_loss='wgan'; use one of"),
    ({"autoencoder.kl_weight": -1.0},
     r"^config\.autoencoder\.kl_weight=-1\.0 must be a number >= 0\.$"),
    # Sizes a network would divide by, the GAN's fields, no loss at all.
    ({"model.latent_channels": 0},
     r"^config\.model\.latent_channels=0 must be an integer >= 1\.$"),
    ({"model.attention_head_dim": 0}, "attention_head_dim=0 must be"),
    ({"model.attention_head_dim": 5},
     r"encoder_block_out_channels\[2\]=32 is not a multiple of "
     r"config\.model\.attention_head_dim=5"),
    ({"model.decoder_block_out_channels": (16, 0, 32, 64)},
     r"decoder_block_out_channels\[1\]=0 must be an integer >= 1"),
    ({"model.encoder_layers_per_block": (1, 1, 1)},
     "encoder_layers_per_block has 3 entries for the 4 stages"),
    ({"autoencoder.gan_weight": 0.5, "autoencoder.disc_widths": ()},
     r"^config\.autoencoder\.disc_widths=\(\) needs at least one width"),
    ({"autoencoder.gan_weight": 0.5, "autoencoder.disc_widths": (0, 16)},
     r"disc_widths\[0\]=0 must be an integer >= 1"),
    ({"autoencoder.disc_learning_rate": -1.0},
     r"disc_learning_rate=-1\.0 must be a number > 0"),
    ({"autoencoder.disc_b2": 1.0},
     r"disc_b2=1\.0 must be a number in \[0, 1\)"),
    ({"autoencoder.gan_start_step": -3},
     "gan_start_step=-3 must be an integer >= 0"),
    ({"autoencoder.l1_weight": 0.0},
     "l1_weight=0 and lpips_weight=0 leave no reconstruction loss"),
    ({"autoencoder.lpips_weight": 0.5},
     r"lpips_weight=0\.5 needs config\.autoencoder\.lpips_weights, the "
     r"\.npz"),
    ({"autoencoder.lpips_weight": 0.5,
      "autoencoder.lpips_weights": "/nonexistent/lpips.npz"},
     r"^config\.autoencoder\.lpips_weights='/nonexistent/lpips\.npz': "
     r"LPIPS weights /nonexistent/lpips\.npz not found"),
    ({"model.decoder_norm_types": "group_norm"}, "decoder_norm_types="),
    ({"autoencoder.conv_impl": "fft"},
     "config.autoencoder.conv_impl='fft'; use 'auto'"),
    ({"grad_accum_steps": 2}, "grad_accum_steps=2: the autoencoder step "
                              "does not accumulate"),
    # Widths the shortcuts cannot regroup were "64 channels cannot be
    # averaged into 7 groups", naming no field.
    ({"model.latent_channels": 7}, r"^config\.model\.latent_channels=7: "
     r"the encoder's output shortcut averages encoder_block_out_channels"
     r"\[-1\]=64 channels into 7 equal groups; change the widths"),
    ({"model.latent_channels": 64, "autoencoder.kl_weight": 1e-6},
     r"latent_channels=64: .* into 128 equal groups \(mean and log-variance"),
    ({"model.encoder_block_out_channels": (16, 32, 32, 160)},
     r"^config\.model\.encoder_block_out_channels\[3\]=160: stage 2's "
     r"shortcut averages its 4 x 32 space-to-channel values"),
    ({"model.decoder_block_out_channels": (16, 32, 48, 64)},
     r"decoder_block_out_channels\[2\]=48: the shortcut into stage 1 "
     r"repeats these channels into its 4 x 32 values"),
    # Clips reached the image model as a KeyError traceback.
    ({"dataset.num_frames": 5}, r"^config\.dataset\.num_frames=5: clips "
     r"need a video autoencoder"),
])
def test_bad_configs_fail_before_compiling(overrides, match):
  with pytest.raises(ValueError, match=match) as e:
    checks.check_config(_config(**overrides))
  assert "\n" not in str(e.value)


def test_lpips_on_images_the_se_term_shrinks_below_16_px_is_refused(
    tmp_path):
  # tiny,se with LPIPS: 32 px images at SE factor 4 are 8 px, and the loss
  # went NaN at step 3 after a 90 s compile.
  weights = tmp_path / "lpips.npz"
  np.savez(weights, **{k: np.zeros(v, np.float32)
                       for k, v in perceptual.expected_shapes().items()})
  lpips = {"autoencoder.lpips_weight": 0.1,
           "autoencoder.lpips_weights": str(weights),
           "dataset.image_size": 32}
  with pytest.raises(ValueError, match=(
      r"^config\.autoencoder\.lpips_weight=0\.1: LPIPS needs images of at "
      r"least 16 px, and the SE factor 4 turns 32 px into 8; raise config\."
      r"dataset\.image_size or set lpips_weight=0\.$")):
    checks.check_config(_config(**lpips, **{"autoencoder.se_weight": 0.25}))
  checks.check_config(_config(**lpips))  # 32 px without SE is fine.


def test_lpips_weights_without_a_weight_is_warned_about(caplog):
  # The file alone adds nothing to the loss: the run would train on L1 alone.
  checks.check_config(_config(**{"autoencoder.lpips_weights": "lpips.npz"}))
  warned = [r.getMessage() for r in caplog.records
            if "lpips_weights is set but lpips_weight=0" in r.getMessage()]
  assert len(warned) == 1 and "config.autoencoder.lpips_weight > 0" in (
      warned[0])
  caplog.clear()
  checks.check_config(_config())
  assert not any("lpips_weights" in r.getMessage() for r in caplog.records)


def test_phase2_trains_only_the_layers_next_to_the_latent(tmp_path):
  one = str(tmp_path / "phase1")
  first = _config(total_steps=2, eval_batches=0)
  trainer.train_and_evaluate(first, one)
  two = str(tmp_path / "phase2")
  config = _config(total_steps=2, eval_batches=0,
                   **{"autoencoder.phase": "phase2", "init_from": one})
  trainer.train_and_evaluate(config, two)
  before = jax.device_get(run_state.restore(first, one)[2].params["model"])
  after = jax.device_get(run_state.restore(config, two)[2].params["model"])
  moved = []
  for (path, a), (_, b) in zip(
      jax.tree_util.tree_flatten_with_path(before)[0],
      jax.tree_util.tree_flatten_with_path(after)[0]):
    name = "/".join(str(getattr(k, "key", k)) for k in path)
    if np.array_equal(a, b):
      continue
    moved.append(name)
  assert moved and all(n.startswith(("encoder/conv_out", "decoder/conv_in"))
                       for n in moved), moved
  with pytest.raises(ValueError, match="set config.init_from"):
    checks.check_config(_config(**{"autoencoder.phase": "phase3"}))
  with pytest.raises(ValueError, match="has no checkpoint to start from"):
    trainer.train_and_evaluate(
        _config(**{"autoencoder.phase": "phase3",
                   "init_from": str(tmp_path / "none")}),
        str(tmp_path / "three"))


def test_sharded_steps_match_single_device():
  """Batch-norm statistics, the GAN, KL and SE terms: (8, 1, 1) and
  (2, 2, 2) meshes give the losses and statistics of one device."""
  # A small learning rate: Adam's first update is ~lr x sign(gradient), so
  # at 1e-3 float noise in near-zero gradients moves the second step's
  # batch statistics by ~1%; the comparison is about sharding, not that.
  # For the same reason the GAN term has a fixed weight: the adaptive one
  # divides by a gradient norm near zero at initialisation, which magnifies
  # summation-order noise (it is tested on its own).
  terms = {"model.decoder_norm_types": ("batch_norm", "rms_norm"),
           "autoencoder.gan_weight": 0.5, "autoencoder.gan_gamma": 0.1,
           "autoencoder.adaptive_weight": False,
           "autoencoder.kl_weight": 1e-3, "autoencoder.se_weight": 0.25,
           "optimizer.learning_rate": 1e-5,
           "autoencoder.disc_learning_rate": 1e-5,
           # XLA's convolutions, which accelerators run (CPU's default
           # tap-by-tap ones compile twice as long).
           "autoencoder.conv_impl": "lax", **TWO_STAGES}
  batches = common.random_batches(_config(), 2)
  ref, ref_state, _ = common.losses_on(_config(**terms, **{"mesh.data": 1}),
                                       jax.devices()[:1], batches)
  assert np.all(np.isfinite(ref))
  for mesh in [(8, 1, 1), (2, 2, 2)]:
    cfg = _config(**terms, **dict(zip(("mesh.data", "mesh.fsdp",
                                       "mesh.tensor"), mesh)))
    losses, state, _ = common.losses_on(cfg, None, batches)
    np.testing.assert_allclose(losses, ref, rtol=2e-4, err_msg=str(mesh))
    # Running means / variances of O(1) activations: summation order alone
    # moves them by ~1e-5 (a partitioning bug moved them by ~1e-2).
    for a, b in zip(jax.tree.leaves(ref_state.model_state),
                    jax.tree.leaves(state.model_state)):
      np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


def test_autoencoder_runs_write_reconstruction_grids(tmp_path):
  """Grids of original / reconstruction pairs take the samples' place."""
  config = _config(total_steps=2, eval_batches=1, num_samples=3,
                   sample_every_steps=1000)
  obj = ae_objective.Autoencoder(config, total_steps=2)
  x = preview.fixed_examples(config, "image", 3)
  assert x.shape == (3, 32, 32, 3) and x.min() >= -1 and x.max() <= 1
  # The first held-out examples, in order: the grid shows the same ones
  # every time.
  np.testing.assert_array_equal(x, preview.fixed_examples(config, "image", 3))
  state = obj.init(jax.random.key(0), {"image": jnp.asarray(x)})
  mesh = jax.make_mesh((1,), ("data",), devices=jax.devices()[:1])
  grid = np.asarray(preview.reconstructions(obj, config, mesh)(state, None))
  # One (original, reconstruction) pair per grid row, for any count.
  assert grid.shape == (3, 2, 32, 32, 3)
  np.testing.assert_array_equal(grid[:, 0], x)
  np.testing.assert_allclose(
      grid[:, 1], np.asarray(obj.reconstruct(state, {"image": x})),
      rtol=1e-5, atol=1e-5)
  # A run that does not evaluate may have no held-out split: the training
  # split's first examples, in order.
  train_x = preview.fixed_examples(
      _config(eval_batches=0, **{"dataset.eval_split": "nope"}), "image", 3)
  assert train_x.shape == x.shape and not np.array_equal(train_x, x)
  # More than the split holds names num_samples (it blamed batch_size).
  with pytest.raises(ValueError, match=r"^config\.num_samples=100000: the "
                     "reconstruction grid shows that many examples of the "
                     r"held-out split, which has \d+; use config\.num_"
                     r"samples <= \d+\.$"):
    preview.fixed_examples(config, "image", 100_000)
  # A run asking for that many says so before compiling (it compiled first).
  with pytest.MonkeyPatch.context() as m:
    m.setattr(trainer, "compile_step",
              lambda *a, **k: pytest.fail("compiled"))
    with pytest.raises(ValueError, match=r"^config\.num_samples=100000: "):
      trainer.train_and_evaluate(
          _config(total_steps=2, eval_batches=1, num_samples=100_000),
          str(tmp_path / "refused"))
  # A run writes them (at its last step) as PNG and to TensorBoard.
  trainer.train_and_evaluate(config, str(tmp_path / "run"))
  assert (tmp_path / "run" / "samples" / "step_0000002.png").exists()


def test_phase_options_set_the_phase_and_its_recipe():
  # `--config.autoencoder.phase=phase2` alone kept phase 1's 256 px and
  # optimizer; the options give the community reproduction's settings.
  two = ae_config.get_config("dc_ae_f32c32_in,phase2")
  assert two.autoencoder.phase == "phase2" and two.dataset.image_size == 512
  assert (two.optimizer.learning_rate, two.optimizer.weight_decay) == (
      1.6e-5, 1e-3)
  assert two.autoencoder.gan_weight == 0.0
  three = ae_config.get_config("dc_ae_f32c32_in,phase3")
  assert three.autoencoder.phase == "phase3" and three.autoencoder.gan_weight
  assert three.dataset.image_size == 256
  assert (three.optimizer.learning_rate, three.optimizer.b1,
          three.optimizer.b2, three.optimizer.weight_decay) == (
              5.4e-5, 0.5, 0.9, 0.0)
  # The CPU presets keep their own optimizer and size.
  tiny = ae_config.get_config("tiny,phase2")
  assert tiny.autoencoder.phase == "phase2"
  assert tiny.dataset.image_size == 32 and tiny.optimizer.learning_rate == 1e-3
  with pytest.raises(ValueError, match="phase2 and phase3 exclude each other"):
    ae_config.get_config("tiny,phase2,phase3")
