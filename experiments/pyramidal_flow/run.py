r"""Pyramidal Flow Matching experiments on the embedded shapes (CPU).

  (a) Image pyramid vs full-resolution flow matching at equal training FLOPs
      (32 px shapes, the same DiT): sample quality (a fixed shape
      classifier's Fréchet distance to real test images and its accuracy on
      the class-conditional samples) at four points of the budget, and the
      sampling FLOPs per image. The paper (Fig. 7) reports ~3x faster FID
      convergence for the pyramid.
  (b) Renoising ablation: the final pyramid model of (a) sampled with and
      without the corrective block noise at the jumps (same seeds):
      Fréchet distance, accuracy, and blockiness (mean |neighbour
      difference| across 2- and 4-pixel block boundaries / elsewhere; 1 for
      images without block structure).
  (c) Temporal pyramid vs full-sequence video flow matching at equal
      training FLOPs (8-frame 32 px moving shapes): tokens per example,
      training throughput, and per-frame sample quality (later frames are
      where autoregressive generation degrades).
  (d) The pyramid DiT's noise-level input at equal training FLOPs: the
      released code's disjoint per-stage windows (`official`, the default)
      against the global noise level, whose stage windows overlap
      (`global`, what (a) used): sample quality at the four points and the
      held-out velocity MSE of each stage.

Inception FID needs weights that are not shipped; the classifier metrics
stand in for it.

  python -m experiments.pyramidal_flow.run --data_dir=/tmp/jaxgen_test_tfds
  python -m experiments.pyramidal_flow.run --image_flops=2e11 \
      --video_flops=2e11 --num_samples=64 --workdir=/tmp/pf_smoke \
      --out=/tmp/pf_smoke/out                          # a smoke run
  python -m experiments.pyramidal_flow.run --parts=embedding  # (d) alone

--parts picks what runs (image: (a)+(b), video: (c), embedding: (d)); the
parts not run keep their entries of an existing results.json.

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

from configs import pyramidal_flow as pf_config
from jaxgen import config_lib
from jaxgen import families  # pylint: disable=unused-import  (registers them)
from jaxgen import jsonl
from jaxgen import registry
from jaxgen.data import pipeline
from jaxgen.eval import classifier
from jaxgen.eval import distances
from jaxgen.eval import grids
from jaxgen.train import durations
from jaxgen.train import logs
from jaxgen.train import run_state
from jaxgen.train import trainer

FLAGS = flags.FLAGS
flags.DEFINE_string("workdir", "/tmp/jaxgen_pf_experiments", "Run cache.")
flags.DEFINE_string("out", HERE, "Figures and results.json.")
flags.DEFINE_string("data_dir", None, "TFDS data dir (default: TFDS').")
flags.DEFINE_float("image_flops", 3e13, "Training FLOPs of each run in (a).")
flags.DEFINE_float("video_flops", 2e13, "Training FLOPs of each run in (c).")
flags.DEFINE_integer("num_samples", 256, "Samples scored per point.")
flags.DEFINE_integer("num_clips", 128, "Clips sampled per model in (c).")
flags.DEFINE_list("parts", ["image", "video", "embedding"],
                  "Parts to run: image ((a), (b)), video ((c)), embedding "
                  "((d)).")
PARTS = ("image", "video", "embedding")

SIZE = 32
CLASSIFIER = classifier.ClassifierConfig(input_size=32)
POINTS = 4  # evaluation points along each budget


def _config(arg, budget, **overrides):
  c = pf_config.get_config(arg)
  # The committed results embedded the global noise level (the default
  # until 2026-12-03, now "official"): kept so that a rerun reproduces them.
  c.pyramid.timestep_embedding = "global"
  c.dataset.data_dir = FLAGS.data_dir
  c.total_steps, c.total_flops = 0, float(budget)
  c.num_samples, c.eval_batches = 0, 4
  config_lib.apply_overrides(c, overrides)
  # Checkpoints (and held-out losses) at POINTS even fractions of the run.
  # The trainer's own step count (it rounds the budget up: flooring here
  # gave a 5th interval save, and keeping POINTS + 1 dropped the first).
  flops = registry.OBJECTIVES.get(c.family)(c).flops_per_example()
  steps = durations.total_steps(c, num_examples=None,
                                flops_per_example=flops)
  every = max(steps // POINTS, 1)
  c.checkpoint_every_steps = c.eval_every_steps = every
  c.keep_checkpoints = steps // every + 1  # Every interval save, and the end.
  # Evaluations run at log steps: log at the largest divisor of the
  # interval up to 25.
  c.log_every_steps = max(d for d in range(1, 26) if every % d == 0)
  return c


def train(name, config):
  """Trains (or resumes, or finds finished) run `name`; returns its dir."""
  workdir = os.path.join(FLAGS.workdir, name)
  t0 = time.time()
  trainer.train_and_evaluate(config, workdir)
  logging.info("%s: %.0f s", name, time.time() - t0)
  return workdir


def restore_at(config, workdir, step):
  """(setup, state) of the run's checkpoint at `step`, read-only."""
  s, got, state = run_state.restore(config, workdir,
                                    devices=jax.devices()[:1], step=step)
  if state is None:
    raise ValueError(f"{workdir} no longer keeps checkpoint {step}; rerun "
                     "with a fresh --workdir.")
  return s, state


def sampler(s, batch=64, **sample_kwargs):
  """The jitted draw of `batch` samples (reuse it: each call of `jax.jit`
  on a new function compiles again)."""
  obj = s.objective
  return jax.jit(lambda st, r, lab: obj.sample(st, r, batch, labels=lab,
                                               **sample_kwargs))


def draw(s, state, num, batch=64, fn=None, **sample_kwargs):
  """`num` class-conditional samples (classes in turn), f32 in [-1, 1].

  `fn` is a `sampler(s, batch, ...)` to reuse (default: a new one).
  """
  out = []
  fn = fn or sampler(s, batch, **sample_kwargs)
  with jax.set_mesh(s.mesh), nn.logical_axis_rules(s.rules):
    for k in range(-(-num // batch)):
      labels = (np.arange(k * batch, (k + 1) * batch) % 8).astype(np.int32)
      out.append(np.asarray(fn(state, jax.random.fold_in(
          jax.random.key(1), k), labels)))
  x = np.concatenate(out)[:num]
  return grids.to_uint8(x).astype(np.float32) / 127.5 - 1.0


def _classifier():
  path = os.path.join(FLAGS.workdir, "classifier32.npz")
  if os.path.exists(path):
    return classifier.load_params(path, CLASSIFIER)
  params, info = classifier.train_classifier(
      CLASSIFIER, train_sizes=(32, 64), data_dir=FLAGS.data_dir)
  logging.info("classifier: %s", info)
  classifier.save_params(params, path)
  return params


def _real(name, n, frames=0):
  c = pf_config.get_config("tiny").dataset
  c.name, c.image_size, c.data_dir = name, SIZE, FLAGS.data_dir
  c.num_frames, c.random_flip = frames, False
  it, _ = pipeline.build_input(c, global_batch_size=64, seed=0,
                               process_index=0, process_count=1, split="test",
                               train=False, repeat=False)
  xs, ys = [], []
  for batch in it:
    xs.append(np.asarray(batch["video" if frames else "image"]))
    ys.append(np.asarray(batch["label"]))
    if sum(len(x) for x in xs) >= n:
      break
  return np.concatenate(xs)[:n], np.concatenate(ys)[:n]


def score(cls, x, labels, ref):
  feats, logits = classifier.embed(cls, x, CLASSIFIER)
  m = classifier.sample_metrics(feats, logits, labels, ref)
  return {"fd": m["fd"], "fd_std": m["fd_boot_std"],
          "accuracy": m["accuracy"], "accuracy_std": m["accuracy_boot_std"]}


def blockiness(x, period):
  """Mean |horizontal + vertical neighbour difference| across boundaries of
  `period`-pixel blocks, over that inside them."""
  out = []
  for axis in (1, 2):
    d = np.abs(np.diff(x, axis=axis))
    idx = np.arange(d.shape[axis])
    boundary = (idx % period) == period - 1
    out.append(np.take(d, np.flatnonzero(boundary), axis=axis).mean()
               / np.take(d, np.flatnonzero(~boundary), axis=axis).mean())
  return float(np.mean(out))


def checkpoint_steps(workdir):
  return sorted(int(d) for d in os.listdir(os.path.join(workdir,
                                                        "checkpoints"))
                if d.isdigit())


def throughput(workdir):
  rows = [r for r in jsonl.read(os.path.join(workdir, "metrics.jsonl"))
          if "steps_per_sec" in r]
  return float(np.median([r["steps_per_sec"] for r in rows[1:] or rows]))


def _image_reference(cls):
  """(real test images, their classifier feature stats, sample labels)."""
  real, _ = _real("jaxgen_shapes", FLAGS.num_samples)
  ref = distances.gaussian_stats(classifier.embed(cls, real, CLASSIFIER)[0])
  return real, ref, np.arange(FLAGS.num_samples) % 8


def _score_checkpoints(name, cfg, wd, cls, labels, ref):
  """Samples and scores every kept checkpoint of run `wd`.

  Returns:
    (points, setup, state and samples of the last checkpoint).
  """
  fn, points = None, []
  for step in checkpoint_steps(wd):
    s, state = restore_at(cfg, wd, step)
    fn = fn or sampler(s)  # One compile for every checkpoint.
    x = draw(s, state, FLAGS.num_samples, fn=fn)
    pt = {"step": step,
          "train_flops": step * cfg.batch_size * s.flops_per_example}
    pt.update(score(cls, x, labels, ref))
    points.append(pt)
    logging.info("%s step %d: %s", name, step, pt)
  return points, s, state, x


def _last_eval(wd):
  """The run's last logged evaluation row."""
  return [r for r in jsonl.read(os.path.join(wd, "metrics.jsonl"))
          if "eval_loss" in r][-1]


def image_pyramid(cls, results):
  """(a) and (b)."""
  real, ref, labels = _image_reference(cls)
  rows = {}
  finals = {}
  for name, arg, steps in (("pyramid", "tiny", (10, 10, 10)),
                           ("flow_matching", "tiny,baseline", (30,))):
    cfg = _config(arg, FLAGS.image_flops, **{"flow.sample_steps": steps})
    wd = train(f"a_{name}", cfg)
    points, s, state, x = _score_checkpoints(name, cfg, wd, cls, labels, ref)
    row = {"points": points, "steps_per_sec": throughput(wd)}
    row["flops_per_example"] = s.flops_per_example
    row["sampling_flops_per_image"] = s.objective.sampling_flops_per_example()
    row["sample_steps"] = list(steps)
    row["tokens"] = s.objective.tokens_per_example()
    row["final_eval_loss"] = float(_last_eval(wd)["eval_loss"])
    rows[name] = row
    finals[name] = (s, state, x)
    grids.save_grid(x[:32], os.path.join(FLAGS.out, f"samples_{name}.png"),
                    ncols=8)
  results["image"] = rows
  _plot_image(rows)

  # (b) Renoising ablation on the final pyramid.
  s, state, with_noise = finals["pyramid"]
  cfg = s.objective.config
  cfg.unlock()
  cfg.pyramid.renoise = False
  without = draw(s, state, FLAGS.num_samples)
  cfg.pyramid.renoise = True
  abl = {}
  for tag, x in (("renoise", with_noise), ("no_renoise", without),
                 ("real", real)):
    r = score(cls, x, labels, ref) if tag != "real" else {}
    r.update({f"blockiness_{p}": blockiness(x, p) for p in (2, 4)})
    abl[tag] = r
  results["renoise_ablation"] = abl
  grids.save_grid(np.concatenate([with_noise[:16], without[:16]]),
                  os.path.join(FLAGS.out, "renoise_ablation.png"), ncols=8)
  logging.info("renoise ablation: %s", abl)


def _plot_image(rows, filename="image_quality_vs_compute.png", label="{}"):
  """FD and accuracy against training FLOPs, one line per row
  (`label.format(name)`)."""
  fig, axes = plt.subplots(1, 2, figsize=(10, 4))
  for name, row in rows.items():
    f = [p["train_flops"] for p in row["points"]]
    for ax, key in zip(axes, ("fd", "accuracy")):
      ax.errorbar(f, [p[key] for p in row["points"]],
                  yerr=[p[key + "_std"] for p in row["points"]], marker="o",
                  capsize=3, label=label.format(name))
  for ax, key in zip(axes, ("classifier FD (lower is better)",
                            "classifier accuracy")):
    ax.set_xscale("log")
    ax.set_xlabel("training FLOPs")
    ax.set_title(key)
    ax.legend()
  fig.tight_layout()
  fig.savefig(os.path.join(FLAGS.out, filename), dpi=100)
  plt.close(fig)


def video(cls, results):
  """(c): temporal pyramid vs full-sequence video."""
  n = FLAGS.num_clips
  real, real_labels = _real("jaxgen_shapes_video", 512, frames=8)
  frames = real.shape[1]
  refs = [distances.gaussian_stats(classifier.embed(cls, real[:, f],
                                                    CLASSIFIER)[0])
          for f in range(frames)]
  labels = np.arange(n) % 8
  real_acc = [float(np.mean(np.argmax(classifier.embed(
      cls, real[:, f], CLASSIFIER)[1], -1) == real_labels))
              for f in range(frames)]
  rows = {"real_accuracy_per_frame": real_acc}
  for name, arg in (("temporal_pyramid", "shapes_video"),
                    ("full_sequence", "shapes_video,baseline")):
    cfg = _config(arg, FLAGS.video_flops)
    wd = train(f"c_{name}", cfg)
    step = checkpoint_steps(wd)[-1]
    s, state = restore_at(cfg, wd, step)
    # Timed after one batch compiled the sampler (compilation was ~45 s of
    # the first call, and made the per-clip time depend on --num_clips).
    fn = sampler(s, 32)
    draw(s, state, 32, batch=32, fn=fn)
    t0 = time.time()
    x = draw(s, state, n, batch=32, fn=fn)
    sample_s = time.time() - t0
    per_frame = [score(cls, x[:, f], labels, refs[f]) for f in range(frames)]
    sps = throughput(wd)
    frames_per_example = 1 if name == "temporal_pyramid" else frames
    rows[name] = {
        "steps": step, "steps_per_sec": sps,
        "train_flops": step * cfg.batch_size * s.flops_per_example,
        "flops_per_example": s.flops_per_example,
        "examples_per_sec": sps * cfg.batch_size,
        "trained_frames_per_sec": sps * cfg.batch_size * frames_per_example,
        "tokens": s.objective.tokens_per_example(),
        "sampling_flops_per_clip": s.objective.sampling_flops_per_example(),
        "sampling_wall_s_per_clip": sample_s / n,
        "per_frame": per_frame}
    logging.info("%s: %s", name, {k: v for k, v in rows[name].items()
                                  if k != "per_frame"})
    strip = np.concatenate([x[i] for i in range(4)], axis=1)  # [T, 4H, W, C]
    grids.save_grid(strip, os.path.join(FLAGS.out, f"clips_{name}.png"),
                    ncols=frames)
  results["video"] = rows
  fig, axes = plt.subplots(1, 2, figsize=(10, 4))
  for name in ("temporal_pyramid", "full_sequence"):
    pf = rows[name]["per_frame"]
    for ax, key in zip(axes, ("fd", "accuracy")):
      ax.errorbar(range(frames), [p[key] for p in pf],
                  yerr=[p[key + "_std"] for p in pf], marker="o", capsize=3,
                  label=name)
  axes[1].plot(range(frames), real_acc, "k--", label="real clips")
  for ax, title in zip(axes, ("classifier FD per frame", "accuracy per frame")):
    ax.set_xlabel("frame index")
    ax.set_title(title)
    ax.legend()
  fig.tight_layout()
  fig.savefig(os.path.join(FLAGS.out, "video_quality_per_frame.png"), dpi=100)
  plt.close(fig)


def embedding(cls, results):
  """(d): per-stage windows (official) vs the global noise level."""
  _, ref, labels = _image_reference(cls)
  rows = {}
  # "global" is (a)'s pyramid run (found finished when (a) ran first).
  for emb, name in (("global", "a_pyramid"), ("official", "d_official")):
    cfg = _config("tiny", FLAGS.image_flops, **{
        "flow.sample_steps": (10, 10, 10),
        "pyramid.timestep_embedding": emb})
    wd = train(name, cfg)
    points, _, _, x = _score_checkpoints(emb, cfg, wd, cls, labels, ref)
    rows[emb] = {"points": points,
                 "final_eval": {k: float(v) for k, v in _last_eval(wd).items()
                                if k.startswith("eval_mse_stage")},
                 "steps_per_sec": throughput(wd)}
    grids.save_grid(x[:32], os.path.join(FLAGS.out,
                                         f"samples_embedding_{emb}.png"),
                    ncols=8)
  results["timestep_embedding"] = rows
  _plot_image(rows, "timestep_embedding.png", "timestep_embedding={}")


def main(argv):
  del argv
  logs.quiet_libraries(FLAGS.verbosity)
  unknown = sorted(set(FLAGS.parts) - set(PARTS))
  if unknown or not FLAGS.parts:
    raise app.UsageError(f"--parts={','.join(FLAGS.parts)}: choose among "
                         f"{', '.join(PARTS)}.")
  os.makedirs(FLAGS.out, exist_ok=True)
  os.makedirs(FLAGS.workdir, exist_ok=True)
  t0 = time.time()
  path = os.path.join(FLAGS.out, "results.json")
  results = {}
  flags_ = {k: FLAGS[k].value for k in (
      "image_flops", "video_flops", "num_samples", "num_clips")}
  if set(FLAGS.parts) != set(PARTS) and os.path.exists(path):
    with open(path, encoding="utf-8") as f:
      results = json.load(f)  # The parts not run keep their entries.
    if results.get("flags", flags_) != flags_:
      # One flags record describes every entry of the file.
      raise app.UsageError(
          f"{path} holds results of {results['flags']}, not {flags_}; "
          "pass those or another --out.")
  results["flags"] = flags_
  cls = _classifier()
  if "image" in FLAGS.parts:
    image_pyramid(cls, results)
  if "video" in FLAGS.parts:
    video(cls, results)
  if "embedding" in FLAGS.parts:
    embedding(cls, results)
  # A partial run's time is kept beside the full run's.
  full = set(FLAGS.parts) == set(PARTS)
  results["wall_s" if full else "wall_s_" + "_".join(FLAGS.parts)] = (
      time.time() - t0)
  with open(path + ".tmp", "w", encoding="utf-8") as f:
    json.dump(results, f, indent=1)
  os.replace(path + ".tmp", path)
  print(f"done in {(time.time() - t0) / 60:.0f} min: "
        f"{os.path.join(FLAGS.out, 'results.json')}")


if __name__ == "__main__":
  app.run(main)
