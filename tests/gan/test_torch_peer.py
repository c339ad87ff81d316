"""The PyTorch R3GAN benchmark peer against jaxgen (tiny preset, 8 px).

experiments/performance/torch_r3gan.py must compute what jaxgen computes:
same parameter counts, same G / D outputs from the same (random, fix-up
zeros replaced) weights, and for one train step the same losses and the same
updated G, D and EMA parameters.
"""

import flax.linen as nn
import jax
import numpy as np
import pytest

from configs import r3gan as r3gan_config
from jaxgen.gan import objective as gan_objective
from tests import parity

torch = parity.need("torch")
torch_r3gan = parity.need("experiments.performance.torch_r3gan")

BATCH = 4


@pytest.fixture(scope="module")
def setup():
  """(config, jaxgen objective, its initial state, randomised params
  {generator, discriminator}, real batch of 2 x BATCH)."""
  c = r3gan_config.get_config("tiny")
  c.batch_size = BATCH
  c.dtype = "float32"
  # Two stages (8 px) of the tiny preset's widths: a transition, grouped
  # convs of 4 and 2 groups, and a quicker compile than three stages.
  c.model.widths = (32, 16)
  c.dataset.image_size = 8
  obj = gan_objective.R3GAN(c)
  size, classes = c.dataset.image_size, obj.num_classes
  rng = np.random.default_rng(0)
  batch = {"image": rng.uniform(-1, 1, (2 * BATCH, size, size, 3)).astype(
               np.float32),
           "label": (np.arange(2 * BATCH) % classes).astype(np.int32)}
  state = nn.unbox(jax.jit(obj.init)(jax.random.key(0), batch))

  def randomise(x):
    # Zero-initialised leaves (last conv of each block, biases) get random
    # values so the residual branches and biases are exercised.
    x = np.asarray(x)
    if np.any(x):
      return x
    fan_in = np.prod(x.shape[:-1]) if x.ndim > 1 else 100
    return (rng.normal(size=x.shape) / np.sqrt(fan_in)).astype(np.float32)
  params = jax.tree.map(randomise, state.params)
  return c, obj, state, params, batch


def _torch_nets(c, obj, params):
  g, d = torch_r3gan.build(c.model, obj.num_classes, c.dataset.image_size)
  torch_r3gan.load_from_jax(g, d, params["generator"],
                            params["discriminator"])
  return g, d


def test_parameter_counts(setup):
  c, obj, _, params, _ = setup
  g, d = torch_r3gan.build(c.model, obj.num_classes, c.dataset.image_size)
  for net, tree in ((g, params["generator"]), (d, params["discriminator"])):
    jax_count = sum(x.size for x in jax.tree.leaves(tree))
    assert sum(p.numel() for p in net.parameters()) == jax_count


def test_outputs_match(setup):
  c, obj, _, params, batch = setup
  g, d = _torch_nets(c, obj, params)
  z = np.random.default_rng(1).normal(
      size=(BATCH, c.model.noise_dim)).astype(np.float32)
  labels = batch["label"][:BATCH]
  x = batch["image"][:BATCH]
  j_img = obj.generator.apply({"params": params["generator"]}, z, labels)
  j_logits = obj.discriminator.apply({"params": params["discriminator"]}, x,
                                     labels)
  with torch.no_grad():
    t_img = g(torch.from_numpy(z), torch.from_numpy(labels)).numpy()
    t_logits = d(torch.from_numpy(x.transpose(0, 3, 1, 2)),
                 torch.from_numpy(labels)).numpy()
  j_img, j_logits = np.asarray(j_img).transpose(0, 3, 1, 2), np.asarray(
      j_logits)
  assert np.std(j_img) > 0.1 and np.std(j_logits) > 0.01
  for t, j in ((t_img, j_img), (t_logits, j_logits)):
    np.testing.assert_allclose(t, j, rtol=1e-4, atol=1e-4 * np.abs(j).max())


def test_step_matches_jaxgen_train_step(setup):
  c, obj, state, params, batch = setup
  g, d = _torch_nets(c, obj, params)
  rng = jax.random.key(3)
  # jaxgen's train_step draws z_D, z_G like this when augmentation is off.
  z = np.array(jax.random.normal(rng, (2, BATCH, c.model.noise_dim)))
  step = torch_r3gan.make_step(g, d, c)
  got = step(torch.from_numpy(batch["image"].transpose(0, 3, 1, 2)),
             torch.from_numpy(batch["label"]), torch.from_numpy(z))
  state = state.replace(params=params,
                        ema_params={"generator": params["generator"]})
  new_state, want = jax.jit(obj.train_step)(state, batch, rng)
  assert set(got) == {"loss", "d_adv", "r1", "r2", "g_loss"}
  for k, v in got.items():
    assert np.isfinite(v), k
    np.testing.assert_allclose(v, float(want[k]), rtol=1e-5, err_msg=k)
  # Updated G (trained against the updated D), D and EMA: Adam's first step
  # moves every weight by ~lr = 1e-3, so 1e-4 catches a wrong update.
  g_new, d_new = _torch_nets(c, obj, new_state.params)
  g_ema, _ = _torch_nets(c, obj, dict(new_state.ema_params,
                                      discriminator=params["discriminator"]))
  for net, ref in ((g, g_new), (d, d_new), (step.ema, g_ema)):
    ref = ref.state_dict()
    for k, v in net.state_dict().items():
      np.testing.assert_allclose(v.numpy(), ref[k].numpy(), atol=1e-4,
                                 err_msg=k)
  # A second step runs (schedules advance) and stays finite.
  got = step(torch.from_numpy(batch["image"].transpose(0, 3, 1, 2)),
             torch.from_numpy(batch["label"]), torch.from_numpy(z[0]))
  assert all(np.isfinite(v) for v in got.values())
