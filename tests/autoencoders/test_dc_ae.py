"""DC-AE: released parameter counts, and whole-model parity with diffusers'
AutoencoderDC (random weights, small configs of both wirings)."""

import dataclasses

import jax
import numpy as np
import pytest

from jaxgen.autoencoders import dc_ae
from jaxgen.autoencoders import diffusers_compat
from jaxgen.nn import linear
from tests import convs
from tests import parity

# Two small configs covering every option: the in/mix wiring (no first-stage
# blocks, pixel (un)shuffle, batch-norm ResBlock decoder stages) and SANA's
# (strided-conv down, interpolate up, multi-scale attention, RMSNorm only).
SMALL = {
    "in": dict(
        latent_channels=8, attention_head_dim=8,
        encoder_block_types=("ResBlock", "ResBlock", "EfficientViTBlock",
                             "EfficientViTBlock"),
        decoder_block_types=("ResBlock", "ResBlock", "EfficientViTBlock",
                             "EfficientViTBlock"),
        encoder_block_out_channels=(16, 32, 32, 64),
        decoder_block_out_channels=(16, 32, 32, 64),
        encoder_layers_per_block=(0, 1, 1, 1),
        decoder_layers_per_block=(0, 2, 1, 1),
        encoder_qkv_multiscales=((), (), (), ()),
        decoder_qkv_multiscales=((), (), (), ()),
        upsample_block_type="pixel_shuffle",
        downsample_block_type="pixel_unshuffle",
        decoder_norm_types=("batch_norm", "batch_norm", "rms_norm",
                            "rms_norm"),
        decoder_act_fns=("relu", "relu", "silu", "silu")),
    "sana": dict(
        latent_channels=8, attention_head_dim=8,
        encoder_block_types=("ResBlock", "ResBlock", "EfficientViTBlock",
                             "EfficientViTBlock"),
        decoder_block_types=("ResBlock", "ResBlock", "EfficientViTBlock",
                             "EfficientViTBlock"),
        encoder_block_out_channels=(16, 16, 32, 32),
        decoder_block_out_channels=(16, 16, 32, 32),
        encoder_layers_per_block=(1, 1, 1, 2),
        decoder_layers_per_block=(1, 1, 2, 1),
        encoder_qkv_multiscales=((), (), (5,), (5,)),
        decoder_qkv_multiscales=((), (), (5,), (5,)),
        upsample_block_type="interpolate", downsample_block_type="Conv",
        decoder_norm_types="rms_norm", decoder_act_fns="silu"),
}


def test_released_parameter_counts_equal_diffusers():
  # f32c32-in as diffusers counts it (the figure); the others from
  # the reference notes' table (rounded there to 0.1M).
  assert dc_ae.num_params(dc_ae.released("f32c32_in")) == 323_356_460
  for name, millions in (("f32c32_sana", 312.3), ("f64c128_in", 676.9),
                         ("f128c512_in", 1120.7)):
    assert round(dc_ae.num_params(dc_ae.released(name)) / 1e5) == round(
        millions * 10), name


@pytest.mark.parametrize("impl", ["lax", "winograd"])
@pytest.mark.parametrize("name", sorted(SMALL))
def test_encode_and_decode_match_diffusers(name, impl, monkeypatch):
  """With impl="winograd" every dense 3x3 stride-1 conv runs as Winograd
  (the channel threshold is lowered to 1 so the small configs use it)."""
  monkeypatch.setattr(linear, "WINOGRAD_MIN_CHANNELS", 1)
  torch = parity.need("torch")
  dc = parity.need("diffusers.models.autoencoders.autoencoder_dc")
  ref = dc.AutoencoderDC(in_channels=3, **SMALL[name]).eval()
  gen = torch.Generator().manual_seed(0)
  with torch.no_grad():
    for key, value in ref.state_dict().items():
      if key.endswith("running_var"):
        value.copy_(torch.rand(value.shape, generator=gen) + 0.5)
      elif value.is_floating_point():
        value.copy_(torch.randn(value.shape, generator=gen) * 0.15)
  arch = dc_ae.Arch.from_diffusers(dict(ref.config))
  variables = diffusers_compat.convert_state_dict(
      {k: v.numpy() for k, v in ref.state_dict().items()}, arch)
  model = dc_ae.DCAE(arch, conv_impl=impl)
  x = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype(
      np.float32)
  with torch.no_grad():
    z_ref = ref.encode(torch.from_numpy(x.transpose(0, 3, 1, 2))).latent
    y_ref = ref.decode(z_ref).sample.numpy().transpose(0, 2, 3, 1)
    z_ref = z_ref.numpy().transpose(0, 2, 3, 1)
  if impl == "winograd":  # No dense stride-1 3x3 conv is left to lax.
    for method, arg in ((model.encode, x), (model.decode, np.zeros(
        (2, 4, 4, 8), np.float32))):
      left = convs.lax_convs(
          lambda v, a, m=method: model.apply(v, a, method=m), variables, arg)
      assert convs.only_1x1_strided_or_temporal(left), left
  z = jax.jit(lambda v, x: model.apply(v, x, method=model.encode))(
      variables, x)
  assert z.shape == (2, 4, 4, 8)
  np.testing.assert_allclose(z, z_ref, atol=1e-4 * np.abs(z_ref).max(),
                             rtol=0)
  y = jax.jit(lambda v, z: model.apply(v, z, method=model.decode))(
      variables, z_ref)
  np.testing.assert_allclose(y, y_ref, atol=1e-4 * np.abs(y_ref).max(),
                             rtol=0)


def test_unsupported_configs_and_missing_tensors_are_one_line_errors():
  with pytest.raises(ValueError, match="field 'use_quant_conv'"):
    dc_ae.Arch.from_diffusers({"use_quant_conv": True})
  with pytest.raises(ValueError, match="decoder_norm_types="):
    dc_ae.Arch.from_diffusers({"decoder_norm_types": "group_norm"})
  arch = dc_ae.Arch.from_diffusers(SMALL["sana"])
  with pytest.raises(ValueError, match="missing tensor"):
    diffusers_compat.convert_state_dict({}, arch)
  # diffusers would put batch norm inside LiteMLA; jaxgen's has RMSNorm
  # only, and the norm was ignored (a model other than the config's).
  with pytest.raises(ValueError, match=(
      r"^AutoencoderDC decoder_norm_types\[2\]='batch_norm' on an "
      "EfficientViTBlock stage is not supported")):
    dc_ae.Arch.from_diffusers(dict(SMALL["sana"],
                                   decoder_norm_types="batch_norm"))
  # A later empty stage drops its resampling (diffusers too): the latents
  # were f4 while `compression` said 8.
  for part in ("encoder", "decoder"):
    arch = dataclasses.replace(
        dc_ae.Arch(), **{f"{part}_layers_per_block": (1, 0, 1, 1, 1, 1)})
    with pytest.raises(ValueError, match=(
        rf"^config\.model\.{part}_layers_per_block\[1\]=0: only the first "
        "stage may be empty")):
      dc_ae.check_sizes(arch.normalized())


@pytest.mark.parametrize("shortcuts", [False, True])
def test_unshuffle_widths_must_divide_by_4(shortcuts):
  # The unshuffle block's conv makes width / 4 channels: width 6 was built
  # as 4 channels without shortcuts, a shape error naming no field with.
  arch = dataclasses.replace(
      dc_ae.Arch(), downsample_block_type="pixel_unshuffle",
      encoder_block_out_channels=(6, 6, 24, 32, 64, 64),
      stage_shortcuts=shortcuts, encoder_out_shortcut=False,
      decoder_in_shortcut=False).normalized()
  with pytest.raises(ValueError, match=(
      r"^config\.model\.encoder_block_out_channels\[1\]=6 is not a multiple "
      r"of 4, which config\.model\.downsample_block_type='pixel_unshuffle' "
      r"needs")):
    dc_ae.check_sizes(arch)
  dc_ae.check_sizes(dataclasses.replace(arch, downsample_block_type="Conv"))


def test_load_dc_ae_reads_a_saved_diffusers_folder(tmp_path):
  torch = parity.need("torch")
  dc = parity.need("diffusers.models.autoencoders.autoencoder_dc")
  torch.manual_seed(1)
  ref = dc.AutoencoderDC(in_channels=3, scaling_factor=0.41,
                         **SMALL["sana"]).eval()
  ref.save_pretrained(str(tmp_path / "ae"))
  ae = diffusers_compat.load_dc_ae(str(tmp_path / "ae"))
  assert ae.scaling_factor == pytest.approx(0.41)
  x = np.random.default_rng(1).uniform(-1, 1, (1, 32, 32, 3)).astype(
      np.float32)
  with torch.no_grad():
    out = ref(torch.from_numpy(x.transpose(0, 3, 1, 2))).sample.numpy()
  want = out.transpose(0, 2, 3, 1)
  got = np.asarray(ae.decode(ae.encode(x)))
  np.testing.assert_allclose(got, want, atol=1e-4 * np.abs(want).max(),
                             rtol=0)
  with pytest.raises(ValueError, match="not a diffusers AutoencoderDC"):
    diffusers_compat.load_dc_ae(str(tmp_path))
  # The torch habit (NCHW), a size the compression does not divide and
  # latents of other channels: one line before tracing.
  for call, bad, what in (
      (ae.encode, x.transpose(0, 3, 1, 2), r"images of shape \(1, 3, 32, "
       r"32\): pass NHWC \[N, H, W, 3\] with H and W multiples of 8"),
      (ae.encode, x[:, :20], "multiples of 8"),
      (ae.decode, np.zeros((1, 4, 4, 3), np.float32),
       r"latents of shape \(1, 4, 4, 3\): pass NHWC \[N, H, W, 8\] \(")):
    with pytest.raises(ValueError, match=what):
      call(bad)


def test_convert_writes_a_run_that_phases_start_from(tmp_path):
  """diffusers folder -> run dir: the restored objective reproduces
  diffusers (batch-norm statistics included) and phase 2 starts from it."""
  torch = parity.need("torch")
  dc = parity.need("diffusers.models.autoencoders.autoencoder_dc")
  from configs import autoencoder as ae_config  # pylint: disable=g-import-not-at-top
  from jaxgen.autoencoders import convert  # pylint: disable=g-import-not-at-top
  from jaxgen.autoencoders import runs as ae_runs  # pylint: disable=g-import-not-at-top
  from jaxgen.train import provenance  # pylint: disable=g-import-not-at-top
  from jaxgen.train import trainer  # pylint: disable=g-import-not-at-top
  from tests.train import common  # pylint: disable=g-import-not-at-top
  torch.manual_seed(2)
  ref = dc.AutoencoderDC(in_channels=3, **SMALL["in"])
  with torch.no_grad():  # Statistics that matter, not the (0, 1) defaults.
    for m in ref.modules():
      if isinstance(m, torch.nn.BatchNorm2d):
        m.running_mean.uniform_(-0.5, 0.5)
        m.running_var.uniform_(0.5, 2.0)
  ref.eval().save_pretrained(str(tmp_path / "ae"))
  config = ae_config.get_config("tiny")
  config.dataset.data_dir = common.DATA_DIR
  config.batch_size = 8
  run = str(tmp_path / "run")
  meta = convert.convert(str(tmp_path / "ae"), run, config)
  assert meta["params"] == sum(p.numel() for p in ref.parameters())
  _, s, step, state = ae_runs.restore_run(run)
  assert step == 0
  x = np.random.default_rng(3).uniform(-1, 1, (2, 32, 32, 3)).astype(
      np.float32)
  with torch.no_grad():
    want = ref(torch.from_numpy(x.transpose(0, 3, 1, 2))).sample.numpy()
  want = want.transpose(0, 2, 3, 1)
  got = np.asarray(s.objective.decode(state, s.objective.encode(state, x)))
  np.testing.assert_allclose(got, want, atol=1e-4 * np.abs(want).max(),
                             rtol=0)
  with pytest.raises(ValueError, match="already holds checkpoints"):
    convert.convert(str(tmp_path / "ae"), run, config)
  two = ae_config.get_config("tiny")
  two.dataset.data_dir = common.DATA_DIR
  two.batch_size, two.total_steps, two.eval_batches = 8, 1, 0
  two.model = provenance.load_config(run).model
  two.autoencoder.phase, two.init_from = "phase2", run
  trainer.train_and_evaluate(two, str(tmp_path / "two"))


def test_convert_needs_a_dc_ae_preset(tmp_path):
  """A Cosmos preset is refused before the folder is read."""
  from configs import autoencoder as ae_config  # pylint: disable=g-import-not-at-top
  from jaxgen.autoencoders import convert  # pylint: disable=g-import-not-at-top
  run = tmp_path / "run"
  with pytest.raises(ValueError) as e:
    convert.convert(str(tmp_path / "no_folder"), str(run),
                    ae_config.get_config("tiny_cosmos"))
  assert str(e.value) == (
      "--config is a 'cosmos' autoencoder preset (config.autoencoder."
      "architecture='cosmos'); converting diffusers' AutoencoderDC needs a "
      "dc_ae preset, e.g. --config=configs/autoencoder.py:dc_ae_f32c32_in.")
  assert not run.exists()
