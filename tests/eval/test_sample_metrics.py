"""Sample metrics inside training (config.eval.sample_metrics).

Random Inception weights and the embedded dataset. The in-training FID is
checked against the offline commands (`jaxgen.sample` + `jaxgen.eval.fid`)
on the same checkpoint; the reconstruction path against numpy.
"""

import json
import logging
import os

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen import sample as sample_lib
from jaxgen.data import pipeline as data_pipeline
from jaxgen.diffusion import objective as sd_objective
from jaxgen.eval import features as features_lib
from jaxgen.eval import fid as fid_lib
from jaxgen.eval import imagesets
from jaxgen.eval import inception
from jaxgen.eval import pixels
from jaxgen.eval import sampling
from jaxgen.eval import stats as stats_lib
from jaxgen.parallel import mesh as mesh_lib
from jaxgen.train import checks
from jaxgen.train import evaluation
from jaxgen.train import trainer
from tests.autoencoders import test_objective
from tests.train import common

pytestmark = pytest.mark.filterwarnings("ignore:.*covariance is singular")


# Plumbing tests: features at 75 px (tests/eval/conftest.py).
SMALL_INCEPTION_INPUT = True


@pytest.fixture(scope="module")
def files(tmp_path_factory):
  root = tmp_path_factory.mktemp("weights")
  params = inception.random_params(0)
  np.savez(root / "w.npz", **inception.flatten(params))
  np.savez(root / "w_other.npz", **inception.flatten(
      inception.random_params(1)))
  extractor = features_lib.FeatureExtractor.from_file(str(root / "w.npz"),
                                                      batch_size=16)
  shapes = imagesets.open_set("jaxgen_shapes", image_size=16,
                              data_dir=common.DATA_DIR, batch_size=16)
  stats_lib.save(str(root / "stats.npz"),
                 stats_lib.compute(extractor, shapes, 32))
  return root, extractor


def _config(files, **overrides):
  root, _ = files
  kw = {"eval.sample_metrics.enabled": True,
        "eval.sample_metrics.inception_weights": str(root / "w.npz"),
        "eval.sample_metrics.reference_stats": str(root / "stats.npz"),
        "eval.sample_metrics.num_samples": 16,
        "eval.sample_metrics.batch_size": 8,
        "diffusion.sample_steps": 4, "total_steps": 2}
  kw.update(overrides)
  return common.tiny_config(**kw)


def _rows(workdir):
  with open(os.path.join(workdir, "metrics.jsonl")) as f:
    return [json.loads(line) for line in f]


def test_training_logs_fid_equal_to_the_offline_commands(files, tmp_path):
  workdir = str(tmp_path / "run")
  config = _config(files)
  last = trainer.train_and_evaluate(config, workdir)
  rows = _rows(workdir)
  assert "eval_fid" not in rows[0]  # every_steps = 0: at the end only.
  for key in ("eval_fid", "eval_kid", "eval_is", "eval_precision",
              "eval_recall"):
    assert np.isfinite(rows[-1][key]), key
  assert last["eval_fid"] == rows[-1]["eval_fid"] > 0
  # The same samples drawn and scored offline.
  out = str(tmp_path / "samples")
  sample_lib.sample_run(config, workdir, num=16, out=out, batch_size=8,
                        seed=config.seed, log=lambda _: None)
  offline = fid_lib.compare(
      files[1], imagesets.open_set(str(files[0] / "stats.npz")),
      imagesets.open_set(os.path.join(out, "samples.npz")))
  np.testing.assert_allclose(rows[-1]["eval_fid"], offline["fid"],
                             rtol=1e-6)
  np.testing.assert_allclose(rows[-1]["eval_is"], offline["is"], rtol=1e-6)
  # Another sampler setting on the finished run rescores it (the record
  # named only the metric's settings: the 4-step FID came back for 1 step),
  # and so does a reference file rewritten at the same path.
  config.diffusion.sample_steps = 1
  rescored = trainer.train_and_evaluate(config, workdir)
  assert rescored["step"] == 2
  assert rescored["eval_fid"] != pytest.approx(last["eval_fid"], rel=1e-6)
  assert evaluation.stale_scores(config, workdir, 2) == ""
  stats = files[0] / "stats.npz"
  os.utime(stats, (os.stat(stats).st_atime, os.stat(stats).st_mtime + 10))
  assert evaluation.stale_scores(config, workdir, 2).startswith(
      "eval.sample_metrics.reference_stats file ")


def test_reconstruction_families_log_pixel_metrics(files, tmp_path,
                                                   monkeypatch):
  # A stand-in reconstruction: the image at half contrast.
  monkeypatch.setattr(sd_objective.SimpleDiffusion, "reconstruct",
                      lambda self, state, batch: batch["image"] * 0.5,
                      raising=False)
  workdir = str(tmp_path / "run")
  # 20 held-out images: 2 whole batches of 8 and 4 left over, all scored.
  config = _config(files, **{"dataset.eval_split": "train[:20]",
                             "eval.sample_metrics.num_samples": 20})
  last = trainer.train_and_evaluate(config, workdir)
  assert {"eval_psnr", "eval_ssim", "eval_rfid"} <= set(last)
  assert "eval_fid" not in last and "eval_lpips" not in last
  x = data_pipeline.read_examples(config.dataset, split="train[:20]",
                                  start=0, stop=20)["image"]
  mse = np.mean(((x - 0.5 * x) / 2) ** 2, axis=(1, 2, 3))
  np.testing.assert_allclose(last["eval_psnr"],
                             np.mean(10 * np.log10(1 / mse)), rtol=1e-4)


def test_an_autoencoder_scores_psnr_without_inception_then_rfid_on_rerun(
    files, tmp_path):
  # PSNR / SSIM need no weight files; Inception's, given later, make the
  # rerun of the finished run add the rFID (training nothing).
  root, _ = files
  config = test_objective._config(  # pylint: disable=protected-access
      total_steps=2, log_every_steps=1, eval_batches=0, num_samples=0,
      **{"autoencoder.conv_impl": "lax", "dataset.eval_split": "test[:20]",
         "eval.sample_metrics.enabled": True,
         "eval.sample_metrics.num_samples": 20,
         "eval.sample_metrics.batch_size": 8})
  checks.check_config(config)
  workdir = str(tmp_path / "ae")
  last = trainer.train_and_evaluate(config, workdir)
  assert np.isfinite(last["eval_psnr"]) and np.isfinite(last["eval_ssim"])
  assert "eval_rfid" not in last
  config.eval.sample_metrics.inception_weights = str(root / "w.npz")
  config.eval.sample_metrics.reference_stats = str(root / "stats.npz")
  rerun = trainer.train_and_evaluate(config, workdir)
  assert rerun["step"] == 2 and np.isfinite(rerun["eval_rfid"])
  assert rerun["eval_psnr"] == pytest.approx(last["eval_psnr"], rel=1e-5)
  assert [r["step"] for r in _rows(workdir)] == [1, 2]
  # The same settings again: the finished run is reported, not rescored
  # (nothing is written).
  written = {name: os.stat(os.path.join(workdir, name)).st_mtime_ns
             for name in ("metrics.jsonl", evaluation.SCORED_FILE)}
  assert trainer.train_and_evaluate(config, workdir) == rerun
  assert written == {name: os.stat(os.path.join(workdir, name)).st_mtime_ns
                     for name in written}
  # Other settings rescore it: 16 images, then PSNR / SSIM alone, whose
  # row then holds no rFID of the earlier settings.
  config.eval.sample_metrics.num_samples = 16
  fewer = trainer.train_and_evaluate(config, workdir)
  assert fewer["eval_psnr"] != pytest.approx(rerun["eval_psnr"], rel=1e-5)
  assert np.isfinite(fewer["eval_rfid"])
  config.eval.sample_metrics.inception_weights = ""
  config.eval.sample_metrics.reference_stats = ""
  alone = trainer.train_and_evaluate(config, workdir)
  assert alone["eval_psnr"] == pytest.approx(fewer["eval_psnr"], rel=1e-5)
  assert "eval_rfid" not in alone and "eval_rfid" not in _rows(workdir)[-1]
  config.eval.sample_metrics.inception_weights = str(root / "w.npz")
  # One file alone is a one-line error naming the other.
  config.eval.sample_metrics.reference_stats = ""
  with pytest.raises(ValueError, match="^set config.eval.sample_metrics."
                     "reference_stats: .*; leave both unset for PSNR / SSIM "
                     "alone.$"):
    checks.check_config(config)


@pytest.mark.parametrize("count,workers", [(1, 0), (2, 0), (3, 0), (1, 4)])
def test_every_held_out_image_once_in_order_for_any_process_count(
    monkeypatch, count, workers):
  # The processes' batches, side by side, are the split's rows in order:
  # 20 rows are 2 whole batches of 8 and 4 left over (of 12: 1 and 8).
  # Also with grain workers, which would each take every 4th row.
  config = common.tiny_config(**{"dataset.eval_split": "train[:20]",
                                 "batch_size": 12 if count == 3 else 8,
                                 "dataset.worker_count": workers})
  want = data_pipeline.read_examples(config.dataset, split="train[:20]",
                                     start=0, stop=20)["image"]
  monkeypatch.setattr(evaluation.jax, "process_count", lambda: count)
  parts = []
  for p in range(count):
    monkeypatch.setattr(evaluation.jax, "process_index", lambda p=p: p)
    parts.append([b["image"] for b in evaluation.every_held_out_image(
        config)])
  rows = np.concatenate([np.concatenate(batches) for batches in zip(*parts)])
  assert len(rows) == -(-20 // config.batch_size) * config.batch_size
  np.testing.assert_array_equal(rows[:20], want)
  assert evaluation.held_out_images(config) == 20


def test_reconstructions_beyond_the_held_out_images_fail_before_compiling(
    files, tmp_path, monkeypatch):
  # 21 of 20 held-out images would score one twice.
  monkeypatch.setattr(sd_objective.SimpleDiffusion, "reconstruct",
                      lambda self, state, batch: batch["image"],
                      raising=False)
  monkeypatch.setattr(trainer, "compile_step",
                      lambda *a, **k: pytest.fail("compiled"))
  config = _config(files, **{"dataset.eval_split": "train[:20]",
                             "eval.sample_metrics.num_samples": 21})
  with pytest.raises(ValueError) as e:
    trainer.train_and_evaluate(config, str(tmp_path / "run"))
  assert str(e.value) == (
      "config.eval.sample_metrics.num_samples=21 exceeds the 20 held-out "
      "images of split 'train[:20]'; lower it to 20 or hold out more.")


@pytest.mark.parametrize("overrides,match", [
    ({"eval.sample_metrics.inception_weights": ""},
     "^set config.eval.sample_metrics.inception_weights: Inception metrics "
     "need both"),
    ({"eval.sample_metrics.reference_stats": ""},
     "^set config.eval.sample_metrics.reference_stats: "),
    # Samples have no pixel metric to fall back on.
    ({"eval.sample_metrics.reference_stats": "",
      "eval.sample_metrics.inception_weights": ""},
     r"^set config.eval.sample_metrics.inception_weights and config.eval."
     r"sample_metrics.reference_stats: Inception metrics need both \(files "
     r"from jaxgen.eval.convert and jaxgen.eval.stats; README: Evaluation\)"
     r"\.$"),
    ({"eval.sample_metrics.every_steps": 3, "log_every_steps": 2},
     "multiple of log_every_steps"),
    ({"eval.sample_metrics.num_samples": 4}, "at least 10"),
    ({"eval.sample_metrics.batch_size": 0}, "batch_size=0 must be >= 1"),
])
def test_bad_sections_fail_before_compiling(files, tmp_path, overrides,
                                            match):
  with pytest.raises(ValueError, match=match) as e:
    checks.check_config(_config(files, **overrides))
  assert "\n" not in str(e.value)


def test_statistics_of_other_weights_fail_before_compiling(files, tmp_path,
                                                           monkeypatch):
  root, _ = files
  compiled = []
  monkeypatch.setattr(trainer, "compile_step",
                      lambda *a, **k: compiled.append(1))
  config = _config(files, **{"eval.sample_metrics.inception_weights":
                             str(root / "w_other.npz")})
  with pytest.raises(ValueError, match="computed with Inception weights"):
    trainer.train_and_evaluate(config, str(tmp_path / "run"))
  assert not compiled
  # A run stopped by a bad file records no config, and leaves no workdir
  # it created (a folder holding only its lock); one that was there stays.
  assert not (tmp_path / "run").exists()
  (tmp_path / "kept").mkdir()
  with pytest.raises(ValueError, match="computed with Inception weights"):
    trainer.train_and_evaluate(config, str(tmp_path / "kept"))
  assert os.listdir(tmp_path / "kept") == [".lock"]
  assert not compiled


def test_statistics_of_other_dimensions_fail_before_compiling(
    files, tmp_path, monkeypatch):
  # Only the final evaluation found "(100,) vs (2048,)", after training.
  root, _ = files
  with np.load(root / "stats.npz") as f:
    stats = {k: f[k] for k in f.files}
  stats["mu"], stats["sigma"] = stats["mu"][:100], stats["sigma"][:100, :100]
  stats.pop("features", None)
  stats_lib.save(str(tmp_path / "cut.npz"), stats)
  monkeypatch.setattr(trainer, "compile_step",
                      lambda *a, **k: pytest.fail("compiled"))
  config = _config(files, **{"eval.sample_metrics.reference_stats":
                             str(tmp_path / "cut.npz")})
  with pytest.raises(ValueError, match=r"holds statistics of shape \(100,\),"
                     " not Inception's 2048-d features; recompute it"):
    trainer.train_and_evaluate(config, str(tmp_path / "run"))


def test_non_finite_samples_are_warned_about_once(caplog):
  # A diverged model's NaN samples quantised to black and were scored as
  # images without a word.
  class Diverged:
    def sample(self, state, rng, num, labels=None):
      del state, rng, labels
      x = jnp.zeros((num, 4, 4, 3))
      return x.at[1].set(jnp.nan)

  mesh = mesh_lib.make_mesh({"data": -1, "fsdp": 1, "tensor": 1})
  with jax.set_mesh(mesh):
    draw = sampling.make_batch_sampler(Diverged(), mesh, 8)
    with caplog.at_level(logging.WARNING):
      first, second = draw(None, 0), draw(None, 1)
  assert first.dtype == np.uint8 and second.shape == (8, 4, 4, 3)
  said = [r.getMessage() for r in caplog.records
          if "NaN or inf" in r.getMessage()]
  assert said == ["1 of the 8 samples of batch 0 hold NaN or inf values (a "
                  "diverged model or sampler): they are written and scored "
                  "as black or saturated images (said once)."]


def test_batches_take_classes_in_turn_across_batches():
  # The label tests elsewhere draw batches of 8 with 8 classes, where a
  # per-batch restart of the labels (arange(batch) % classes) gives the
  # same labels; with 3 classes it does not.
  class Labelled:
    num_classes = 3

    def sample(self, state, rng, num, labels=None):
      del state, rng
      # Label l -> pixel value l / 2 - 1 (uint8 0, 64, 128 after quantising).
      return jnp.broadcast_to(labels[:, None, None, None] * 0.5 - 1.0,
                              (num, 4, 4, 3))

  mesh = mesh_lib.make_mesh({"data": -1, "fsdp": 1, "tensor": 1})
  with jax.set_mesh(mesh):
    draw = sampling.make_batch_sampler(Labelled(), mesh, 8)
    pixels = np.concatenate([draw(None, k) for k in range(3)])
  drawn = np.round(pixels[:, 0, 0, 0] / 64.0).astype(int)
  want = sampling.labels_of(24, Labelled())
  np.testing.assert_array_equal(want, np.arange(24) % 3)
  np.testing.assert_array_equal(drawn, want)
  assert list(drawn[8:11]) == [2, 0, 1]  # Batch 1 goes on from sample 8.


@pytest.mark.parametrize("overrides,message", [
    # dm-pix would filter 8 px images with a window it swapped in, and
    # score noise against noise at SSIM 0.5.
    ({"dataset.image_size": 8},
     "config.dataset.image_size=8: eval_ssim needs images of at least 11 "
     "px; raise it, or turn sample metrics off with "
     "--config.eval.sample_metrics.enabled=false."),
    ({"dataset.image_size": 12,
      "eval.sample_metrics.lpips_weights": "lpips.npz"},
     "config.dataset.image_size=12: eval_lpips needs images of at least 16 "
     "px; raise it or unset config.eval.sample_metrics.lpips_weights, or "
     "turn sample metrics off with --config.eval.sample_metrics.enabled="
     "false."),
])
def test_pixel_metric_windows_larger_than_the_images_fail_at_once(
    overrides, message):
  config = test_objective._config(  # pylint: disable=protected-access
      **{"eval.sample_metrics.enabled": True, **overrides})
  with pytest.raises(ValueError) as e:
    checks.check_config(config)
  assert str(e.value) == message
  x = jnp.zeros((1, 8, 8, 3))
  with pytest.raises(ValueError, match="SSIM's 11x11 window needs images of "
                     "at least 11 px; these are 8x8"):
    pixels.ssim(x, x)


def test_lpips_weights_on_a_generative_family_are_refused(files):
  with pytest.raises(ValueError) as e:
    checks.check_config(_config(files, **{
        "eval.sample_metrics.lpips_weights": "lpips.npz"}))
  assert str(e.value) == (
      "config.eval.sample_metrics.lpips_weights scores reconstructions "
      "(autoencoder runs), and a simple_diffusion run reconstructs nothing; "
      "unset it.")
