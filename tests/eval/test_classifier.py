"""Tests of jaxgen.eval.classifier: pooling, tiny training, sample metrics,
and the command's errors."""

import warnings

import jax
import numpy as np
import pytest

from jaxgen.eval import classifier
from tests.train import common


def test_to_input_size_average_pools():
  x = np.arange(2 * 4 * 4 * 3, dtype=np.float32).reshape(2, 4, 4, 3)
  y = np.asarray(classifier.to_input_size(x, 2))
  np.testing.assert_allclose(
      y, x.reshape(2, 2, 2, 2, 2, 3).mean(axis=(2, 4)))
  assert classifier.to_input_size(x, 4) is x
  with pytest.raises(ValueError, match="cannot be average-pooled"):
    classifier.to_input_size(x, 3)


def test_sample_metrics_perfect_classifier_and_same_distribution():
  rng = np.random.default_rng(5)
  labels = np.arange(400) % 4
  logits = np.eye(4)[labels] * 10.0
  feats = rng.normal(size=(400, 4))
  ref = (np.zeros(4), np.eye(4))
  out = classifier.sample_metrics(feats, logits, labels, ref,
                                  num_bootstrap=20)
  assert out["accuracy"] == 1.0 and out["accuracy_boot_std"] == 0.0
  assert out["per_class_accuracy"] == {0: 1.0, 1: 1.0, 2: 1.0, 3: 1.0}
  # Same distribution: only finite-sample bias (~D(D+1)/(2N) terms) remains.
  assert 0.0 <= out["fd"] < 0.1
  assert out["fd_boot_std"] > 0.0 and len(out["fd_boot"]) == 20
  shifted = classifier.sample_metrics(feats + 1.0, logits, labels, ref,
                                      num_bootstrap=5)
  np.testing.assert_allclose(shifted["fd"] - out["fd"],
                             4.0 + 2.0 * feats.mean(0).sum(), rtol=1e-6)


def test_stratified_bootstrap_keeps_class_counts():
  # Features are a function of the label only: with the class counts fixed
  # every replicate has the same statistics, so the bootstrap spread is 0.
  labels = np.arange(64) % 4
  feats = np.eye(4)[labels] * 3.0
  logits = np.eye(4)[labels]
  ref = (np.zeros(4), np.eye(4))
  strat = classifier.sample_metrics(feats, logits, labels, ref,
                                    num_bootstrap=20)
  plain = classifier.sample_metrics(feats, logits, labels, ref,
                                    num_bootstrap=20, stratify=False)
  assert strat["fd_boot_std"] < 1e-9
  assert plain["fd_boot_std"] > 1e-3
  np.testing.assert_allclose(strat["fd_boot_mean"], strat["fd"], rtol=1e-9)
  # Fewer samples than dimensions: warned once, not once per resample.
  with warnings.catch_warnings(record=True) as seen:
    warnings.simplefilter("always")
    classifier.sample_metrics(feats[:3], logits[:3], labels[:3], ref,
                              num_bootstrap=20, stratify=False)
  assert sum("covariance is singular" in str(w.message) for w in seen) == 1


def test_tiny_training_separates_two_classes_and_round_trips(tmp_path):
  # Class 0: a bright block in the top half; class 1: in the bottom half
  # (left-right mirroring, the training augmentation, keeps the classes).
  rng = np.random.default_rng(6)
  n, d = 32, 16
  images = rng.uniform(-1.0, -0.5, size=(n, d, d, 3)).astype(np.float32)
  labels = np.arange(n) % 2
  for i, y in enumerate(labels):
    o = 1 if y == 0 else 9
    images[i, o:o + 6, 2:14] = 0.8
  cfg = classifier.ClassifierConfig(input_size=8, channels=(8, 16),
                                    feature_dim=16, num_classes=2,
                                    batch_size=16, steps=40,
                                    learning_rate=1e-2)
  params, info = classifier.train_classifier(cfg, images=images,
                                             labels=labels)
  assert np.isfinite(info["train_loss"])
  feats, logits = classifier.embed(params, images, cfg, batch_size=32)
  assert feats.shape == (n, 16) and logits.shape == (n, 2)
  assert (logits.argmax(-1) == labels).mean() == 1.0
  path = str(tmp_path / "clf.msgpack")
  classifier.save_params(params, path)
  again = classifier.load_params(path, cfg)
  np.testing.assert_allclose(classifier.embed(again, images, cfg)[1], logits,
                             rtol=1e-6)


@pytest.mark.parametrize("steps", [1, 2])
def test_runs_shorter_than_the_warmup_train(steps, tmp_path):
  rng = np.random.default_rng(7)
  images = rng.uniform(-1, 1, (8, 8, 8, 3)).astype(np.float32)
  cfg = classifier.ClassifierConfig(input_size=8, channels=(8,),
                                    feature_dim=8, num_classes=2,
                                    batch_size=4, steps=steps)
  params, info = classifier.train_classifier(cfg, images=images,
                                             labels=np.arange(8) % 2)
  assert np.isfinite(info["train_loss"])
  init = classifier.ShapeClassifier(cfg.channels, cfg.feature_dim,
                                    cfg.num_classes).init(
                                        jax.random.key(cfg.seed),
                                        images[:1])["params"]
  # The last step has a nonzero learning rate, so the weights moved.
  assert not np.allclose(params["head"]["kernel"], init["head"]["kernel"])
  path = tmp_path / "new" / "dir" / "c.msgpack"
  classifier.save_classifier(str(path), params, cfg)
  assert classifier.load_classifier(str(path))[1] == cfg


def _one_error(proc, status):
  """The single `error:` line of a failed command (no traceback)."""
  assert proc.returncode == status, proc.stderr[-2000:]
  lines = proc.stderr.strip().splitlines()
  assert len(lines) == 1 and lines[0].startswith("error: "), proc.stderr
  return lines[0]


def test_command_errors_are_one_line_before_training(tmp_path):
  out = f"--out={tmp_path}/c.msgpack"
  for size in ("5", "2048"):
    err = _one_error(common.run_module(
        "jaxgen.eval.classifier", f"--image_size={size}", out), 2)
    assert "--image_size" in err and "[16, 1024]" in err
  blocker = tmp_path / "a_file"
  blocker.write_text("")
  # A data dir the command would fill with jaxgen_shapes before training.
  data_dir = tmp_path / "data"
  err = _one_error(common.run_module(
      "jaxgen.eval.classifier", f"--out={blocker}/sub/c.msgpack",
      f"--data_dir={data_dir}"), 1)
  assert "cannot create the folder of --out=" in err
  assert not data_dir.exists()


def test_command_trains_one_step_into_new_folders(tmp_path):
  path = tmp_path / "new" / "dir" / "c.msgpack"
  proc = common.run_module("jaxgen.eval.classifier", "--image_size=16",
                           "--steps=1", f"--out={path}",
                           f"--data_dir={common.DATA_DIR}")
  assert proc.returncode == 0, proc.stderr[-2000:]
  assert f"wrote {path}" in proc.stdout
  _, cfg = classifier.load_classifier(str(path))
  assert cfg.input_size == 16 and cfg.steps == 1
