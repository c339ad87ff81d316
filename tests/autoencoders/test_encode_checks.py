"""encode: resuming its own shards, refusing another encode's, and the
one-line input errors raised before anything compiles or is written."""

import json
import os
import shutil
import subprocess
import sys
import zlib

import jax
import ml_collections
import numpy as np
import pytest

from configs import autoencoder as ae_config
from jaxgen import config_lib
from jaxgen.autoencoders import encode as encode_lib
from jaxgen.autoencoders import runs as ae_runs
from jaxgen.data import config as data_config
from jaxgen.data import sources
from tests.data import test_data_sources
from tests.train import common


def _encode(config, workdir, out, **kwargs):
  args = dict(data="jaxgen_shapes", split="test", out=out, image_size=64,
              data_dir=common.DATA_DIR, batch_size=64, shard_size=128,
              log=lambda _: None)
  args.update(kwargs)
  return encode_lib.encode_split(config, workdir, **args)


def _snapshot(root):
  """{file name: (bytes, mtime)} of a folder."""
  snap = {}
  for name in sorted(os.listdir(root)):
    path = os.path.join(root, name)
    with open(path, "rb") as f:
      snap[name] = (f.read(), os.stat(path).st_mtime_ns)
  return snap


def _video_config():
  c = ae_config.get_config("tiny_video")
  config_lib.apply_overrides(c, {"dataset.data_dir": common.DATA_DIR})
  return c


def test_rerun_resumes_its_shards_and_refuses_another_encodes(
    tmp_path, trained_ae_64, monkeypatch):
  config, ae_dir = trained_ae_64
  out = str(tmp_path / "latents")
  root = os.path.join(out, "test")
  meta = _encode(config, ae_dir, out)
  assert meta["producer"]["image_size"] == 64 and len(meta["shards"]) == 4
  # An interrupted encode: shards 2 and 3 (and latents.json) never written.
  lost = {n: v[0] for n, v in _snapshot(root).items()
          if n.startswith(("latents-00002", "latents-00003"))}
  for name in ("latents-00002.array_record", "latents-00003.array_record",
               "latents.json"):
    os.remove(os.path.join(root, name))
  finished = [f"latents-0000{k}.array_record{ext}" for k in (0, 1)
              for ext in ("", ".json")]
  kept = {n: v for n, v in _snapshot(root).items() if n in finished}
  assert sorted(kept) == sorted(finished)
  written = []
  write = encode_lib._write_shard  # pylint: disable=protected-access

  def spy(module, root_, k, *args):
    written.append(k)
    write(module, root_, k, *args)

  monkeypatch.setattr(encode_lib, "_write_shard", spy)
  again = _encode(config, ae_dir, out)
  assert written == [2, 3]
  assert {n: v for n, v in _snapshot(root).items() if n in kept} == kept
  # Read from their own first rows (the rerun jumps to them): the same
  # latents as the uninterrupted encode wrote.
  assert {n: v[0] for n, v in _snapshot(root).items() if n in lost} == lost
  assert again["scaling_factor"] == pytest.approx(meta["scaling_factor"])
  # Another size, another run (a copy elsewhere), another step: refused
  # before encoding, and the split is left exactly as it was.
  before = _snapshot(root)
  other_run = str(tmp_path / "other_run")
  shutil.copytree(ae_dir, other_run)
  restore = ae_runs.restore_run

  def later_step(*args):
    c, s, step, state = restore(*args)
    return c, s, step + 1, state

  def replaced(*args):
    # The run retrained at the same path and step: other weights.
    c, s, step, state = restore(*args)
    params = jax.tree.map(lambda p: p + 1, state.params)
    return c, s, step, state.replace(params=params)

  for workdir, kwargs, why in (
      (ae_dir, {"image_size": 32}, "image_size 64, not 32"),
      (other_run, {}, "autoencoder '"),
      (ae_dir, {"shard_size": 256}, "shard_size 128, not 256"),
      (ae_dir, {"step": True}, "autoencoder_step 2, not 3"),
      (ae_dir, {"restore": replaced}, "autoencoder_weights '")):
    written.clear()
    with monkeypatch.context() as m:
      if kwargs.pop("step", False):
        m.setattr(ae_runs, "restore_run", later_step)
      if "restore" in kwargs:
        m.setattr(ae_runs, "restore_run", kwargs.pop("restore"))
      with pytest.raises(ValueError) as e:
        _encode(config, workdir, out, **kwargs)
    msg = str(e.value)
    assert msg.startswith(f"{root} holds latents of another encode (") \
        and why in msg, msg
    assert msg.endswith("; pass another --out or delete it.")
    assert "\n" not in msg and not written
    assert _snapshot(root) == before
  # latents.json files written before producers recorded the digest keep
  # it at their top level: a retrained run is refused by it too, the same
  # run resumes.
  meta_path = os.path.join(root, "latents.json")
  with open(meta_path) as f:
    saved = f.read()
  legacy = json.loads(saved)
  digest = legacy["producer"].pop("autoencoder_weights")
  for recorded, refused in (("f" * 16, True), (digest, False)):
    with open(meta_path, "w") as f:
      json.dump(dict(legacy, autoencoder_weights=recorded), f)
    written.clear()
    if refused:
      with pytest.raises(ValueError, match="autoencoder_weights 'f{16}', not"):
        _encode(config, ae_dir, out)
    else:
      _encode(config, ae_dir, out)
    assert not written
  with open(meta_path, "w") as f:
    f.write(saved)
  # A truncated shard (a copy cut short) is named when the latents are
  # opened, where grain's reader raised a Riegeli hash-mismatch traceback,
  # and a rerun rewrites it (the resume used to trust any file there).
  shard = os.path.join(root, "latents-00001.array_record")
  full = os.path.getsize(shard)
  with open(shard, "r+b") as f:
    f.truncate(full // 2)
  dataset = ml_collections.ConfigDict({"name": f"latents:{out}"})
  with pytest.raises(ValueError, match=f"latent shard {shard} is "
                     f"{full // 2} bytes, not the {full} it was written "
                     "with; rerun the encode command"):
    sources.open_source(data_config.parse_spec(dataset.name), dataset,
                        split="test")
  written.clear()
  _encode(config, ae_dir, out)
  assert written == [1] and os.path.getsize(shard) == full
  sources.open_source(data_config.parse_spec(dataset.name), dataset,
                      split="test")
  os.remove(shard)
  with pytest.raises(ValueError, match=f"latent shard {shard} is missing"):
    sources.open_source(data_config.parse_spec(dataset.name), dataset,
                        split="test")


def test_a_slice_is_encoded_into_its_splits_folder(tmp_path, trained_ae_64):
  config, ae_dir = trained_ae_64
  out = str(tmp_path / "latents")
  meta = _encode(config, ae_dir, out, split="test[:100]")
  root = os.path.join(out, "test")
  assert sorted(os.listdir(out)) == ["test"]
  assert meta["num_examples"] == 100 and meta["split"] == "test[:100]"
  # The latents are those of the first 100 test images, in order.
  dataset = ml_collections.ConfigDict({"name": f"latents:{out}"})
  data = sources.open_source(data_config.parse_spec(dataset.name), dataset,
                             split="test").data
  assert len(data) == 100
  # The whole split into the same folder: another encode's latents.
  with pytest.raises(ValueError, match=(
      f"^{root} holds latents of another encode \\(split 'test\\[:100\\]', "
      "not 'test', num_examples 100, not 512\\)")):
    _encode(config, ae_dir, out, split="test")
  # Slices are taken when encoding; reading one is refused, naming both.
  with pytest.raises(ValueError) as e:
    sources.open_source(data_config.parse_spec(dataset.name), dataset,
                        split="test[:50]")
  assert str(e.value) == (
      f"latents:{out} reads whole split folders, not 'test[:50]'; encode "
      "that slice (python -m jaxgen.autoencoders.encode "
      "--split='test[:50]') and read split 'test'.")
  with pytest.raises(ValueError, match="^split 'train\\+test' names no "
                     "single split folder; encode one split"):
    _encode(config, ae_dir, str(tmp_path / "union"), split="train+test")
  assert not os.path.exists(tmp_path / "union")


def test_the_command_encodes_the_specs_split_unless_split_is_given(
    tmp_path):
  code = (
      "from absl import app\n"
      "from jaxgen import config_lib\n"
      "from jaxgen.autoencoders import encode\n"
      "from jaxgen.train import provenance\n"
      "import ml_collections\n"
      "provenance.load_config = lambda workdir: ml_collections.ConfigDict(\n"
      "    {'dataset': {'image_size': 8, 'data_dir': '', 'name':\n"
      f"     'folder:{tmp_path}/imgs', 'holdout_fraction': 0.1}}}})\n"
      "encode.encode_split = lambda *a, split, holdout_fraction, **k: print(\n"
      "    'split', split, holdout_fraction)\n"
      "encode._define_flags()\n"
      "app.run(encode.main, flags_parser=config_lib.parse_flags)\n")
  # The holdout is the run's for the folder it trained on (however the
  # path is spelled), else none unless given.
  for flags_, split, holdout in (
      (["--data=jaxgen_shapes"], "train", "0.0"),
      (["--data=jaxgen_shapes:test"], "test", "0.0"),
      (["--data=tfds:mnist:train[:10%]"], "train[:10%]", "0.0"),
      (["--data=jaxgen_shapes:test", "--split=train"], "train", "0.0"),
      ([f"--data=folder:{tmp_path}/imgs/"], "train", "0.1"),
      ([f"--data=folder:{tmp_path}/imgs", "--split=test"], "test", "0.1"),
      ([f"--data=folder:{tmp_path}/imgs", "--holdout_fraction=0"], "train",
       "0.0"),
      ([f"--data=folder:{tmp_path}/other"], "train", "0.0")):
    proc = subprocess.run(
        [sys.executable, "-c", code, "--workdir=RUN", f"--out={tmp_path}"]
        + flags_,
        capture_output=True, text=True, cwd=common.ROOT, timeout=300,
        check=False, env=dict(os.environ, PYTHONPATH=common.ROOT,
                              JAX_PLATFORMS="cpu"))
    assert proc.stdout.split() == ["split", split, holdout], (
        flags_, proc.stderr)


def test_image_size_not_divisible_by_the_compression(tmp_path,
                                                     trained_ae_64):
  config, ae_dir = trained_ae_64
  out = str(tmp_path / "latents")
  with pytest.raises(ValueError) as e:
    _encode(config, ae_dir, out, image_size=60)
  assert str(e.value) == ("--image_size=60 is not divisible by the "
                          "autoencoder's spatial compression 8; use e.g. 64.")
  assert not os.path.exists(out)
  # The command: one error line, no traceback, no OUT.
  errors = common.error_lines(
      "jaxgen.autoencoders.encode", f"--workdir={ae_dir}",
      "--data=jaxgen_shapes", "--split=test", "--image_size=60",
      f"--data_dir={common.DATA_DIR}", f"--out={out}")
  assert errors == ["error: --image_size=60 is not divisible by the "
                    "autoencoder's spatial compression 8; use e.g. 64."]
  assert not os.path.exists(out)


@pytest.mark.parametrize("data,num_frames,match", [
    ("jaxgen_shapes_video", 8,
     r"^--num_frames=8: the video autoencoder \S+ needs 1 \+ k \* 4 frames "
     r"\(temporal compression 4\); pass e\.g\. --num_frames=5\.$"),
    ("jaxgen_shapes_video", 7, r"^--num_frames=7: .* needs 1 \+ k \* 4 "),
    # The stored clip length (8) when --num_frames is not given.
    ("jaxgen_shapes_video", 0,
     r"^jaxgen_shapes_video clips have 8 frames; the video autoencoder \S+ "
     r"needs 1 \+ k \* 4 frames .* pass e\.g\. --num_frames=5\.$"),
    ("jaxgen_shapes", 0, r"^\S+ is a video autoencoder; pass a video "
     r"dataset \(e\.g\. jaxgen_shapes_video\) and --num_frames\.$"),
    ("jaxgen_shapes", 5, r"is a video autoencoder; pass a video dataset"),
])
def test_video_autoencoder_frame_counts(tmp_path, data, num_frames, match):
  # The run is never restored: every check comes first.
  out = str(tmp_path / "latents")
  with pytest.raises(ValueError, match=match) as e:
    _encode(_video_config(), str(tmp_path / "video_ae"), out, data=data,
            image_size=32, num_frames=num_frames, batch_size=8,
            shard_size=64)
  assert "\n" not in str(e.value) and not os.path.exists(out)


@pytest.mark.parametrize("data,num_frames,match", [
    ("jaxgen_shapes_video", 0,
     r"^jaxgen_shapes_video holds video but \S+ is an image autoencoder; "
     r"pass an image dataset"),
    ("jaxgen_shapes", 5,
     r"^--num_frames=5: \S+ is an image autoencoder; drop --num_frames\.$"),
])
def test_image_autoencoder_refuses_clips(tmp_path, trained_ae_64, data,
                                         num_frames, match):
  config, _ = trained_ae_64
  out = str(tmp_path / "latents")
  with pytest.raises(ValueError, match=match):
    _encode(config, str(tmp_path / "no_run"), out, data=data, image_size=32,
            num_frames=num_frames)
  assert not os.path.exists(out)


def test_batch_size_not_divisible_by_the_devices(tmp_path, trained_ae_64):
  assert jax.device_count() == 8  # tests/conftest.py
  config, _ = trained_ae_64
  out = str(tmp_path / "latents")
  with pytest.raises(ValueError) as e:
    _encode(config, str(tmp_path / "no_run"), out, batch_size=4)
  assert str(e.value) == ("--batch_size=4 is not divisible by the 8 devices; "
                          "use a multiple of 8.")
  # Both size problems in one line.
  with pytest.raises(ValueError) as e:
    _encode(config, str(tmp_path / "no_run"), out, batch_size=4,
            shard_size=10)
  assert str(e.value) == (
      "--shard_size=10 is not a multiple of --batch_size=4 (use e.g. "
      "--shard_size=12); --batch_size=4 is not divisible by the 8 devices "
      "(use a multiple of 8).")
  assert not os.path.exists(out)
  # A split smaller than one batch: said with encode's flags (the pipeline
  # named config.batch_size and config.eval_batches, which encode has not).
  with pytest.raises(ValueError) as e:
    _encode(config, str(tmp_path / "no_run"), out, split="test[:10]")
  assert str(e.value) == (
      "jaxgen_shapes split 'test[:10]' has 10 examples, fewer than "
      "--batch_size=64; pass a --batch_size of at most 10 that divides "
      "--shard_size=128.")


def test_a_split_unlike_the_others_is_refused_and_train_scales_all(
    tmp_path, trained_ae_64):
  config, ae_dir = trained_ae_64
  out = str(tmp_path / "latents")
  train = os.path.join(out, "train")
  ours = {"autoencoder": os.path.realpath(ae_dir), "autoencoder_step": 2,
          "image_size": 64, "num_frames": 0}
  latents = np.zeros((8, 8, 8, 8), np.float32)
  # The train split of another step, then of another size: refused before
  # anything is encoded, nothing written.
  for key, value, why in (
      ("autoencoder_step", 1, "autoencoder_step: 1 (train) vs 2 (test)"),
      ("image_size", 32, "image_size: 32 (train) vs 64 (test)")):
    shutil.rmtree(out, ignore_errors=True)
    test_data_sources.write_latent_split(train, latents, 0.5,
                                         dict(ours, **{key: value}))
    with pytest.raises(ValueError) as e:
      _encode(config, ae_dir, out)
    assert str(e.value) == (
        f"{out} holds split 'train' of other latents ({why}); every split "
        "of a latents directory comes from one autoencoder run and step at "
        "one --image_size (and --num_frames, --holdout_fraction): encode "
        "with those, or pass another --out.")
    assert sorted(os.listdir(out)) == ["train"]
  # The same run, step and size: encoded, scaled by the train split's
  # factor (its own kept for reference).
  shutil.rmtree(out)
  test_data_sources.write_latent_split(train, latents, 0.5, ours)
  lines = []
  meta = _encode(config, ae_dir, out, log=lines.append)
  assert meta["scaling_factor"] == 0.5
  assert meta["split_scaling_factor"] != pytest.approx(0.5)
  assert "(scaling factor 0.5 of the train split)" in lines[0]
  assert lines[0].startswith(f"wrote 512 latents of 8x8x8 to {out}/test (")
  # A rerun finds every shard there and says so.
  again = _encode(config, ae_dir, out, log=lines.append)
  assert again["scaling_factor"] == 0.5
  assert lines[1].startswith(
      f"all 512 latents of 8x8x8 were already in {out}/test (scaling factor")


def test_run_data_and_output_errors_come_first(tmp_path, trained_ae_64):
  config, ae_dir = trained_ae_64
  out = str(tmp_path / "latents")
  # Not an autoencoder run (the simple-diffusion tiny config).
  with pytest.raises(ValueError) as e:
    _encode(common.tiny_config(), str(tmp_path / "sd"), out)
  assert str(e.value) == (f"{tmp_path}/sd is a 'simple_diffusion' run, not "
                          "an autoencoder; pass the --workdir of an "
                          "autoencoder run.")
  # An output that is a file, or inside one: refused before any work.
  afile = tmp_path / "afile"
  afile.write_text("keep")
  for bad, msg in (
      (str(afile), f"--out={afile} is a file, not a folder; pass a folder."),
      (str(afile / "sub"), f"--out={afile}/sub cannot be created: {afile} "
                           "is a file; pass another --out.")):
    with pytest.raises(ValueError) as e:
      _encode(config, ae_dir, bad)
    assert str(e.value) == msg
  assert afile.read_text() == "keep"
  # 8-channel latents into the 3-channel autoencoder: one line, before the
  # checkpoint is restored.
  lat = str(tmp_path / "lat")
  test_data_sources.write_latent_split(
      os.path.join(lat, "test"), np.zeros((64, 8, 8, 8), np.float32), 1.0,
      {"autoencoder": ae_dir, "autoencoder_step": 2, "image_size": 64,
       "num_frames": 0})
  with pytest.raises(ValueError) as e:
    _encode(config, str(tmp_path / "no_run"), out, data=f"latents:{lat}")
  assert str(e.value) == (
      f"latents:{lat} has 8-channel examples but {tmp_path}/no_run encodes "
      "3-channel ones (config.dataset.channels); pass data like the images "
      "it was trained on.")
  assert not os.path.exists(out)


def test_interrupted_encode_says_how_to_finish(tmp_path, trained_ae_64):
  """Ctrl-C: one line and exit 130, no traceback."""
  _, ae_dir = trained_ae_64
  code = (
      "import sys\n"
      "from absl import app\n"
      "from jaxgen import config_lib\n"
      "from jaxgen.autoencoders import encode\n"
      "def interrupted(*args, **kwargs):\n"
      "  raise KeyboardInterrupt\n"
      "encode.encode_split = interrupted\n"
      "encode._define_flags()\n"
      "app.run(encode.main, flags_parser=config_lib.parse_flags)\n")
  proc = subprocess.run(
      [sys.executable, "-c", code, f"--workdir={ae_dir}",
       "--data=jaxgen_shapes", f"--out={tmp_path / 'latents'}"],
      capture_output=True, text=True, cwd=common.ROOT, timeout=300,
      check=False, env=dict(os.environ, PYTHONPATH=common.ROOT,
                            JAX_PLATFORMS="cpu"))
  assert proc.returncode == 130, proc.stderr[-2000:]
  assert proc.stderr.strip().splitlines()[-1] == (
      "interrupted; rerun the same command to finish (the shards written "
      "are kept).")
  assert "Traceback" not in proc.stderr


def test_a_shard_record_cut_off_while_written_leaves_no_record(
    tmp_path, monkeypatch):
  # A Ctrl-C inside the record's json.dump left half a JSON file beside
  # the old shard, and the rerun then refused the whole split.
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top

  def cut_off(obj, f):
    f.write(json.dumps(obj)[:10])
    raise KeyboardInterrupt

  monkeypatch.setattr(encode_lib.json, "dump", cut_off)
  with pytest.raises(KeyboardInterrupt):
    encode_lib._write_shard(  # pylint: disable=protected-access
        array_record_module, str(tmp_path), 0,
        np.zeros((2, 4, 4, 8), np.float32), np.zeros(2, np.int64), {})
  assert not any(name.endswith(".array_record.json")
                 or name.endswith(".array_record")
                 for name in os.listdir(tmp_path))


def test_an_unreadable_image_stops_encode_naming_it(tmp_path, trained_ae_64):
  # The folder source skipped it and the next image took its place: that
  # image was encoded twice and "wrote 20 latents" reported.
  config, ae_dir = trained_ae_64
  from PIL import Image  # pylint: disable=g-import-not-at-top
  images = tmp_path / "images"
  images.mkdir()
  rng = np.random.default_rng(0)
  for i in range(20):
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), np.uint8)).save(
        images / f"{i:03d}.png")
  (images / "010.png").write_bytes(rng.bytes(300))
  out = tmp_path / "latents"
  with pytest.raises(ValueError, match=(
      rf"^cannot decode image {images}/010\.png: .*; encode writes one "
      r"latent per image, in order, so fix or remove it and rerun \(the "
      r"shards written so far are kept\)\.$")):
    _encode(config, ae_dir, str(out), data=f"folder:{images}", split="train",
            batch_size=8, shard_size=8)
  # The shard of images 0-7 was written before the bad one was reached.
  assert sorted(p for p in os.listdir(out / "train")
                if p.endswith(".json")) == ["latents-00000.array_record.json"]


def _latents(root):
  """The latent rows of an encoded split folder, in record order."""
  from array_record.python import array_record_module  # pylint: disable=g-import-not-at-top
  with open(os.path.join(root, sources.LATENTS_META), encoding="utf-8") as f:
    meta = json.load(f)
  rows = []
  for shard in meta["shards"]:
    reader = array_record_module.ArrayRecordReader(os.path.join(root, shard))
    rows += [np.frombuffer(r[:-4], np.float32) for r in reader.read_all()]
    reader.close()
  return np.stack(rows)


def test_a_folders_held_out_images_are_encoded_apart(tmp_path, trained_ae_64):
  # encode had no holdout: a folder run's train split was encoded whole,
  # held-out images included, and its test split could not be encoded.
  config, ae_dir = trained_ae_64
  from PIL import Image  # pylint: disable=g-import-not-at-top
  images = tmp_path / "images"
  images.mkdir()
  rng = np.random.default_rng(0)
  names = [f"{i:03d}.png" for i in range(24)]
  for name in names:
    Image.fromarray(rng.integers(0, 256, (64, 64, 3), np.uint8)).save(
        images / name)
  data = f"folder:{images}"
  args = dict(data=data, batch_size=8, shard_size=8)
  with pytest.raises(ValueError, match=(
      rf"^{data} has one split \(no images held out\), so split 'test' "
      r"would be its training images; pass --holdout_fraction, the fraction "
      r"the autoencoder run held out \(e\.g\. 0\.05\)\.$")):
    _encode(config, ae_dir, str(tmp_path / "no"), split="test", **args)
  with pytest.raises(ValueError, match=(
      r"^--holdout_fraction holds out images of folder: datasets only; "
      r"jaxgen_shapes has its own splits: drop it and pass --split\.$")):
    _encode(config, ae_dir, str(tmp_path / "no"), holdout_fraction=0.25)
  with pytest.raises(ValueError, match=r"^--holdout_fraction=1\.0 must be in"):
    _encode(config, ae_dir, str(tmp_path / "no"), split="train",
            holdout_fraction=1.0, **args)
  assert not os.path.exists(tmp_path / "no")
  # Held out by the folder rule, computed here from the paths: crc32 of the
  # relative path below 25% of 10,000; the held-out split in hash order.
  hashes = {n: zlib.crc32(n.encode()) for n in names}
  held = [n for _, n in sorted((h, n) for n, h in hashes.items()
                               if h % 10_000 < 2_500)]
  kept = [n for n in names if n not in held]
  assert 8 <= len(held) < len(names) - 8, held
  whole = str(tmp_path / "whole")
  _encode(config, ae_dir, whole, split="train", **args)
  everything = dict(zip(names, _latents(os.path.join(whole, "train"))))
  out = str(tmp_path / "split")
  _encode(config, ae_dir, out, split="train", holdout_fraction=0.25, **args)
  _encode(config, ae_dir, out, split="test", holdout_fraction=0.25, **args)
  train, test = (_latents(os.path.join(out, s)) for s in ("train", "test"))
  np.testing.assert_allclose(train, [everything[n] for n in kept],
                             rtol=1e-5, atol=1e-6)
  np.testing.assert_allclose(test, [everything[n] for n in held],
                             rtol=1e-5, atol=1e-6)
  # A split of the same directory at another fraction overlaps them.
  with pytest.raises(ValueError, match=(
      rf"^{out} holds split 'test' encoded at --holdout_fraction=0\.25, not "
      r"0\.5: a folder's splits are complements only at one fraction \(a "
      r"train split encoded at 0 holds the held-out images too\); encode "
      r"every split of it at one, or pass another --out\.$")):
    _encode(config, ae_dir, out, split="val", holdout_fraction=0.5, **args)
  # Rerunning an encode of before the fraction was set (the whole folder)
  # names the flag that finishes it.
  with pytest.raises(ValueError, match=(
      r"holdout_fraction None, not 0\.25\); pass --holdout_fraction=0 to "
      r"finish that encode, another --out, or delete it\.$")):
    _encode(config, ae_dir, whole, split="train", holdout_fraction=0.25,
            **args)
  # A slice of a folder would read the held-out images as train[:N].
  with pytest.raises(ValueError, match=(
      r"has no split 'train\[:8\]': it takes whole splits \('train', and "
      r"any other name for the images holdout_fraction holds out\), not "
      r"slices\.$")):
    _encode(config, ae_dir, str(tmp_path / "no"), split="train[:8]",
            holdout_fraction=0.25, **args)
