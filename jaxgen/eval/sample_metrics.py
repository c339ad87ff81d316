"""Standard sample metrics inside training: FID / KID / IS, or rFID / PSNR /
SSIM / LPIPS for reconstruction families.

Configured by `config.eval.sample_metrics` (off by default; defaults in
`jaxgen.config_lib.sample_metrics_config`):

  enabled            turn it on
  inception_weights  inception_fid.npz (jaxgen.eval.convert)
  reference_stats    stats .npz of the training data (jaxgen.eval.stats),
                     made with the same weights (checked by hash); for
                     rFID, of the held-out split that is reconstructed
  lpips_weights      lpips_vgg.npz, for eval_lpips of reconstruction families
  num_samples        images per evaluation
  every_steps        how often (a multiple of log_every_steps); 0: at the
                     end of the run only
  batch_size         images per sampling / feature step

Generative families log `eval_fid`, `eval_kid`, `eval_is`,
`eval_precision`, `eval_recall` (samples quantised to uint8 as saved images
are, classes in turn). A family whose objective has `reconstruct(state,
batch) -> images` logs `eval_psnr`, `eval_ssim`, `eval_lpips` (with
lpips_weights) and `eval_rfid` (reconstructions of held-out images against
the reference statistics, which should be that split's, as DC-AE's rFID on
ImageNet val; without Inception files, the pixel metrics alone). Everything
is checked before compilation (a latent run's decoded sample size for the
shape classifier: at its first evaluation).
"""

from typing import Any, Callable, Dict, Optional, Sequence
import warnings

from absl import logging
import etils.epath as epath
import jax
import ml_collections
import numpy as np

from jaxgen.eval import classifier
from jaxgen.eval import distances
from jaxgen.eval import features as features_lib
from jaxgen.eval import grids
from jaxgen.eval import imagesets
from jaxgen.eval import perceptual
from jaxgen.eval import pixels
from jaxgen.eval import sampling
from jaxgen.parallel import mesh as mesh_lib


def _stats(path: str, weights_hash: str) -> Dict[str, np.ndarray]:
  if not epath.Path(path).exists():
    raise ValueError(f"config.eval.sample_metrics.reference_stats={path!r} "
                     "not found; compute it with python -m jaxgen.eval.stats.")
  ref = imagesets.open_set(path)
  if ref.stats is None:
    raise ValueError(f"{path} is not a statistics file (no mu / sigma); "
                     "compute it with python -m jaxgen.eval.stats.")
  # Found now, not at the end of training.
  imagesets.check_weights(ref, weights_hash, "; recompute it with python -m "
                          "jaxgen.eval.stats and config.eval.sample_metrics."
                          "inception_weights.")
  return ref.stats


def _classifier_stats(path: str, dim: int) -> Dict[str, np.ndarray]:
  """mu / sigma of real images in the classifier's `dim`-d features."""
  leave_empty = ("leave it empty to compute the shape classifier's "
                 "statistics from the train split.")
  if not epath.Path(path).exists():
    raise ValueError(f"config.eval.sample_metrics.reference_stats={path!r} "
                     f"not found; {leave_empty}")
  ref = imagesets.open_set(path)
  if ref.stats is None:
    raise ValueError(f"{path} is not a statistics file (no mu / sigma); "
                     f"{leave_empty}")
  have = np.shape(ref.stats["mu"])
  if have != (dim,):
    raise ValueError(f"{path} holds statistics of {have[-1] if have else 0}-d "
                     f"features (Inception's are 2048-d), the shape "
                     f"classifier's are {dim}-d; {leave_empty}")
  return {"mu": ref.stats["mu"], "sigma": ref.stats["sigma"]}


def _check_classifier_size(config, input_size: int) -> None:
  """Samples of pixel runs must pool to the classifier's input (found at
  the first evaluation otherwise: after the whole run with every_steps=0).
  A latent run's decoded size is checked when it is first drawn."""
  from jaxgen.autoencoders import latent_decode  # pylint: disable=g-import-not-at-top
  size = int(config.dataset.image_size)
  if latent_decode.latent_dir(config.dataset) is None and size % input_size:
    raise ValueError(
        f"config.dataset.image_size={size} is not a multiple of the shape "
        f"classifier's input size {input_size} (samples are average-pooled "
        "to it); train at a multiple of it or use a classifier of another "
        "input_size.")


def _real_images(config):
  """(dataset config, split) of the real images a shape-classifier FD
  compares with: the run's training split, or for a `latents:` run the
  images its latents were encoded from (recorded in latents.json; the
  latents themselves are no images)."""
  from jaxgen.autoencoders import latent_decode  # pylint: disable=g-import-not-at-top
  from jaxgen.data import config as data_config  # pylint: disable=g-import-not-at-top
  from jaxgen.data import sources  # pylint: disable=g-import-not-at-top
  directory = latent_decode.latent_dir(config.dataset)
  if directory is None:
    # The training split: the spec's ("tfds:...:train[:90%]"), else the
    # config's (an explicit `split` would replace the spec's).
    return config.dataset, (data_config.parse_spec(config.dataset.name).split
                            or config.dataset.get("split") or "train")
  meta = sources.latents_meta(directory,
                              str(config.dataset.get("split") or "train"))
  if not meta.get("source") or len(meta["shape"]) != 3:
    raise ValueError(
        f"latents:{directory} records no image dataset its latents were "
        "encoded from (or holds clips); set "
        "config.eval.sample_metrics.reference_stats to the shape "
        "classifier's statistics of real images.")
  pixels_config = config.dataset.copy_and_resolve_references()
  with pixels_config.unlocked():
    pixels_config.name = str(meta["source"])
    pixels_config.image_size = int(meta["image_size"])
    pixels_config.channels = 3
    pixels_config.num_frames = 0
  return pixels_config, str(meta.get("split") or "train")


def _real_stats(config, extractor, num: int) -> Dict[str, np.ndarray]:
  """Classifier feature statistics of `num` real images (`_real_images`)."""
  from jaxgen.data import pipeline as data_pipeline  # pylint: disable=g-import-not-at-top
  dataset, split = _real_images(config)
  it, _ = data_pipeline.build_input(
      dataset, global_batch_size=min(num, 256), seed=0,
      process_index=0, process_count=1, split=split, train=False,
      repeat=True)
  feats, _ = extractor.of_batches(it, num, "training images",
                                  progress=False,
                                  transform=lambda b: np.asarray(b["image"]))
  mu, sigma = distances.gaussian_stats(feats)
  return {"mu": mu, "sigma": sigma}


def scored(config: ml_collections.ConfigDict, row: Dict[str, Any]) -> bool:
  """Whether a metrics row holds the sample metrics `config` asks for.

  The held-out loss's parts (eval_l1, eval_eps_mse, ...) are not sample
  metrics; a row scored without Inception files (PSNR / SSIM alone) is not
  scored for a config that has them.

  Args:
    config: the run config.
    row: a metrics.jsonl row.

  Returns:
    True if the section is off or the row has its metrics.
  """
  if not enabled(config):
    return True
  cfg = config.eval.sample_metrics
  if cfg.get("features", "inception") == "shape_classifier":
    keys = ("eval_fd_shapes",)
  elif cfg.inception_weights:
    keys = ("eval_fid", "eval_rfid")  # Samples; reconstructions.
  else:
    keys = ("eval_psnr",)
  return any(k in row for k in keys)

# Families whose objective has `reconstruct`: their PSNR / SSIM need no
# weight files, so Inception's may be left unset (no rFID then).
RECONSTRUCTION_FAMILIES = ("autoencoder",)


def enabled(config: ml_collections.ConfigDict) -> bool:
  """Whether the run computes sample metrics (a config without the section
  does not)."""
  cfg = (config.get("eval") or {}).get("sample_metrics")
  return bool(cfg and cfg.enabled)


def _video_error(frames: int) -> ValueError:
  # Reconstructions are scored frame by frame; a generated clip has no
  # image metric here (and reference statistics are of images).
  return ValueError(
      f"config.eval.sample_metrics scores images and this run draws "
      f"{frames}-frame clips (FID / KID / IS take no video); turn it off "
      "with --config.eval.sample_metrics.enabled=false.")


def check(config: ml_collections.ConfigDict) -> None:
  """One-line ValueErrors for the section's fields (no files are read).

  Args:
    config: the run config.
  """
  if not enabled(config):
    return
  frames = int((config.get("dataset") or {}).get("num_frames") or 0)
  if frames and config.get("family") != "autoencoder":
    # Before the weight and statistics fields: no use converting them.
    raise _video_error(frames)
  cfg = config.eval.sample_metrics
  features = cfg.get("features", "inception")
  if features not in ("inception", "shape_classifier"):
    raise ValueError(f"config.eval.sample_metrics.features={features!r}: use "
                     "'inception' or 'shape_classifier'.")
  if features == "shape_classifier":
    if not cfg.classifier_weights:
      raise ValueError("config.eval.sample_metrics.features="
                       "'shape_classifier' needs classifier_weights (write "
                       "them with python -m jaxgen.eval.classifier).")
  elif (bool(cfg.inception_weights) != bool(cfg.reference_stats)
        or not (cfg.inception_weights
                or config.get("family") in RECONSTRUCTION_FAMILIES)):
    unset = " and ".join(f"config.eval.sample_metrics.{k}" for k in
                         ("inception_weights", "reference_stats")
                         if not cfg.get(k))
    raise ValueError(f"set {unset}: Inception metrics need both (files "
                     "from jaxgen.eval.convert and jaxgen.eval.stats; "
                     "README: Evaluation)" + (
                         "; leave both unset for PSNR / SSIM alone"
                         if config.get("family") in RECONSTRUCTION_FAMILIES
                         else "") + ".")
  if int(cfg.num_samples) < 10:
    raise ValueError(f"config.eval.sample_metrics.num_samples="
                     f"{cfg.num_samples}: use at least 10 (thousands for a "
                     "meaningful FID).")
  if int(cfg.batch_size) < 1:
    raise ValueError(f"config.eval.sample_metrics.batch_size="
                     f"{cfg.batch_size} must be >= 1.")
  _check_reconstruction_sizes(config)
  every = int(cfg.every_steps)
  if every < 0 or (every and every % int(config.log_every_steps)):
    raise ValueError(f"config.eval.sample_metrics.every_steps={every} must "
                     f"be 0 or a multiple of log_every_steps="
                     f"{config.log_every_steps}.")


def _check_reconstruction_sizes(config: ml_collections.ConfigDict) -> None:
  """SSIM and LPIPS windows against the image size; LPIPS only where
  something is reconstructed."""
  cfg = config.eval.sample_metrics
  family = config.get("family")
  if family not in RECONSTRUCTION_FAMILIES:
    if cfg.get("lpips_weights"):
      raise ValueError(f"config.eval.sample_metrics.lpips_weights scores "
                       f"reconstructions (autoencoder runs), and a {family} "
                       "run reconstructs nothing; unset it.")
    return
  size = int((config.get("dataset") or {}).get("image_size") or 0)
  if not size:
    return
  need, what = ((perceptual.MIN_SIZE, "LPIPS") if cfg.get("lpips_weights")
                else (pixels.SSIM_MIN_SIZE, "SSIM"))
  if size < need:
    raise ValueError(
        f"config.dataset.image_size={size}: eval_{what.lower()} needs images "
        f"of at least {need} px; raise it"
        + (" or unset config.eval.sample_metrics.lpips_weights"
           if what == "LPIPS" and size >= pixels.SSIM_MIN_SIZE else "")
        + ", or turn sample metrics off with "
        "--config.eval.sample_metrics.enabled=false.")


class SampleMetrics:
  """`metrics(state, step)` -> {"eval_fid": ...} for one run."""

  def __init__(self, config: ml_collections.ConfigDict, setup: Any,
               eval_input: Optional[Callable[[], Any]] = None,
               held_out: Optional[Callable[[], int]] = None):
    """Loads weights and statistics; compiles nothing yet.

    Must be built under `jax.set_mesh(setup.mesh)` and the run's rules.

    Args:
      config: the run config.
      setup: the trainer's `Setup` (mesh, objective).
      eval_input: returns a fresh iterator over the held-out batches (for
        reconstruction families; `evaluation.every_held_out_image`).
      held_out: returns the images (frames, for clips) that iterator
        holds; None: not checked.

    Raises:
      ValueError: one line for a missing or mismatched file.
    """
    cfg = config.eval.sample_metrics
    self.every = int(cfg.every_steps)
    self.num = int(cfg.num_samples)
    self.shapes = cfg.get("features", "inception") == "shape_classifier"
    self.objective = setup.objective
    self.reconstructs = callable(getattr(setup.objective, "reconstruct",
                                         None))
    info = getattr(setup, "data_info", None)
    if info is not None and info.kind == "video" and not self.reconstructs:
      raise _video_error(info.num_frames)
    if self.shapes:
      if self.reconstructs:
        raise ValueError("config.eval.sample_metrics.features="
                         "'shape_classifier' scores generated samples; "
                         "reconstruction families use 'inception'.")
      self.extractor = classifier.Extractor.from_file(
          cfg.classifier_weights, batch_size=cfg.batch_size)
      _check_classifier_size(config, self.extractor.cfg.input_size)
      with warnings.catch_warnings():
        # Said once below, for the samples and the references alike.
        warnings.filterwarnings("ignore", message=distances.SINGULAR_WARNING)
        self.ref = (_classifier_stats(cfg.reference_stats,
                                      self.extractor.cfg.feature_dim)
                    if cfg.reference_stats else
                    _real_stats(config, self.extractor, self.num))
    elif cfg.inception_weights or not self.reconstructs:
      self.extractor = features_lib.FeatureExtractor.from_file(
          cfg.inception_weights, mesh=setup.mesh, batch_size=cfg.batch_size)
      self.ref = _stats(cfg.reference_stats, self.extractor.weights_hash)
    else:  # Pixel metrics (and LPIPS) only: no rFID.
      self.extractor = self.ref = None
    # For the resolution check at the first evaluation (Inception files).
    self.ref_set = (None if self.shapes or self.ref is None else
                    imagesets.ImageSet(cfg.reference_stats, stats=self.ref))
    self.size_checked = False
    self.eval_input = eval_input
    self.mesh = setup.mesh
    dp = mesh_lib.data_parallel_size(setup.mesh)
    self.batch = -(-int(cfg.batch_size) // dp) * dp
    self.lpips_params = None
    if self.reconstructs:
      if eval_input is None:
        raise ValueError("reconstruction metrics need held-out data; set "
                         "config.dataset.eval_split.")
      held_out = held_out() if held_out else None
      if held_out is not None and self.num > held_out:
        # Each held-out image is reconstructed once.
        raise ValueError(
            f"config.eval.sample_metrics.num_samples={self.num} exceeds the "
            f"{held_out} held-out images of split "
            f"{config.dataset.eval_split!r}; lower it to {held_out} or "
            "hold out more.")
      if cfg.lpips_weights:
        self.lpips_params = jax.device_put(
            perceptual.load_weights(cfg.lpips_weights),
            mesh_lib.replicated(setup.mesh))
      self._reconstruct = jax.jit(setup.objective.reconstruct)
      self._pixel_metrics = jax.jit(self._pixel_fn)
    else:
      self._draw = sampling.make_batch_sampler(setup.objective, setup.mesh,
                                               self.batch, seed=config.seed)
    dim = len(self.ref["mu"]) if self.ref is not None else 0
    if self.num <= dim:
      logging.warning(
          "config.eval.sample_metrics.num_samples=%d is at most the %d "
          "feature dimensions: the covariance is singular and the Fréchet "
          "distance biased (published FIDs use 50,000 samples).", self.num,
          dim)

  def due(self, step: int, is_last: bool) -> bool:
    """Whether this step evaluates."""
    return is_last or bool(self.every and step % self.every == 0)

  def _pixel_fn(self, x, y):
    out = {"psnr": pixels.psnr(x, y), "ssim": pixels.ssim(x, y)}
    if self.lpips_params is not None:
      out["lpips"] = perceptual.LPIPS().apply({"params": self.lpips_params},
                                              x, y)
    return out

  # The metric names of the last call.
  last_keys: Sequence[str] = ()

  def __call__(self, state, step: int) -> Dict[str, float]:
    """The metrics of `state`, as "eval_*" floats."""
    # Thousands of samples take minutes: said before, not only after.
    logging.info("Sample metrics of step %d: %s %d %s...", step,
                 "reconstructing" if self.reconstructs else "drawing",
                 self.num, "images" if self.reconstructs else "samples")
    with warnings.catch_warnings():
      # Said once, when the run starts (see __init__), not every evaluation.
      warnings.filterwarnings("ignore", message=distances.SINGULAR_WARNING)
      out = self._metrics(state)
    # What a rescore with other settings replaces (jaxgen.train.evaluation).
    self.last_keys = sorted(out)
    return out

  def _metrics(self, state) -> Dict[str, float]:
    if self.reconstructs:
      return self._reconstruction(state)
    num_batches = -(-self.num // self.batch)
    size = []
    images = imagesets.noting_size(
        (self._draw(state, k) for k in range(num_batches)), size)
    feats, logits = self.extractor.of_batches(images, self.num, "samples",
                                              progress=False)
    self._check_size(size[0], "the samples")
    if self.shapes:
      out = {"eval_fd_shapes": float(distances.frechet_distance(
          self.ref["mu"], self.ref["sigma"],
          *distances.gaussian_stats(feats)))}
      labels = sampling.labels_of(self.num, self.objective)
      if labels is not None:
        out["eval_accuracy_shapes"] = float(
            np.mean(np.argmax(logits, -1) == labels))
      return out
    return self._fid(feats, logits)

  def _check_size(self, size, what: str) -> None:
    """Warns (once per run) if the statistics are of another resolution."""
    if self.ref_set is not None and not self.size_checked:
      self.size_checked = True
      imagesets.check_size(self.ref_set, size, what)

  def _fid(self, feats, logits, prefix="") -> Dict[str, float]:
    metrics = distances.all_metrics(
        (self.ref["mu"], self.ref["sigma"]), distances.gaussian_stats(feats),
        features_a=self.ref.get("features"), features_b=feats,
        logits_b=logits)
    return {f"eval_{prefix}{k}": float(v) for k, v in metrics.items()
            if not k.endswith("_std")}

  def _reconstruction(self, state) -> Dict[str, float]:
    from jaxgen.parallel import multihost  # pylint: disable=g-import-not-at-top
    sums: Dict[str, float] = {}
    recons, have, it = [], 0, self.eval_input()
    while have < self.num:
      batch = multihost.global_batch(self.mesh, next(it))
      x = batch["video"] if "video" in batch else batch["image"]
      y = self._reconstruct(state, batch)
      if x.ndim == 5:  # Clips are scored frame by frame.
        x, y = (a.reshape((-1,) + a.shape[2:]) for a in (x, y))
      take = min(len(x), self.num - have)
      for k, v in _to_host(self._pixel_metrics(x, y)).items():
        sums[k] = sums.get(k, 0.0) + float(np.sum(v[:take]))
      if self.extractor is not None:
        recons.append(grids.to_uint8(np.asarray(_to_host(y)))[:take])
      have += take
    out = {f"eval_{k}": v / have for k, v in sums.items()}
    if self.extractor is None:
      return out
    self._check_size(recons[0].shape[1:3], "the reconstructions")
    feats, _ = self.extractor.of_batches(iter(recons), self.num,
                                         "reconstructions", progress=False)
    rfid = distances.frechet_distance(self.ref["mu"], self.ref["sigma"],
                                      *distances.gaussian_stats(feats))
    out["eval_rfid"] = float(rfid)
    return out


def _to_host(tree):
  """The global values of arrays split over the mesh, on every process (a
  split array spans other processes' devices there; gathered in the same
  order on all of them)."""
  if jax.process_count() == 1:
    return jax.device_get(tree)
  from jax.experimental import multihost_utils  # pylint: disable=g-import-not-at-top
  return multihost_utils.process_allgather(tree, tiled=True)
