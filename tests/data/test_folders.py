"""Image folders: decoding of real-world files, the open-time probe, and
the folder checks of the pipeline and trainer."""

import re
import struct
import subprocess
import sys
import zlib

import numpy as np
from PIL import Image
import pytest

from configs import r3gan
from jaxgen.data import config as config_lib
from jaxgen.data import folders
from jaxgen.data import pipeline
from jaxgen.train import trainer
from tests.train import common


def _build(config, *, batch=4, **kwargs):
  return pipeline.build_input(config, global_batch_size=batch, seed=0,
                              process_index=0, process_count=1, **kwargs)


def _config(**overrides):
  config = config_lib.default_dataset_config()
  config.update(overrides)
  return config


def test_sixteen_bit_greyscale_is_scaled_not_clipped(tmp_path):
  # Mid-grey 32768 of 65535: was 255 (white) through convert("RGB").
  Image.fromarray(np.full((4, 4), 32768, np.uint16)).save(tmp_path / "g.png")
  rgb = folders.decode_image(str(tmp_path / "g.png"))
  assert rgb.shape == (4, 4, 3) and np.all(rgb == 128)  # 32768 / 257
  luma = folders.decode_image(str(tmp_path / "g.png"), channels=1)
  assert luma.shape == (4, 4, 1) and np.all(luma == 128)


def test_exif_orientation_is_applied(tmp_path):
  # Stored 2 high x 3 wide with orientation 6 ("rotate 90 clockwise to
  # view"): seen upright it is 3 high x 2 wide, the red column on top.
  pixels = np.zeros((2, 3, 3), np.uint8)
  pixels[:, 0] = (255, 0, 0)
  exif = Image.Exif()
  exif[0x0112] = 6
  Image.fromarray(pixels).save(tmp_path / "phone.png", exif=exif)
  upright = folders.decode_image(str(tmp_path / "phone.png"))
  assert upright.shape == (3, 2, 3)
  np.testing.assert_array_equal(upright[0], [[255, 0, 0], [255, 0, 0]])


def test_transparency_is_composited_over_white(tmp_path):
  rgba = np.zeros((2, 2, 4), np.uint8)  # Transparent black ...
  rgba[0, 0] = (0, 0, 255, 255)  # ... and one opaque blue pixel.
  Image.fromarray(rgba, "RGBA").save(tmp_path / "icon.png")
  rgb = folders.decode_image(str(tmp_path / "icon.png"))
  np.testing.assert_array_equal(rgb[0, 0], [0, 0, 255])
  np.testing.assert_array_equal(rgb[1, 1], [255, 255, 255])


def test_a_folder_of_non_images_is_refused_when_opened(tmp_path):
  for i in range(3):
    (tmp_path / f"{i}.png").write_bytes(b"not a png")
  with pytest.raises(ValueError, match=r"none of 3 files tried decodes "
                     r"\(e.g. .*0.png: .*\); check the folder.$") as e:
    _build(_config(name=f"folder:{tmp_path}", image_size=16), batch=2)
  assert "\n" not in str(e.value)


def test_the_probe_spreads_over_the_whole_folder(tmp_path):
  # 16 bad files first, 15 good ones after: the stride of 31 // 16 = 1 tried
  # only the bad ones and refused a folder that trains.
  for i in range(16):
    (tmp_path / f"{i:02d}.png").write_bytes(b"not a png")
  rng = np.random.default_rng(0)
  for i in range(16, 31):
    Image.fromarray(rng.integers(0, 256, (20, 20, 3), np.uint8)).save(
        tmp_path / f"{i:02d}.png")
  folders._probe_decodes(str(tmp_path), sorted(  # pylint: disable=protected-access
      str(p) for p in tmp_path.iterdir()))


def test_greyscale_folder_trains_a_one_channel_model(tmp_path):
  rng = np.random.default_rng(0)
  for i in range(8):
    Image.fromarray(rng.integers(0, 256, (20, 20), np.uint8)).save(
        tmp_path / f"{i}.png")
  it, info = _build(_config(name=f"folder:{tmp_path}", image_size=16,
                            channels=1), batch=4)
  assert info.channels == 1 and next(it)["image"].shape == (4, 16, 16, 1)


def test_holdout_fraction_is_range_checked():
  with pytest.raises(ValueError, match=r"holdout_fraction=-0.5 must be in "
                     r"\[0, 1\)"):
    config_lib.validate_dataset_config(_config(holdout_fraction=-0.5))


def test_a_small_held_out_split_names_the_fixes(tmp_path):
  rng = np.random.default_rng(0)
  for i in range(20):
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), np.uint8)).save(
        tmp_path / f"{i}.png")
  config = _config(name=f"folder:{tmp_path}", image_size=16,
                   holdout_fraction=0.1, eval_split="test")
  with pytest.raises(ValueError, match=r"fewer than one global batch of 8; "
                     r"use a smaller config.batch_size, hold out more "
                     r"\(config.dataset.holdout_fraction, for folders\) or "
                     r"set config.eval_batches=0.$"):
    _build(config, batch=8, train=False, split="test")


def test_an_unlabeled_folder_refuses_a_class_conditional_model(tmp_path):
  # Was: trained with every label 0 and 8 class embeddings, 7 never used.
  rng = np.random.default_rng(0)
  for i in range(8):
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), np.uint8)).save(
        tmp_path / f"{i}.png")
  config = common.tiny_config(**{"dataset.name": f"folder:{tmp_path}"})
  assert config.dataset.num_classes == 8
  _, info = _build(config.dataset, batch=config.batch_size)
  with pytest.raises(ValueError, match=r"^config.dataset.num_classes=8 but "
                     r"dataset 'folder:.*' has no class labels; set "
                     r"--config.dataset.num_classes=0 for an unconditional "
                     r"model.$"):
    trainer.setup(config, data_info=info)
  # An unconditional model ignores the field.
  config.diffusion.class_conditional = False
  assert trainer.setup(config, data_info=info).objective.num_classes == 0
  # R3GAN names its own switch too (its next error was that switch's).
  gan = r3gan.get_config("tiny")
  gan.dataset.name = f"folder:{tmp_path}"
  with pytest.raises(ValueError, match=r"set --config.dataset.num_classes=0 "
                     r"--config.gan.class_conditional=false for an "
                     r"unconditional model.$"):
    trainer.setup(gan, data_info=info)


def test_resuming_after_the_folder_grew_is_warned_about(tmp_path, caplog):
  folder = tmp_path / "images"
  folder.mkdir()
  rng = np.random.default_rng(0)

  def add(first, count):
    for i in range(first, first + count):
      Image.fromarray(rng.integers(0, 256, (16, 16, 3), np.uint8)).save(
          folder / f"{i:03d}.png")

  add(0, 8)
  fields = {"dataset.name": f"folder:{folder}", "dataset.num_classes": 0}
  workdir = str(tmp_path / "run")
  trainer.train_and_evaluate(common.tiny_config(total_steps=1, **fields),
                             workdir)
  add(8, 8)
  with caplog.at_level("WARNING"):
    trainer.train_and_evaluate(common.tiny_config(total_steps=2, **fields),
                               workdir)
  assert [r.getMessage() for r in caplog.records
          if "training split" in r.getMessage()] == [
              f"The training split of folder:{folder} has 16 examples, 8 "
              "when checkpoint 1 was written: the data order from here is "
              "not the uninterrupted run's."]


def test_hidden_files_are_not_images_of_the_set(tmp_path):
  # macOS copies carry "._name.png" AppleDouble files, sorted first: with
  # 16 or more images the probe used to see only those.
  rng = np.random.default_rng(0)
  for i in range(20):
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), np.uint8)).save(
        tmp_path / f"{i:02d}.png")
    (tmp_path / f"._{i:02d}.png").write_bytes(b"\x00\x05\x16\x07")
  _, info = _build(_config(name=f"folder:{tmp_path}", image_size=16))
  assert info.num_examples == 20


def _images(folder, count, seed=0):
  folder.mkdir(parents=True, exist_ok=True)
  rng = np.random.default_rng(seed)
  for i in range(count):
    Image.fromarray(rng.integers(0, 256, (16, 16, 3), np.uint8)).save(
        folder / f"{i:02d}.png")


def test_hidden_folders_are_not_classes(tmp_path):
  # Jupyter's checkpoints sorted first: they were class 0.
  for name in ("cat", "dog", ".ipynb_checkpoints"):
    _images(tmp_path / "classes" / name, 4)
  _, info = _build(_config(name=f"folder:{tmp_path / 'classes'}",
                           image_size=16))
  assert (info.num_classes, info.num_examples) == (2, 8)
  # Beside loose images they made it "a mix of images and class folders".
  _images(tmp_path / "flat", 4)
  _images(tmp_path / "flat" / ".thumbnails", 4)
  _, info = _build(_config(name=f"folder:{tmp_path / 'flat'}",
                           image_size=16))
  assert (info.num_classes, info.num_examples) == (0, 4)


def test_folder_layouts_it_cannot_read_are_named(tmp_path, caplog):
  _images(tmp_path, 1)
  with pytest.raises(ValueError, match=r"'.*00.png' is a file, not a "
                     r"folder.$"):
    _build(_config(name=f"folder:{tmp_path / '00.png'}", image_size=16))
  # Images two levels down: neither unlabeled nor class folders.
  _images(tmp_path / "deep" / "a" / "b", 4)
  with pytest.raises(ValueError, match=r"has no .png/.jpg/.jpeg files "
                     r"directly in it or in a class sub-folder \(e.g. "
                     r".*deep/a/b/00.png is deeper\); point folder: at"):
    _build(_config(name=f"folder:{tmp_path / 'deep'}", image_size=16))
  # Class folders with sub-folders of their own: those are not read, said
  # once; the log names the classes' labels.
  _images(tmp_path / "c" / "cat", 2)
  _images(tmp_path / "c" / "dog", 3)
  _images(tmp_path / "c" / "dog" / "puppies", 2)
  _images(tmp_path / "c" / "bird" / "chicks", 2)  # Nothing directly in it.
  with caplog.at_level("INFO"):
    _, info = _build(_config(name=f"folder:{tmp_path / 'c'}", image_size=16))
  assert info.num_examples == 5
  lines = [r.getMessage() for r in caplog.records]
  assert any(l.endswith("sub-folders of class folders are not read (1, e.g. "
                        f"{tmp_path / 'c' / 'dog' / 'puppies'}).")
             for l in lines), lines
  assert any(l.endswith("5 images in 2 classes (label: folder) 0: cat, "
                        "1: dog.") for l in lines), lines
  assert any(l.endswith("bird holds images only in sub-folders (e.g. "
                        f"{tmp_path / 'c' / 'bird' / 'chicks' / '00.png'}): "
                        "it is no class.") for l in lines), lines
  # Said when the training split opens, not again at every evaluation.
  caplog.clear()
  with caplog.at_level("INFO"):
    _build(_config(name=f"folder:{tmp_path / 'c'}", image_size=16,
                   holdout_fraction=0.5, eval_split="test"), batch=1,
           train=False, split="test")
  assert not [r for r in caplog.records if "Image folder" in r.getMessage()]


def test_held_out_batches_mix_the_classes(tmp_path):
  # Read in file order, the first eval batches were all of class 0.
  for i, name in enumerate(("a", "b", "c", "d")):
    _images(tmp_path / name, 30, seed=i)
  config = _config(name=f"folder:{tmp_path}", image_size=16,
                   holdout_fraction=0.3, eval_split="test")
  it, info = _build(config, batch=8, train=False, split="test")
  assert info.num_classes == 4
  labels = np.concatenate([next(it)["label"] for _ in range(2)])
  assert len(set(labels.tolist())) >= 3, labels
  # The held-out files are the same ones as before (chosen by hash).
  files, _ = folders._folder_split(  # pylint: disable=protected-access
      str(tmp_path), sorted(str(p) for p in tmp_path.glob("*/*.png")),
      [0] * 120, "test", config)
  want = [str(p) for p in sorted(tmp_path.glob("*/*.png"))
          if zlib.crc32(str(p.relative_to(tmp_path)).encode()) % 10_000
          < 3_000]
  assert sorted(files) == want


def test_a_slice_of_a_folder_is_refused(tmp_path):
  # Any split name but the train split's reads the held-out images, so
  # "train[:10%]" trained on them.
  config = _config(name=f"folder:{tmp_path}", holdout_fraction=0.3)
  for split in ("train[:10%]", "test[:5]"):
    with pytest.raises(ValueError, match=(
        rf"has no split '{re.escape(split)}': it takes whole splits "
        r"\('train', and any other name for the images holdout_fraction "
        r"holds out\), not slices\.$")):
      folders._folder_split(  # pylint: disable=protected-access
          str(tmp_path), ["a.png"], [0], split, config)


def test_malformed_exif_does_not_stop_decoding(tmp_path, monkeypatch):
  # exif_transpose rewrote the EXIF block, which raised struct.error on some
  # malformed tags (found by fuzzing JPEG EXIF); an unreadable EXIF now
  # means "no rotation".
  Image.fromarray(np.zeros((2, 3, 3), np.uint8)).save(tmp_path / "odd.jpg")

  def broken(self):
    raise struct.error("required argument is not an integer")

  monkeypatch.setattr(Image.Image, "getexif", broken)
  assert folders.decode_image(str(tmp_path / "odd.jpg")).shape == (2, 3, 3)


def test_greyscale_with_a_transparent_value_is_composited(tmp_path):
  Image.fromarray(np.full((2, 2), 7, np.uint8)).save(tmp_path / "t.png",
                                                      transparency=7)
  assert np.all(folders.decode_image(str(tmp_path / "t.png")) == 255)


def test_reopening_a_folder_lists_it_again_only_when_it_changed(
    tmp_path, monkeypatch):
  # The held-out split is reopened at every evaluation: an ImageNet-sized
  # tree was listed (1.3M files) and probed again each time.
  for name in ("a", "b"):
    _images(tmp_path / name, 6)
  config = _config(name=f"folder:{tmp_path}", image_size=16,
                   holdout_fraction=0.5, eval_split="test")
  listed, probed = [], []
  real_listing, real_probe = folders._listing, folders._probe_decodes  # pylint: disable=protected-access
  monkeypatch.setattr(folders, "_listing",
                      lambda d: listed.append(d) or real_listing(d))
  monkeypatch.setattr(folders, "_probe_decodes",
                      lambda *a: probed.append(a) or real_probe(*a))
  sizes = []
  for _ in range(2):
    _, info = _build(config, batch=1, train=False, split="test")
    sizes.append(info.num_examples)
  assert len(listed) == 3 and len(probed) == 1  # Root + 2 classes, once.
  # A new image in a class folder changes that folder: listed again.
  Image.fromarray(np.zeros((16, 16, 3), np.uint8)).save(tmp_path / "b" /
                                                         "new.png")
  _, info = _build(config, batch=1, train=False, split="test")
  _, train_info = _build(config, batch=1)
  assert len(listed) == 6
  assert info.num_examples + train_info.num_examples == 13


def test_a_folder_reads_through_grain_worker_processes(tmp_path):
  # Grain pickles the source for its workers: the source's lock made every
  # folder: run with dataset.worker_count > 0 a TypeError at the first batch.
  # (A fresh process: grain's workers read absl flags, parsed by commands.)
  _images(tmp_path / "imgs", 8)
  (tmp_path / "imgs" / "08.png").write_bytes(b"not a png")
  script = f"""
from absl import flags
flags.FLAGS(["test"])
import numpy as np
from jaxgen.data import config, pipeline
def batches(workers, train=True):
  c = config.default_dataset_config()
  c.update(name="folder:{tmp_path / 'imgs'}", image_size=16,
           in_memory="never", worker_count=workers)
  it, _ = pipeline.build_input(c, global_batch_size=4, seed=0,
                               process_index=0, process_count=1,
                               split="train", train=train)
  return [next(it)["image"] for _ in range(2)] if train else list(it)
for a, b in zip(batches(0), batches(1)):
  np.testing.assert_array_equal(a, b)
# One pass (evaluation, encoding) reads in this process: with 3 workers each
# batching its own slice, rows were dropped and batches reordered.
one, three = batches(0, train=False), batches(3, train=False)
assert len(one) == len(three) == 2
for a, b in zip(one, three):
  np.testing.assert_array_equal(a["image"], b["image"])
print("equal")
"""
  proc = subprocess.run([sys.executable, "-c", script], capture_output=True,
                        text=True, timeout=300, check=False,
                        env=common.process_env())
  assert proc.returncode == 0 and proc.stdout.strip() == "equal", (
      proc.stderr[-2000:])
