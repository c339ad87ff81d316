"""The FID Inception: parity with pytorch-fid, conversion, sharding, errors.

The parity tests need the `parity` extra (torch, pytorch-fid); without it
they skip with the reason. Weights are random (nothing downloads): the torch
network is pytorch-fid's own, its state dict is randomised, converted with
`jaxgen.eval.convert` and both networks embed the same images.
"""

import jax
import numpy as np
import pytest

from jaxgen.eval import convert
from jaxgen.eval import features as features_lib
from jaxgen.eval import inception
from tests import parity


def _torch():
  return parity.need("torch"), parity.need("pytorch_fid.inception")


def _random_torch_fid_inception(torch, fid, monkeypatch):
  """pytorch-fid's InceptionV3 (pool3 block) with random FID weights."""
  holder = {}

  def fake_url(*args, **kwargs):
    del args, kwargs
    return holder["state"]

  model = fid._inception_v3(num_classes=1008, aux_logits=False, weights=None)  # pylint: disable=protected-access
  model.Mixed_5b = fid.FIDInceptionA(192, pool_features=32)
  model.Mixed_5c = fid.FIDInceptionA(256, pool_features=64)
  model.Mixed_5d = fid.FIDInceptionA(288, pool_features=64)
  model.Mixed_6b = fid.FIDInceptionC(768, channels_7x7=128)
  model.Mixed_6c = fid.FIDInceptionC(768, channels_7x7=160)
  model.Mixed_6d = fid.FIDInceptionC(768, channels_7x7=160)
  model.Mixed_6e = fid.FIDInceptionC(768, channels_7x7=192)
  model.Mixed_7b = fid.FIDInceptionE_1(1280)
  model.Mixed_7c = fid.FIDInceptionE_2(2048)
  state = {}
  gen = torch.Generator().manual_seed(0)
  for key, value in model.state_dict().items():
    if key.endswith("conv.weight"):
      fan_in = value[0].numel()
      value = torch.randn(value.shape, generator=gen) * (2.0 / fan_in) ** 0.5
    elif key.endswith("bn.running_var"):
      value = torch.rand(value.shape, generator=gen) + 0.5
    elif key.endswith("bn.weight"):
      value = torch.rand(value.shape, generator=gen) * 0.4 + 0.8
    elif value.is_floating_point():
      value = torch.randn(value.shape, generator=gen) * 0.1
    state[key] = value
  holder["state"] = state
  # fid_inception_v3 builds this same network, then loads the published
  # weights through this function: hand it the random state dict instead.
  monkeypatch.setattr(fid, "load_state_dict_from_url", fake_url)
  net = fid.InceptionV3([3], resize_input=True, normalize_input=False).eval()
  return net, {k: v.numpy() for k, v in state.items()}


@pytest.fixture(scope="module")
def torch_and_converted():
  torch, fid = _torch()
  mp = pytest.MonkeyPatch()
  try:
    net, state = _random_torch_fid_inception(torch, fid, mp)
  finally:
    mp.undo()
  flat = convert.inception_from_torch(state)
  return torch, net, state, inception.unflatten(flat)


@pytest.mark.parametrize("size", [32, 64, 299])
def test_pool3_features_match_pytorch_fid(torch_and_converted, size):
  torch, net, state, params = torch_and_converted
  rng = np.random.default_rng(size)
  images = rng.uniform(-1, 1, (3, size, size, 3)).astype(np.float32)
  with torch.no_grad():
    want = net(torch.from_numpy(images.transpose(0, 3, 1, 2)))[0]
  want = want.numpy()[:, :, 0, 0]
  feats, logits = jax.jit(inception.InceptionV3().apply)(
      {"params": params}, images)
  scale = np.abs(want).max()
  assert scale > 1e-3
  np.testing.assert_allclose(np.asarray(feats) / scale, want / scale,
                             atol=1e-4, rtol=0)
  # The Inception Score's logits leave out the classifier's bias (Salimans
  # et al.'s code, torch-fidelity's "logits_unbiased"); a non-zero bias in
  # the converted weights shows it is really left out.
  assert np.abs(state["fc.bias"]).max() > 0
  want_logits = want @ state["fc.weight"].T
  np.testing.assert_allclose(np.asarray(logits), want_logits,
                             atol=1e-4 * np.abs(want_logits).max(), rtol=0)


@pytest.mark.parametrize("shape", [(32, 32), (64, 48), (512, 300), (300, 299)])
def test_resize_matches_torch_bilinear_without_antialiasing(shape):
  torch, _ = _torch()
  import torch.nn.functional as F  # pylint: disable=g-import-not-at-top
  rng = np.random.default_rng(1)
  images = rng.uniform(-1, 1, (2,) + shape + (3,)).astype(np.float32)
  want = F.interpolate(torch.from_numpy(images.transpose(0, 3, 1, 2)),
                       size=(299, 299), mode="bilinear",
                       align_corners=False).numpy().transpose(0, 2, 3, 1)
  got = np.asarray(inception.resize_bilinear(images))
  np.testing.assert_allclose(got, want, atol=2e-6, rtol=0)


def test_sharded_features_equal_single_device():
  params = inception.random_params(0)
  images = np.random.default_rng(2).uniform(-1, 1, (11, 40, 40, 3))
  one = features_lib.FeatureExtractor(
      params, mesh=jax.make_mesh((1, 1, 1), ("data", "fsdp", "tensor"),
                                 devices=jax.devices()[:1]), batch_size=4)
  eight = features_lib.FeatureExtractor(params, batch_size=4)
  assert eight.dp == 8 and eight.batch_size == 8
  f1, l1 = one(images)
  f8, l8 = eight(images)
  assert f1.shape == (11, 2048) and l1.shape == (11, 1008)
  np.testing.assert_allclose(f8, f1, rtol=1e-5, atol=1e-5 * np.abs(f1).max())
  np.testing.assert_allclose(l8, l1, rtol=1e-5, atol=1e-5 * np.abs(l1).max())


def test_weights_file_round_trip_and_errors(tmp_path):
  params = inception.random_params(3)
  flat = inception.flatten(params)
  path = tmp_path / "w.npz"
  np.savez(path, **flat)
  loaded, digest = inception.load_weights(str(path))
  assert digest == inception.weights_hash(flat)
  assert digest != inception.weights_hash(inception.flatten(
      inception.random_params(4)))
  np.testing.assert_array_equal(loaded["fc"]["kernel"], flat["fc/kernel"])
  with pytest.raises(ValueError, match="not found.*jaxgen.eval.convert"):
    inception.load_weights(str(tmp_path / "missing.npz"))
  np.savez(tmp_path / "bad.npz", **{k: v for k, v in flat.items()
                                    if "Mixed_7c" not in k})
  with pytest.raises(ValueError, match="not the FID Inception weights"):
    inception.load_weights(str(tmp_path / "bad.npz"))
  # A copy cut short (a BadZipFile traceback) and a folder.
  (tmp_path / "cut.npz").write_bytes(path.read_bytes()[:100_000])
  (tmp_path / "folder.npz").mkdir()
  for name, kind in (("cut.npz", "BadZipFile"), ("folder.npz", "Error")):
    with pytest.raises(ValueError, match=f"^cannot read Inception weights "
                       f"\\S+{name} \\(\\w*{kind}") as e:
      inception.load_weights(str(tmp_path / name))
    assert "\n" not in str(e.value)


def test_bad_images_are_one_line_errors():
  with pytest.raises(ValueError, match=r"x / 127.5 - 1"):
    features_lib.check_images(np.full((2, 8, 8, 3), 3.0), "samples")
  # NaN passed the range check (NaN comparisons are false).
  nan = np.zeros((3, 8, 8, 3), np.float32)
  nan[2, 0, 0, 0] = np.nan
  with pytest.raises(ValueError, match=r"^samples: 1 of 3 images hold NaN "
                     r"or inf values; drop them"):
    features_lib.check_images(nan, "samples")
  with pytest.raises(ValueError, match=r"expected \[N, H, W, 3\]"):
    features_lib.check_images(np.zeros((2, 8, 8, 4)), "samples")
  out = features_lib.check_images(np.full((1, 2, 2, 1), 255, np.uint8))
  assert out.shape == (1, 2, 2, 3) and np.all(out == 1.0)


def test_unit_range_floats_warn_once_per_set(caplog):
  # [0, 1] floats pass the range check but would be read as grey-to-white.
  rng = np.random.default_rng(0)
  unit = rng.uniform(0, 1, (4, 8, 8, 3))
  with caplog.at_level("WARNING"):
    features_lib.check_images(unit, "unit-range set")
    features_lib.check_images(unit, "unit-range set")
    features_lib.check_images(2 * unit - 1, "signed set")
  warned = [r.getMessage() for r in caplog.records
            if "no value below 0" in r.getMessage()]
  assert len(warned) == 1 and warned[0].startswith("unit-range set have")
  assert "2 * x - 1" in warned[0]
