"""`jaxgen_shapes`: an embedded, procedurally generated TFDS dataset.

Each example is one coloured geometric shape (circle, square, triangle, ...)
on a random two-colour gradient background; the label is the shape kind.
Video configs render short clips of the shape drifting (bouncing off the
borders) and spinning. Everything is generated offline and deterministically
from the config's seed, so the data exists on every machine without a
download, and two preparations give identical files.

The builder is an ordinary `tfds.core.GeneratorBasedBuilder` registered as
`jaxgen_shapes`; `prepare` writes it in array_record format (the format
`tfds.data_source` reads with random access) under a file lock, so several
processes sharing a data dir prepare it once.

  prepare("image_32", data_dir)
  source = tfds.data_source("jaxgen_shapes/image_32", split="train",
                            data_dir=data_dir, download=False)
"""

import contextlib
import dataclasses
import fcntl
import io
import logging as pylogging
import os
import threading
import time
from typing import Iterator

from absl import logging
from etils import epath
import numpy as np
from PIL import Image
import tensorflow_datasets as tfds
from tensorflow_datasets.core.utils import tqdm_utils

NAME = "jaxgen_shapes"
SHAPE_NAMES = ("circle", "square", "triangle", "ring", "cross", "star",
               "hexagon", "crescent")
IMAGE_SIZES = (16, 32, 64, 128, 256, 512, 1024)
VIDEO_SIZES = (16, 32, 64)
VIDEO_FRAMES = (8, 16)

# Examples per split by resolution: large images are few so that preparing any
# config takes seconds to a minute on one core (they exist for shape and
# throughput checks at high resolution, not to be learned well).
_IMAGE_COUNTS = {16: (8192, 512), 32: (8192, 512), 64: (8192, 512),
                 128: (4096, 256), 256: (1024, 128), 512: (256, 64),
                 1024: (256, 64)}
_VIDEO_COUNTS = {16: (2048, 256), 32: (2048, 256), 64: (1024, 128)}
_DESCRIPTION = (
    "Procedural coloured geometric shapes (" + ", ".join(SHAPE_NAMES) + ") on "
    "random gradient backgrounds, labelled by shape kind; video configs show "
    "one shape drifting, bouncing off the borders and spinning.")
# Folded into the per-example seed so train and test never share examples.
_SPLIT_IDS = {"train": 0, "test": 1}


# ----------------------------------------------------------------------------
# Signed distance functions. Each takes unit-scale coordinates x, y (arrays)
# of a shape of "radius" about 1 centred at the origin and returns the signed
# distance to its boundary (negative inside), also in unit scale. Exact
# distances give anti-aliased edges of the same softness for every kind.
# ----------------------------------------------------------------------------


def _length(x, y):
  return np.sqrt(x * x + y * y)


def _sd_box(x, y, half_w, half_h):
  dx, dy = np.abs(x) - half_w, np.abs(y) - half_h
  outside = _length(np.maximum(dx, 0.0), np.maximum(dy, 0.0))
  return outside + np.minimum(np.maximum(dx, dy), 0.0)


def _sd_circle(x, y):
  return _length(x, y) - 1.0


def _sd_square(x, y):
  return _sd_box(x, y, 0.8, 0.8)


def _sd_triangle(x, y):
  """Equilateral triangle with circumradius ~1, pointing up."""
  k = np.sqrt(3.0)
  r = 0.85
  x = np.abs(x) - r
  y = y + r / k
  # Fold the region beyond the slanted edge onto the base's frame.
  fold = x + k * y > 0.0
  x, y = (np.where(fold, (x - k * y) / 2.0, x),
          np.where(fold, (-k * x - y) / 2.0, y))
  x = x - np.clip(x, -2.0 * r, 0.0)
  return -_length(x, y) * np.sign(y)


def _sd_ring(x, y):
  return np.abs(_length(x, y) - 0.7) - 0.3


def _sd_cross(x, y):
  return np.minimum(_sd_box(x, y, 1.0, 0.3), _sd_box(x, y, 0.3, 1.0))


def _sd_star(x, y):
  """Five-pointed star of outer radius 1 (mirror folds onto one arm edge)."""
  k1x, k1y = 0.809016994375, -0.587785252292
  k2x, k2y = -k1x, k1y
  x = np.abs(x)
  d = 2.0 * np.maximum(k1x * x + k1y * y, 0.0)
  x, y = x - d * k1x, y - d * k1y
  d = 2.0 * np.maximum(k2x * x + k2y * y, 0.0)
  x, y = x - d * k2x, y - d * k2y
  x = np.abs(x)
  y = y - 1.0
  inner = 0.45
  bax, bay = -inner * k1y, inner * k1x - 1.0
  h = np.clip((x * bax + y * bay) / (bax * bax + bay * bay), 0.0, 1.0)
  return _length(x - bax * h, y - bay * h) * np.sign(y * bax - x * bay)


def _sd_hexagon(x, y):
  """Regular hexagon with apothem 0.85."""
  kx, ky, kz = -0.866025404, 0.5, 0.577350269
  r = 0.85
  x, y = np.abs(x), np.abs(y)
  d = 2.0 * np.minimum(kx * x + ky * y, 0.0)
  x, y = x - d * kx, y - d * ky
  x = x - np.clip(x, -kz * r, kz * r)
  y = y - r
  return _length(x, y) * np.sign(y)


def _sd_crescent(x, y):
  # A disc minus an offset smaller disc (max of SDFs is a subtraction).
  return np.maximum(_length(x, y) - 1.0, 0.8 - _length(x - 0.55, y))


_SDFS = (_sd_circle, _sd_square, _sd_triangle, _sd_ring, _sd_cross, _sd_star,
         _sd_hexagon, _sd_crescent)
assert len(_SDFS) == len(SHAPE_NAMES)


# ----------------------------------------------------------------------------
# Rendering.
# ----------------------------------------------------------------------------


def _example_rng(seed: int, split: str, index: int) -> np.random.Generator:
  # Seeding by (seed, split, index) makes every example independent of the
  # order or parallelism of generation.
  return np.random.default_rng([seed, _SPLIT_IDS[split], index])


def _sample_colours(rng: np.random.Generator):
  """Returns (background start, background end, shape colour) in [0, 1]."""
  bg0 = rng.uniform(0.0, 1.0, 3)
  bg1 = np.clip(bg0 + rng.uniform(-0.35, 0.35, 3), 0.0, 1.0)
  bg_mean = (bg0 + bg1) / 2
  # Resample until the shape stands out from the background; the last draw
  # falls back to the complement, which always contrasts.
  for _ in range(8):
    colour = rng.uniform(0.0, 1.0, 3)
    if np.abs(colour - bg_mean).sum() > 0.6:
      break
  else:
    colour = 1.0 - bg_mean
  return bg0, bg1, colour


def _render(kind: int, background: np.ndarray, colour: np.ndarray,
            centres: np.ndarray, radius: float,
            angles: np.ndarray) -> np.ndarray:
  """Draws a shape over a uint8 `background` [size, size, 3], once per frame.

  Args:
    kind: index into SHAPE_NAMES.
    background: uint8 [size, size, 3].
    colour: shape colour, RGB in [0, 1].
    centres: [T, 2] shape centre (x, y) per frame, in pixels.
    radius: shape radius in pixels.
    angles: [T] rotation per frame, in radians.

  Returns:
    uint8 [T, size, size, 3].
  """
  size = background.shape[0]
  # Every shape lies within 1.2 radii of its centre (the square's corners
  # reach 1.13), so only the box around all centres, plus a pixel of
  # anti-aliasing, is drawn: at high resolution this is most of the cost.
  reach = 1.2 * radius + 1.0
  x0, y0 = np.maximum(np.floor(centres.min(0) - reach), 0).astype(int)
  x1, y1 = np.minimum(np.ceil(centres.max(0) + reach), size).astype(int)
  # Frames along axis 0, rows along 1, columns along 2.
  cx, cy = (centres[:, i, None, None].astype(np.float32) for i in (0, 1))
  px = np.arange(x0, x1, dtype=np.float32)[None, None, :] + 0.5 - cx
  py = np.arange(y0, y1, dtype=np.float32)[None, :, None] + 0.5 - cy
  cos = np.cos(angles).astype(np.float32)[:, None, None]
  sin = np.sin(angles).astype(np.float32)[:, None, None]
  scale = np.float32(radius)
  # Rotate by -angle and scale to unit size; image y points down, so flip it
  # to keep shapes upright at angle 0.
  ux = (cos * px + sin * py) / scale
  uy = (sin * px - cos * py) / scale
  dist = _SDFS[kind](ux, uy) * scale  # in pixels
  alpha = np.clip(0.5 - dist, 0.0, 1.0)[..., None]
  frames = np.repeat(background[None], len(centres), axis=0)
  region = frames[:, y0:y1, x0:x1].astype(np.float32)
  region += (colour.astype(np.float32) * 255.0 - region) * alpha
  frames[:, y0:y1, x0:x1] = np.round(region).astype(np.uint8)
  return frames


def _background(size: int, bg0, bg1, direction: float) -> np.ndarray:
  """A linear gradient from colour bg0 to bg1 along `direction`, as uint8."""
  coords = (np.arange(size) + 0.5) / size - 0.5
  ramp = (np.cos(direction) * coords[None, :] +
          np.sin(direction) * coords[:, None])
  ramp = np.clip(ramp / np.sqrt(0.5) + 0.5, 0.0, 1.0)[..., None]
  return np.round((bg0 + (bg1 - bg0) * ramp) * 255.0).astype(np.uint8)


def render_image(seed: int, split: str, index: int,
                 size: int) -> tuple[np.ndarray, int]:
  """Renders example `index` of `split` for a given seed.

  Args:
    seed: dataset seed.
    split: "train" or "test".
    index: example index within the split.
    size: image height and width in pixels.

  Returns:
    (image uint8 [size, size, 3], label int in [0, len(SHAPE_NAMES))).
  """
  rng = _example_rng(seed, split, index)
  kind = int(rng.integers(len(SHAPE_NAMES)))
  bg0, bg1, colour = _sample_colours(rng)
  background = _background(size, bg0, bg1, rng.uniform(0, 2 * np.pi))
  radius = rng.uniform(0.18, 0.34) * size
  centre = rng.uniform(radius, size - radius, 2)
  angle = rng.uniform(0, 2 * np.pi)
  image = _render(kind, background, colour, centre[None], radius,
                  np.array([angle]))[0]
  return image, kind


def _bounce(position: np.ndarray, low: float, high: float) -> np.ndarray:
  """Folds an unbounded straight path into [low, high] (elastic walls)."""
  span = high - low
  offset = np.mod(position - low, 2 * span)
  return low + np.where(offset > span, 2 * span - offset, offset)


def render_video(seed: int, split: str, index: int, size: int,
                 num_frames: int) -> tuple[np.ndarray, int]:
  """Renders a clip of one shape moving and spinning over a still background.

  Args:
    seed: dataset seed.
    split: "train" or "test".
    index: example index within the split.
    size: frame height and width in pixels.
    num_frames: clip length.

  Returns:
    (video uint8 [num_frames, size, size, 3], label int).
  """
  rng = _example_rng(seed, split, index)
  kind = int(rng.integers(len(SHAPE_NAMES)))
  bg0, bg1, colour = _sample_colours(rng)
  background = _background(size, bg0, bg1, rng.uniform(0, 2 * np.pi))
  # Smaller shapes than in images leave room to move.
  radius = rng.uniform(0.14, 0.26) * size
  start = rng.uniform(radius, size - radius, 2)
  heading = rng.uniform(0, 2 * np.pi)
  speed = rng.uniform(0.03, 0.08) * size  # pixels per frame
  velocity = speed * np.array([np.cos(heading), np.sin(heading)])
  angle0 = rng.uniform(0, 2 * np.pi)
  spin = rng.uniform(-0.3, 0.3)  # radians per frame
  steps = np.arange(num_frames)[:, None]
  centres = _bounce(start + velocity * steps, radius, size - radius)
  angles = angle0 + spin * steps[:, 0]
  return _render(kind, background, colour, centres, radius, angles), kind


# ----------------------------------------------------------------------------
# TFDS builder.
# ----------------------------------------------------------------------------


@dataclasses.dataclass(eq=False)
class ShapesConfig(tfds.core.BuilderConfig):
  """Builder config: resolution, clip length and split sizes.

  Attributes:
    image_size: height and width in pixels.
    num_frames: frames per clip; 0 for image configs.
    num_train: examples in the train split.
    num_test: examples in the test split.
    seed: generation seed; a different seed is a different dataset, so give
      such a config a different name.
  """
  image_size: int = 32
  num_frames: int = 0
  num_train: int = 8192
  num_test: int = 512
  seed: int = 0


def image_config_name(size: int) -> str:
  """Returns the builder config name for an image resolution."""
  return f"image_{size}"


def video_config_name(size: int, num_frames: int) -> str:
  """Returns the builder config name for a video resolution and length."""
  return f"video_{size}_t{num_frames}"


def _builder_configs() -> list[ShapesConfig]:
  configs = []
  for size in IMAGE_SIZES:
    num_train, num_test = _IMAGE_COUNTS[size]
    configs.append(ShapesConfig(
        name=image_config_name(size), image_size=size, num_train=num_train,
        num_test=num_test, description=f"{size}x{size} RGB images."))
  for size in VIDEO_SIZES:
    for frames in VIDEO_FRAMES:
      num_train, num_test = _VIDEO_COUNTS[size]
      configs.append(ShapesConfig(
          name=video_config_name(size, frames), image_size=size,
          num_frames=frames, num_train=num_train, num_test=num_test,
          description=f"{frames}-frame {size}x{size} RGB clips."))
  return configs


class JaxgenShapes(tfds.core.GeneratorBasedBuilder):
  """Random coloured shapes on gradient backgrounds; label = shape kind."""

  VERSION = tfds.core.Version("1.0.0")
  RELEASE_NOTES = {"1.0.0": "Initial release."}
  BUILDER_CONFIGS = _builder_configs()
  DEFAULT_CONFIG_NAME = image_config_name(32)
  # TFDS derives this from the package's resources and, for a plain package
  # on Python >= 3.9, touches `importlib_resources`, which tfds 4.9.10 does
  # not install there; naming the file directly avoids the lookup. TFDS uses
  # it only to look for a checksums file, which a generated dataset lacks.
  code_path = epath.Path(__file__)

  def _info(self) -> tfds.core.DatasetInfo:
    config = self.builder_config
    size = config.image_size
    if config.num_frames:
      key = "video"
      # A zlib-compressed tensor rather than tfds.features.Video (one PNG per
      # frame): ~10x faster to write and read, smaller on disk for these
      # flat images, and it decodes to one [T, H, W, 3] array, not a list.
      pixels = tfds.features.Tensor(
          shape=(config.num_frames, size, size, 3), dtype=np.uint8,
          encoding="zlib")
    else:
      key = "image"
      pixels = tfds.features.Image(shape=(size, size, 3),
                                   encoding_format="png")
    return self.dataset_info_from_configs(
        description=_DESCRIPTION,
        features=tfds.features.FeaturesDict({
            key: pixels,
            "label": tfds.features.ClassLabel(names=SHAPE_NAMES),
        }),
        supervised_keys=(key, "label"),
    )

  def _split_generators(self, dl_manager):
    del dl_manager  # Everything is generated; nothing is downloaded.
    config = self.builder_config
    return {
        "train": self._generate_examples("train", config.num_train),
        "test": self._generate_examples("test", config.num_test),
    }

  def _generate_examples(self, split: str, count: int) -> Iterator:
    config = self.builder_config
    for index in range(count):
      if config.num_frames:
        video, label = render_video(config.seed, split, index,
                                    config.image_size, config.num_frames)
        example = {"video": video}
      else:
        image, label = render_image(config.seed, split, index,
                                    config.image_size)
        # TFDS encodes a PIL image with PIL; a numpy one would go through a
        # TensorFlow graph, which costs a TF import and is slower.
        example = {"image": Image.fromarray(image)}
      example["label"] = label
      yield index, example


class _NoFolderWarnings(pylogging.Filter):
  """Drops TFDS' "Variant folder ... has no dataset_info.json": the folder
  is the one being prepared."""

  def filter(self, record: pylogging.LogRecord) -> bool:
    return not str(record.msg).startswith("Variant folder")


# sys.stdout, the handler's filters and TFDS' progress-bar switch are
# process-wide: threads preparing at once take turns (the file lock in
# `prepare` serialises processes only).
_QUIET_LOCK = threading.Lock()


@contextlib.contextmanager
def _quiet_preparation():
  """TFDS' preparation without its prints (stdout), progress bars and
  warnings about the folder it is writing: a run's stdout keeps only its
  result line, and `prepare` logs one line of its own."""
  quiet = _NoFolderWarnings()
  handler = logging.get_absl_handler()
  with _QUIET_LOCK:
    # TFDS has no public getter; a caller that turned the bars off keeps
    # them off.
    was_shown = getattr(tqdm_utils, "_active", True)
    handler.addFilter(quiet)
    tfds.display_progress_bar(False)
    try:
      with contextlib.redirect_stdout(io.StringIO()):
        yield
    finally:
      tfds.display_progress_bar(was_shown)
      handler.removeFilter(quiet)


@contextlib.contextmanager
def _file_lock(path: str):
  """Holds an exclusive advisory lock on `path` (created if missing)."""
  with open(path, "a") as handle:
    fcntl.flock(handle, fcntl.LOCK_EX)
    try:
      yield
    finally:
      fcntl.flock(handle, fcntl.LOCK_UN)


def builder(config: str | ShapesConfig,
            data_dir: str | None = None) -> JaxgenShapes:
  """Returns the `jaxgen_shapes` builder for a config name or object.

  Args:
    config: a name from `JaxgenShapes.BUILDER_CONFIGS` (e.g. "image_32",
      "video_16_t8") or a custom `ShapesConfig`.
    data_dir: TFDS data dir; None means TFDS' default (`$TFDS_DATA_DIR` or
      ~/tensorflow_datasets).

  Returns:
    The builder, writing array_record files.
  """
  return JaxgenShapes(config=config, data_dir=data_dir,
                      file_format="array_record")


def prepare(config: str | ShapesConfig,
            data_dir: str | None = None) -> JaxgenShapes:
  """Generates a `jaxgen_shapes` config into `data_dir` unless already there.

  Safe to call from several processes at once: an exclusive file lock in the
  data dir serialises them, and all but the first find the data prepared.
  (TFDS itself writes to a temporary directory and renames it at the end, so
  an interrupted preparation leaves nothing half-written behind.)

  Args:
    config: config name or `ShapesConfig`, as for `builder`.
    data_dir: TFDS data dir; None means TFDS' default.

  Returns:
    The prepared builder.
  """
  with _quiet_preparation():
    return _prepare(config, data_dir)


def _prepare(config, data_dir) -> JaxgenShapes:
  """`prepare` under `_quiet_preparation`."""
  shapes_builder = builder(config, data_dir)
  if shapes_builder.is_prepared():
    return shapes_builder
  os.makedirs(shapes_builder.data_dir_root, exist_ok=True)
  lock = os.path.join(shapes_builder.data_dir_root,
                      f".{NAME}.{shapes_builder.builder_config.name}.lock")
  with _file_lock(lock):
    # Re-create the builder: another process may have finished meanwhile, and
    # a builder caches what it found on disk when it was constructed.
    shapes_builder = builder(config, data_dir)
    if not shapes_builder.is_prepared():
      start = time.perf_counter()
      shapes_builder.download_and_prepare(
          download_config=tfds.download.DownloadConfig(
              try_download_gcs=False))
      logging.info("Prepared %s/%s in %s in %.1f s.", NAME,
                   shapes_builder.builder_config.name, shapes_builder.data_dir,
                   time.perf_counter() - start)
  return shapes_builder
