r"""Autoencoder experiments on the embedded 64 px shapes (CPU).

  (a) Residual autoencoding: DC-AE with and without the space-to-channel
      shortcuts at f8 / f16 / f32 (latent channels 8 / 16 / 32), equal steps;
      held-out PSNR / SSIM per factor (DC-AE: the gap grows with compression).
  (b) Diffusability: the f8 model of (a) fine-tuned with and without the
      scale-equivariance regulariser from the same checkpoint, equal steps;
      latent high-frequency energy, reconstruction, and the same small latent
      diffusion model trained on each latent space at equal compute: held-out
      diffusion loss and sample quality of the decoded samples (Fréchet
      distance of a fixed shape classifier's features to real test images,
      and its accuracy on the class-conditional samples).
  (c) Haar wavelet vs plain space-to-depth patching in the same small Cosmos
      image autoencoder (equal parameters), equal steps: PSNR / SSIM.

LPIPS and Inception rFID need weight files that are not shipped (VGG16,
Inception); the script reports PSNR / SSIM and the classifier metrics.

  python -m experiments.autoencoders.run                 # everything
  python -m experiments.autoencoders.run --steps=5 --ft_steps=5 \
      --sd_steps=5 --num_samples=32 --workdir=/tmp/ae_smoke \
      --out=/tmp/ae_smoke/out                            # a smoke run

Runs are cached in --workdir (an interrupted run resumes); figures and
results.json go to --out (default: this folder).
"""

import json
import os
import time

from absl import app
from absl import flags
from absl import logging

HERE = os.path.dirname(os.path.abspath(__file__))

# pylint: disable=g-import-not-at-top,wrong-import-position
import flax.linen as nn
import jax
import matplotlib
matplotlib.use("Agg")
import matplotlib.pyplot as plt
import numpy as np

from configs import autoencoder as ae_config
from configs import simple_diffusion as sd_config
from jaxgen import families  # pylint: disable=unused-import  (registers them)
from jaxgen import jsonl
from jaxgen.autoencoders import encode as encode_lib
from jaxgen.autoencoders import runs as ae_runs
from jaxgen.autoencoders import spectrum
from jaxgen.data import pipeline
from jaxgen.eval import classifier
from jaxgen.eval import distances
from jaxgen.eval import grids
from jaxgen.eval import pixels
from jaxgen.eval import sampling
from jaxgen.train import logs
from jaxgen.train import run_state
from jaxgen.train import trainer

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", "/tmp/jaxgen_ae_experiments", "Run cache.")
flags.DEFINE_string("out", HERE, "Figures and results.json.")
flags.DEFINE_string("data_dir", None, "TFDS data dir (default: TFDS').")
flags.DEFINE_integer("steps", 400, "Training steps of every autoencoder "
                     "(the committed results' setting).")
flags.DEFINE_integer("ft_steps", 200, "Fine-tuning steps in (b).")
flags.DEFINE_integer("sd_steps", 800, "Latent diffusion steps in (b).")
flags.DEFINE_integer("num_eval", 512, "Held-out images scored.")
flags.DEFINE_integer("num_samples", 512, "Decoded samples scored in (b).")
for _name in ("steps", "ft_steps", "sd_steps", "num_eval", "num_samples"):
  flags.register_validator(_name, lambda v: v > 0, "must be positive.")

SIZE = 64
FACTORS = (8, 16, 32)
WIDTHS = (16, 32, 64, 64, 64, 64)


def _ae(arch_fields=None, preset="tiny", **fields):
  """The tiny preset at 64 px with `config.model` fields replaced."""
  c = ae_config.get_config(preset)
  c.dataset.image_size = SIZE
  c.dataset.data_dir = FLAGS.data_dir
  c.total_steps = FLAGS.steps
  c.log_every_steps = 50
  c.eval_every_steps = FLAGS.steps
  c.checkpoint_every_steps = 200
  c.eval_batches = 2
  for k, v in (arch_fields or {}).items():
    c.model[k] = v
  for k, v in fields.items():
    node = c
    *path, last = k.split(".")
    for p in path:
      node = node[p]
    node[last] = v
  return c


def dc_ae_fields(factor: int, shortcuts: bool):
  """A small DC-AE of compression `factor`, latent channels = factor."""
  n = int(np.log2(factor)) + 1
  kinds = tuple("ResBlock" if i < 2 else "EfficientViTBlock"
                for i in range(n))
  scales = tuple(() if i < 2 else (5,) for i in range(n))
  return dict(
      latent_channels=factor, attention_head_dim=8,
      encoder_block_types=kinds, decoder_block_types=kinds,
      encoder_block_out_channels=WIDTHS[:n],
      decoder_block_out_channels=WIDTHS[:n],
      encoder_layers_per_block=(1,) * n, decoder_layers_per_block=(1,) * n,
      encoder_qkv_multiscales=scales, decoder_qkv_multiscales=scales,
      decoder_norm_types="rms_norm", decoder_act_fns="silu",
      encoder_out_shortcut=shortcuts, decoder_in_shortcut=shortcuts,
      stage_shortcuts=shortcuts)


def train(name: str, config) -> str:
  """Trains (or resumes, or finds finished) the run `name`."""
  workdir = os.path.join(FLAGS.workdir, name)
  t0 = time.time()
  trainer.train_and_evaluate(config, workdir)
  logging.info("%s: %.0f s", name, time.time() - t0)
  return workdir


def test_images(n: int) -> np.ndarray:
  """The first n held-out 64 px images, in order, in [-1, 1]."""
  c = ae_config.get_config("tiny").dataset
  c.image_size, c.data_dir, c.random_flip = SIZE, FLAGS.data_dir, False
  it, _ = pipeline.build_input(c, global_batch_size=64, seed=0,
                               process_index=0, process_count=1,
                               split="test", train=False, repeat=False)
  out = []
  for batch in it:
    out.append(np.asarray(batch["image"]))
    if sum(len(b) for b in out) >= n:
      break
  return np.concatenate(out)[:n]


def recon_scores(workdir: str, images: np.ndarray) -> dict:
  """Held-out PSNR / SSIM, latent HF energy, reconstructions (first 16)."""
  _, s, step, state = ae_runs.restore_run(workdir)
  ae = s.objective
  with jax.set_mesh(s.mesh), nn.logical_axis_rules(s.rules):
    rec = jax.jit(lambda st, x: ae.reconstruct(st, {"image": x}))
    enc = jax.jit(ae.encode)
    psnr, ssim, latents, shown = [], [], [], None
    for i in range(0, len(images), 64):
      x = images[i:i + 64]
      y = rec(state, x)
      psnr.append(np.asarray(pixels.psnr(x, y)))
      ssim.append(np.asarray(pixels.ssim(x, y)))
      latents.append(np.asarray(enc(state, x)))
      shown = np.asarray(y[:16]) if shown is None else shown
  lat = np.concatenate(latents)
  out = {"step": step, "psnr": float(np.mean(np.concatenate(psnr))),
         "ssim": float(np.mean(np.concatenate(ssim))),
         "params": ae.num_params(state)["params"],
         "flops_per_example": ae.flops_per_example()}
  if lat.shape[1] >= spectrum.BLOCK:
    out["latent_spectrum"] = spectrum.block_dct_spectrum(lat)
  return out, shown


def residual_autoencoding(images, results):
  """(a): shortcuts on / off at each compression factor."""
  rows, shown = {}, {}
  for f in FACTORS:
    for on in (True, False):
      name = f"a_f{f}_{'shortcuts' if on else 'plain'}"
      wd = train(name, _ae(dc_ae_fields(f, on)))
      rows[name], shown[name] = recon_scores(wd, images)
      logging.info("%s: %s", name, {k: v for k, v in rows[name].items()
                                    if k != "latent_spectrum"})
  results["residual_autoencoding"] = rows
  fig, ax = plt.subplots(1, 2, figsize=(9, 3.5))
  for on, style in ((True, "o-"), (False, "s--")):
    key = "shortcuts" if on else "plain"
    ps = [rows[f"a_f{f}_{key}"]["psnr"] for f in FACTORS]
    ss = [rows[f"a_f{f}_{key}"]["ssim"] for f in FACTORS]
    ax[0].plot(FACTORS, ps, style, label=f"DC-AE {key}")
    ax[1].plot(FACTORS, ss, style, label=f"DC-AE {key}")
  for a, name in zip(ax, ("held-out PSNR (dB)", "held-out SSIM")):
    a.set_xscale("log", base=2)
    a.set_xticks(FACTORS, [f"f{f}" for f in FACTORS])
    a.set_xlabel("spatial compression (latent channels = f)")
    a.set_title(name)
    a.legend()
  fig.suptitle(f"Residual autoencoding, 64 px shapes, {FLAGS.steps} steps")
  fig.tight_layout()
  fig.savefig(os.path.join(FLAGS.out, "residual_autoencoding.png"), dpi=110)
  plt.close(fig)
  grid = np.concatenate([images[:8]] + [shown[f"a_f{f}_{k}"][:8]
                                         for f in FACTORS
                                         for k in ("shortcuts", "plain")])
  grids.save_grid(grid, os.path.join(FLAGS.out, "reconstructions.png"),
                  ncols=8)


def _classifier():
  path = os.path.join(FLAGS.workdir, "classifier.npz")
  if os.path.exists(path):
    return classifier.load_params(path)
  params, _ = classifier.train_classifier(classifier.ClassifierConfig())
  classifier.save_params(params, path)
  return params


def diffusability(images, results):
  """(b): fine-tune +- SE, spectra, latent diffusion on each."""
  base = os.path.join(FLAGS.workdir, "a_f8_shortcuts")
  cls = _classifier()
  real_feats, _ = classifier.embed(cls, images)
  ref = distances.gaussian_stats(real_feats)
  rows, spectra = {}, {}
  for se in (0.0, 0.25):
    tag = "se" if se else "no_se"
    cfg = _ae(dc_ae_fields(8, True), init_from=base,
              total_steps=FLAGS.ft_steps, eval_every_steps=FLAGS.ft_steps,
              **{"autoencoder.se_weight": se})
    wd = train(f"b_ft_{tag}", cfg)
    row, _ = recon_scores(wd, images)
    spectra[tag] = row.pop("latent_spectrum")
    row["latent_hf_fraction"] = spectra[tag]["hf_fraction"]
    lat_dir = os.path.join(FLAGS.workdir, f"b_latents_{tag}")
    for split in ("train", "test"):
      encode_lib.encode_split(cfg, wd, data="jaxgen_shapes", split=split,
                              out=lat_dir, image_size=SIZE,
                              data_dir=FLAGS.data_dir, batch_size=64,
                              shard_size=1024, log=logging.info)
    sd = sd_config.get_config("tiny")
    sd.dataset.name = f"latents:{lat_dir}"
    sd.dataset.image_size, sd.dataset.channels = 8, 8
    sd.dataset.random_flip = False
    sd.model.patch_size = 1
    sd.total_steps = FLAGS.sd_steps
    sd.eval_every_steps = FLAGS.sd_steps
    sd.eval_batches = 8
    sd.num_samples = 0
    sd.checkpoint_every_steps = 400
    sd_dir = train(f"b_sd_{tag}", sd)
    last = [r for r in jsonl.read(os.path.join(sd_dir, "metrics.jsonl"))
            if "eval_loss" in r][-1]
    row["sd_eval_loss"] = float(last["eval_loss"])
    s, _, state = run_state.restore(sd, sd_dir)
    row["sd_train_flops"] = s.flops_per_example * sd.batch_size * FLAGS.sd_steps
    with jax.set_mesh(s.mesh), nn.logical_axis_rules(s.rules):
      draw = sampling.make_batch_sampler(s.objective, s.mesh, 64, seed=1)
      # Whole batches of 64, then the first num_samples of them.
      samples = np.concatenate([draw(state, k) for k in
                                range(-(-FLAGS.num_samples // 64))])
      samples = samples[:FLAGS.num_samples]
    x = samples.astype(np.float32) / 127.5 - 1.0
    feats, logits = classifier.embed(cls, x)
    labels = sampling.labels_of(len(x), s.objective)
    m = classifier.sample_metrics(feats, logits, labels, ref)
    row.update(sample_fd=m["fd"], sample_fd_std=m["fd_boot_std"],
               sample_accuracy=m["accuracy"],
               sample_accuracy_std=m["accuracy_boot_std"])
    grids.save_grid(x[:32], os.path.join(FLAGS.out,
                                         f"latent_samples_{tag}.png"),
                    ncols=8)
    rows[tag] = row
    logging.info("%s: %s", tag, row)
  results["diffusability"] = rows
  spectra["images"] = spectrum.block_dct_spectrum(images)
  spectrum.plot(spectra, os.path.join(FLAGS.out, "spectra.png"))


def wavelet_vs_patchify(images, results):
  """(c): the same Cosmos image AE with Haar or plain patching."""
  rows = {}
  for method in ("haar", "rearrange"):
    wd = train(f"c_{method}", _ae(preset="tiny_cosmos",
                                  **{"model.patch_method": method}))
    rows[method], _ = recon_scores(wd, images)
    rows[method].pop("latent_spectrum", None)
  results["wavelet_vs_patchify"] = rows
  fig, ax = plt.subplots(1, 2, figsize=(7, 3))
  names = list(rows)
  for a, key in zip(ax, ("psnr", "ssim")):
    a.bar(names, [rows[n][key] for n in names], color=["C0", "C1"])
    a.set_title(f"held-out {key.upper()}")
  fig.suptitle(f"Cosmos-style AE (f8, patch 2), {FLAGS.steps} steps")
  fig.tight_layout()
  fig.savefig(os.path.join(FLAGS.out, "wavelet_vs_patchify.png"), dpi=110)
  plt.close(fig)


def main(argv):
  del argv
  logs.quiet_libraries(FLAGS.verbosity)
  os.makedirs(FLAGS.out, exist_ok=True)
  t0 = time.time()
  images = test_images(FLAGS.num_eval)
  results = {"flags": {k: FLAGS[k].value for k in (
      "steps", "ft_steps", "sd_steps", "num_eval", "num_samples")}}
  residual_autoencoding(images, results)
  diffusability(images, results)
  wavelet_vs_patchify(images, results)
  results["wall_seconds"] = time.time() - t0
  with open(os.path.join(FLAGS.out, "results.json"), "w",
            encoding="utf-8") as f:
    json.dump(results, f, indent=1, default=float)
  print(f"done in {results['wall_seconds'] / 60:.1f} min; wrote "
        f"{FLAGS.out}/results.json")


if __name__ == "__main__":
  app.run(main)
