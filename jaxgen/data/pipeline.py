"""grain input pipelines: the one entry point the trainer calls.

  iterator, info = build_input(config.dataset, global_batch_size=256,
                               seed=0, process_index=jax.process_index(),
                               process_count=jax.process_count())
  batch = next(iterator)  # {"image": f32 [b, H, W, C] in [-1, 1],
                          #  "label": i32 [b]}, b = 256 // process_count

Each process reads a disjoint shard of the split, so the per-process batches
form the global batch (`jax.make_array_from_process_local_data`). Training
shuffles each epoch differently but deterministically from `seed`, repeats
forever and augments; evaluation reads in order without augmentation. The
iterator is a grain `DatasetIterator`: `get_state()` / `set_state()`, and
orbax saves it with `grain.checkpoint.CheckpointSave(iterator)`.
"""

import dataclasses
import json
from typing import Callable, Mapping

from absl import logging
import grain
import ml_collections
import numpy as np

from jaxgen.data import config as config_lib
from jaxgen.data import memory
from jaxgen.data import preprocess
from jaxgen.data import shapes
from jaxgen.data import sources


@dataclasses.dataclass(frozen=True)
class DatasetInfo:
  """What a model and the step accounting need to know about the data.

  Attributes:
    kind: "image" or "video".
    num_examples: examples in the split (for epoch -> step conversion).
    image_size: height = width of the batches.
    channels: channels of the batches.
    num_classes: number of labels (0 if unlabeled: labels are then all 0).
    num_frames: frames per clip, or None for images.
    batches_per_epoch: batches per pass over the split (the same on every
      process).
    skipped_files: returns {path: reason} of the unreadable files this
      process skipped so far (`dataset.skip_bad_files`).
  """
  kind: str
  num_examples: int
  image_size: int
  channels: int
  num_classes: int
  num_frames: int | None
  batches_per_epoch: int
  skipped_files: Callable[[], Mapping[str, str]] = dataclasses.field(
      default=dict, compare=False, repr=False)

  @classmethod
  def synthetic(cls, dataset_config: ml_collections.ConfigDict
                ) -> "DatasetInfo":
    """Info describing the configured shapes, without opening any data
    (benchmarks, FLOP counts, sweep planning). Sizes are unknown (0)."""
    frames = dataset_config.get("num_frames") or None
    if frames is None and str(dataset_config.get("name", "")).partition(
        ":")[0] == "jaxgen_shapes_video":
      # 0 reads the stored clips: the embedded video's shortest length.
      frames = min(shapes.VIDEO_FRAMES)
    return cls(kind="video" if frames else "image", num_examples=0,
               image_size=int(dataset_config.image_size),
               channels=int(dataset_config.get("channels", 3)),
               num_classes=int(dataset_config.get("num_classes", 0)),
               num_frames=frames, batches_per_epoch=0)


def _split_name(config, spec: config_lib.Spec, split: str | None,
                train: bool) -> str:
  if split is not None:
    return split
  if train:
    return spec.split or config.split
  return config.eval_split


class _ProcessRows(grain.MapDataset):
  """This process's rows of every global batch, in global order.

  Global batch g holds positions [g·B, (g+1)·B) of the (shuffled, repeated)
  dataset; process p reads only positions [g·B + p·b, g·B + (p+1)·b). So every
  process reads just its own examples, yet the global batch, and with it the
  training run, is the same for any number of processes.
  """

  def __init__(self, parent: grain.MapDataset, process_index: int,
               process_count: int, batch_size: int):
    super().__init__(parent)
    self._p, self._n, self._b = process_index, process_count, batch_size
    self._length = len(parent) // (batch_size * process_count) * batch_size

  def __len__(self) -> int:
    return self._length

  def _global_index(self, index: int) -> int:
    g, r = divmod(index, self._b)
    return (g * self._n + self._p) * self._b + r

  def __getitem__(self, index):
    if isinstance(index, slice):
      return self.slice(index)
    return self._parent[self._global_index(index)]

  def __str__(self) -> str:
    return f"ProcessRows(process={self._p}/{self._n}, rows={self._b})"


class TooFewExamples(ValueError):
  """A split smaller than one global batch (commands with their own batch
  flag, e.g. encode's --batch_size, say it in their terms).

  Attributes:
    num_examples: the split's examples.
  """

  def __init__(self, num_examples: int, message: str):
    super().__init__(message)
    self.num_examples = num_examples


def build_input(
    dataset_config: ml_collections.ConfigDict,
    *,
    global_batch_size: int,
    seed: int,
    process_index: int | None = None,
    process_count: int | None = None,
    split: str | None = None,
    train: bool = True,
    repeat: bool | None = None,
    arrays: Mapping[str, np.ndarray] | None = None,
) -> tuple[grain.DatasetIterator, DatasetInfo]:
  """Builds this process's batch iterator over a dataset.

  Args:
    dataset_config: a config shaped like `default_dataset_config()`.
    global_batch_size: examples per step over all processes.
    seed: shuffling and augmentation seed.
    process_index: this process; None means `jax.process_index()`.
    process_count: number of processes; None means `jax.process_count()`.
    split: split to read; None means the spec's split or `config.split` for
      training, `config.eval_split` for evaluation.
    train: shuffle, augment and repeat (True), or read in order (False).
    repeat: loop over the data forever; None means `train`.
    arrays: numpy arrays for `dataset_config.name == "arrays"`, e.g.
      {"image": uint8 [N, H, W, C], "label": int [N]}.

  Returns:
    (iterator, info): a grain `DatasetIterator` (or, for a small split,
    `memory.InMemoryIterator`, see `dataset.in_memory`) of numpy batches
    {"image" (or "video"): float32 [b, (T,) H, W, C], "label": int32 [b]} with
    b = global_batch_size // process_count, and a `DatasetInfo`.

  Raises:
    ValueError: for a bad config, an unknown or unprepared dataset, or a shard
      smaller than one batch.
  """
  if process_index is None or process_count is None:
    import jax  # pylint: disable=g-import-not-at-top
    process_index = jax.process_index() if process_index is None else (
        process_index)
    process_count = jax.process_count() if process_count is None else (
        process_count)
  spec = config_lib.validate_dataset_config(
      dataset_config, global_batch_size=global_batch_size,
      process_count=process_count)
  if not 0 <= process_index < process_count:
    raise ValueError(f"process_index={process_index} is outside "
                     f"0..{process_count - 1}.")
  repeat = train if repeat is None else repeat
  split = _split_name(dataset_config, spec, split, train)
  source, transform, size, num_frames = _open(dataset_config, spec, split,
                                              arrays, train)
  batch_size = global_batch_size // process_count
  num_examples = len(source.data)
  if num_examples < global_batch_size:
    raise TooFewExamples(num_examples, (
        f"split {split!r} of {dataset_config.name!r} has {num_examples} "
        f"examples, fewer than one global batch of {global_batch_size}; use a "
        "smaller config.batch_size" + (
            " (a train batch is batch_size x the objective's batches per "
            "step)" if train else ", hold out more (config.dataset."
            "holdout_fraction, for folders) or set config.eval_batches=0")
        + "."))

  info = DatasetInfo(
      kind="video" if source.pixel_key == "video" else "image",
      num_examples=num_examples, image_size=size, channels=source.channels,
      num_classes=source.num_classes, num_frames=num_frames,
      batches_per_epoch=num_examples // global_batch_size,
      skipped_files=source.skipped_files)
  if _in_memory(dataset_config, spec, source, info, train):
    # User arrays are not kept: another call may pass others.
    # The scheme too: "jaxgen_shapes" and "tfds:jaxgen_shapes" read other
    # variants at the same size.
    # With what names the stored bytes (files; for latents their
    # latents.json, which a re-encoding into the same DIR rewrites, with
    # another scale): a notebook's second run got the first's latents.
    stored = source.identity() or (
        json.dumps(sources.latents_meta(spec.name, split), sort_keys=True)
        if spec.scheme == "latents" else None)
    key = None if spec.scheme == "arrays" else (
        spec.scheme, spec.name, str(dataset_config.data_dir), split, size,
        num_frames,
        source.channels,
        float(dataset_config.get("holdout_fraction", 0.0) or 0.0), stored)
    return memory.InMemoryIterator(
        memory.examples(source, transform, key=key,
                        cache_dir=memory.cache_dir(dataset_config),
                        cache_max_gb=float(dataset_config.get(
                            "in_memory_cache_max_gb", 0.0) or 0.0)),
        pixel_key=source.pixel_key, seed=seed, shuffle=train, repeat=repeat,
        random_flip=train and _flips(dataset_config, spec),
        process_index=process_index, process_count=process_count,
        batch_size=batch_size), info

  dataset = grain.MapDataset.source(source.data)
  if train:
    # One global order for all processes (the seed is not mixed with the
    # process). Shuffle before repeat: each epoch is a fresh permutation
    # (grain folds the epoch into the seed), and epochs never mix.
    dataset = dataset.seed(seed).shuffle()
  if repeat:
    dataset = dataset.repeat()
  if train:
    # After repeat, so that augmentations differ between epochs.
    dataset = dataset.random_map(transform)
  else:
    dataset = dataset.map(transform)
  # Augmentations above are drawn per global position, so they too are
  # independent of the process count; only now is the dataset split.
  dataset = _ProcessRows(dataset, process_index, process_count, batch_size)

  iter_dataset = dataset.to_iter_dataset(grain.ReadOptions(
      num_threads=dataset_config.num_threads,
      prefetch_buffer_size=dataset_config.prefetch_buffer_size))
  iter_dataset = iter_dataset.batch(batch_size, drop_remainder=True)
  iter_dataset = iter_dataset.map(preprocess.to_model_input)
  if dataset_config.worker_count and repeat and train:
    # Only for repeating training passes (an evaluation's repeating pass
    # started its workers at every evaluation): each worker batches its own
    # slice, so a single pass over the split would drop the rows that do
    # not fill a batch in every worker and mix the batches' order.
    iter_dataset = iter_dataset.mp_prefetch(grain.MultiprocessingOptions(
        num_workers=dataset_config.worker_count))

  return iter(iter_dataset), info


def _flips(dataset_config, spec) -> bool:
  """Whether examples are mirrored: never latents, whose mirror image is
  not the latent of the mirrored image (flip the images before encoding)."""
  if spec.scheme == "latents":
    if dataset_config.random_flip:
      logging.log_first_n(
          logging.INFO, "dataset.random_flip is not applied to latents (a "
          "mirrored latent is not the latent of the mirrored image).", 1)
    return False
  return bool(dataset_config.random_flip)


def _open(dataset_config, spec, split: str, arrays, train: bool):
  """A split's source and per-example transform.

  Returns:
    (source, transform, image size, frames per clip or None).
  """
  source = sources.open_source(spec, dataset_config, split=split,
                               arrays=arrays)
  is_float = source.float_pixels
  if is_float and dataset_config.random_crop and train:
    raise ValueError("dataset.random_crop needs uint8 pixels; float arrays "
                     "are used as they are.")
  # Float arrays (e.g. latents) keep their own size; everything else is
  # resized to the configured one.
  size = source.image_size if is_float else dataset_config.image_size
  if size is None:
    raise ValueError("Float arrays must be square (H == W).")
  num_frames = None
  if source.pixel_key == "video":
    num_frames = dataset_config.num_frames or source.num_frames
    if not num_frames:
      raise ValueError(f"Clips of {dataset_config.name!r} vary in length; set "
                       "dataset.num_frames.")
    if source.num_frames and num_frames > source.num_frames:
      raise ValueError(f"dataset.num_frames={num_frames} exceeds the "
                       f"{source.num_frames} frames stored per clip.")
  elif dataset_config.num_frames:
    raise ValueError(f"dataset.num_frames={dataset_config.num_frames} but "
                     f"{dataset_config.name!r} holds images; set it to 0.")
  transform = preprocess.Preprocess(
      pixel_key=source.pixel_key, label_key=source.label_key, size=size,
      num_frames=num_frames, random_crop=dataset_config.random_crop,
      crop_scale=dataset_config.random_crop_scale,
      random_flip=_flips(dataset_config, spec))
  return source, transform, size, num_frames


def split_size(dataset_config: ml_collections.ConfigDict, split: str) -> int:
  """The number of examples of a split (it is opened, not read).

  Args:
    dataset_config: a config shaped like `default_dataset_config()`.
    split: the split.

  Returns:
    Its example count.
  """
  spec = config_lib.validate_dataset_config(
      dataset_config, global_batch_size=1, process_count=1)
  return len(sources.open_source(spec, dataset_config, split=split).data)


def read_examples(dataset_config: ml_collections.ConfigDict, *, split: str,
                  start: int, stop: int) -> dict[str, np.ndarray]:
  """Examples [start, stop) of a split, in order, as one evaluation batch.

  For the rows that whole batches of `build_input` leave over at the end of
  a split (its batches have a fixed size), e.g. when encoding all of it.

  Args:
    dataset_config: a config shaped like `default_dataset_config()`.
    split: the split to read.
    start: first example.
    stop: one past the last example.

  Returns:
    {"image" (or "video"): float32 [stop - start, (T,) H, W, C], "label":
    int32 [stop - start]}, preprocessed as `build_input(train=False)` does.
  """
  spec = config_lib.validate_dataset_config(
      dataset_config, global_batch_size=1, process_count=1)
  source, transform, _, _ = _open(dataset_config, spec, split, None, False)
  rows = [transform(source.data[i]) for i in range(start, stop)]
  return preprocess.to_model_input(
      {k: np.stack([r[k] for r in rows]) for k in rows[0]})


def _in_memory(dataset_config, spec, source, info: DatasetInfo,
               train: bool) -> bool:
  """Whether `build_input` batches this split from memory."""
  mode = dataset_config.get("in_memory", "auto")
  if mode == "never":
    return False
  if mode == "always":  # Checked possible by validate_dataset_config.
    return True
  if config_lib.per_example_work(dataset_config, spec, train):
    return False
  size = memory.nbytes(info.num_examples, info.image_size, info.channels,
                       info.num_frames, source.float_pixels)
  return size <= float(dataset_config.get("in_memory_max_mb", 256)) * 2**20
