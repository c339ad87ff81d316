"""The autoencoder's GAN term, KL term and batch-norm decoders."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.autoencoders import adversarial
from jaxgen.autoencoders import objective as ae_objective
from jaxgen.gan import losses as gan_losses
from jaxgen.train import run_state
from jaxgen.train import trainer
from tests.autoencoders.test_objective import TWO_STAGES
from tests.autoencoders.test_objective import _config


def test_hinge_losses_match_their_formulas():
  real = jnp.array([[2.0, 0.5], [-1.0, 1.0]])
  fake = jnp.array([[-2.0, 0.5], [0.0, -0.5]])
  r, f = np.asarray(real), np.asarray(fake)
  want_d = 0.5 * (np.maximum(0, 1 - r).mean() + np.maximum(0, 1 + f).mean())
  assert float(gan_losses.hinge_d_loss(real, fake)) == pytest.approx(want_d)
  assert float(gan_losses.hinge_g_loss(real, fake)) == pytest.approx(
      -f.mean())


def test_patch_discriminator_gives_one_logit_per_patch():
  d = adversarial.PatchDiscriminator((8, 16))
  x = jnp.zeros((2, 32, 32, 3))
  params = d.init(jax.random.key(0), x)
  assert d.apply(params, x).shape == (2, 8, 8)


def test_adaptive_weight_is_the_ratio_of_last_layer_gradient_norms():
  # The last layer's kernel only, as taming's conv_out.weight (its bias
  # was counted too).
  rec = {"decoder": {"conv_out": {"kernel": jnp.full((2, 2), 3.0),
                                  "bias": jnp.full((2,), 50.0)},
                     "other": {"kernel": jnp.full((5,), 100.0)}}}
  gan = {"decoder": {"conv_out": {"kernel": jnp.full((2, 2), 0.5),
                                  "bias": jnp.full((2,), 9.0)},
                     "other": {"kernel": jnp.full((5,), 7.0)}}}
  # ||rec|| = sqrt(4 * 9) = 6, ||gan|| = sqrt(4 * 0.25) = 1.
  w = adversarial.adaptive_weight(rec, gan)
  assert float(w) == pytest.approx(6.0 / (1.0 + 1e-4))
  # A Cosmos video decoder's factorised conv_out: both of its kernels.
  video = lambda v: {"decoder": {"conv_out": {
      "spatial": {"kernel": jnp.full((4,), v), "bias": jnp.ones(2)},
      "temporal": {"kernel": jnp.full((5,), v), "bias": jnp.ones(2)}}}}
  assert float(adversarial.adaptive_weight(video(2.0), video(1.0))) == (
      pytest.approx(6.0 / (3.0 + 1e-4)))  # sqrt(9 * 4) / sqrt(9 * 1)
  zero = jax.tree.map(jnp.zeros_like, gan)
  assert float(adversarial.adaptive_weight(rec, zero)) == pytest.approx(1e4)
  with pytest.raises(ValueError, match="no parameter matches"):
    adversarial.subtree_norm(rec, r"^encoder/")


def _gan_config(**kw):
  # XLA's convolutions and two stages: the GAN step compiles 4x faster.
  return _config(**{**TWO_STAGES, "autoencoder.conv_impl": "lax",
                    "autoencoder.gan_weight": 0.5,
                    "autoencoder.gan_loss": "rpgan",
                    "autoencoder.gan_gamma": 0.1, **kw})


def test_gan_step_updates_both_networks_and_logs_its_terms():
  config = _gan_config()
  obj = ae_objective.Autoencoder(config, total_steps=4)
  batch = {"image": jax.random.uniform(jax.random.key(1), (4, 32, 32, 3),
                                       minval=-1, maxval=1)}
  state = obj.init(jax.random.key(0), batch)
  new, metrics = jax.jit(obj.train_step)(state, batch, jax.random.key(2))
  for name in ("model", "discriminator"):
    moved = jax.tree.map(lambda a, b: bool(jnp.any(a != b)),
                         state.params[name], new.params[name])
    assert any(jax.tree.leaves(moved)), name
  for k in ("g_adv", "d_loss", "r1", "r2", "gan_weight"):
    assert np.isfinite(float(metrics[k])), k
  assert float(metrics["gan_weight"]) > 0
  assert obj.num_params(state)["discriminator_params"] > 0
  # Before gan_start_step the GAN term is off: weight 0, D and its
  # optimizer (Adam's count included) unchanged, and the autoencoder takes
  # the step it takes without a GAN. At the start step the GAN runs.
  late = ae_objective.Autoencoder(_gan_config(**{
      "autoencoder.gan_start_step": 10}), total_steps=4)
  step = jax.jit(late.train_step)
  new, metrics = step(state, batch, jax.random.key(2))
  assert float(metrics["gan_weight"]) == 0.0 == float(metrics["d_loss"])
  for part in (lambda s: s.params["discriminator"],
               lambda s: s.opt_state["discriminator"]):
    same = jax.tree.map(lambda a, b: bool(jnp.all(a == b)), part(state),
                        part(new))
    assert all(jax.tree.leaves(same))
  plain = ae_objective.Autoencoder(_gan_config(**{
      "autoencoder.gan_weight": 0.0}), total_steps=4)
  alone, _ = jax.jit(plain.train_step)(
      state.replace(params={"model": state.params["model"]},
                    opt_state={"model": state.opt_state["model"]}),
      batch, jax.random.key(2))
  for a, b in zip(jax.tree.leaves(alone.params["model"]),
                  jax.tree.leaves(new.params["model"])):
    np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
  _, metrics = step(state.replace(step=jnp.asarray(10, state.step.dtype)),
                    batch, jax.random.key(2))
  assert float(metrics["gan_weight"]) > 0


def test_kl_term_matches_the_gaussian_formula():
  config = _config(**{"autoencoder.kl_weight": 0.01})
  obj = ae_objective.Autoencoder(config, total_steps=4)
  x = jax.random.uniform(jax.random.key(1), (2, 32, 32, 3), minval=-1,
                         maxval=1)
  state = obj.init(jax.random.key(0), {"image": x})
  params = state.params["model"]
  mean, logvar = obj.model.apply({"params": params}, x,
                                 method=obj.model.moments)
  assert mean.shape == (2, 4, 4, 8) and logvar.shape == mean.shape
  m, lv = np.asarray(mean, np.float64), np.asarray(logvar, np.float64)
  want = 0.5 * np.mean(m ** 2 + np.exp(lv) - 1 - lv)
  _, (aux, _, _) = obj._losses(params, None, x, jax.random.key(3), False)
  assert float(aux["kl"]) == pytest.approx(want, rel=1e-5)
  # encode is the posterior mean (deterministic).
  np.testing.assert_array_equal(obj.encode(state, x), mean)


def _bn_config(**kw):
  # The in/mix layout: batch norm in the ResBlock stages; XLA's
  # convolutions (CPU's default tap-by-tap ones compile twice as long) and
  # two stages (half as long again).
  return _config(**{**TWO_STAGES,
                    "model.decoder_norm_types": ("batch_norm", "rms_norm"),
                    "autoencoder.conv_impl": "lax", **kw})


def test_batch_norm_decoder_trains_its_running_statistics(tmp_path):
  # No reconstruction grids in its runs: not what it tests, and a compile
  # each (tests/autoencoders/test_objective.py tests them).
  config = _bn_config(total_steps=3, eval_batches=0, num_samples=0)
  obj = ae_objective.Autoencoder(config, total_steps=3)
  x = jax.random.uniform(jax.random.key(1), (8, 32, 32, 3), minval=-1,
                         maxval=1)
  state = obj.init(jax.random.key(0), {"image": x})
  stats = state.model_state["batch_stats"]
  new, _ = jax.jit(obj.train_step)(state, {"image": x}, jax.random.key(2))
  moved = jax.tree.map(lambda a, b: bool(jnp.any(a != b)), stats,
                       new.model_state["batch_stats"])
  assert all(jax.tree.leaves(moved))
  # The running mean moves 10% of the way to the batch mean (torch's
  # momentum 0.1) of the global batch: check one layer against the
  # activations it normalised.
  _, seen = obj.model.apply(
      {"params": state.params["model"], "batch_stats": stats},
      obj.encode(state, x), True, method=obj.model.decode,
      mutable=["batch_stats", "intermediates"], capture_intermediates=True)
  block = "up_blocks_0_1"
  h = seen["intermediates"]["decoder"][block]["conv2"]["__call__"][0]
  old = stats["decoder"][block]["norm"]["mean"]
  got = new.model_state["batch_stats"]["decoder"][block]["norm"]["mean"]
  np.testing.assert_allclose(got, 0.9 * old + 0.1 * h.mean((0, 1, 2)),
                             rtol=1e-5, atol=1e-6)
  # A whole run checkpoints the statistics; phase 2 from it keeps them and
  # every frozen parameter bit-identical.
  one = str(tmp_path / "one")
  trainer.train_and_evaluate(config, one)
  two = str(tmp_path / "two")
  cfg2 = _bn_config(total_steps=2, eval_batches=0, num_samples=0,
                    **{"autoencoder.phase": "phase2", "init_from": one})
  trainer.train_and_evaluate(cfg2, two)
  a = run_state.restore(config, one)[2]
  b = run_state.restore(cfg2, two)[2]
  for x1, x2 in zip(jax.tree.leaves(a.model_state),
                    jax.tree.leaves(b.model_state)):
    np.testing.assert_array_equal(x1, x2)
  assert jax.tree.leaves(a.model_state)
  # Phase 3 with the GAN from phase 2: the discriminator starts fresh (the
  # warm start takes only the autoencoder) and only the head moves.
  three = str(tmp_path / "three")
  cfg3 = _bn_config(total_steps=2, eval_batches=0, num_samples=0,
                    **{"autoencoder.phase": "phase3", "init_from": two,
                       "autoencoder.gan_weight": 0.5})
  trainer.train_and_evaluate(cfg3, three)
  c = run_state.restore(cfg3, three)[2]
  assert "discriminator" in c.params
  moved = [
      "/".join(str(getattr(k, "key", k)) for k in path)
      for (path, x1), (_, x2) in zip(
          jax.tree_util.tree_flatten_with_path(b.params["model"])[0],
          jax.tree_util.tree_flatten_with_path(c.params["model"])[0])
      if not np.array_equal(x1, x2)]
  assert moved and all(n.startswith(("decoder/norm_out", "decoder/conv_out"))
                       for n in moved), moved
