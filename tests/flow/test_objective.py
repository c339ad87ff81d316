"""The flow_matching and pyramidal_flow families on the trainer."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import PIL.Image
import pytest

from configs import pyramidal_flow as pf_config
from jaxgen import config_lib
from jaxgen import registry
from jaxgen import sample as sample_lib
from jaxgen.data.pipeline import DatasetInfo
from jaxgen.flow import layout as layout_lib
from jaxgen.flow import objective as flow_objective
from jaxgen.train import flops as flops_lib
from jaxgen.train import checks
from jaxgen.train import provenance
from jaxgen.train import run_state
from jaxgen.train import trainer
from tests.train import common

# A small DiT; 32 examples = 8 packed rows of 4, one per device.
SMALL_MODEL = {"model.width": 32, "model.depth": 1, "model.num_heads": 2,
               "model.freq_dim": 16}


def _config(arg="tiny", **overrides):
  c = pf_config.get_config(arg)
  c.dataset.data_dir = common.DATA_DIR
  c.dataset.image_size = 16
  c.batch_size = 32
  c.total_steps = 3
  c.log_every_steps = 1
  c.eval_batches = 0
  c.num_samples = 0
  c.checkpoint_every_steps = 1000
  c.flow.sample_steps = (2,) if "baseline" in arg else (2, 2, 2)
  config_lib.apply_overrides(c, dict(SMALL_MODEL, **overrides))
  return c


def _video_config(arg="shapes_video", **overrides):
  return _config(arg, **dict({"dataset.num_frames": 4, "model.patch_size": 2},
                             **overrides))


def _batches(config, n):
  rng = np.random.default_rng(0)
  b, s = config.batch_size, config.dataset.image_size
  t = config.dataset.num_frames
  shape = (b, t, s, s, 3) if t else (b, s, s, 3)
  key = "video" if t else "image"
  return [{key: rng.uniform(-1, 1, shape).astype(np.float32),
           "label": rng.integers(0, 8, (b,)).astype(np.int32)}
          for _ in range(n)]


@pytest.mark.parametrize("features", ["inception", "shape_classifier"])
def test_sample_metrics_of_a_video_run_are_refused_before_compiling(
    tmp_path, monkeypatch, features):
  """Generated clips have no image metric: one line before compiling (the
  run trained to its end and then failed, and the classifier's reference
  statistics raised a KeyError)."""
  compiled = []
  monkeypatch.setattr(trainer, "compile_step",
                      lambda *a, **k: compiled.append(1))
  missing = str(tmp_path / "missing.npz")
  config = _video_config(**{
      "eval.sample_metrics.enabled": True,
      "eval.sample_metrics.features": features,
      "eval.sample_metrics.inception_weights": missing,
      "eval.sample_metrics.reference_stats": missing,
      "eval.sample_metrics.classifier_weights": missing,
      "eval.sample_metrics.num_samples": 16})
  with pytest.raises(ValueError) as e:
    trainer.train_and_evaluate(config, str(tmp_path / "run"))
  assert str(e.value) == (
      "config.eval.sample_metrics scores images and this run draws 4-frame "
      "clips (FID / KID / IS take no video); turn it off with "
      "--config.eval.sample_metrics.enabled=false.")
  assert not compiled
  # Before the fields one would fill in first (weights, statistics).
  bare = _video_config(**{"eval.sample_metrics.enabled": True,
                          "eval.sample_metrics.features": features})
  with pytest.raises(ValueError, match="take no video"):
    checks.check_config(bare)


@pytest.mark.parametrize("make,overrides,match", [
    (_config, {"dataset.image_size": 20}, "not divisible by 2\\^\\(K-1\\)"),
    (_config, {"model.patch_size": 8}, "2\\^\\(K-1\\) x patch = 4 x 8 = 32"),
    (_config, {"batch_size": 16}, "stage-ratio sum 4 .* x 8 data-parallel"),
    (_config, {"pyramid.stage_ratios": "1,1"}, "3 positive ints"),
    (_config, {"flow.sample_steps": (4, 4)},
     "one per stage; e.g. --config.flow.sample_steps=\\(4,4,4\\)"),
    (_video_config, {"pyramid.history_frames": 4}, "clip has 4 frames"),
    (_config, {"model.positions": "alibi"}, "rope, sincos, learned"),
    (_config, {"model.attention_impl": "cudnn"}, "needs a GPU backend"),
    # Numbers that divided by zero deep in the model, or trained nonsense.
    (_config, {"model.num_heads": 0}, "model.num_heads=0 must be an integer "
     ">= 1"),
    (_config, {"model.patch_size": 0}, "model.patch_size=0 must be"),
    (_config, {"model.mlp_ratio": 0.0}, "mlp_ratio=0.0 must be a number > 0"),
    (_config, {"model.depth": 0}, "model.depth=0 must be"),
    (_config, {"flow.sample_steps": ("abc",)}, "sample_steps=\\('abc',\\) "
     "must hold 3 positive step counts"),
    (_config, {"flow.sample_steps": (0, 5, 5)},
     "e.g. --config.flow.sample_steps=\\(5,5,5\\)"),
    (_config, {"pyramid.num_train_timesteps": 2},
     "num_train_timesteps=2 must be an integer >= 3, or 0"),
    (_config, {"flow.label_dropout": 1.5}, "label_dropout=1.5 must be a "
     "number in \\[0, 1\\)"),
    # NaN is in no range; guidance also refuses infinities (black samples).
    (_config, {"flow.label_dropout": float("nan")}, "label_dropout=nan must "
     "be a number in"),
    (_config, {"flow.guidance_scale": float("inf")}, "^config.flow."
     "guidance_scale=inf must be a finite number.$"),
    (_config, {"flow.guidance_scale": float("nan")}, "guidance_scale=nan"),
    # A NaN mean trained on times of ~1e37 with a finite loss.
    (_config, {"flow.time_sampling": "logit_normal",
               "flow.logit_mean": float("nan")},
     "^config.flow.logit_mean=nan must be a finite number.$"),
    (_config, {"flow.time_sampling": "logit_normal", "flow.logit_std": -1.0},
     "^config.flow.logit_std=-1.0 must be a finite number > 0.$"),
    (_config, {"pyramid.history_frames": 3}, "applies to the temporal "
     "pyramid of video runs"),
    (_video_config, {"pyramid.history_frames": -2}, "history_frames=-2 must "
     "be an integer >= -1"),
    (_video_config, {"pyramid.history_corruption": 2.0},
     "history_corruption=2.0 must be a number in \\[0, 1\\]"),
    (_config, {"mesh.data": 1, "mesh.tensor": 8}, "num_heads=2 is not "
     "divisible by the mesh's tensor axis \\(8"),
    # Rows and columns got 0 of a 4-wide head: no spatial positions.
    (_config, {"model.width": 16, "model.num_heads": 4},
     "^RoPE with head_dim=4 \\(model.width / model.num_heads\\) leaves rows "
     "and columns no dimensions; use a head_dim >= 6.$"),
    (_config, {"model.positions": "sincos", "model.width": 4,
               "model.num_heads": 1}, "^sincos positions with model.width=4 "
     "leave rows"),
])
def test_bad_configs_fail_before_compiling(make, overrides, match):
  with pytest.raises(ValueError, match=match) as e:
    checks.check_config(make(**overrides))
  assert "\n" not in str(e.value)


def test_sampling_may_not_change_what_the_pyramid_learnt():
  # jaxgen.sample took pyramid.* overrides silently: another timestep
  # scale, stage layout or history than the model trained with.
  run = provenance._to_json(_video_config())  # pylint: disable=protected-access
  for field, value in (("pyramid.timestep_embedding", "global"),
                       ("pyramid.num_train_timesteps", 1000),
                       ("pyramid.num_stages", 4), ("pyramid.temporal", False),
                       ("pyramid.history_frames", 2),
                       ("pyramid.stage_ratios", "equal"),
                       ("flow.class_conditional", False)):
    other = _video_config(**{field: value})
    shape, _ = provenance.compare(run, provenance._to_json(other))  # pylint: disable=protected-access
    assert [c.split(":")[0] for c in shape] == [field], (field, shape)
  # The renoise ablation and a training-only setting may change.
  for field, value in (("pyramid.renoise", False),
                       ("pyramid.history_corruption", 0.0)):
    shape, other = provenance.compare(run, provenance._to_json(  # pylint: disable=protected-access
        _video_config(**{field: value})))
    assert not shape and [c.split(":")[0] for c in other] == [field]


class _ScaledTokens:
  """A stand-in DiT: output = input tokens × a per-token weight."""

  def __init__(self, length):
    self.length = length

  def apply(self, variables, tokens, lay, timesteps, labels, valid):
    del lay, timesteps, labels, valid
    return tokens * variables["params"]["w"][None, :, None]


def test_history_tokens_are_not_in_the_loss():
  config = _video_config()
  obj = flow_objective.PyramidalFlow(config, total_steps=3)
  lay = obj.train_layout
  obj.model = _ScaledTokens(lay.length)
  batch = jax.tree.map(jnp.asarray, _batches(config, 1)[0])
  draws, rng = obj._draws(batch, jax.random.key(0), train=True)  # pylint: disable=protected-access
  w = {"w": jnp.ones((lay.length,))}
  grads = jax.grad(lambda p: obj._loss_at(p, draws, rng, True)[0])(w)["w"]  # pylint: disable=protected-access
  grads = np.asarray(grads)
  assert np.all(grads[lay.lags > 0] == 0)
  assert np.all(np.abs(grads[lay.lags == 0]) > 0)
  # And the loss is the mean over segments of each generated frame's MSE.
  tokens, targets, _ = obj._inputs(draws)  # pylint: disable=protected-access
  want = np.mean([np.mean((np.asarray(layout_lib.take(tokens, c, 2))
                           - np.asarray(t)) ** 2)
                  for c, t in zip(lay.targets(), targets)])
  got = float(obj._loss_at(w, draws, rng, True)[0])  # pylint: disable=protected-access
  assert got == pytest.approx(want, rel=1e-5)


@pytest.mark.parametrize("corruption", [0.0, 0.3])
def test_history_is_the_compressed_corrupted_past(corruption):
  config = _video_config(**{"pyramid.history_corruption": corruption})
  obj = flow_objective.PyramidalFlow(config, total_steps=3)
  lay = obj.train_layout
  batch = jax.tree.map(jnp.asarray, _batches(config, 1)[0])
  draws, _ = obj._draws(batch, jax.random.key(1), train=True)  # pylint: disable=protected-access
  tokens, _, valid = obj._inputs(draws)  # pylint: disable=protected-access
  x = np.asarray(draws["x"])
  pos = np.asarray(draws["position"])
  # One sigma per segment, shared by its history chunks, in [0, corruption].
  sigma = np.asarray(draws["corrupt"])
  assert sigma.min() >= 0 and sigma.max() <= corruption
  if corruption:
    assert sigma.max() > corruption / 2
  eps = np.asarray(draws["history_noise"])
  # History chunks take the noise draws in segment order.
  hist = [c for j in range(len(lay.stages)) for c in lay.chunks
          if c.segment == j and c.lag]
  checked = 0
  for i, c in enumerate(hist):
    got = np.asarray(layout_lib.take(tokens, c, 2))
    f = 2 ** c.level
    for r in range(x.shape[0]):
      if pos[r, c.segment] < c.lag:
        continue
      frame = x[r, c.segment, pos[r, c.segment] - c.lag]
      h = frame.reshape(16 // f, f, 16 // f, f, 3).mean(axis=(1, 3))
      # Unit noise at the level: f x the f x f mean of the full-res draw.
      e = f * eps[r, i].reshape(16 // f, f, 16 // f, f, 3).mean(axis=(1, 3))
      sc = sigma[r, c.segment]
      np.testing.assert_allclose(got[r], sc * e + (1 - sc) * h, atol=1e-5)
      checked += 1
  assert checked
  np.testing.assert_array_equal(
      np.asarray(valid), np.asarray(lay.lags)[None] <= np.take(
          pos, lay.segment_ids, axis=1))


@pytest.mark.parametrize("family", ["pyramidal_flow", "flow_matching"])
def test_train_step_flops_match_xla(family):
  arg = "tiny" if family == "pyramidal_flow" else "tiny,baseline"
  config = _config(arg, **{"mesh.data": 1, "model.width": 128,
                           "model.num_heads": 4, "model.depth": 2,
                           "dataset.image_size": 32})
  s = trainer.setup(config, data_info=DatasetInfo.synthetic(config.dataset),
                    devices=jax.devices()[:1])
  with jax.set_mesh(s.mesh), nn.logical_axis_rules(s.rules):
    step = trainer.compile_step(s, jax.random.key(0)).step
  per_example = flops_lib.compiled_flops(step) / config.batch_size
  assert s.flops_per_example == pytest.approx(per_example, rel=0.05)


def test_pyramid_costs_less_than_full_resolution():
  pf = flow_objective.PyramidalFlow(_config(**{"dataset.image_size": 32}))
  fm = flow_objective.FlowMatching(_config("tiny,baseline",
                                           **{"dataset.image_size": 32}))
  # Official ratios [1, 2, 1]: (16 + 2·64 + 256)/4 = 100 tokens vs 256.
  assert pf.tokens_per_example()["train"] == 100
  assert fm.tokens_per_example()["train"] == 256
  assert pf.flops_per_example() < 0.45 * fm.flops_per_example()


def test_sharded_steps_match_single_device():
  batches = _batches(_config(), 2)
  ref, _, _ = common.losses_on(_config(**{"mesh.data": 1}),
                               jax.devices()[:1], batches)
  assert np.all(np.isfinite(ref))
  for mesh in [(2, 4, 1), (2, 2, 2)]:
    cfg = _config(**dict(zip(("mesh.data", "mesh.fsdp", "mesh.tensor"),
                             mesh)))
    losses, _, _ = common.losses_on(cfg, None, batches)
    np.testing.assert_allclose(losses, ref, rtol=2e-4, err_msg=str(mesh))


def test_video_sharded_steps_match_single_device():
  config = _video_config(**{"mesh.data": 1})
  batches = _batches(config, 2)
  ref, _, _ = common.losses_on(config, jax.devices()[:1], batches)
  losses, _, _ = common.losses_on(
      _video_config(**{"mesh.data": 2, "mesh.fsdp": 2, "mesh.tensor": 2}),
      None, batches)
  np.testing.assert_allclose(losses, ref, rtol=2e-4)


def test_resume_gives_identical_losses(tmp_path, monkeypatch):
  config = _video_config(**{"total_steps": 4, "checkpoint_every_steps": 2})
  straight = tmp_path / "straight"
  trainer.train_and_evaluate(config, str(straight))
  resumed = tmp_path / "resumed"
  kept = common.preempted_then_resumed(config, resumed, monkeypatch)
  assert kept == ["2"]
  assert common.read_losses(str(resumed))[-2:] == common.read_losses(
      str(straight))[-2:]
  # jaxgen.sample writes clips as frame strips and clips in samples.npz.
  out = tmp_path / "samples"
  sample_lib.sample_run(config, str(resumed), num=3, out=str(out),
                        batch_size=8, log=lambda _: None)
  strip = np.asarray(PIL.Image.open(out / "000000.png"))
  assert strip.shape == (16, 4 * 16, 3)
  with np.load(out / "samples.npz") as f:
    clips = f["images"]
  assert clips.shape == (3, 4, 16, 16, 3)
  np.testing.assert_array_equal(clips[0, 1], strip[:, 16:32])


def test_a_run_restores_on_more_devices_than_it_trained_on(tmp_path):
  # Batch 16 splits over the stage-ratio sum (1, 2, 1) on one device; on 8
  # the training check wants a multiple of 4 x 8, and jaxgen.sample refused
  # the run for a batch it never draws.
  config = _video_config(**{"batch_size": 16, "total_steps": 1,
                            "mesh.data": -1})
  trainer.train_and_evaluate(config, str(tmp_path), devices=jax.devices()[:1])
  with pytest.raises(ValueError, match="not divisible by the stage-ratio"):
    checks.check_config(config)
  _, step, one = run_state.restore(config, str(tmp_path),
                                   devices=jax.devices()[:1])
  s, step8, eight = run_state.restore(config, str(tmp_path))
  assert step == step8 == 1 and len(s.mesh.devices.flat) == 8
  for a, b in zip(jax.tree.leaves(one.params), jax.tree.leaves(eight.params)):
    np.testing.assert_array_equal(a, b)
  # A warm start's check traces it here too.
  abstract = run_state.abstract_of(config)
  assert jax.tree.structure(abstract.params) == jax.tree.structure(
      eight.params)
  # Other problems keep their own error.
  bad = _video_config(**{"batch_size": 4, "model.num_heads": 0})
  with pytest.raises(ValueError, match="^config.model.num_heads=0"):
    checks.check_restorable(bad)


@pytest.mark.parametrize("arg", ["tiny", "tiny,baseline", "shapes_video"])
def test_samples_have_the_data_shape(arg):
  config = (_video_config(arg) if "video" in arg else _config(arg))
  obj = registry.OBJECTIVES.get(config.family)(config, total_steps=3)
  batch = jax.tree.map(jnp.asarray, _batches(config, 1)[0])
  state = jax.jit(obj.init)(jax.random.key(0), batch)
  out = jax.jit(lambda s, r: obj.sample(s, r, 3))(state, jax.random.key(1))
  want = batch[obj.key].shape[1:]
  assert out.shape == (3,) + want
  assert np.isfinite(np.asarray(out)).all()
  assert float(jnp.abs(out).max()) <= 1.0
