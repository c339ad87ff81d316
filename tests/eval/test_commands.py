"""The metric commands (stats, fid) and `jaxgen.sample` on real inputs.

Random Inception weights and the embedded dataset: nothing downloads. The
FID values are not meaningful, but their relations are (a set against its
own statistics is 0; other weights are refused).
"""

import io
import json
import logging
import os
import subprocess
import sys

import jax
from jax.experimental import multihost_utils
import numpy as np
from PIL import Image
import pytest

from jaxgen import config_lib
from jaxgen import sample as sample_lib
from jaxgen.eval import features as features_lib
from jaxgen.eval import fid as fid_lib
from jaxgen.eval import imagesets
from jaxgen.eval import inception
from jaxgen.eval import stats as stats_lib
from jaxgen.train import provenance
from jaxgen.train import run_state
from jaxgen.train import trainer
from tests.train import common

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(__file__)))


# Plumbing tests: features at 75 px (tests/eval/conftest.py).
SMALL_INCEPTION_INPUT = True


@pytest.fixture(scope="module")
def extractor():
  return features_lib.FeatureExtractor(inception.random_params(0), "w0",
                                       batch_size=16)


def _shapes(n=32):
  return imagesets.open_set("jaxgen_shapes", image_size=16,
                            data_dir=common.DATA_DIR, batch_size=16)


def test_stats_then_fid_against_the_same_and_other_images(extractor,
                                                          tmp_path, caplog):
  with pytest.warns(UserWarning, match="covariance is singular"):
    stats = stats_lib.compute(extractor, _shapes(), 32, keep_features=20)
  assert stats["mu"].shape == (2048,) and stats["sigma"].shape == (2048,
                                                                   2048)
  assert stats["features"].shape == (20, 2048)
  # Kept features spread over the images read (the first ones of a folder
  # read class by class are a few classes): rows 0, 1, 3, ..., 31.
  feats, _ = extractor.of_batches(_shapes().batches, 32, "x", progress=False)
  rows = np.linspace(0, 31, 20).astype(int)
  np.testing.assert_allclose(stats["features"], feats[rows], rtol=1e-6)
  assert rows[-1] == 31 and len(set(rows)) == 20
  assert str(stats["weights_hash"]) == "w0" and int(stats["num"]) == 32
  assert stats["image_size"].tolist() == [16, 16]
  path = str(tmp_path / "s.npz")
  stats_lib.save(path, stats)
  ref = imagesets.open_set(path)
  assert ref.stats is not None
  with pytest.warns(UserWarning):
    same = fid_lib.compare(extractor, ref, _shapes(), num=32)
  # 0 up to round-off on a rank-31 covariance (32 samples).
  assert abs(same["fid"]) < 1e-4 * np.trace(stats["sigma"])
  # Same resolution: no size warning.
  size_warnings = lambda: [r.getMessage() for r in caplog.records  # noqa: E731
                           if "holds statistics of" in r.getMessage()]
  assert not size_warnings()
  noise = np.random.default_rng(0).integers(0, 256, (32, 16, 16, 3),
                                            dtype=np.uint8)
  np.savez(tmp_path / "noise.npz", images=noise)
  # The same statistics, recorded as of 32 px images: compared with 16 px
  # ones they are warned about once, naming both sizes.
  path32 = str(tmp_path / "s32.npz")
  stats_lib.save(path32, dict(stats, image_size=np.asarray([32, 32])))
  with pytest.warns(UserWarning):
    other = fid_lib.compare(extractor, imagesets.open_set(path32),
                            imagesets.open_set(str(tmp_path / "noise.npz")))
  assert other["fid"] > 1e3 * max(abs(same["fid"]), 1e-9)
  assert {"kid", "kid_std", "precision", "recall", "is", "is_std"} <= set(
      other)
  lines = fid_lib.format_lines(other).splitlines()
  assert lines[0] == f"FID: {other['fid']:.4f}" and lines[1].startswith(
      "KID: ")
  # Round-off below 0 is shown as 0, a real value as it is.
  assert fid_lib.format_lines({"fid": -3e-7}) == "FID: 0.0000"
  assert fid_lib.format_lines({"fid": 1.0, "kid": 0.5, "kid_std": 0.0}
                              ).splitlines()[1] == (
      "KID: 0.500000 (one subset: the sets are no larger than the subset "
      "size, so no spread)")
  assert fid_lib.format_lines({"fid": -0.25}) == "FID: -0.2500"
  (line,) = size_warnings()
  assert f"{path32} holds statistics of 32x32 images but" in line
  assert "are 16x16" in line and "compute statistics at 16x16" in line


def test_a_partial_last_batch_reuses_the_full_batchs_program(extractor):
  # 20 images in batches of 16: the last 4 are padded to 16 (the program
  # that exists) rather than compiled anew at 8 (4 rounded to the devices).
  images = np.random.default_rng(1).integers(0, 256, (20, 16, 16, 3),
                                             dtype=np.uint8)
  streamed = features_lib.FeatureExtractor(extractor.params, "w0",
                                           batch_size=16)
  feats, logits = streamed.of_batches(iter([images]), 20, "x",
                                      progress=False)
  assert streamed._apply._cache_size() == 1
  assert feats.shape == (20, 2048) and logits.shape == (20, 1008)
  # The padding changes no image's features: the last 4 alone (a set
  # smaller than one batch keeps its size) give the same rows.
  alone, _ = extractor.of_batches(iter([images[16:]]), 4, "x",
                                  progress=False)
  np.testing.assert_allclose(feats[16:], alone, rtol=1e-4, atol=1e-5)


def test_fid_command_prints_fid_first_and_errors_in_one_line(tmp_path):
  flat = inception.flatten(inception.random_params(1))
  np.savez(tmp_path / "w.npz", **flat)
  rng = np.random.default_rng(1)
  for name in ("a", "b"):
    np.savez(tmp_path / f"{name}.npz", images=rng.integers(
        0, 256, (12, 8, 8, 3), dtype=np.uint8))
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  cmd = [sys.executable, "-m", "jaxgen.eval.fid", f"--weights={tmp_path}/w.npz",
         f"--a={tmp_path}/a.npz", f"--b={tmp_path}/b.npz"]
  out = subprocess.run(cmd, capture_output=True, text=True, env=env,
                       cwd=ROOT, timeout=300)
  assert out.returncode == 0, out.stderr[-2000:]
  lines = out.stdout.splitlines()
  assert lines[0].startswith("FID: ") and float(lines[0].split()[1]) > 0
  assert any(ln.startswith("IS: ") for ln in lines)
  assert "warning: 12 samples for 2048-d features" in out.stderr
  cmd[3] = f"--weights={tmp_path}/missing.npz"
  out = subprocess.run(cmd, capture_output=True, text=True, env=env,
                       cwd=ROOT, timeout=300)
  assert out.returncode == 1
  errors = [ln for ln in out.stderr.splitlines() if ln.startswith("error")]
  assert len(errors) == 1 and "jaxgen.eval.convert" in errors[0]


def test_stats_refuses_an_out_without_npz_before_any_features(tmp_path):
  # fid reads a stats file by its .npz ending; a bad --out is reported
  # before the minutes of features, not after.
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  cmd = [sys.executable, "-m", "jaxgen.eval.stats",
         f"--weights={tmp_path}/missing.npz", "--data=jaxgen_shapes"]
  for out, error in (
      (f"{tmp_path}/ref", f"--out={tmp_path}/ref does not end in .npz; the "
                          "commands that read it take .npz files: pass "
                          f"--out={tmp_path}/ref.npz."),
      (f"{tmp_path}", f"--out={tmp_path} does not end in .npz")):
    proc = subprocess.run(cmd + [f"--out={out}"], capture_output=True,
                          text=True, env=env, cwd=ROOT, timeout=300)
    assert proc.returncode == 1
    errors = [ln for ln in proc.stderr.splitlines() if ln.startswith("error")]
    assert len(errors) == 1 and error in errors[0], proc.stderr[-1000:]
  assert os.listdir(tmp_path) == []
  # An existing --out is kept unless --overwrite says otherwise.
  (tmp_path / "ref.npz").write_bytes(b"kept")
  proc = subprocess.run(cmd + [f"--out={tmp_path}/ref.npz"],
                        capture_output=True, text=True, env=env, cwd=ROOT,
                        timeout=300)
  assert proc.returncode == 1 and (
      f"error: --out={tmp_path}/ref.npz exists; pass --overwrite to replace "
      "it, or another --out.") in proc.stderr
  assert (tmp_path / "ref.npz").read_bytes() == b"kept"
  proc = subprocess.run(cmd + [f"--out={tmp_path}/ref.npz", "--overwrite"],
                        capture_output=True, text=True, env=env, cwd=ROOT,
                        timeout=300)
  assert "missing.npz" in proc.stderr  # Past the check: the weights next.


def test_sample_draws_distinct_images_and_resumes(tmp_path, monkeypatch):
  workdir = str(tmp_path / "run")
  config = common.tiny_config(total_steps=2)
  config.diffusion.sample_steps = 4
  trainer.train_and_evaluate(config, workdir)
  loaded = provenance.load_config(workdir)
  assert loaded.model.channels == (16, 32)  # JSON lists back as tuples.
  out = str(tmp_path / "samples")
  first = sample_lib.sample_run(loaded, workdir, num=20, out=out,
                                batch_size=8, log=lambda _: None)
  # 3 batches of 8, the last one short: 20 drawn (was counted as 24).
  assert first["step"] == 2 and first["drawn"] == 20
  with np.load(os.path.join(out, "samples.npz")) as f:
    images, labels = f["images"], f["labels"]
  assert images.shape == (20, 16, 16, 3) and images.dtype == np.uint8
  assert len({im.tobytes() for im in images}) == 20
  np.testing.assert_array_equal(labels, np.arange(20) % 8)  # 8 shapes
  # Lose one image of the second batch and the npz: only that batch is
  # drawn again, and it comes out the same.
  os.remove(os.path.join(out, "000009.png"))
  os.remove(os.path.join(out, "samples.npz"))
  again = sample_lib.sample_run(loaded, workdir, num=20, out=out,
                                batch_size=8, log=lambda _: None)
  assert again["drawn"] == 8
  with np.load(os.path.join(out, "samples.npz")) as f:
    np.testing.assert_array_equal(f["images"], images)
  # A PNG damaged since (a copy cut short): one line naming it (was a PIL
  # traceback), the old samples.npz kept; removing it redraws its batch.
  png = os.path.join(out, "000002.png")
  with open(png, "rb") as f:
    data = f.read()
  with open(png, "wb") as f:
    f.write(data[:60])
  with pytest.raises(ValueError, match=r"samples: 000002\.png is not a "
                     r"readable PNG \(.*\); remove it \(jaxgen\.sample then "
                     r"redraws its batch\)\.$"):
    sample_lib.sample_run(loaded, workdir, num=20, out=out, batch_size=8,
                          log=lambda _: None)
  os.remove(png)
  assert sample_lib.sample_run(loaded, workdir, num=20, out=out,
                               batch_size=8, log=lambda _: None)["drawn"] == 8
  with pytest.raises(ValueError, match="no checkpoint"):
    sample_lib.sample_run(loaded, str(tmp_path / "untrained"), num=4,
                          out=out, log=lambda _: None)
  assert not (tmp_path / "untrained").exists()  # Nothing created there.
  (tmp_path / "a_file").write_text("")
  with pytest.raises(ValueError, match="cannot create --out=.*a_file/x: Not "
                     "a directory; pass a folder you can write to"):
    sample_lib.sample_run(loaded, workdir, num=4,
                          out=str(tmp_path / "a_file" / "x"),
                          log=lambda _: None)
  # The folder's PNGs are only reused for the same step, seed, batch layout
  # and config; anything else is refused before drawing, leaving them.
  before = {n: open(os.path.join(out, n), "rb").read()
            for n in os.listdir(out)}
  changed = provenance.load_config(workdir)
  changed.diffusion.sample_steps = 5
  for kwargs, expected in (
      (dict(seed=1), "holds samples of --seed=0; pass it again, another --out"),
      (dict(batch_size=16), "batch size 8, this command draws batches of 16 "
       r".*; pass --batch_size=8, another --out"),
      (dict(config=changed), r"another config \(diffusion.sample_steps: 4 "
       "-> 5\)"),
      # Fewer: samples.npz would disagree with the folder's 20 PNGs.
      (dict(num=16), r"holds 20 samples, more than --num=16; pass --num=20 "
       "or more, or another --out.")):
    args = dict(config=loaded, num=20, batch_size=8)
    args.update(kwargs)
    with monkeypatch.context() as m:
      if {"seed", "config", "num"} & set(kwargs):
        # Known before the checkpoint: refused before minutes of restoring.
        m.setattr(run_state, "restore", common.no_compile)
      with pytest.raises(ValueError, match=expected):
        sample_lib.sample_run(args.pop("config"), workdir, out=out,
                              log=lambda _: None, **args)
  # Overrides that only steer training (the optimizer, the mesh) keep
  # the folder: nothing is drawn again.
  training_only = provenance.load_config(workdir)
  training_only.optimizer.learning_rate = 0.5
  training_only.mesh.data, training_only.mesh.fsdp = 4, 2
  assert sample_lib.sample_run(training_only, workdir, num=20, out=out,
                               batch_size=8, log=lambda _: None)["drawn"] == 0
  config.total_steps = 3
  trainer.train_and_evaluate(config, workdir)
  with pytest.raises(ValueError, match="holds samples of step 2, this command "
                     "samples step 3; pass --step=2 \\(if still kept\\), "
                     "another --out, or delete"):
    sample_lib.sample_run(loaded, workdir, num=20, out=out, batch_size=8,
                          log=lambda _: None)
  assert {n: open(os.path.join(out, n), "rb").read()
          for n in os.listdir(out)} == before
  # --step samples an older kept checkpoint: the folder is complete.
  assert sample_lib.sample_run(loaded, workdir, num=20, out=out, batch_size=8,
                               step=2, log=lambda _: None)["drawn"] == 0
  with pytest.raises(ValueError, match="keeps no checkpoint 7; pass --step="
                     "one of 2, 3, or leave it out for the newest"):
    sample_lib.sample_run(loaded, workdir, num=20, out=out, batch_size=8,
                          step=7, log=lambda _: None)
  # Overrides of the model or data shape are refused before drawing (a
  # model with RoPE loads at any size and sampled what it never learned),
  # those of how kernels run are not.
  for field, value in (("dataset.image_size", 32), ("model.num_heads", 4)):
    other = provenance.load_config(workdir)
    config_lib.apply_overrides(other, {field: value})
    with pytest.raises(ValueError, match="^sampling overrides may not change "
                       f"the model or data shape the run trained with: "
                       f"{field}: .*; drop them.$"):
      sample_lib.sample_run(other, workdir, num=4, out=str(tmp_path / "x"),
                            log=lambda _: None)
  assert not (tmp_path / "x").exists()
  impl = provenance.load_config(workdir)
  impl.model.attention_impl = "cudnn"  # The run has "auto".
  assert provenance.shape_differences(workdir, impl) == []
  stray = tmp_path / "stray"
  stray.mkdir()
  (stray / "000000.png").write_bytes(before["000000.png"])
  with pytest.raises(ValueError, match="PNGs without a sampling.json"):
    sample_lib.sample_run(loaded, workdir, num=4, out=str(stray),
                          log=lambda _: None)
  (stray / "sampling.json").write_text("{")
  with pytest.raises(ValueError, match="sampling.json is not readable; pass "
                     "another --out"):
    sample_lib.sample_run(loaded, workdir, num=4, out=str(stray),
                          log=lambda _: None)
  # A few samples draw one batch of (the device count rounded) `num`, not
  # the default 256.
  few = sample_lib.sample_run(loaded, workdir, num=3,
                              out=str(tmp_path / "few"), log=lambda _: None)
  assert few["batch"] == 8 and few["drawn"] == 3
  # The record of an attempt that drew nothing (out of memory at its first
  # batch) does not hold the folder: it refused every other batch size.
  failed = tmp_path / "failed"
  failed.mkdir()
  (failed / "sampling.json").write_text(json.dumps(
      {"step": 2, "seed": 0, "batch": 1024, "config": {}}))
  assert sample_lib.sample_run(loaded, workdir, num=3, out=str(failed),
                               log=lambda _: None)["drawn"] == 3
  # Overrides of the run's config: a typo, another family's section.
  for flag, expected in (
      ("--config.diffusion.sample_step=3", "error: unknown config field "
       "'sample_step'; did you mean 'sample_steps'?"),
      ("--config.flow.sample_steps=3", "error: unknown config field 'flow' "
       "(a 'simple_diffusion' config has no 'flow' section)")):
    proc = common.run_module("jaxgen.sample", f"--workdir={workdir}",
                             "--num=4", flag)
    assert proc.returncode == 2 and proc.stderr.strip() == expected, (
        proc.stderr[-2000:])
  # An override the family refuses: one line, and no empty --out (nor the
  # folders above it that the command created).
  proc = common.run_module("jaxgen.sample", f"--workdir={workdir}", "--num=4",
                           f"--out={tmp_path / 'new' / 'out'}",
                           "--config.diffusion.sample_steps=0")
  assert proc.returncode == 1, proc.stderr[-2000:]
  assert proc.stderr.strip().startswith("error: config.diffusion."), (
      proc.stderr[-2000:])
  assert not (tmp_path / "new").exists()
  # A schedule setting the family cannot use is refused before --out is
  # made (it was found when the sampler first ran, after restoring).
  bad = provenance.load_config(workdir)
  bad.diffusion.schedules.shifted.logsnr_min = 20.0
  with pytest.raises(ValueError, match=r"shifted\.logsnr_min=20\.0 must be "
                     "below logsnr_max"):
    sample_lib.sample_run(bad, workdir, num=2, out=str(tmp_path / "bad"),
                          log=lambda _: None)
  assert not (tmp_path / "bad").exists()



def test_sample_refuses_a_config_file_and_a_corrupt_run_config(tmp_path):
  (tmp_path / "config.json").write_text("{\n")
  for flags, expected in (
      (["--config=configs/simple_diffusion.py:tiny"],
       "error: jaxgen.sample takes the run's config from WORKDIR/config.json; "
       "change its fields with --config.x=y, not --config=FILE."),
      ([], f"error: {tmp_path}/config.json is not a run config "
           "(JSONDecodeError: Expecting property name enclosed in double "
           "quotes: line 2 column 1 (char 2)); restore it from a copy.")):
    proc = common.run_module("jaxgen.sample", f"--workdir={tmp_path}",
                             "--num=2", *flags)
    assert proc.returncode in (1, 2) and proc.stderr.strip() == expected, (
        proc.stderr[-2000:])


def test_sample_help_lists_its_flags_without_a_run():
  env = dict(os.environ, PYTHONPATH=ROOT, JAX_PLATFORMS="cpu")
  out = subprocess.run([sys.executable, "-m", "jaxgen.sample", "--help"],
                       capture_output=True, text=True, env=env, cwd=ROOT,
                       timeout=300)
  # absl's --help exits with 1, as every absl program's does.
  assert "error" not in out.stderr, out.stderr[-2000:]
  assert "--workdir" in out.stdout and "--num" in out.stdout
  out = subprocess.run([sys.executable, "-m", "jaxgen.sample"],
                       capture_output=True, text=True, env=env, cwd=ROOT,
                       timeout=300)
  assert out.returncode == 2 and out.stderr.strip() == (
      "error: pass --workdir, the run to sample from.")


@pytest.mark.parametrize("frames", [1, 3])
def test_clips_round_trip_through_their_png_strips(frames):
  # A 1-frame clip's strip is square: it came back as an image [H, W, C].
  clip = np.random.default_rng(frames).integers(0, 256, (frames, 8, 8, 3),
                                                np.uint8)
  strip = np.asarray(Image.open(io.BytesIO(sample_lib._png_bytes(clip))))  # pylint: disable=protected-access
  back = sample_lib._from_png(strip, clip=True)  # pylint: disable=protected-access
  np.testing.assert_array_equal(back, clip)
  image = clip[0]
  png = np.asarray(Image.open(io.BytesIO(sample_lib._png_bytes(image))))  # pylint: disable=protected-access
  np.testing.assert_array_equal(sample_lib._from_png(png, clip=False), image)  # pylint: disable=protected-access


def test_every_process_draws_the_batches_process_0_lacks(tmp_path,
                                                         monkeypatch):
  # With an --out that is not shared, another process saw no PNGs and drew
  # every batch while process 0 drew the missing ones: the collectives hung.
  files = [[tmp_path / f"{k}_{i}.png" for i in range(2)] for k in range(3)]
  for p in files[0] + files[2][:1]:
    p.write_bytes(b"")
  assert sample_lib._batches_to_draw(files) == [1, 2]  # pylint: disable=protected-access
  process0 = np.array([0, 1, 0], np.int32)  # Its folder: batch 1 missing.
  monkeypatch.setattr(jax, "process_count", lambda: 2)
  monkeypatch.setattr(multihost_utils, "broadcast_one_to_all",
                      lambda x: process0)
  assert sample_lib._batches_to_draw(files) == [1]  # pylint: disable=protected-access


def test_sampling_does_not_need_the_training_data(tmp_path, caplog):
  # A run copied off the machine that trained it: its folder dataset is not
  # there. The sampler only needs the config's shapes; it used to build the
  # training pipeline first, and failed on the missing folder.
  images = tmp_path / "images"
  rng = np.random.default_rng(0)
  for i in range(16):
    (images / "ab"[i % 2]).mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, 255, (16, 16, 3), dtype=np.uint8)).save(
        images / "ab"[i % 2] / f"{i}.png")
  workdir = str(tmp_path / "run")
  trainer.train_and_evaluate(common.tiny_config(
      total_steps=1, **{"dataset.name": f"folder:{images}",
                        "dataset.num_classes": 2}), workdir)
  for path in sorted(images.rglob("*.png")):
    path.unlink()
  for folder in (images / "a", images / "b", images):
    folder.rmdir()
  with caplog.at_level(logging.WARNING):
    result = sample_lib.sample_run(provenance.load_config(workdir), workdir,
                                   num=8, out=str(tmp_path / "s"),
                                   log=lambda _: None)
  assert result["drawn"] == 8 and result["step"] == 1
  assert any(r.getMessage().startswith(
      "The training data is not readable here (Image folder ")
             for r in caplog.records)
