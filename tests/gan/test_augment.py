"""ADA-style augmentation of D's inputs: identity at p = 0, every operation at
p = 1, differentiable, R1 / R2 on the images before augmentation, the
burn-in ramp, the paper presets' probabilities and the FLOP count."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import r3gan as r3gan_config
from jaxgen import registry
from jaxgen.gan import augment
from jaxgen.train import flops as flops_lib
from tests.gan import test_objective


def _images(n=6, size=16, seed=0):
  return jax.random.uniform(jax.random.key(seed), (n, size, size, 3),
                            minval=-1, maxval=1)


def test_zero_probability_is_the_identity():
  x = _images()
  np.testing.assert_array_equal(augment.augment(jax.random.key(1), x, 0.0), x)


def test_full_probability_changes_every_image_and_cuts_a_square():
  x = _images()
  y = augment.augment(jax.random.key(1), x, 1.0)
  assert y.shape == x.shape and y.dtype == x.dtype
  assert np.all(np.abs(np.asarray(y - x)).reshape(6, -1).max(1) > 0.1)
  # Cutout is last: at least a quarter-side square (clipped at a corner)
  # of exact zeros in every image.
  zeros = np.all(np.asarray(y) == 0.0, axis=-1).reshape(6, -1).sum(1)
  assert np.all(zeros >= 16), zeros
  # Same key, same transforms; another key, others.
  np.testing.assert_array_equal(augment.augment(jax.random.key(1), x, 1.0), y)
  assert not np.allclose(augment.augment(jax.random.key(2), x, 1.0), y)


def test_geometric_part_is_an_exact_flip_or_rotation_when_only_they_apply():
  # The affine map of sample i is built from gated factors; with identity
  # warps the bilinear sampler returns the input pixels exactly.
  x = _images(n=1)
  m = jnp.array([[[-1.0, 0, 0], [0, 1, 0], [0, 0, 1]]])  # x-flip
  np.testing.assert_allclose(jax.vmap(augment._warp)(x, m), x[:, :, ::-1],  # pylint: disable=protected-access
                             atol=1e-5)
  m = jnp.array([[[0.0, -1, 0], [1, 0, 0], [0, 0, 1]]])  # 90 degrees
  out = np.asarray(jax.vmap(augment._warp)(x, m))  # pylint: disable=protected-access
  assert any(np.allclose(out[0], np.rot90(np.asarray(x[0]), k), atol=1e-5)
             for k in (1, 3))


def test_gradients_flow_through_the_augmentation():
  x = _images()
  g = jax.grad(lambda v: jnp.sum(augment.augment(jax.random.key(3), v, 0.8)
                                 ** 2))(x)
  assert np.all(np.isfinite(g)) and np.abs(np.asarray(g)).sum() > 0


def _objective(**gan):
  config = r3gan_config.get_config("tiny")
  config.gan.update(gan)
  return registry.OBJECTIVES.get("r3gan")(config), config


def test_penalties_are_taken_before_augmentation():
  obj, config = _objective(augment_p=0.5)
  size = config.dataset.image_size
  batch = {"image": _images(8, size), "label": jnp.arange(8) % 8}
  state = obj.init(jax.random.key(0), batch)
  d_params = state.params["discriminator"]
  fake = _images(8, size, seed=5)
  labels = batch["label"]
  clean = obj.d_loss(d_params, batch["image"], fake, labels, 1.0)[1]
  augmented = obj.d_loss(d_params, batch["image"], fake, labels, 1.0,
                         (jax.random.key(7), 1.0))[1]
  np.testing.assert_allclose(augmented["r1"], clean["r1"], rtol=1e-6)
  np.testing.assert_allclose(augmented["r2"], clean["r2"], rtol=1e-6)
  assert not np.isclose(augmented["logits_real"], clean["logits_real"])
  # The probability ramps from 0 with the burn-in cosine.
  steps = config.gan.burn_in_examples / config.batch_size
  assert float(obj.augment_fn(0)) == 0.0
  assert float(obj.augment_fn(steps + 10)) == pytest.approx(0.5)


@pytest.mark.parametrize("preset,p", [("cifar10", 0.55), ("ffhq64", 0.3),
                                      ("ffhq256", 0.3), ("imagenet32", 0.5),
                                      ("imagenet64", 0.4), ("tiny", 0.0)])
def test_paper_presets_augment(preset, p):
  assert r3gan_config.get_config(preset).gan.augment_p == p


def test_analytic_flops_with_augmentation_match_xla():
  config = test_objective._config(**{"mesh.data": 1, "gan.augment_p": 0.5})  # pylint: disable=protected-access
  s, step, _ = test_objective._compiled(config, jax.devices()[:1])  # pylint: disable=protected-access
  xla = flops_lib.compiled_flops(step) / config.batch_size
  assert abs(s.flops_per_example / xla - 1) < 0.05, (s.flops_per_example, xla)
