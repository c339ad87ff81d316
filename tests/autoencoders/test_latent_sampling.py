"""Sampling a latent-space run: the decoding autoencoder step is recorded, the
tools run on the devices they have, a vanished autoencoder run is named."""

import json
import os
import shutil

import ml_collections
import pytest

from jaxgen import sample as sample_lib
from jaxgen.autoencoders import encode as encode_lib
from jaxgen.autoencoders import latent_decode
from jaxgen.autoencoders import runs as ae_runs
from jaxgen.train import checks
from jaxgen.train import trainer
from tests.train import common


def _encode_test_split(tmp_path, trained_ae_64):
  """(the autoencoder run, latents root) of its 64 px test split."""
  config, ae_dir = trained_ae_64
  out = str(tmp_path / "latents")
  encode_lib.encode_split(config, ae_dir, data="jaxgen_shapes", split="test",
                          out=out, image_size=64, data_dir=common.DATA_DIR,
                          batch_size=64, shard_size=512, log=lambda _: None)
  return ae_dir, out


def test_samples_record_and_check_the_decoding_step(tmp_path, trained_ae_64):
  ae_dir, out = _encode_test_split(tmp_path, trained_ae_64)
  sd = common.tiny_config(**{
      "dataset.name": f"latents:{out}", "dataset.split": "test",
      "dataset.image_size": 8, "dataset.channels": 8,
      "dataset.random_flip": False, "model.patch_size": 1,
      "total_steps": 1, "num_samples": 0, "eval_batches": 0})
  sd.diffusion.sample_steps = 2
  run = str(tmp_path / "sd")
  trainer.train_and_evaluate(sd, run)
  samples = tmp_path / "samples"
  sample_lib.sample_run(sd, run, num=8, out=str(samples), batch_size=8,
                        log=lambda _: None)
  record = json.loads((samples / "sampling.json").read_text())
  assert record["decoder_step"] == 2  # The autoencoder's checkpoint.
  # PNGs decoded by another autoencoder step are other images: refused.
  record["decoder_step"] = 1
  (samples / "sampling.json").write_text(json.dumps(record))
  with pytest.raises(ValueError, match="latents decoded by autoencoder step "
                     "1, this command decodes with step 2"):
    sample_lib.sample_run(sd, run, num=8, out=str(samples), batch_size=8,
                          log=lambda _: None)
  # Latents whose autoencoder run is gone: named, not "config.json not
  # found".
  moved = str(tmp_path / "latents_moved")
  shutil.copytree(out, moved)
  meta_path = os.path.join(moved, "test", "latents.json")
  meta = json.load(open(meta_path))
  # Resolved when written (a relative --workdir decoded from elsewhere was
  # "gone"), and the weights' digest recorded.
  assert meta["autoencoder"] == os.path.realpath(ae_dir)
  assert len(meta["autoencoder_weights"]) == 16
  meta["autoencoder"] = meta["producer"]["autoencoder"] = str(
      tmp_path / "gone")
  json.dump(meta, open(meta_path, "w"))
  gone = sd.dataset.copy_and_resolve_references()
  gone.name = f"latents:{moved}"
  with pytest.raises(ValueError, match="was encoded by the autoencoder run "
                     ".*gone, which is gone; restore that run or re-encode"):
    latent_decode.make_decoder(gone, None)
  # Training with sample grids refuses it before compiling (no checkpoint).
  with pytest.raises(ValueError, match="which is gone"):
    trainer.train_and_evaluate(
        common.tiny_config(**{"dataset.name": f"latents:{moved}",
                              "dataset.split": "test",
                              "dataset.image_size": 8, "dataset.channels": 8,
                              "dataset.random_flip": False,
                              "model.patch_size": 1, "total_steps": 1,
                              "num_samples": 8, "eval_batches": 0}),
        str(tmp_path / "sd_gone"))
  assert not (tmp_path / "sd_gone" / "checkpoints").exists()
  # The same path and step with other weights (the run replaced): refused,
  # where it decoded noise.
  meta["autoencoder"] = meta["producer"]["autoencoder"] = os.path.realpath(
      ae_dir)
  meta["autoencoder_weights"] = "0" * 16
  json.dump(meta, open(meta_path, "w"))
  with pytest.raises(ValueError, match="step 2 is not the autoencoder that "
                     "encoded .* \\(its weights differ"):
    latent_decode.make_decoder(gone, None)


def test_tools_use_the_devices_they_have(tmp_path, trained_ae_64):
  config, ae_dir = trained_ae_64
  fits = config.copy_and_resolve_references()
  fits.mesh = ml_collections.ConfigDict(dict(data=2, fsdp=4, tensor=1))
  assert ae_runs.on_these_devices(fits) is fits
  # Trained on 16 devices, encoded or decoded on these 8.
  bigger = config.copy_and_resolve_references()
  bigger.mesh = ml_collections.ConfigDict(dict(data=4, fsdp=4, tensor=1))
  moved = ae_runs.on_these_devices(bigger)
  assert dict(moved.mesh) == {"data": -1, "fsdp": 1, "tensor": 1}
  assert dict(bigger.mesh)["data"] == 4  # The run's config is left alone.
  assert moved.model.to_dict() == bigger.model.to_dict()
  # encode takes such a run's config as it is.
  meta = encode_lib.encode_split(
      bigger, ae_dir, data="jaxgen_shapes", split="test",
      out=str(tmp_path / "latents"), image_size=64, data_dir=common.DATA_DIR,
      batch_size=64, shard_size=512, log=lambda _: None)
  assert meta["num_examples"] == 512


def test_sampling_an_autoencoder_run_is_refused_before_writing(
    tmp_path, trained_ae_64):
  config, ae_dir = trained_ae_64
  out = tmp_path / "s"
  with pytest.raises(ValueError, match="an autoencoder run has nothing to "
                     "sample"):
    sample_lib.sample_run(config, ae_dir, num=8, out=str(out), batch_size=8,
                          log=lambda _: None)
  # No sampling.json left to refuse the next, valid command on the folder.
  assert not out.exists()


def test_resuming_onto_re_encoded_latents_is_refused(tmp_path, trained_ae_64,
                                                     monkeypatch):
  ae_dir, out = _encode_test_split(tmp_path, trained_ae_64)

  def run_config(steps):
    return common.tiny_config(**{
        "dataset.name": f"latents:{out}", "dataset.split": "test",
        "dataset.image_size": 8, "dataset.channels": 8,
        "dataset.random_flip": False, "model.patch_size": 1,
        "total_steps": steps, "num_samples": 0, "eval_batches": 0})

  run = str(tmp_path / "sd")
  trainer.train_and_evaluate(run_config(1), run)
  # The same latents: the run extends.
  assert trainer.train_and_evaluate(run_config(2), run)["step"] == 2
  # Encoded again by other weights (the folder deleted and rewritten).
  meta_path = os.path.join(out, "test", "latents.json")
  meta = json.load(open(meta_path))
  meta["autoencoder_weights"] = "f" * 16
  json.dump(meta, open(meta_path, "w"))

  def no_compile(*args, **kwargs):
    raise AssertionError("compiled before refusing the latents")

  # Refused before compiling (from the newest checkpoint's extras).
  monkeypatch.setattr(trainer, "compile_step", no_compile)
  with pytest.raises(ValueError, match=r"latents:.* was encoded again since "
                     r"checkpoint 2 \(autoencoder_weights .* then, 'ffff.*' "
                     r"now\); resume needs the latents it trained on"):
    trainer.train_and_evaluate(run_config(3), run)
  # Nothing trained or saved on the new latents.
  assert max(checks.committed_steps(os.path.join(run, "checkpoints"))) == 2
  # jaxgen.sample decoded them with the new autoencoder, silently.
  with pytest.raises(ValueError, match=r"latents:.* is not what checkpoint 2 "
                     r"trained on \(another autoencoder encoded it: "
                     r"autoencoder_weights .*\); its samples would be decoded "
                     "by the wrong autoencoder"):
    sample_lib.sample_run(run_config(2), run, num=8,
                          out=str(tmp_path / "s"), batch_size=8,
                          log=lambda _: None)
  assert not (tmp_path / "s").exists()
