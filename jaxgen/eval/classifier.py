"""A small shape classifier and the sample-quality metrics built on it.

Training losses of diffusion models are not comparable across noise schedules
or loss definitions, so experiments compare *samples* with one fixed network:

  * a Fréchet distance ("FID") between Gaussians fitted to the classifier's
    pooled features of generated and of real images, and
  * the classifier's accuracy on class-conditional samples (does a sample
    drawn for "square" look like a square?).

The network is a small CNN trained offline on the embedded `jaxgen_shapes`
dataset (no downloads). It sees images at `input_size` pixels; larger images
are average-pooled down by an integer factor first, so one classifier scores
samples of several resolutions.

  params, _ = train_classifier(ClassifierConfig())
  feats, logits = embed(params, images)          # images in [-1, 1], NHWC
  mu, cov = distances.gaussian_stats(feats)
  fd = distances.frechet_distance(mu, cov, mu_ref, cov_ref)
"""

import dataclasses
import functools
import sys
import time
from typing import Any, Dict, Optional, Sequence, Tuple
import warnings

from absl import logging
import flax
import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxgen import paths
from jaxgen.data import config as data_config
from jaxgen.data import pipeline as data_pipeline
from jaxgen.eval import distances
from jaxgen.eval import features as features_lib
from jaxgen.nn import norms
from jaxgen.nn import resample
from jaxgen.train import logs

Params = Any


@dataclasses.dataclass(frozen=True)
class ClassifierConfig:
  """Architecture and training of the shape classifier.

  Attributes:
    input_size: side the network sees; larger images are average-pooled.
    channels: output channels of the stride-2 conv stages.
    feature_dim: width of the pooled feature vector the Fréchet distance uses.
    num_classes: number of shape kinds.
    batch_size: training batch.
    steps: training steps.
    learning_rate: peak Adam learning rate (cosine decay, short warmup).
    seed: initialisation and data-order seed.
  """
  input_size: int = 64
  channels: Tuple[int, ...] = (16, 32, 64)
  feature_dim: int = 64
  num_classes: int = 8
  batch_size: int = 32
  steps: int = 800
  learning_rate: float = 3e-3
  seed: int = 0


class ShapeClassifier(nn.Module):
  """Stride-2 conv stages (GroupNorm, SiLU), global mean pool, dense head.

  Attributes:
    channels: channels of the stride-2 stages.
    feature_dim: channels of the last (stride-1) conv = feature width.
    num_classes: logits.
  """
  channels: Sequence[int] = (16, 32, 64)
  feature_dim: int = 64
  num_classes: int = 8

  @nn.compact
  def __call__(self, x: jax.Array) -> Tuple[jax.Array, jax.Array]:
    """Classifies images.

    Args:
      x: f32[B, H, W, 3] in [-1, 1].

    Returns:
      (features f32[B, feature_dim], logits f32[B, num_classes]). The features
      are the global mean of the last conv stage after its nonlinearity (the
      analogue of Inception's pool3 in FID).
    """
    h = x
    for i, ch in enumerate(self.channels):
      h = nn.Conv(ch, (3, 3), strides=(2, 2), name=f"down{i}")(h)
      groups = norms.num_groups_for(ch, 8)
      h = nn.silu(nn.GroupNorm(num_groups=groups, name=f"norm{i}")(h))
      if i:
        # No extra conv at the first (largest) stage: it would cost as much
        # as the rest of the network.
        h = nn.Conv(ch, (3, 3), name=f"conv{i}")(h)
        h = nn.silu(nn.GroupNorm(num_groups=groups, name=f"norm{i}b")(h))
    h = nn.Conv(self.feature_dim, (3, 3), name="last")(h)
    h = nn.silu(h)
    features = h.mean(axis=(1, 2))
    logits = nn.Dense(self.num_classes, name="head")(features)
    return features, logits


def _model(cfg: ClassifierConfig) -> ShapeClassifier:
  return ShapeClassifier(cfg.channels, cfg.feature_dim, cfg.num_classes)


def to_input_size(images: jax.Array, size: int) -> jax.Array:
  """Average-pools square NHWC images down to `size` (integer factor).

  Args:
    images: f32[B, d, d, C] with d a multiple of `size`.
    size: target side.

  Returns:
    f32[B, size, size, C].

  Raises:
    ValueError: if d is not a multiple of size.
  """
  return resample.avg_pool_to(images, size)


def _shapes_input(image_size: int, batch_size: int, seed: int,
                  split: str, train: bool, data_dir: Optional[str]):
  cfg = data_config.default_dataset_config()
  cfg.image_size = image_size
  cfg.data_dir = data_dir
  return data_pipeline.build_input(
      cfg, global_batch_size=batch_size, seed=seed, process_index=0,
      process_count=1, split=split, train=train)


def train_classifier(cfg: ClassifierConfig = ClassifierConfig(), *,
                     images: Optional[np.ndarray] = None,
                     labels: Optional[np.ndarray] = None,
                     train_sizes: Sequence[int] = (64, 128),
                     data_dir: Optional[str] = None
                     ) -> Tuple[Params, Dict[str, float]]:
  """Trains the classifier with AdamW on random minibatches held in memory.

  By default it trains on the train splits of jaxgen_shapes at every
  resolution in `train_sizes`, each pooled to `cfg.input_size`, so the
  features do not depend on which resolution an image was rendered at.
  Minibatches are mirrored left-right at random (labels are mirror-invariant).

  Args:
    cfg: architecture and training settings.
    images: optional f32/f16[N, d, d, 3] in [-1, 1] to train on instead.
    labels: int[N] labels of `images`.
    train_sizes: jaxgen_shapes resolutions to train on (each a multiple of
      `cfg.input_size`), when `images` is None.
    data_dir: TFDS data dir of jaxgen_shapes (None: TFDS' default).

  Returns:
    (params, info) with info["train_loss"] (mean over the last 50 steps),
    info["train_wall_s"] (the optimisation loop) and info["num_train"].
  """
  if images is None:
    parts = [load_split(s, "train", cfg.input_size, data_dir=data_dir)
             for s in train_sizes]
    images = np.concatenate([p[0] for p in parts])
    labels = np.concatenate([p[1] for p in parts])
  model = _model(cfg)
  params = model.init(jax.random.key(cfg.seed),
                      jnp.zeros((1, cfg.input_size, cfg.input_size, 3)))
  params = params["params"]
  if cfg.steps < 1:
    raise ValueError(f"steps={cfg.steps}; train for at least 1 step.")
  # optax needs the warmup shorter than the run: a 1-step run has none.
  warmup = min(20, cfg.steps // 10 + 1, cfg.steps - 1)
  if warmup:
    sched = optax.warmup_cosine_decay_schedule(
        0.0, cfg.learning_rate, warmup, cfg.steps)
  else:
    sched = optax.cosine_decay_schedule(cfg.learning_rate, cfg.steps)
  tx = optax.adamw(sched, weight_decay=1e-4)
  opt_state = tx.init(params)

  @jax.jit
  def step(params, opt_state, x, y):
    def loss_fn(p):
      _, logits = model.apply({"params": p}, to_input_size(x, cfg.input_size))
      return optax.softmax_cross_entropy_with_integer_labels(
          logits, y).mean()
    loss, grads = jax.value_and_grad(loss_fn)(params)
    updates, opt_state = tx.update(grads, opt_state, params)
    return optax.apply_updates(params, updates), opt_state, loss

  np_rng = np.random.default_rng(cfg.seed)
  t0, losses = time.time(), []
  for i in range(cfg.steps):
    idx = np_rng.integers(0, len(images), cfg.batch_size)
    x = np.asarray(images[idx], np.float32)
    flip = np_rng.random(cfg.batch_size) < 0.5
    x[flip] = x[flip, :, ::-1]
    params, opt_state, loss = step(params, opt_state, jnp.asarray(x),
                                   jnp.asarray(labels[idx], jnp.int32))
    losses.append(float(loss))
    if (i + 1) % 100 == 0:
      logging.info("classifier step %d: loss %.4f", i + 1,
                   np.mean(losses[-100:]))
  info = {"train_loss": float(np.mean(losses[-50:])),
          "train_wall_s": time.time() - t0, "num_train": int(len(images))}
  return params, info


@functools.partial(jax.jit, static_argnames=("cfg",))
def _embed(params, images, cfg: ClassifierConfig):
  return _model(cfg).apply({"params": params},
                           to_input_size(images, cfg.input_size))


def embed(params: Params, images: np.ndarray,
          cfg: ClassifierConfig = ClassifierConfig(),
          batch_size: int = 256) -> Tuple[np.ndarray, np.ndarray]:
  """Features and logits of images, in batches.

  Args:
    params: classifier parameters.
    images: f32[N, d, d, 3] in [-1, 1], d a multiple of cfg.input_size.
    cfg: the classifier's config.
    batch_size: images per forward pass.

  Returns:
    (features f64[N, feature_dim], logits f64[N, num_classes]).
  """
  feats, logits = [], []
  for i in range(0, len(images), batch_size):
    f, l = _embed(params, jnp.asarray(images[i:i + batch_size], jnp.float32),
                  cfg)
    feats.append(np.asarray(f, np.float64))
    logits.append(np.asarray(l, np.float64))
  return np.concatenate(feats), np.concatenate(logits)


def load_split(image_size: int, split: str, input_size: int = 64, *,
               max_examples: int = 0, data_dir: Optional[str] = None
               ) -> Tuple[np.ndarray, np.ndarray]:
  """Reads (a prefix of) a jaxgen_shapes split in order, pooled for the net.

  Decoding once and training from memory is several times cheaper than
  decoding every training batch.

  Args:
    image_size: jaxgen_shapes resolution (a multiple of `input_size`).
    split: "train" or "test".
    input_size: side the images are average-pooled to.
    max_examples: stop after this many examples (0 = the whole split,
      rounded down to whole batches of 64).
    data_dir: TFDS data dir.

  Returns:
    (images f16[N, input_size, input_size, 3] in [-1, 1], labels i32[N]).
  """
  it, info = _shapes_input(image_size, 64, 0, split, False, data_dir)
  total = info.num_examples if not max_examples else min(max_examples,
                                                         info.num_examples)
  images, labels, seen = [], [], 0
  while seen < total:
    try:
      batch = next(it)
    except StopIteration:
      break
    x = np.asarray(to_input_size(np.asarray(batch["image"]), input_size))
    images.append(x.astype(np.float16))
    labels.append(np.asarray(batch["label"], np.int32))
    seen += len(x)
  return np.concatenate(images)[:total], np.concatenate(labels)[:total]


def sample_metrics(features: np.ndarray, logits: np.ndarray,
                   labels: np.ndarray, ref_stats: Tuple[np.ndarray,
                                                        np.ndarray], *,
                   num_bootstrap: int = 200, seed: int = 0,
                   stratify: bool = True) -> Dict[str, Any]:
  """FD to the reference and class accuracy, with bootstrap uncertainty.

  The bootstrap resamples the generated set (with replacement) and recomputes
  both metrics; it measures the sampling noise of a finite sample set, not the
  variation between training runs. With `stratify` it resamples within each
  label, keeping the class counts of the design (class-conditional samples are
  drawn in fixed numbers per class): on shapes the features' leading direction
  separates classes, so an unstratified bootstrap mostly measures the noise of
  class proportions the experiment does not have.

  Args:
    features: [N, D] classifier features of the samples.
    logits: [N, K] classifier logits of the samples.
    labels: [N] classes the samples were drawn for.
    ref_stats: (mu, cov) of real images.
    num_bootstrap: bootstrap replicates.
    seed: bootstrap seed.
    stratify: resample within each label (see above).

  Returns:
    Dict with "n", "fd", "fd_boot_mean", "fd_boot_std", "fd_boot" (list),
    "accuracy", "accuracy_boot_std", "accuracy_boot" (list) and
    "per_class_accuracy".
  """
  mu_r, cov_r = ref_stats
  labels = np.asarray(labels)
  correct = (np.argmax(logits, axis=-1) == labels).astype(np.float64)
  fd = distances.frechet_distance(*distances.gaussian_stats(features), mu_r,
                                  cov_r)
  rng = np.random.default_rng(seed)
  n = len(features)
  groups = ([np.flatnonzero(labels == c) for c in np.unique(labels)]
            if stratify else [np.arange(n)])
  fds, accs = [], []
  with warnings.catch_warnings():
    # The full set's statistics above warned of a singular covariance
    # already; every resample would again (thousands of lines).
    warnings.filterwarnings("ignore", message=distances.SINGULAR_WARNING)
    for _ in range(num_bootstrap):
      idx = np.concatenate([g[rng.integers(0, len(g), len(g))]
                            for g in groups])
      fds.append(distances.frechet_distance(
          *distances.gaussian_stats(features[idx]), mu_r, cov_r))
      accs.append(correct[idx].mean())
  per_class = {int(c): float(correct[labels == c].mean())
               for c in np.unique(labels)}
  return {"n": int(n), "fd": fd, "fd_boot_mean": float(np.mean(fds)),
          "fd_boot_std": float(np.std(fds)), "fd_boot": [float(v) for v in fds],
          "accuracy": float(correct.mean()),
          "accuracy_boot_std": float(np.std(accs)),
          "accuracy_boot": [float(v) for v in accs],
          "per_class_accuracy": per_class}


def save_params(params: Params, path: str) -> None:
  """Writes classifier parameters as msgpack bytes."""
  with open(path, "wb") as f:
    f.write(flax.serialization.to_bytes(params))


def load_params(path: str, cfg: ClassifierConfig = ClassifierConfig()
                ) -> Params:
  """Reads parameters written by `save_params` for a model of `cfg`."""
  target = _model(cfg).init(
      jax.random.key(0), jnp.zeros((1, cfg.input_size, cfg.input_size, 3)))
  with open(path, "rb") as f:
    return flax.serialization.from_bytes(target["params"], f.read())


# -- as a feature network of the in-training sample metrics -------------------


def save_classifier(path: str, params: Params, cfg: ClassifierConfig) -> None:
  """Writes parameters and config in one file (`load_classifier` reads it).

  Args:
    path: output file (msgpack); missing folders are created.
    params: classifier parameters.
    cfg: its config (the architecture and the input size travel with it).
  """
  import json  # pylint: disable=g-import-not-at-top
  import etils.epath as epath  # pylint: disable=g-import-not-at-top
  blob = {"config": json.dumps(dataclasses.asdict(cfg)), "params": params}
  epath.Path(path).parent.mkdir(parents=True, exist_ok=True)
  epath.Path(path).write_bytes(flax.serialization.msgpack_serialize(
      flax.serialization.to_state_dict(blob)))


def load_classifier(path: str) -> Tuple[Params, ClassifierConfig]:
  """Reads a file of `save_classifier` (one-line ValueError if bad)."""
  import json  # pylint: disable=g-import-not-at-top
  import etils.epath as epath  # pylint: disable=g-import-not-at-top
  try:
    blob = flax.serialization.msgpack_restore(epath.Path(path).read_bytes())
    fields = json.loads(blob["config"])
  except (OSError, ValueError, KeyError, TypeError) as e:
    raise ValueError(f"{path} is not a shape-classifier file ({e}); write "
                     "one with python -m jaxgen.eval.classifier") from None
  fields["channels"] = tuple(fields["channels"])
  cfg = ClassifierConfig(**fields)
  target = _model(cfg).init(
      jax.random.key(0), jnp.zeros((1, cfg.input_size, cfg.input_size, 3)))
  return flax.serialization.from_state_dict(target["params"],
                                            blob["params"]), cfg


class Extractor(features_lib.StreamExtractor):
  """Features and logits of image batches with the shape classifier (the
  `of_batches` / call interface of `features.FeatureExtractor`)."""

  def __init__(self, params: Params, cfg: ClassifierConfig,
               batch_size: int = 256):
    self.params, self.cfg, self.batch_size = params, cfg, int(batch_size)

  @classmethod
  def from_file(cls, path: str, batch_size: int = 256) -> "Extractor":
    """The extractor of a `save_classifier` file."""
    return cls(*load_classifier(path), batch_size=batch_size)

  def _batch(self, images: np.ndarray) -> Tuple[np.ndarray, np.ndarray]:
    return embed(self.params, images, self.cfg, self.batch_size)


def _define_flags():
  from absl import flags  # pylint: disable=g-import-not-at-top
  # jaxgen_shapes is generated (or resized) only within these sizes.
  flags.DEFINE_integer("image_size", 16, "jaxgen_shapes resolution the "
                       "classifier sees (the generated images' size), "
                       f"{data_config.MIN_IMAGE_SIZE}..."
                       f"{data_config.MAX_IMAGE_SIZE}.",
                       lower_bound=data_config.MIN_IMAGE_SIZE,
                       upper_bound=data_config.MAX_IMAGE_SIZE)
  flags.DEFINE_string("out", None, "Output file (msgpack); its folder is "
                      "created if needed.")
  flags.DEFINE_integer("steps", ClassifierConfig.steps, "Training steps.",
                       lower_bound=1)
  flags.DEFINE_string("data_dir", None, "TFDS data dir of jaxgen_shapes.")
  return flags.FLAGS


def main(argv):
  """Trains the classifier at one resolution and saves it with its config."""
  from jaxgen import config_lib  # pylint: disable=g-import-not-at-top
  config_lib.check_no_arguments(argv)
  logs.quiet_libraries(FLAGS.verbosity)
  logs.tool_log_lines()
  try:
    # Before training: a bad --out would otherwise lose the trained network.
    paths.prepare_output(FLAGS.out)
    cfg = ClassifierConfig(input_size=FLAGS.image_size, steps=FLAGS.steps)
    images, labels = load_split(FLAGS.image_size, "train", FLAGS.image_size,
                                data_dir=FLAGS.data_dir)
    params, info = train_classifier(cfg, images=images, labels=labels)
    test_x, test_y = load_split(FLAGS.image_size, "test", FLAGS.image_size,
                                data_dir=FLAGS.data_dir)
    _, logits = embed(params, test_x.astype(np.float32), cfg)
    accuracy = float(np.mean(np.argmax(logits, -1) == test_y))
    save_classifier(FLAGS.out, params, cfg)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  print(f"test accuracy {accuracy:.3f} on {len(test_y)} images, train loss "
        f"{info['train_loss']:.3f}; wrote {FLAGS.out}")


if __name__ == "__main__":
  from absl import app  # pylint: disable=g-import-not-at-top
  from absl import flags as absl_flags  # pylint: disable=g-import-not-at-top
  FLAGS = _define_flags()
  absl_flags.mark_flag_as_required("out")
  from jaxgen import config_lib  # pylint: disable=g-import-not-at-top
  # Flag errors are one `error:` line.
  app.run(main, flags_parser=config_lib.parse_flags)
