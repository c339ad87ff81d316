"""ADA-style augmentation of D's inputs: identity at p = 0, every operation at
p = 1, differentiable, R1 / R2 through it at the images before augmentation,
the burn-in ramp, the paper presets' probabilities and the FLOP count."""

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


@pytest.mark.parametrize("p", [1.0, 0.5])
def test_flips_and_stretches_are_drawn_as_adas(p):
  # ADA gates the x-flip with p and then flips on a fair coin: mirrored with
  # probability p/2 (never 1, which D could not tell from the identity).
  # Only the flip mirrors (det < 0): rotations, scales and the anisotropic
  # stretch keep orientation.
  n = 4000
  m = np.asarray(augment._affine(  # pylint: disable=protected-access
      jax.random.split(jax.random.key(0), 16), _images(n=n, size=8), p))
  lin = m[:, :2, :2]
  mirrored = np.mean(np.linalg.det(lin) < 0)
  assert abs(mirrored - p / 2) < 4 * np.sqrt(p / 2 * (1 - p / 2) / n), (
      mirrored)
  # A rotation after the anisotropic stretch turns its axes off the
  # image's: the output-side singular directions (eigenvectors of L^T L)
  # are then not the x and y axes. Each of the two arbitrary rotations
  # fires with 1 - sqrt(1 - p), so the one after it with that probability
  # (times those whose stretch is on, p, and not ~1).
  gram = np.einsum("nji,njk->nik", lin, lin)
  off_axis = np.abs(gram[:, 0, 1]) > 1e-3 * np.abs(gram).max(axis=(1, 2))
  expected = (1 - np.sqrt(1 - p)) * p
  assert abs(off_axis.mean() - expected) < 0.05, (off_axis.mean(), expected)


def test_contrast_scales_around_mid_grey():
  # ADA's colour matrix acts on [-1, 1] pixels: contrast scales around 0.
  # A constant image at 0.5 stays constant under the warps and the
  # saturation (its luma is itself); around its own mean the contrast
  # would leave it too, so only brightness (q = p/2) would move it.
  # Around 0 it moves unless both brightness and contrast are off:
  # (1 - q)^2 of the images keep 0.5.
  n, q = 400, 0.5
  x = jnp.full((n, 8, 8, 3), 0.5)
  y = np.asarray(augment.augment(jax.random.key(5), x, 2 * q))
  # The largest |value| of an image is outside the cutout square.
  value = np.take_along_axis(
      y.reshape(n, -1), np.abs(y.reshape(n, -1)).argmax(1)[:, None], 1)[:, 0]
  kept = np.mean(np.abs(value - 0.5) < 1e-5)
  assert abs(kept - (1 - q) ** 2) < 0.09, kept


def test_gradients_flow_through_the_augmentation():
  x = _images()
  g = jax.grad(lambda v: jnp.sum(augment.augment(jax.random.key(3), v, 0.8)
                                 ** 2))(x)
  assert np.all(np.isfinite(g)) and np.abs(np.asarray(g)).sum() > 0


def _objective(**gan):
  config = r3gan_config.get_config("tiny")
  config.gan.update(gan)
  return registry.OBJECTIVES.get("r3gan")(config), config


def test_penalties_are_gradients_through_the_augmentation():
  # R1 / R2 = mean_i ||d D(Aug(x))_i / dx||^2 at the images before
  # augmentation, from the adversarial term's forward pass (the reference's
  # augment pipe sits between the samples and D). Was: on D(x) of the
  # clean images, which D never sees in the adversarial term.
  obj, config = _objective(augment_p=0.5)
  size = config.dataset.image_size
  batch = {"image": _images(8, size), "label": jnp.arange(8) % 8}
  state = obj.init(jax.random.key(0), batch)
  d_params = state.params["discriminator"]
  fake = _images(8, size, seed=5)
  labels = batch["label"]
  key = jax.random.key(7)
  # Compiled, not run op by op: eager ops compile one program each.
  d_loss = jax.jit(obj.d_loss, static_argnums=4)
  clean = d_loss(d_params, batch["image"], fake, labels, 1.0)[1]
  augmented = d_loss(d_params, batch["image"], fake, labels, 1.0,
                     (key, 1.0))[1]
  real_key, fake_key = jax.random.split(key)

  def d_of_augmented(k, x):
    return obj.discriminator.apply({"params": d_params},
                                   augment.augment(k, x, 1.0), labels)

  @jax.jit
  def sample_grad(k, x, i):
    """d D(Aug(x))_i / d x_i, with the other samples held fixed."""
    return jax.grad(lambda xi: d_of_augmented(k, x.at[i].set(xi))[i])(x[i])

  for name, k, x in (("r1", real_key, batch["image"]),
                     ("r2", fake_key, fake)):
    # Per-sample gradients one by one (no sum-of-logits trick).
    per_sample = [sample_grad(k, x, i) for i in range(len(x))]
    by_hand = np.mean([np.sum(np.square(g)) for g in per_sample])
    np.testing.assert_allclose(augmented[name], by_hand, rtol=1e-4)
    assert not np.isclose(augmented[name], clean[name], rtol=1e-2)
  np.testing.assert_allclose(
      augmented["logits_real"],
      np.mean(d_of_augmented(real_key, batch["image"])), rtol=1e-5)
  # The probability ramps from 0 with the burn-in cosine.
  steps = config.gan.burn_in_examples / config.batch_size
  assert float(obj.augment_fn(0)) == 0.0
  assert float(obj.augment_fn(steps + 10)) == pytest.approx(0.5)


@pytest.mark.parametrize("preset,p", [("cifar10", 0.55), ("ffhq64", 0.3),
                                      ("ffhq256", 0.3), ("imagenet32", 0.5),
                                      ("imagenet64", 0.4), ("tiny", 0.0)])
def test_paper_presets_augment(preset, p):
  assert r3gan_config.get_config(preset).gan.augment_p == p


def test_augmentation_adds_its_own_arithmetic_and_no_d_pass():
  # The penalties go through the augmentation in the adversarial pass, so
  # augmenting adds no D pass: XLA's count grows only by the augmentation's
  # own elementwise arithmetic (~0.8 MFLOPs per example here; an extra D
  # forward is 5.1 M), and the analytic count, which leaves that out, is the
  # unaugmented one (itself checked against XLA in test_objective.py).
  xla, analytic = {}, {}
  for p in (0.0, 0.5):
    config = test_objective._config(**{"mesh.data": 1, "gan.augment_p": p})  # pylint: disable=protected-access
    s, step, _ = test_objective._compiled(config, jax.devices()[:1])  # pylint: disable=protected-access
    xla[p] = flops_lib.compiled_flops(step) / config.batch_size
    analytic[p] = s.flops_per_example
  f_d = s.objective.forward_flops()[1]
  assert 0 < xla[0.5] - xla[0.0] < 0.5 * f_d, (xla, f_d)
  assert analytic[0.5] == analytic[0.0]
