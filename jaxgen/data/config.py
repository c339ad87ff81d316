"""Dataset config: defaults, the dataset spec string, and validation.

A dataset is named by one string, `config.name`:

  jaxgen_shapes[:split]          embedded image dataset, at config.image_size
  jaxgen_shapes_video            embedded clips, config.image_size and
                                 config.num_frames
  tfds:<name>[/<config>][:split] a TFDS dataset prepared in array_record
                                 format in config.data_dir
  folder:/path/to/images         png/jpg files; class sub-folders -> labels
  latents:/path/to/dir           an autoencoder's latents (jaxgen.autoencoders.
                                 encode), scaled by their scaling factor
  arrays                         numpy arrays passed to `build_input(arrays=)`

`parse_spec` splits it, and `validate_dataset_config` checks a config with the
batch layout it will be used with, failing with one-line ValueErrors.
"""

import dataclasses

import ml_collections
from ml_collections import config_dict

from jaxgen.data import shapes

MIN_IMAGE_SIZE, MAX_IMAGE_SIZE = 16, 1024
IN_MEMORY_MODES = ("auto", "always", "never")


def per_example_work(config: ml_collections.ConfigDict, spec: "Spec",
                     train: bool) -> bool:
  """Whether batches need per-example work the in-memory path cannot do:
  random crops (training only), grain worker processes, or a folder's
  files (decoded, and possibly skipped, one by one)."""
  return bool((train and config.random_crop) or config.worker_count
              or spec.scheme == "folder")


def default_dataset_config() -> ml_collections.ConfigDict:
  """Returns the default dataset config: 32px embedded shapes.

  Returns:
    A ConfigDict; families nest it as `config.dataset`.
  """
  c = ml_collections.ConfigDict()
  # Which data: one of the specs in this module's docstring.
  c.name = "jaxgen_shapes"
  # Output height = width in pixels. Sources are resized (shorter side) and
  # centre-cropped to it; float `arrays` (e.g. latents) keep their own size.
  c.image_size = 32
  # Channels the model is built for; must equal the source's (the trainer
  # checks before compiling): 3 for RGB, 1 for grayscale TFDS sets.
  c.channels = 3
  # Frames per clip for video data, taken from the start of each stored clip;
  # 0 keeps the stored length (8 for jaxgen_shapes_video, which stores 8 or
  # 16). Must stay 0 for images.
  c.num_frames = 0
  # TFDS data dir where datasets are (or jaxgen_shapes gets) prepared; None
  # means TFDS' default: $TFDS_DATA_DIR, else ~/tensorflow_datasets.
  c.data_dir = config_dict.placeholder(str)
  # Split for training and for evaluation; TFDS slicing works
  # ("train[:90%]"). A split in `name` (tfds:...:split) replaces `split`;
  # build_input's own `split` argument replaces both.
  c.split = "train"
  c.eval_split = "test"
  # Training augmentation. random_crop: resize the shorter side to
  # image_size * random_crop_scale and crop a random square (instead of the
  # centre); random_flip: mirror left-right with probability 1/2.
  c.random_crop = False
  c.random_crop_scale = 1.125
  c.random_flip = True
  # folder: sources only. An image file that does not decode is skipped (the
  # next one takes its place; each is warned about once and counted in the
  # logs) instead of stopping the run with an error naming it.
  c.skip_bad_files = True
  # folder: sources only. Fraction of the images held out for evaluation
  # (chosen by a hash of each path, so stable as files are added): `split`
  # reads the rest, any other split (eval_split) the held-out ones. 0 means
  # the folder has one split, and evaluating on it is refused.
  c.holdout_fraction = 0.0
  # Input pipeline resources per process: grain read threads, elements
  # prefetched by them, and worker processes (0: read in this process).
  # Workers each read a slice, so the batch order depends on worker_count
  # (deterministically); they need absl flags parsed (absl.app.run does it).
  # Training passes only: evaluations and single passes (encoding) read in the
  # process, every row once and in order.
  c.num_threads = 2
  c.prefetch_buffer_size = 16
  c.worker_count = 0
  # Batch a small split from memory (jaxgen.data.memory: decoded once, each
  # batch one numpy gather; same order and iterator state as grain, flips
  # drawn differently): "auto" when the preprocessed split is at most
  # in_memory_max_mb and needs no per-example work (no random_crop, no
  # workers, not a folder), "always" (an error if it cannot), "never".
  c.in_memory = "auto"
  c.in_memory_max_mb = 256
  # Where a split batched from memory is kept once decoded in full, so the
  # next run (a sweep's next point) reads it instead of decoding it again
  # (TFDS sources; keyed by their files, sizes and times and by the
  # preprocessing): "auto" = $JAXGEN_DECODED_CACHE_DIR, else
  # ~/.cache/jaxgen/decoded; "" = no disk cache.
  c.in_memory_cache_dir = "auto"
  # Size cap of that disk cache in GB: after a split is written, the least
  # recently used ones (a read counts as a use) are deleted until it holds at
  # most this much, the new one always kept; 0: no cap.
  c.in_memory_cache_max_gb = 20.0
  return c


@dataclasses.dataclass(frozen=True)
class Spec:
  """A parsed dataset spec.

  Attributes:
    scheme: a registered source scheme (`jaxgen.data.sources.SOURCES`).
    name: TFDS builder name with optional "/config" (tfds), the folder path
      (folder), else the scheme.
    split: split named in the spec, or None.
  """
  scheme: str
  name: str
  split: str | None = None


def parse_spec(spec: str) -> Spec:
  """Parses a dataset spec string (see the module docstring).

  Args:
    spec: e.g. "jaxgen_shapes", "tfds:mnist:train[:90%]", "folder:/data".

  Returns:
    The parsed `Spec`.

  Raises:
    ValueError: unknown scheme or missing name.
  """
  choices = ("use one of: jaxgen_shapes[:split], jaxgen_shapes_video[:split], "
             "tfds:<name>[/<config>][:split], folder:/path/to/images, "
             "latents:/path/to/dir, arrays")
  from jaxgen.data import sources  # pylint: disable=g-import-not-at-top  (it imports this module)
  scheme, sep, rest = spec.partition(":")
  with_path = ("tfds", "folder", "latents")
  # The embedded datasets may name a split ("jaxgen_shapes:test", as
  # "tfds:jaxgen_shapes:test" does).
  embedded = ("jaxgen_shapes", "jaxgen_shapes_video")
  if scheme not in sources.SOURCES or (
      bool(sep) != (scheme in with_path) and scheme not in embedded):
    raise ValueError(f"unknown dataset {spec!r}; {choices}.")
  if scheme in embedded:
    return Spec(scheme, scheme, rest or None)
  if scheme == "tfds":
    # Split slicing such as "train[:10%]" contains ':', so split only once.
    name, _, split = rest.partition(":")
    if not name:
      raise ValueError(f"Dataset {spec!r} names no TFDS dataset; {choices}.")
    return Spec("tfds", name, split or None)
  if scheme in ("folder", "latents"):
    if not rest:
      raise ValueError(f"Dataset {spec!r} names no folder; {choices}.")
    return Spec(scheme, rest)
  return Spec(scheme, scheme)


def validate_dataset_config(config: ml_collections.ConfigDict, *,
                            global_batch_size: int | None = None,
                            process_count: int = 1) -> Spec:
  """Checks a dataset config (and batch layout) and returns its parsed spec.

  Args:
    config: a config shaped like `default_dataset_config()`.
    global_batch_size: if given, checked to split evenly over processes.
    process_count: number of processes reading the data.

  Returns:
    The parsed spec of `config.name`.

  Raises:
    ValueError: with a one-line message naming the offending field.
  """
  spec = parse_spec(config.name)
  size = config.image_size
  if spec.scheme == "jaxgen_shapes":
    if not MIN_IMAGE_SIZE <= size <= MAX_IMAGE_SIZE:
      raise ValueError(
          f"dataset.image_size={size} is outside {MIN_IMAGE_SIZE}..."
          f"{MAX_IMAGE_SIZE}, the range jaxgen_shapes is generated at.")
  elif spec.scheme == "jaxgen_shapes_video":
    largest = max(shapes.VIDEO_SIZES)
    if not MIN_IMAGE_SIZE <= size <= largest:
      raise ValueError(
          f"dataset.image_size={size} is outside {MIN_IMAGE_SIZE}..."
          f"{largest}, the range jaxgen_shapes_video is generated at.")
    if not 0 <= config.num_frames <= max(shapes.VIDEO_FRAMES):
      raise ValueError(
          f"dataset.num_frames={config.num_frames} is outside 0..."
          f"{max(shapes.VIDEO_FRAMES)} for jaxgen_shapes_video.")
  elif size <= 0:
    raise ValueError(f"dataset.image_size={size} must be positive.")
  if config.num_frames < 0:
    raise ValueError(f"dataset.num_frames={config.num_frames} must be >= 0.")
  fraction = float(config.get("holdout_fraction", 0.0) or 0.0)
  if not 0.0 <= fraction < 1.0:
    raise ValueError(f"dataset.holdout_fraction={fraction} must be in [0, 1) "
                     "(the share of a folder's images held out).")
  if config.random_crop_scale < 1.0:
    raise ValueError(f"dataset.random_crop_scale={config.random_crop_scale} "
                     "must be >= 1 (the crop is taken from an enlargement).")
  if config.num_threads < 0 or config.worker_count < 0:
    raise ValueError("dataset.num_threads and dataset.worker_count must be "
                     ">= 0.")
  cap = config.get("in_memory_cache_max_gb", 0.0)
  if not (isinstance(cap, (int, float)) and 0 <= cap < float("inf")):
    raise ValueError(f"dataset.in_memory_cache_max_gb={cap} must be >= 0 "
                     "(0: no cap on the decoded-split cache).")
  mode = config.get("in_memory", "auto")
  if mode not in IN_MEMORY_MODES:
    raise ValueError(f"dataset.in_memory={mode!r}; use one of "
                     f"{', '.join(IN_MEMORY_MODES)}.")
  if mode == "always" and per_example_work(config, spec, train=True):
    raise ValueError("dataset.in_memory='always' needs random_crop=False, "
                     "worker_count=0 and a source other than folder:; set "
                     "in_memory='auto'.")
  if process_count < 1:
    raise ValueError(f"process_count={process_count} must be >= 1.")
  if global_batch_size is not None and (
      global_batch_size <= 0 or global_batch_size % process_count):
    raise ValueError(
        f"global_batch_size={global_batch_size} must be a positive multiple "
        f"of process_count={process_count}.")
  return spec
