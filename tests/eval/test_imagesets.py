"""Image sets (`jaxgen.eval.imagesets`): stats files, images .npz, PNG
folders and dataset specs, and the checks made before any features.

Random Inception weights and the embedded dataset: nothing downloads.
"""

import logging

import numpy as np
from PIL import Image
import pytest

from jaxgen.data import config as data_config
from jaxgen.data import folders
from jaxgen.data import pipeline as data_pipeline
from jaxgen.eval import features as features_lib
from jaxgen.eval import fid as fid_lib
from jaxgen.eval import imagesets
from jaxgen.eval import inception
from jaxgen.eval import stats as stats_lib
from tests.train import common

# Plumbing tests: features at 75 px (tests/eval/conftest.py).
SMALL_INCEPTION_INPUT = True


@pytest.fixture(scope="module")
def extractor():
  return features_lib.FeatureExtractor(inception.random_params(0), "w0",
                                       batch_size=16)


def test_statistics_of_other_weights_are_refused(extractor, tmp_path):
  stats = {"mu": np.zeros(2048), "sigma": np.eye(2048),
           "weights_hash": np.str_("other")}
  stats_lib.save(str(tmp_path / "s.npz"), stats)
  with pytest.raises(ValueError, match="computed with Inception weights "
                     "other, not w0"):
    fid_lib.compare(extractor, imagesets.open_set(str(tmp_path / "s.npz")),
                    imagesets.open_set(str(tmp_path / "s.npz")))


def test_an_images_npz_is_handed_on_in_slices(tmp_path, monkeypatch):
  # Converted to float32 in one piece, 50,000 samples at 256 px took 39 GB.
  monkeypatch.setattr(imagesets, "_NPZ_SLICE", 4)
  images = np.random.default_rng(0).integers(0, 256, (10, 8, 8, 3),
                                             dtype=np.uint8)
  np.savez(tmp_path / "s.npz", images=images)
  image_set = imagesets.open_set(str(tmp_path / "s.npz"))
  batches = list(image_set.batches)
  assert [len(b) for b in batches] == [4, 4, 2]
  np.testing.assert_array_equal(np.concatenate(batches), images)
  assert image_set.available == 10


def test_bad_sets_are_one_line_errors(tmp_path):
  with pytest.raises(ValueError, match="not found"):
    imagesets.open_set(str(tmp_path / "x.npz"))
  np.savez(tmp_path / "y.npz", z=np.zeros(3))
  with pytest.raises(ValueError, match="neither statistics"):
    imagesets.open_set(str(tmp_path / "y.npz"))
  (tmp_path / "empty").mkdir()
  with pytest.raises(ValueError, match="no .png files"):
    imagesets.open_set(str(tmp_path / "empty"))
  with pytest.raises(ValueError, match="not a .npz file, a folder"):
    imagesets.open_set("cifar10")
  # Was "not found" for a folder that exists.
  with pytest.raises(ValueError, match=f"^latents:{tmp_path} holds latents, "
                     "not images; pass the images they were encoded from"):
    imagesets.open_set(f"latents:{tmp_path}")
  with pytest.raises(ValueError, match=f"^{tmp_path}/samples not found; "
                     "pass a .npz file, a folder of PNGs or a dataset spec"):
    imagesets.open_set(str(tmp_path / "samples"))
  # A weights file given as a set: its array names are summarised.
  np.savez(tmp_path / "w.npz", **{f"layer{i}": np.zeros(1) for i in range(40)})
  with pytest.raises(ValueError, match=r"it has layer0, layer1, layer10, "
                     r"layer11, layer12, … \(40 arrays\)\); pass a stats"):
    imagesets.open_set(str(tmp_path / "w.npz"))
  (tmp_path / "text.npz").write_text("not an npz")
  with pytest.raises(ValueError, match="text.npz is not a readable .npz"):
    imagesets.open_set(str(tmp_path / "text.npz"))
  # Image arrays that are not images: a scalar (a len() traceback), none
  # (it asked for --num), NaN pixels (they became NaN statistics, written
  # without an error), checked when the set is opened, before the other
  # side's features.
  for name, images, message in (
      ("scalar", np.array(5), r"'images' array has shape \(\), not \[N, H, "
       r"W, 3\] images with N >= 1"),
      ("none", np.zeros((0, 8, 8, 3), np.uint8), r"has shape \(0, 8, 8, 3\)"),
      ("rgba", np.zeros((2, 8, 8, 4), np.uint8), r"expected \[N, H, W, 3\]"),
      ("nan", np.where(np.arange(3)[:, None, None, None] == 1, np.nan,
                       np.zeros((3, 8, 8, 3), np.float32)),
       r"nan.npz: 1 of 3 images hold NaN or inf values; drop them")):
    np.savez(tmp_path / f"{name}.npz", images=images)
    with pytest.raises(ValueError, match=message) as e:
      imagesets.open_set(str(tmp_path / f"{name}.npz"))
    assert "\n" not in str(e.value)


def test_image_counts_are_checked_before_any_features(tmp_path):
  folder = tmp_path / "pngs"
  folder.mkdir()
  for i, size in enumerate((8, 8, 8, 12)):
    Image.fromarray(np.zeros((size, size, 3), np.uint8)).save(
        folder / f"{i:06d}.png")
  # Every header is read at once: a PNG of another size is found before
  # any features (it was found in the batch that held it, after the other
  # side's 50,000 images).
  with pytest.raises(ValueError, match="000003.png is 12x12, 000000.png 8x8; "
                     "a set's PNGs must have one size"):
    imagesets.open_set(str(folder), batch_size=2)
  Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / "000003.png")
  image_set = imagesets.open_set(str(folder), batch_size=2)
  assert imagesets.count(image_set, 0) == 4
  with pytest.raises(ValueError, match="only 4 images, 5 requested; pass "
                     "--num=4"):
    imagesets.count(image_set, 5)
  with pytest.raises(ValueError, match="1 image; statistics need at least 2"):
    imagesets.count(image_set, 1)
  # A damaged PNG (a copy cut short) is one line (they were PIL
  # tracebacks): an unreadable header at once, a cut body when decoded.
  noise = np.random.default_rng(0).integers(0, 256, (8, 8, 3), np.uint8)
  Image.fromarray(noise).save(folder / "000003.png")
  whole = (folder / "000003.png").read_bytes()
  (folder / "000003.png").write_bytes(whole[:100])  # Header kept.
  image_set = imagesets.open_set(str(folder), batch_size=2)
  next(image_set.batches)
  with pytest.raises(ValueError, match=r"^\S+pngs: 000003.png is not a "
                     r"readable PNG \(.*\); remove it \(jaxgen.sample then "
                     r"redraws its batch\)\.$"):
    next(image_set.batches)
  for name in ("000003.png", "000000.png"):
    (folder / name).write_bytes(b"\x89PNG")
    with pytest.raises(ValueError, match=f"{name} is not a readable PNG"):
      imagesets.open_set(str(folder), batch_size=2)


def test_statistics_of_other_features_are_refused_before_any_images(
    extractor, tmp_path, monkeypatch):
  # pytorch-fid --dims 768: found after the other side's features, by the
  # Fréchet distance.
  stats_lib.save(str(tmp_path / "s.npz"), {"mu": np.zeros(768),
                                            "sigma": np.eye(768)})
  monkeypatch.setattr(extractor, "of_batches",
                      lambda *a, **k: pytest.fail("features computed"))
  images = np.zeros((4, 8, 8, 3), np.uint8)
  np.savez(tmp_path / "images.npz", images=images)
  with pytest.raises(ValueError) as e:
    fid_lib.compare(extractor, imagesets.open_set(str(tmp_path / "images.npz")),
                    imagesets.open_set(str(tmp_path / "s.npz")))
  assert str(e.value) == (
      f"{tmp_path / 's.npz'} holds statistics of shape (768,), not "
      "Inception's 2048-d features (--weights); recompute it with "
      "jaxgen.eval.stats and these weights.")


def test_a_png_folder_decodes_as_a_folder_dataset(tmp_path):
  # A 16-bit PNG clipped to white and transparent pixels showed their
  # hidden colour: --a=DIR and --a=folder:DIR gave other statistics.
  folder = tmp_path / "pngs"
  folder.mkdir()
  ramp = (np.arange(16 * 16, dtype=np.uint16).reshape(16, 16) * 257)
  Image.fromarray(ramp).save(folder / "000000.png")
  rgba = np.zeros((16, 16, 4), np.uint8)
  rgba[..., 0] = 200  # Red, fully transparent: white over white.
  Image.fromarray(rgba, "RGBA").save(folder / "000001.png")
  images = next(imagesets.open_set(str(folder), batch_size=2).batches)
  # 8-bit values of the ramp: v * 257 / 257 = v (0..255), grey.
  np.testing.assert_array_equal(images[0, ..., 0],
                                np.arange(256).reshape(16, 16))
  assert np.all(images[1] == 255)
  for i, name in enumerate(("000000.png", "000001.png")):
    np.testing.assert_array_equal(
        images[i], folders.decode_image(str(folder / name)))


def test_part_of_a_folder_read_class_by_class_is_warned_about(tmp_path,
                                                               caplog):
  # --num=50000 of ImageNet's train folder read its first 39 classes.
  for name in ("a", "b"):
    (tmp_path / "f" / name).mkdir(parents=True)
    for i in range(2):
      Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(
          tmp_path / "f" / name / f"{i}.png")
  image_set = imagesets.open_set(f"folder:{tmp_path / 'f'}", image_size=8,
                                 batch_size=2)
  with caplog.at_level(logging.WARNING):
    assert imagesets.count(image_set, 4) == 4
    assert not caplog.records
    assert imagesets.count(image_set, 3) == 3
  assert "the first 3 of its 4 images are read, class by class" in (
      caplog.records[-1].getMessage())


def test_a_dataset_spec_keeps_its_split_and_every_image():
  # The spec's split is read, not "train" (--split replaced it), and the 37
  # images, 2 whole batches of 16 and 5 left over, are all read, in order.
  spec = "tfds:jaxgen_shapes/image_16:test[:37]"
  image_set = imagesets.open_set(spec, image_size=16,
                                 data_dir=common.DATA_DIR, batch_size=16)
  images = np.concatenate(list(image_set.batches))
  assert image_set.available == 37 and images.shape == (37, 16, 16, 3)
  c = data_config.default_dataset_config()
  c.name, c.image_size, c.data_dir = spec, 16, common.DATA_DIR
  want = data_pipeline.read_examples(c, split="test[:37]", start=0, stop=37)
  np.testing.assert_array_equal(images, want["image"])
  train = data_pipeline.read_examples(c, split="train", start=0, stop=37)
  assert not np.array_equal(images, train["image"])
  # --split replaces the spec's.
  other = imagesets.open_set(spec, image_size=16, data_dir=common.DATA_DIR,
                             split="train[:20]", batch_size=16)
  assert other.available == 20
  np.testing.assert_array_equal(np.concatenate(list(other.batches)),
                                train["image"][:20])
  # The embedded dataset names its split as a TFDS spec does.
  short = imagesets.open_set("jaxgen_shapes:test[:37]", image_size=16,
                             data_dir=common.DATA_DIR, batch_size=16)
  np.testing.assert_array_equal(np.concatenate(list(short.batches)),
                                want["image"])
  # A split smaller than --batch_size is one batch, not an error about
  # config.batch_size (a trainer field the command does not have).
  whole = imagesets.open_set(spec, image_size=16, data_dir=common.DATA_DIR,
                             batch_size=200)
  batches = list(whole.batches)
  assert [len(b) for b in batches] == [37]
  np.testing.assert_array_equal(batches[0], want["image"])


def test_a_dataset_side_takes_the_other_sides_size(tmp_path, caplog):
  # 16 px samples against the dataset: without --image_size the dataset is
  # read at 16 px, not the flag's default 32.
  caplog.set_level("INFO")
  spec = "tfds:jaxgen_shapes/image_16:test[:8]"
  folder = tmp_path / "samples"
  folder.mkdir()
  for i in range(3):
    Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(folder / f"{i}.png")
  kw = dict(data_dir=common.DATA_DIR, batch_size=8)
  ref, samples = fid_lib.open_sets(spec, str(folder), image_size=32,
                                   size_given=False, **kw)
  assert samples.size == (16, 16) and ref.size == (16, 16)
  assert next(ref.batches).shape == (8, 16, 16, 3)
  assert any("Reading tfds:jaxgen_shapes/image_16:test[:8] at 16x16" in
             r.getMessage() for r in caplog.records)
  # --image_size, when given, is what the dataset is read at; the two sizes
  # are then warned about when compared.
  ref, samples = fid_lib.open_sets(spec, str(folder), image_size=32,
                                   size_given=True, **kw)
  assert next(ref.batches).shape == (8, 32, 32, 3) and ref.size == (32, 32)
  caplog.clear()
  ref, samples = fid_lib.open_sets(spec, str(folder), image_size=32,
                                   size_given=True, **kw)
  fid_lib.compare(_Ones(), ref, samples)
  assert any("holds 32x32 images but" in r.getMessage() and
             "16x16" in r.getMessage() for r in caplog.records)
  # A stats file's recorded size counts as the other side's too.
  np.savez(tmp_path / "stats.npz", mu=np.zeros(2), sigma=np.eye(2),
           image_size=np.asarray((24, 24)))
  ref, _ = fid_lib.open_sets(str(tmp_path / "stats.npz"), spec,
                             image_size=32, size_given=False, **kw)
  assert ref.size == (24, 24)
  _, data = fid_lib.open_sets(str(tmp_path / "stats.npz"), spec,
                              image_size=32, size_given=False, **kw)
  assert next(data.batches).shape[1:3] == (24, 24)


class _Ones(features_lib.StreamExtractor):
  batch_size = 8

  def _batch(self, images):
    return np.ones((len(images), 2)), np.ones((len(images), 3))


def test_a_short_stream_reports_the_images_it_had():
  # 12 images, the last 4 short of a whole batch of 8: all are counted.
  batches = (np.zeros((n, 4, 4, 3), np.uint8) for n in (6, 6))
  with pytest.raises(ValueError, match="only 12 images, 30 requested; pass "
                     "--num=12"):
    _Ones().of_batches(batches, 30, progress=False)
