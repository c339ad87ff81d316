"""Cosmos-style autoencoders: wavelet placement, causality, FLOPs, training."""

import dataclasses

import einops
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import autoencoder as ae_config
from jaxgen import config_lib
from jaxgen.autoencoders import cosmos
from jaxgen.autoencoders import objective as ae_objective
from jaxgen.autoencoders import wavelet
from jaxgen.nn import linear
from jaxgen.train import flops as flops_lib
from jaxgen.train import checks
from jaxgen.train import trainer
from tests import convs
from tests.train import common


def _config(preset, **overrides):
  c = ae_config.get_config(preset)
  c.dataset.data_dir = common.DATA_DIR
  c.batch_size = 8
  c.total_steps = 2
  c.log_every_steps = 1
  c.eval_batches = 0
  config_lib.apply_overrides(c, overrides)
  return c


def test_matmul_flops_counts_real_taps_of_a_same_conv():
  x = jnp.zeros((2, 4, 4, 3))
  w = jnp.zeros((3, 3, 3, 5))
  conv = lambda x, w: jax.lax.conv_general_dilated(  # noqa: E731
      x, w, (1, 1), ((1, 1), (1, 1)),
      dimension_numbers=("NHWC", "HWIO", "NHWC"))
  # Per axis, taps inside the 4-wide input: 3 + 4 + 3 = 10 (output, tap)
  # pairs; 10 x 10 in 2-D, x 3 input channels x 5 outputs x batch 2.
  assert flops_lib.matmul_flops(conv, x, w) == 2 * 2 * 100 * 3 * 5
  a, b = jnp.zeros((2, 7, 3)), jnp.zeros((2, 3, 4))
  assert flops_lib.matmul_flops(jnp.matmul, a, b) == 2 * 2 * 7 * 3 * 4


def test_the_encoder_reads_haar_coefficients_and_the_decoder_inverts_them():
  # The channel counts alone are the same for plain space-to-depth: a model
  # that stopped calling the wavelet would pass a shape check. With the same
  # weights, the Haar model equals the space-to-depth one on the wavelet
  # coefficients laid out as pixels (encode), and its output is the
  # inverse wavelet of the other's, read back as coefficients (decode).
  obj = ae_objective.Autoencoder(
      _config("tiny_cosmos", **{"autoencoder.conv_impl": "lax"}),
      total_steps=2)
  haar = obj.model
  plain = ae_objective.build_model(
      dataclasses.replace(obj.arch, patch_method="rearrange"))
  p = obj.arch.patch_size
  x = jax.random.uniform(jax.random.key(0), (1, 32, 32, 3), minval=-1,
                         maxval=1)
  variables = nn.unbox(haar.init(jax.random.key(1), x))
  to_pixels = lambda y: einops.rearrange(  # noqa: E731
      y, "b h w (c i j) -> b (h i) (w j) c", i=p, j=p)
  to_channels = lambda y: einops.rearrange(  # noqa: E731
      y, "b (h i) (w j) c -> b h w (c i j)", i=p, j=p)
  z = haar.apply(variables, x, method=haar.encode)
  z_plain = plain.apply(variables, to_pixels(wavelet.haar_patch(x, p)),
                        method=plain.encode)
  np.testing.assert_allclose(z, z_plain, atol=1e-5)
  assert not np.allclose(z, plain.apply(variables, x, method=plain.encode),
                         atol=1e-3)
  out = haar.apply(variables, z, method=haar.decode)
  out_plain = plain.apply(variables, z, method=plain.decode)
  np.testing.assert_allclose(
      out, wavelet.haar_unpatch(to_channels(out_plain), p), atol=1e-5)


@pytest.mark.parametrize("preset", ["tiny_cosmos", "tiny_video"])
def test_patcher_first_unpatcher_last_and_flops_match_xla(preset,
                                                           monkeypatch):
  # lax convs: the analytic count is the direct convolution's.
  obj = ae_objective.Autoencoder(
      _config(preset, **{"autoencoder.conv_impl": "lax"}), total_steps=2)
  a = obj.arch
  shape = ((1, 5, 32, 32, 3) if a.video else (1, 32, 32, 3))
  x = jnp.zeros(shape)
  variables = nn.unbox(obj.model.init(jax.random.key(0), x))
  p = a.patch_size
  spatial = variables["params"]["encoder"]["conv_in"]["spatial"]["kernel"]
  assert spatial.shape[2] == 3 * p ** (3 if a.video else 2)
  out = variables["params"]["decoder"]["conv_out"]
  assert out[("temporal" if a.video else "spatial")]["kernel"].shape[-1] == (
      3 * p ** (3 if a.video else 2))
  z = obj.model.apply(variables, x, method=obj.model.encode)
  f = a.compression
  want_z = ((1, 2, 32 // f, 32 // f, 8) if a.video
            else (1, 32 // f, 32 // f, 8))
  assert z.shape == want_z
  assert obj.model.apply(variables, x).shape == x.shape
  enc = jax.jit(lambda v, x: obj.model.apply(
      v, x, method=obj.model.encode)).lower(variables, x).compile()
  dec = jax.jit(lambda v, z: obj.model.apply(
      v, z, method=obj.model.decode)).lower(variables, z).compile()
  assert obj.forward_flops("encoder", 32) == pytest.approx(
      flops_lib.compiled_flops(enc), rel=0.05)
  assert obj.forward_flops("decoder", 32 // f) == pytest.approx(
      flops_lib.compiled_flops(dec), rel=0.05)
  # Model FLOPs do not depend on how the convs run (every 3x3 conv as
  # Winograd, the channel threshold lowered to 1).
  monkeypatch.setattr(linear, "WINOGRAD_MIN_CHANNELS", 1)
  wino = ae_objective.Autoencoder(
      _config(preset, **{"autoencoder.conv_impl": "winograd"}), total_steps=2)
  assert wino.model.conv_impl == "winograd"
  for part, size in (("encoder", 32), ("decoder", 32 // f)):
    assert wino.forward_flops(part, size) == obj.forward_flops(part, size)
  # ... although the Winograd model itself does fewer multiplies.
  executed = flops_lib.matmul_flops(
      lambda v, x: wino.model.apply(v, x, method=wino.model.encode),
      variables, x)
  assert executed < 0.8 * obj.forward_flops("encoder", 32)


def test_video_autoencoder_is_causal():
  a = cosmos.CosmosArch(latent_channels=4, channels=8, channels_mult=(1, 2),
                        num_res_blocks=1, attn_resolutions=(4,),
                        patch_size=2, spatial_compression=4,
                        temporal_compression=4, video=True, num_groups=1)
  model = cosmos.CosmosAE(a.check())
  x = jax.random.normal(jax.random.key(1), (1, 9, 16, 16, 3))
  # Compiled: op by op, every op compiles a program of its own.
  v = jax.jit(model.init)(jax.random.key(0), x)
  encode = jax.jit(lambda v, x: model.apply(v, x, method=model.encode))
  decode = jax.jit(lambda v, z: model.apply(v, z, method=model.decode))
  later = x.at[:, 5:].add(1.0)  # frames 5..8 = latent frame 2
  z, z2 = (encode(v, y) for y in (x, later))
  assert z.shape[1] == 3
  np.testing.assert_array_equal(z[:, :2], z2[:, :2])
  assert float(jnp.abs(z[:, 2] - z2[:, 2]).max()) > 1e-3
  # Decoding: latent frame 2 changes only frames 5..8.
  y = decode(v, z)
  changed = z.at[:, 2].add(1.0)
  y2 = decode(v, changed)
  np.testing.assert_array_equal(y[:, :5], y2[:, :5])
  assert float(jnp.abs(y[:, 5:] - y2[:, 5:]).max()) > 1e-3


@pytest.mark.parametrize("video", [False, True])
def test_winograd_convs_give_the_lax_outputs(video, monkeypatch):
  """Every 3x3 spatial conv (channel threshold lowered to 1) as Winograd:
  encode and decode as with lax convs, for images and clips."""
  monkeypatch.setattr(linear, "WINOGRAD_MIN_CHANNELS", 1)
  a = cosmos.CosmosArch(latent_channels=4, channels=8, channels_mult=(1, 2),
                        num_res_blocks=1, attn_resolutions=(4,),
                        patch_size=2, spatial_compression=4,
                        temporal_compression=4 if video else 1, video=video,
                        num_groups=1).check()
  x = jax.random.normal(jax.random.key(2), (1, 5, 16, 16, 3) if video
                        else (2, 16, 16, 3))
  lax_model = cosmos.CosmosAE(a)
  v = lax_model.init(jax.random.key(0), x)
  wino = cosmos.CosmosAE(a, conv_impl="winograd")
  encode = lambda m: jax.jit(  # noqa: E731
      lambda v, x: m.apply(v, x, method=m.encode))
  left = convs.lax_convs(lambda v: wino.apply(v, x, method=wino.encode), v)
  assert convs.only_1x1_strided_or_temporal(left), left
  assert not convs.only_1x1_strided_or_temporal(convs.lax_convs(
      lambda v: lax_model.apply(v, x, method=lax_model.encode), v))
  z = encode(lax_model)(v, x)
  np.testing.assert_allclose(encode(wino)(v, x), z, atol=1e-4)
  np.testing.assert_allclose(
      jax.jit(lambda v, z: wino.apply(v, z, method=wino.decode))(v, z),
      jax.jit(lambda v, z: lax_model.apply(v, z, method=lax_model.decode))(
          v, z), atol=1e-4)


@pytest.mark.parametrize("overrides,match", [
    ({"dataset.num_frames": 6}, "needs 1 \\+ k \\* 4 frames"),
    ({"model.temporal_compression": 16}, "temporal downsamples"),
    ({"model.spatial_compression": 6}, "must be a power of two"),
    # Was "needs -1 learned downsamples; give channels_mult more levels".
    ({"model.spatial_compression": 1},
     r"spatial_compression=1 is below patch_size=2, which already"),
    ({"model.depth": 3}, "config.model.depth is not a field"),
    ({"model.channels_mult": (1, 0)},
     r"^config\.model\.channels_mult\[1\]=0 must be an integer >= 1\.$"),
    ({"model.num_groups": 0}, r"config\.model\.num_groups=0 must be"),
])
def test_bad_video_configs_fail_before_compiling(overrides, match):
  with pytest.raises(ValueError, match=match) as e:
    config = _config("tiny_video")
    if "model.depth" in overrides:
      config.model.depth = 3
    else:
      config_lib.apply_overrides(config, overrides)
    checks.check_config(config)
  assert "\n" not in str(e.value)


@pytest.mark.parametrize("preset", ["tiny_cosmos,se", "tiny_video,se"])
def test_se_runs_train(preset, tmp_path):
  # The SE term decodes 2x / 4x smaller latents through the same blocks.
  # No reconstruction grids, and XLA's convolutions (CPU's default
  # tap-by-tap ones compile twice as long): neither is what this tests.
  config = _config(preset, num_samples=0, **{"autoencoder.conv_impl": "lax"})
  last = trainer.train_and_evaluate(config, str(tmp_path / "run"))
  assert np.isfinite(last["loss"]) and np.isfinite(last["se"])
  assert last["step"] == 2


def _perturbed(variables, part, block):
  """The variables with one attention block's output projection moved."""
  params = jax.tree.map(lambda x: x, variables["params"])
  proj = params[part][block]["spatial_proj"]
  proj["kernel"] = proj["kernel"] + 0.5
  return {"params": params}


def test_attention_is_placed_for_the_training_size():
  """A 32 px-trained tiny_cosmos has attention at level 2 (4 px features);
  at 64 px, and on the SE term's smaller latents, the same blocks run."""
  obj = ae_objective.Autoencoder(_config("tiny_cosmos"), total_steps=2)
  model = obj.model
  assert model.arch.resolution == 32
  x32, x64 = (jax.random.normal(jax.random.key(1), (1, s, s, 3))
              for s in (32, 64))
  # Compiled: op by op, every op compiles a program of its own.
  v = nn.unbox(jax.jit(model.init)(jax.random.key(0), x32))
  attn = sorted(k for part in ("encoder", "decoder")
                for k in v["params"][part] if "_attn_" in k)
  assert attn == ["down_2_attn_0", "mid_attn_1", "mid_attn_1",
                  "up_2_attn_0", "up_2_attn_1"]
  same = jax.eval_shape(model.init, jax.random.key(0), x64)
  assert jax.tree.structure(nn.unbox(same)) == jax.tree.structure(v)
  encode = jax.jit(lambda v, x: model.apply(v, x, method=model.encode))
  decode = jax.jit(lambda v, z: model.apply(v, z, method=model.decode))
  z = encode(v, x64)
  assert z.shape == (1, 8, 8, 8)
  # The level-2 blocks are read at 64 px (8 px features there), ...
  assert float(jnp.abs(encode(_perturbed(v, "encoder", "down_2_attn_0"),
                              x64) - z).max()) > 1e-3
  moved = _perturbed(v, "decoder", "up_2_attn_0")
  assert float(jnp.abs(decode(moved, z) - decode(v, z)).max()) > 1e-3
  # ... and decoding the SE term's 2x2 latents (16 px) needs no others.
  small = z[:, ::4, ::4]
  assert decode(v, small).shape == (1, 16, 16, 3)
  assert float(jnp.abs(decode(moved, small) - decode(v, small)).max()) > 1e-3


def test_the_released_layout_of_ci8x8_at_any_image_size():
  """Cosmos's CI8x8: attention only in the middle blocks (its levels' sizes
  at resolution 1024 are 256/128/128, decoder 64/128/128, none 32), and
  the decoder's one upsample after its deepest level (`up[2].upsample`).
  The attention blocks were placed for the data's size: 4 encoder and 6
  decoder blocks at 256 px, and a phase-2 run at 512 px was another
  network whose warm start was refused."""
  names = {}
  for size in (256, 512):
    config = _config("cosmos_ci8x8")
    config.dataset.image_size = size
    model = ae_objective.Autoencoder(config, total_steps=2).model
    x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
    params = nn.unbox(jax.eval_shape(model.init, jax.random.key(0), x))
    names[size] = {part: sorted(params["params"][part])
                   for part in ("encoder", "decoder")}
  assert names[256] == names[512]
  enc, dec = names[256]["encoder"], names[256]["decoder"]
  assert [k for k in enc + dec if "_attn_" in k] == ["mid_attn_1"] * 2
  assert [k for k in dec if "upsample" in k] == ["up_2_upsample"]
  assert [k for k in enc if "downsample" in k] == ["down_0_downsample"]
  # 8x in all: the learned 2x, then the 4x unpatcher.
  out = jax.eval_shape(lambda v, z: model.apply(v, z, method=model.decode),
                       params, jax.ShapeDtypeStruct((1, 64, 64, 16),
                                                    jnp.float32))
  assert out.shape == (1, 512, 512, 3)


def test_a_config_written_before_resolution_existed_keeps_its_layout():
  # Runs written before CosmosArch.resolution placed attention for their
  # training size: without the field their config built another network,
  # and none of their checkpoints restored.
  config = _config("tiny_cosmos")
  del config.model["resolution"]
  arch = ae_objective.arch_from_config(config)
  assert arch.resolution == config.dataset.image_size == 32
  assert cosmos.attention_levels(arch) == (2,)
  assert cosmos.attention_levels(arch, decoder=True) == (2,)
