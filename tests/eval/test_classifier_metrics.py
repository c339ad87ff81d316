"""The shape classifier as the feature network of the in-training sample
metrics (config.eval.sample_metrics.features = "shape_classifier").

A random-weight classifier (no training needed for plumbing): the logged
eval_fd_shapes and eval_accuracy_shapes must equal an independent offline
computation on the same samples and the same real images.
"""

import json
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen import sample as sample_lib
from jaxgen.data import pipeline as data_pipeline
from jaxgen.eval import classifier
from jaxgen.eval import distances
from jaxgen.eval import imagesets
from jaxgen.train import trainer
from scaling import metrics as metrics_lib
from tests.train import common

pytestmark = pytest.mark.filterwarnings("ignore:.*covariance is singular")

CFG = classifier.ClassifierConfig(input_size=16, channels=(8, 16),
                                  feature_dim=16)


@pytest.fixture(scope="module")
def weights(tmp_path_factory):
  path = str(tmp_path_factory.mktemp("clf") / "shapes16.msgpack")
  params = classifier.ShapeClassifier(CFG.channels, CFG.feature_dim,
                                      CFG.num_classes).init(
                                          jax.random.key(3),
                                          jnp.zeros((1, 16, 16, 3)))["params"]
  classifier.save_classifier(path, params, CFG)
  return path, params


def test_classifier_files_round_trip_and_bad_files_fail(weights, tmp_path):
  path, params = weights
  loaded, cfg = classifier.load_classifier(path)
  assert cfg == CFG
  x = np.random.default_rng(0).uniform(-1, 1, (4, 16, 16, 3)).astype(
      np.float32)
  np.testing.assert_array_equal(classifier.embed(loaded, x, cfg)[0],
                                classifier.embed(params, x, CFG)[0])
  bad = tmp_path / "bad.msgpack"
  bad.write_bytes(b"not msgpack")
  with pytest.raises(ValueError, match="not a shape-classifier file"):
    classifier.load_classifier(str(bad))


def _config(path, **overrides):
  kw = {"eval.sample_metrics.enabled": True,
        "eval.sample_metrics.features": "shape_classifier",
        "eval.sample_metrics.classifier_weights": path,
        "eval.sample_metrics.num_samples": 16,
        "eval.sample_metrics.batch_size": 8,
        "diffusion.sample_steps": 4, "total_steps": 2}
  kw.update(overrides)
  return common.tiny_config(**kw)


def test_training_logs_fd_and_accuracy_equal_to_offline(weights, tmp_path):
  path, params = weights
  workdir = str(tmp_path / "run")
  config = _config(path)
  trainer.train_and_evaluate(config, workdir)
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    last = [json.loads(line) for line in f][-1]
  # Offline: the same samples (jaxgen.sample draws the same set) ...
  out = str(tmp_path / "samples")
  sample_lib.sample_run(config, workdir, num=16, out=out, batch_size=8,
                        seed=config.seed, log=lambda _: None)
  samples = imagesets.open_set(os.path.join(out, "samples.npz"))
  images = np.concatenate(list(samples.batches))[:16]
  feats, logits = classifier.embed(params, images.astype(np.float32)
                                   / 127.5 - 1, CFG)
  # ... and the first 16 training images, read and embedded separately.
  it, _ = data_pipeline.build_input(config.dataset, global_batch_size=16,
                                    seed=0, split="train", train=False)
  real, _ = classifier.embed(params, np.asarray(next(it)["image"]), CFG)
  want = distances.frechet_distance(*distances.gaussian_stats(real),
                                    *distances.gaussian_stats(feats))
  np.testing.assert_allclose(last["eval_fd_shapes"], want, rtol=1e-5)
  labels = np.arange(16) % 8
  assert last["eval_accuracy_shapes"] == pytest.approx(
      np.mean(np.argmax(logits, -1) == labels))
  # The scaling fits know which way these go.
  assert metrics_lib.resolve("eval_accuracy_shapes").higher_is_better
  assert not metrics_lib.resolve("eval_fd_shapes").higher_is_better


def test_shape_classifier_without_weights_fails_before_compiling(tmp_path):
  config = _config("")
  with pytest.raises(ValueError, match="needs classifier_weights"):
    trainer.train_and_evaluate(config, str(tmp_path / "run"))


def test_inception_statistics_for_the_classifier_fail_before_compiling(
    weights, tmp_path, monkeypatch):
  # What jaxgen.eval.stats writes: 2048-d Inception statistics.
  np.savez(tmp_path / "inception.npz", mu=np.zeros(2048),
           sigma=np.eye(2048, dtype=np.float32))
  compiled = []
  monkeypatch.setattr(trainer, "compile_step",
                      lambda *a, **k: compiled.append(1))
  config = _config(weights[0], **{"eval.sample_metrics.reference_stats":
                                  str(tmp_path / "inception.npz")})
  with pytest.raises(ValueError, match="statistics of 2048-d features .* the "
                     "shape classifier's are 16-d; leave it empty"):
    trainer.train_and_evaluate(config, str(tmp_path / "run"))
  assert not compiled


def test_image_size_the_classifier_cannot_pool_fails_before_compiling(
    weights, tmp_path, monkeypatch):
  # With reference statistics given, 24 px samples reached the 16 px
  # classifier only at the run's end: "cannot be average-pooled".
  np.savez(tmp_path / "stats16.npz", mu=np.zeros(16), sigma=np.eye(16))
  monkeypatch.setattr(trainer, "compile_step", common.no_compile)
  config = _config(weights[0], **{
      "eval.sample_metrics.reference_stats": str(tmp_path / "stats16.npz"),
      "dataset.image_size": 24})
  with pytest.raises(ValueError) as e:
    trainer.train_and_evaluate(config, str(tmp_path / "run"))
  assert str(e.value) == (
      "config.dataset.image_size=24 is not a multiple of the shape "
      "classifier's input size 16 (samples are average-pooled to it); train "
      "at a multiple of it or use a classifier of another input_size.")


def test_a_latent_runs_reference_is_the_images_its_latents_came_from(
    tmp_path):
  # The latents themselves were read as the "real images" (8-channel
  # arrays into an RGB classifier).
  from jaxgen.eval import sample_metrics  # pylint: disable=g-import-not-at-top
  from tests.data import test_data_sources  # pylint: disable=g-import-not-at-top
  root = tmp_path / "lat" / "train"
  test_data_sources.write_latent_split(
      str(root), np.zeros((4, 2, 2, 8), np.float32), 1.0,
      {"autoencoder": "/runs/ae", "autoencoder_step": 2, "image_size": 16,
       "num_frames": 0})
  meta_path = root / "latents.json"
  meta = json.loads(meta_path.read_text())
  meta.update(source="jaxgen_shapes", split="test[:64]", image_size=16)
  meta_path.write_text(json.dumps(meta))
  config = common.tiny_config(**{"dataset.name": f"latents:{tmp_path / 'lat'}",
                                 "dataset.image_size": 2,
                                 "dataset.channels": 8})
  seen = []

  class Extractor:
    def of_batches(self, it, num, what, progress, transform):
      del what, progress
      while sum(map(len, seen)) < num:
        seen.append(transform(next(it)))
      feats = np.concatenate(seen)[:num].reshape(num, -1)[:, :4]
      return feats.astype(np.float64), None

  stats = sample_metrics._real_stats(config, Extractor(), 64)  # pylint: disable=protected-access
  assert stats["mu"].shape == (4,)
  assert seen[0].shape[1:] == (16, 16, 3)
  # The first test images of the recorded source, in order.
  want = imagesets.open_set("jaxgen_shapes:test", image_size=16,
                            data_dir=common.DATA_DIR, batch_size=64)
  real = np.asarray(next(want.batches)[:64])
  if real.dtype == np.uint8:
    real = real.astype(np.float32) / 127.5 - 1
  np.testing.assert_allclose(np.concatenate(seen)[:64], real, atol=1e-6)
  del meta["source"]
  meta_path.write_text(json.dumps(meta))
  with pytest.raises(ValueError, match="records no image dataset its latents "
                     "were encoded from"):
    sample_metrics._real_stats(config, Extractor(), 64)  # pylint: disable=protected-access
