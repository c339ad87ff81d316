r"""Reruns the simple-diffusion experiments from scratch (CPU, ~65 min).

  (a) shifted vs unshifted logSNR schedule at 128 px, and at 64 px (with a
      patch-only U-ViT and with the `tiny` preset's conv U-ViT);
  (b) multiscale loss on vs off at 128 px (the largest size the CPU allows),

each at equal compute (same U-ViT, batch, steps, seed: same training FLOPs).
Training losses are not comparable across schedules or loss definitions, so
every arm is scored (1) by its held-out denoising error at fixed logSNRs and
(2) on its *samples* with one fixed network: a small shape classifier trained
here on the embedded dataset (`jaxgen.eval.classifier`): Fréchet distance of
its features to the real training images, and its accuracy on
class-conditional samples, with bootstrap uncertainty. With
--inception_weights=inception_fid.npz the samples are also scored with the
standard Inception FID / KID / IS against real training images (results.json
"inception" per arm); without it the script says so and uses the classifier.

  python -m experiments.simple_diffusion.run --fresh   # everything
  python -m experiments.simple_diffusion.run --steps=20 --num_samples=64 \
      --workdir=/tmp/sd_smoke --out=/tmp/sd_smoke/out  # a smoke run

Phases are cached in --workdir (checkpoints, samples.npz, ...; git-ignored):
an interrupted run picks up where it stopped unless --fresh is given. The
figures and results.json go to --out (default: this folder).
"""

import dataclasses
import functools
import json
import os
import resource
import shutil
import sys
import threading
import time

from absl import app
from absl import flags
from absl import logging

HERE = os.path.dirname(os.path.abspath(__file__))

# pylint: disable=g-import-not-at-top,wrong-import-position
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np

from configs import simple_diffusion as sd_config
from experiments.simple_diffusion import plots
from jaxgen import families  # pylint: disable=unused-import  (registers them)
from jaxgen import jsonl
from jaxgen.data import pipeline as data_pipeline
from jaxgen.diffusion import losses
from jaxgen.eval import classifier
from jaxgen.eval import distances
from jaxgen.eval import features
from jaxgen.eval import grids
from jaxgen.train import run_state
from jaxgen.train import trainer
# pylint: enable=g-import-not-at-top,wrong-import-position

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", os.path.join(HERE, "workdirs"),
                    "Checkpoints, samples and the classifier (git-ignored).")
flags.DEFINE_string("out", HERE, "Where results.json and the PNGs go.")
flags.DEFINE_bool("fresh", False, "Delete --workdir first (rerun all).")
flags.DEFINE_integer("steps", 1000, "Training steps of every arm.")
flags.DEFINE_integer("batch_size", 32, "Training batch of every arm.")
flags.DEFINE_integer("num_samples", 256, "Samples per arm for the metrics "
                     "(a multiple of 64, the sampling batch).")
flags.register_validator(
    "num_samples", lambda v: v >= 64 and v % 64 == 0,
    "must be a positive multiple of 64 (the sampling batch), e.g. 64 or 256.")
flags.DEFINE_integer("sample_steps", 24, "DDPM steps of the metric samples.")
flags.DEFINE_integer("classifier_steps", 0,
                     "Shape-classifier steps (0: ClassifierConfig's default).")
flags.DEFINE_list("arms", [], "Only these arms (default: all).")
flags.DEFINE_string("inception_weights", "", "inception_fid.npz: also score "
                    "samples with Inception FID / KID / IS (README: "
                    "Evaluation); without it the shape classifier only.")

# Every arm of an experiment: the same U-ViT (p = side/16 patches, one level
# of max(64, 3p^2) channels, residual skip, a 2-block 128-wide transformer on
# 8x8 tokens), batch, steps and seed: 0.35 GFLOP/training example at 128 px,
# 0.19 at 64 px. (A first attempt with 8x8 patches into 64 channels could not
# denoise, see `arm_config`; a 32-channel, 8-group variant took 406 s to
# compile on XLA:CPU.)
ARMS = {
    "r128_cosine": dict(size=128, schedule="cosine"),
    "r128_shifted64": dict(size=128, schedule="shifted", noise_size=64),
    "r128_shifted64_multiscale": dict(size=128, schedule="shifted",
                                      noise_size=64, multiscale=True),
    "r64_cosine": dict(size=64, schedule="cosine"),
    "r64_shifted32": dict(size=64, schedule="shifted", noise_size=32),
    # The `tiny` preset's conv U-ViT (ResBlock levels of 32 and 64 channels
    # at 32x32 and 16x16 after a 2x2 patch, transformer at 8x8): 3.2x the
    # FLOPs of the arms above, but it mixes neighbouring patches from the
    # first layer (the patch-only arms never formed shapes).
    "r64conv_cosine": dict(size=64, schedule="cosine", arch="conv"),
    "r64conv_shifted32": dict(size=64, schedule="shifted", noise_size=32,
                              arch="conv"),
}
# Experiment -> (baseline arm, the paper's recommendation).
EXPERIMENTS = {
    "a128_shift": ("r128_cosine", "r128_shifted64"),
    "a64_shift": ("r64_cosine", "r64_shifted32"),
    "b128_multiscale": ("r128_shifted64", "r128_shifted64_multiscale"),
    "a64conv_shift": ("r64conv_cosine", "r64conv_shifted32"),
}
SAMPLE_BATCH = 64
SAMPLE_SEED = 2024
NUM_CLASSES = 8
PROBE_LOGSNRS = tuple(float(x) for x in range(-10, 11, 2))
CLF = classifier.ClassifierConfig()


_LOAD_SAMPLES = []  # (time, 1-minute load average), every 15 s.


def _sample_load():
  while True:
    _LOAD_SAMPLES.append((time.time(), os.getloadavg()[0]))
    time.sleep(15)


class Meter:
  """Wall time, CPU time of this process and machine load over a phase.

  The machine is shared: the mean 1-minute load average over the phase (on 2
  cores) says how much of the wall time was waiting for other jobs.
  """

  def __init__(self):
    self.t0 = time.time()
    self.cpu0 = self._cpu()

  @staticmethod
  def _cpu():
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime

  def done(self):
    loads = [l for t, l in list(_LOAD_SAMPLES) if t >= self.t0]
    loads = loads or [os.getloadavg()[0]]
    return {"wall_s": round(time.time() - self.t0, 1),
            "cpu_s": round(self._cpu() - self.cpu0, 1),
            "load1_mean": round(float(np.mean(loads)), 2),
            "load1_max": round(float(np.max(loads)), 2)}


def arm_config(name: str):
  """The run config of arm `name` (shapes128 preset, shrunk for the CPU)."""
  arm = ARMS[name]
  size = arm["size"]
  c = sd_config.get_config("shapes128")
  c.dataset.image_size = size
  patch = size // 16
  c.model.patch_size = patch
  # The first feature map must hold as many numbers as the image (channels
  # >= 3 p^2), else v-prediction cannot remove the noise outside the head's
  # span and samples stay noisy; SiD2's residual skip carries the stem output
  # past the transformer, so no ResBlocks are needed at that level.
  c.model.channels = (max(64, 3 * patch * patch),)
  c.model.num_res_blocks = (0,)
  c.model.skip_style = "residual"
  c.model.transformer_width = 128
  c.model.transformer_depth = 2
  if arm.get("arch") == "conv":
    tiny = sd_config.get_config("tiny").model
    for field in ("channels", "num_res_blocks", "transformer_width",
                  "transformer_depth", "num_heads", "cond_dim", "freq_dim",
                  "skip_style"):
      c.model[field] = tiny[field]
    c.model.patch_size = size // 32
  c.diffusion.schedule = arm["schedule"]
  if arm["schedule"] == "shifted":
    c.diffusion.schedules.shifted.noise_size = arm["noise_size"]
  c.diffusion.multiscale = arm.get("multiscale", False)
  c.diffusion.multiscale_min_size = 32
  c.diffusion.sampler = "ddpm"
  c.diffusion.sample_steps = FLAGS.sample_steps
  c.batch_size = FLAGS.batch_size
  c.total_steps = FLAGS.steps
  c.optimizer.learning_rate = 2e-3
  c.optimizer.warmup_steps = max(1, FLAGS.steps // 10)
  # An EMA horizon of ~50 steps: a 0.995 decay would still average in the
  # first, untrained fifth of these short runs.
  c.ema_decay = 0.98
  c.log_every_steps = max(1, min(10, FLAGS.steps // 5))
  # A multiple of the log interval: evaluations run at log steps.
  c.eval_every_steps = c.log_every_steps * max(
      1, min(50, FLAGS.steps // 2) // c.log_every_steps)
  c.eval_batches = 2
  c.checkpoint_every_steps = FLAGS.steps
  c.keep_checkpoints = 1
  c.num_samples = 0  # The metric samples below replace the trainer's grid.
  c.seed = 0
  return c


def train_arm(name: str, workdir: str):
  """Trains one arm (resumes from its checkpoint); returns its summary."""
  path = os.path.join(workdir, "train_summary.json")
  if os.path.exists(path):
    with open(path) as f:
      return json.load(f)
  config = arm_config(name)
  meter = Meter()
  last = trainer.train_and_evaluate(config, workdir)
  rows = jsonl.read(os.path.join(workdir, "metrics.jsonl"))
  info = _data_info(config)
  s = trainer.setup(config, data_info=info)
  summary = dict(meter.done(), arm=name, **ARMS[name],
                 steps=int(config.total_steps),
                 batch_size=int(config.batch_size),
                 flops_per_example=s.flops_per_example,
                 examples_seen=rows[-1]["examples_seen"],
                 flops_seen=rows[-1]["flops_seen"],
                 final_loss=last.get("loss"),
                 final_eval_loss=rows[-1].get("eval_loss"))
  with open(path, "w") as f:
    json.dump(summary, f, indent=1)
  return summary


def _data_info(config):
  _, info = data_pipeline.build_input(
      config.dataset, global_batch_size=config.batch_size, seed=0,
      process_index=0, process_count=1, train=False)
  return info


def num_params(name: str) -> int:
  """U-ViT parameter count of an arm (abstract init, nothing compiled)."""
  config = arm_config(name)
  s = trainer.setup(config, data_info=_data_info(config))
  with jax.set_mesh(s.mesh), nn.logical_axis_rules(s.rules):
    _, abstract, _ = trainer.abstract_state(s, jax.random.key(0))
  return int(sum(x.size for x in jax.tree.leaves(abstract.params["model"])))


def restore(name: str, workdir: str):
  """(setup, state) of a trained arm."""
  config = arm_config(name)
  s, step, state = run_state.restore(config, workdir)
  if step != config.total_steps:
    raise RuntimeError(f"{name}: checkpoint at step {step}, expected "
                       f"{config.total_steps}.")
  return s, state


def sample_arm(name: str, workdir: str):
  """Draws the metric samples (EMA params; same seeds for every arm)."""
  path = os.path.join(workdir, "samples.npz")
  if os.path.exists(path):
    return dict(np.load(path))
  meter = Meter()
  s, state = restore(name, workdir)
  with jax.set_mesh(s.mesh), nn.logical_axis_rules(s.rules):
    fn = jax.jit(functools.partial(s.objective.sample, num=SAMPLE_BATCH))
    labels = jnp.arange(SAMPLE_BATCH, dtype=jnp.int32) % NUM_CLASSES
    images = []
    for i in range(FLAGS.num_samples // SAMPLE_BATCH):
      rng = jax.random.fold_in(jax.random.key(SAMPLE_SEED), i)
      images.append(np.asarray(jax.device_get(fn(state, rng,
                                                   labels=labels))))
    probe = probe_eps_mse(s, state, name)
  images = np.concatenate(images)
  out = {"images": images.astype(np.float16),
         "labels": np.tile(np.asarray(labels), len(images) // SAMPLE_BATCH),
         "probe_eps_mse": probe,
         "meter": np.array(json.dumps(meter.done()))}
  np.savez(path, **out)
  return out


def probe_eps_mse(s, state, name: str) -> np.ndarray:
  """ε-MSE of the EMA model at fixed logSNRs on fixed held-out images.

  The network is conditioned on logSNR, so this per-noise-level error is
  comparable across schedules, unlike the training loss.
  """
  config = arm_config(name)
  it, _ = data_pipeline.build_input(
      config.dataset, global_batch_size=64, seed=0, process_index=0,
      process_count=1, split="test", train=False)
  batch = next(it)
  x = jnp.asarray(batch["image"])
  labels = jnp.asarray(batch["label"], jnp.int32)
  params = state.ema_params["model"]
  model = s.objective.model

  @jax.jit
  def mse_at(logsnr, eps):
    v_fn = lambda z, l: model.apply({"params": params}, z, l, labels,
                                    train=False)
    t = jnp.full((x.shape[0],), logsnr)
    # logsnr_fn = identity: the "times" passed in are the logSNRs themselves.
    _, aux = losses.diffusion_loss_at(v_fn, x, t, eps,
                                      logsnr_fn=lambda u: u)
    return aux["eps_mse"]

  eps = jax.random.normal(jax.random.key(7), x.shape)
  return np.array([float(mse_at(l, eps)) for l in PROBE_LOGSNRS])


def train_or_load_classifier(workdir: str):
  """The shape classifier and its accuracy on real test images."""
  path = os.path.join(workdir, "classifier.msgpack")
  info_path = os.path.join(workdir, "classifier.json")
  if os.path.exists(path) and os.path.exists(info_path):
    with open(info_path) as f:
      return classifier.load_params(path, CLF), json.load(f)
  meter = Meter()
  cfg = CLF
  if FLAGS.classifier_steps:
    cfg = dataclasses.replace(CLF, steps=FLAGS.classifier_steps)
  params, info = classifier.train_classifier(cfg, train_sizes=(64, 128))
  for size in (64, 128):
    images, labels = classifier.load_split(size, "test", CLF.input_size)
    _, logits = classifier.embed(params, images, CLF)
    info[f"test_accuracy_{size}"] = float(
        (logits.argmax(-1) == labels).mean())
    info[f"test_n_{size}"] = int(len(labels))
  info.update(meter.done(), config=dataclasses.asdict(cfg))
  classifier.save_params(params, path)
  with open(info_path, "w") as f:
    json.dump(info, f, indent=1)
  return params, info


def real_grid(size: int, out: str):
  """64 real test images, column c holding class c (as the sample grids)."""
  cfg = arm_config("r128_cosine").dataset
  cfg.image_size = size
  it, _ = data_pipeline.build_input(cfg, global_batch_size=256, seed=0,
                                    process_index=0, process_count=1,
                                    split="test", train=False)
  batch = next(it)
  picks = [np.flatnonzero(batch["label"] == c)[:8] for c in range(NUM_CLASSES)]
  order = np.stack(picks, axis=1).reshape(-1)  # row-major: column = class
  grids.save_grid(batch["image"][order], os.path.join(out, f"real_{size}.png"),
                  ncols=8)


def reference_stats(params, workdir: str, size: int, num: int):
  """Feature stats of real train images and the real-vs-real floor."""
  path = os.path.join(workdir, f"reference_{size}.npz")
  if not os.path.exists(path):
    train_x, _ = classifier.load_split(size, "train", CLF.input_size,
                                       max_examples=4096)
    feats, _ = classifier.embed(params, train_x, CLF)
    test_x, test_y = classifier.load_split(size, "test", CLF.input_size,
                                           max_examples=num)
    test_f, test_l = classifier.embed(params, test_x, CLF)
    np.savez(path, feats=feats, test_f=test_f, test_l=test_l, test_y=test_y)
  ref = np.load(path)
  stats = distances.gaussian_stats(ref["feats"])
  floor = classifier.sample_metrics(ref["test_f"], ref["test_l"],
                                    ref["test_y"], stats)
  return stats, floor, len(ref["feats"])


def _brief(m):
  lo, hi = np.percentile(m["fd_boot"], [2.5, 97.5])
  return {"n": m["n"], "fd": m["fd"], "fd_boot_std": m["fd_boot_std"],
          "fd_ci95": [float(lo), float(hi)], "accuracy": m["accuracy"],
          "accuracy_boot_std": m["accuracy_boot_std"],
          "per_class_accuracy": m["per_class_accuracy"]}


def compare(m_base, m_new):
  """Bootstrap difference new - base (independent resamples)."""
  dfd = np.array(m_new["fd_boot"]) - np.array(m_base["fd_boot"])
  dacc = np.array(m_new["accuracy_boot"]) - np.array(m_base["accuracy_boot"])
  return {"delta_fd": m_new["fd"] - m_base["fd"],
          "delta_fd_ci95": [float(v) for v in np.percentile(dfd, [2.5, 97.5])],
          "p_new_lower_fd": float((dfd < 0).mean()),
          "delta_accuracy": m_new["accuracy"] - m_base["accuracy"],
          "delta_accuracy_ci95": [float(v) for v in
                                  np.percentile(dacc, [2.5, 97.5])],
          "p_new_higher_accuracy": float((dacc > 0).mean())}


def _shift(arm) -> str:
  if arm["schedule"] == "cosine":
    return "0 (cosine)"
  return f"{2 * np.log(arm['noise_size'] / arm['size']):+.3f}"


def write_tables(results, out: str):
  """results_tables.md: setup, metrics and comparisons as markdown."""
  lines = ["# Simple-diffusion experiments: generated tables", "",
           "Written by run.py from results.json; see report.md.", "",
           "## Setup (every arm)", "",
           "| arm | px | logSNR shift | multiscale | params | batch | steps "
           "| examples | train FLOPs | train wall s | train CPU s | mean load "
           "| sampling wall s |", "|" + "---|" * 13]
  for name, r in results["arms"].items():
    t, a = r["train"], r["config"]
    lines.append(
        f"| {name} | {a['size']} | {_shift(a)} | "
        f"{'on' if a.get('multiscale') else 'off'} | {r['params']:,} | "
        f"{t['batch_size']} | {t['steps']} | {int(t['examples_seen']):,} | "
        f"{t['flops_seen']:.3g} | {t['wall_s']:.0f} | {t['cpu_s']:.0f} | "
        f"{t['load1_mean']:.1f} | {r['sampling']['wall_s']:.0f} |")
  smp = results["sampler"]
  lines += ["", f"## Sample quality ({smp['num_samples']} class-conditional "
            f"samples per arm, {smp['num_samples'] // NUM_CLASSES} per class; "
            f"{smp['name']} {smp['steps']} steps, EMA params, no guidance, "
            f"seed {smp['seed']})", "",
            "± is 1.96 × the stratified-bootstrap std (sampling noise only; "
            "one training seed per arm).", "",
            "| arm | classifier FD ↓ | class accuracy ↑ |", "|---|---|---|"]
  rows = [(n, r["metrics"]) for n, r in results["arms"].items()]
  rows += [(f"real test images {k}px (floor)", m)
           for k, m in results["real_floor"].items()]
  for name, m in rows:
    lines.append(f"| {name} | {m['fd']:.2f} ± {1.96 * m['fd_boot_std']:.2f} "
                 f"| {m['accuracy']:.3f} ± "
                 f"{1.96 * m['accuracy_boot_std']:.3f} |")
  lines += ["", "## Comparisons (paper's recommendation minus baseline)", "",
            "| experiment | baseline → recommended | ΔFD [95% CI] "
            "| P(FD lower) | Δaccuracy [95% CI] | P(accuracy higher) |",
            "|---|---|---|---|---|---|"]
  for exp, c in results["comparisons"].items():
    a, b = EXPERIMENTS[exp]
    lo, hi = c["delta_fd_ci95"]
    alo, ahi = c["delta_accuracy_ci95"]
    lines.append(
        f"| {exp} | {a} → {b} | {c['delta_fd']:+.2f} [{lo:+.2f}, {hi:+.2f}] "
        f"| {c['p_new_lower_fd']:.2f} | {c['delta_accuracy']:+.3f} "
        f"[{alo:+.3f}, {ahi:+.3f}] | {c['p_new_higher_accuracy']:.2f} |")
  lines += ["", "## Held-out ε-MSE of the EMA model at fixed logSNR", "",
            "| arm | " + " | ".join(f"{l:+.0f}" for l in PROBE_LOGSNRS) + " |",
            "|---|" + "---|" * len(PROBE_LOGSNRS)]
  for name, r in results["arms"].items():
    lines.append(f"| {name} | " + " | ".join(
        f"{v:.3f}" for v in r["probe_eps_mse"]) + " |")
  # The same errors in image space, x-MSE = ε-MSE / SNR: at low logSNR this
  # is what sampling's first steps rely on (predicting the mean image gives
  # the data variance), and the ε-loss weights it by SNR, i.e. hardly at all.
  lines += ["", "## Held-out x-MSE (ε-MSE · e^−logSNR) of the EMA model", "",
            "| arm | " + " | ".join(f"{l:+.0f}" for l in PROBE_LOGSNRS) + " |",
            "|---|" + "---|" * len(PROBE_LOGSNRS)]
  for name, r in results["arms"].items():
    lines.append(f"| {name} | " + " | ".join(
        f"{v * np.exp(-l):.3f}" for v, l in zip(r["probe_eps_mse"],
                                                 PROBE_LOGSNRS)) + " |")
  with open(os.path.join(out, "results_tables.md"), "w") as f:
    f.write("\n".join(lines) + "\n")


def main(argv):
  del argv
  unknown = [a for a in FLAGS.arms if a not in ARMS]
  if unknown:
    # Before the classifier and reference statistics, which take minutes.
    print(f"error: --arms={','.join(unknown)} unknown; choose from "
          f"{', '.join(ARMS)}.", file=sys.stderr)
    sys.exit(2)
  logging.set_verbosity(logging.INFO)
  if FLAGS.fresh and os.path.exists(FLAGS.workdir):
    shutil.rmtree(FLAGS.workdir)
  os.makedirs(FLAGS.workdir, exist_ok=True)
  os.makedirs(FLAGS.out, exist_ok=True)
  arms = FLAGS.arms or list(ARMS)
  workdirs = {n: os.path.join(FLAGS.workdir, n) for n in ARMS}
  threading.Thread(target=_sample_load, daemon=True).start()
  total = Meter()

  meter = Meter()
  clf_params, clf_info = train_or_load_classifier(FLAGS.workdir)
  print(f"classifier: {clf_info}  [{meter.done()}]", flush=True)
  refs, floors = {}, {}
  for size in (64, 128):
    refs[size], floor, n_ref = reference_stats(clf_params, FLAGS.workdir,
                                               size, FLAGS.num_samples)
    floors[str(size)] = dict(_brief(floor), n_reference=n_ref)
    print(f"real floor {size}px: {floors[str(size)]}", flush=True)
    real_grid(size, FLAGS.out)

  extractor, inception_refs = None, {}
  if FLAGS.inception_weights:
    extractor = features.FeatureExtractor.from_file(FLAGS.inception_weights)
    for size in (64, 128):
      inception_refs[size] = extractor(classifier.load_split(
          size, "train", size, max_examples=FLAGS.num_samples)[0])[0]
  else:
    print("no --inception_weights: samples are scored with the shape "
          "classifier only", flush=True)

  results = {"arms": {}, "real_floor": floors, "classifier": clf_info,
             "sampler": {"name": "ddpm", "steps": FLAGS.sample_steps,
                         "num_samples": FLAGS.num_samples,
                         "seed": SAMPLE_SEED, "params": "EMA",
                         "guidance_scale": 1.0},
             "probe_logsnrs": PROBE_LOGSNRS}
  full = {}
  for name in arms:
    train = train_arm(name, workdirs[name])
    print(f"trained {name}: {train}", flush=True)
    smp = sample_arm(name, workdirs[name])
    feats, logits = classifier.embed(clf_params, smp["images"], CLF)
    full[name] = classifier.sample_metrics(
        feats, logits, smp["labels"], refs[ARMS[name]["size"]])
    results["arms"][name] = {
        "train": train, "config": ARMS[name],
        "sampling": json.loads(str(smp["meter"])),
        "metrics": _brief(full[name]), "params": num_params(name),
        "probe_eps_mse": [float(v) for v in smp["probe_eps_mse"]]}
    if extractor is not None:
      ref = inception_refs[ARMS[name]["size"]]
      f, l = extractor(smp["images"].clip(-1, 1))
      results["arms"][name]["inception"] = distances.all_metrics(
          distances.gaussian_stats(ref), distances.gaussian_stats(f),
          features_a=ref, features_b=f, logits_b=l)
    print(f"metrics {name}: {results['arms'][name]['metrics']}", flush=True)
    # 16 samples, 2 per class; each column is one class (a 128 px grid of
    # noisy samples barely compresses: 64 would be 3 MB).
    grids.save_grid(smp["images"][:16].astype(np.float32),
                    os.path.join(FLAGS.out, f"samples_{name}.png"), ncols=8)

  results["comparisons"] = {
      exp: compare(full[a], full[b]) for exp, (a, b) in EXPERIMENTS.items()
      if a in full and b in full}
  for exp, (a, b) in EXPERIMENTS.items():
    if a in full and b in full:
      plots.plot_losses(exp, (a, b), workdirs, FLAGS.out)
  if len(results["arms"]) == len(ARMS):
    plots.plot_probe(results, EXPERIMENTS, PROBE_LOGSNRS, FLAGS.out)
    plots.plot_metrics(results, FLAGS.out)
  write_tables(results, FLAGS.out)
  results["total"] = total.done()
  results["command"] = " ".join(["python"] + sys.argv)
  with open(os.path.join(FLAGS.out, "results.json"), "w") as f:
    json.dump(results, f, indent=1)
  print(json.dumps(results["comparisons"], indent=1))
  print(f"total: {results['total']}")


if __name__ == "__main__":
  app.run(main)
