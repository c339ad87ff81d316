"""LPIPS-VGG against the `lpips` package (parity extra), and its contract.

The VGG16 trunk is random (nothing downloads); the linear heads are the real
ones shipped inside the lpips package, converted by jaxgen.eval.convert.
"""

from flax import traverse_util
import jax
import numpy as np
import pytest

from jaxgen.eval import convert
from jaxgen.eval import perceptual
from tests import parity


@pytest.fixture(scope="module")
def torch_lpips_and_params():
  torch = parity.need("torch")
  tv = parity.need("torchvision")
  lpips = parity.need("lpips")
  torch.manual_seed(0)
  vgg = tv.models.vgg16(weights=None)
  # A random trunk; the package's heads are loaded from its weight file.
  ref = lpips.LPIPS(net="vgg", pnet_rand=True, verbose=False).eval()
  vgg_state = vgg.state_dict()
  # lpips' slices hold torchvision's feature modules under their indices.
  own = ref.state_dict()
  for key, value in vgg_state.items():
    if key.startswith("features."):
      idx = int(key.split(".")[1])
      slice_ = 1 + sum(idx >= b for b in (4, 9, 16, 23))
      own[f"net.slice{slice_}.{idx}.{key.split('.')[2]}"] = value
  ref.load_state_dict(own)
  heads = torch.load(convert.lpips_heads_path(), map_location="cpu")
  flat = convert.lpips_from_torch(
      {k: v.numpy() for k, v in vgg_state.items()},
      {k: v.numpy() for k, v in heads.items()})
  params = traverse_util.unflatten_dict(flat, sep="/")
  return torch, ref, params


@pytest.mark.parametrize("size", [32, 64])
def test_lpips_matches_the_lpips_package(torch_lpips_and_params, size):
  torch, ref, params = torch_lpips_and_params
  rng = np.random.default_rng(size)
  x0 = rng.uniform(-1, 1, (3, size, size, 3)).astype(np.float32)
  x1 = np.clip(x0 + rng.normal(0, 0.3, x0.shape), -1, 1).astype(np.float32)
  with torch.no_grad():
    want = ref(torch.from_numpy(x0.transpose(0, 3, 1, 2)),
               torch.from_numpy(x1.transpose(0, 3, 1, 2))).numpy().reshape(-1)
  got = np.asarray(jax.jit(perceptual.LPIPS().apply)({"params": params},
                                                      x0, x1))
  np.testing.assert_allclose(got, want, rtol=1e-4)
  assert np.all(want > 0)


def test_identical_images_have_zero_distance_and_gradients_flow():
  params = perceptual.LPIPS().init(jax.random.key(0), np.zeros((1, 32, 32, 3)),
                                   np.zeros((1, 32, 32, 3)))["params"]
  x = np.random.default_rng(0).uniform(-1, 1, (2, 32, 32, 3)).astype(
      np.float32)
  d = perceptual.LPIPS().apply({"params": params}, x, x)
  np.testing.assert_allclose(d, 0.0, atol=1e-7)
  grad = jax.grad(lambda y: perceptual.LPIPS().apply(
      {"params": params}, x, y).sum())(x + 0.1)
  assert np.all(np.isfinite(grad)) and np.abs(grad).max() > 0


def test_weights_errors_are_one_line(tmp_path):
  with pytest.raises(ValueError, match="not found.*--vgg16"):
    perceptual.load_weights(str(tmp_path / "missing.npz"))
  np.savez(tmp_path / "bad.npz", lin0=np.ones(64))
  with pytest.raises(ValueError, match="not LPIPS-VGG weights"):
    perceptual.load_weights(str(tmp_path / "bad.npz"))
  # A copy cut short and a folder were BadZipFile / IsADirectoryError
  # tracebacks.
  (tmp_path / "cut.npz").write_bytes((tmp_path / "bad.npz").read_bytes()[:60])
  (tmp_path / "folder.npz").mkdir()
  for name in ("cut.npz", "folder.npz"):
    with pytest.raises(ValueError, match=f"^cannot read LPIPS weights "
                       f"\\S+{name} .*--vgg16\\.$"):
      perceptual.load_weights(str(tmp_path / name))


def test_images_under_16_px_are_refused_not_nan():
  # VGG's fifth tap is empty at 8 px: the distance was NaN.
  x = jax.ShapeDtypeStruct((2, 8, 8, 3), np.float32)
  with pytest.raises(ValueError, match="LPIPS needs images of at least "
                     r"16x16 pixels \(VGG16 pools them 4 times\); got 8x8"):
    jax.eval_shape(lambda a, b: perceptual.LPIPS().init_with_output(
        jax.random.key(0), a, b), x, x)
  assert jax.eval_shape(lambda a, b: perceptual.LPIPS().init_with_output(
      jax.random.key(0), a, b), *[jax.ShapeDtypeStruct((2, 16, 16, 3),
                                                       np.float32)] * 2)
