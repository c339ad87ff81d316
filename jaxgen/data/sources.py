"""Random-access data sources, one opener per dataset spec scheme.

Each opener returns a `Source`: an object grain can read by index (`len` and
`[i]` giving a dict of numpy values) plus what the pipeline needs to know
about it. Openers are looked up by scheme in `SOURCES`, so adding a kind of
data is one registered function.

Nothing here downloads: TFDS datasets must already be prepared in array_record
format, except the embedded `jaxgen_shapes`, which is generated on first use.
"""

import dataclasses
import difflib
import functools
import json
import os
import re
from typing import Any, Callable, Dict, Mapping, Optional, Sequence

import ml_collections
import numpy as np
import tensorflow_datasets as tfds

from jaxgen import registry
from jaxgen.data import config as config_lib
from jaxgen.data import shapes


@dataclasses.dataclass(frozen=True)
class Source:
  """A random-access source and its description.

  Attributes:
    data: supports `len(data)` and `data[i]` -> dict of numpy values.
    pixel_key: "image" or "video", the key of the pixels in `data[i]`.
    label_key: key of the integer label, or None if unlabeled.
    num_classes: number of label values (0 if unlabeled).
    channels: channels of the pixels.
    num_frames: frames per stored clip, or None for images.
    image_size: stored height = width, or None if it varies or is not square.
    float_pixels: pixels are floats to use as they are (not uint8 to resize
      and scale).
    skipped_files: returns {path: reason} of the unreadable files skipped
      so far (sources that never skip return {}).
    identity: returns what names the stored bytes of this split (files,
      sizes, modification times) for the decoded-split disk cache
      (`jaxgen.data.memory`), or None: not cacheable. Called only when a
      split is batched from memory, so other runs list no files.
  """
  data: Any
  pixel_key: str
  label_key: str | None
  num_classes: int
  channels: int
  num_frames: int | None = None
  image_size: int | None = None
  float_pixels: bool = False
  skipped_files: Callable[[], Mapping[str, str]] = dict
  identity: Callable[[], str | None] = lambda: None


Opener = Callable[..., Source]
# Source openers by spec scheme; each is called as
# opener(spec, config, split=..., arrays=...).
SOURCES = registry.Registry("dataset scheme")


def open_source(spec: config_lib.Spec, config: ml_collections.ConfigDict, *,
                split: str,
                arrays: Mapping[str, np.ndarray] | None = None) -> Source:
  """Opens the source a parsed spec names.

  Args:
    spec: parsed `config.name`.
    config: the dataset config (data_dir, image_size, num_frames, ...).
    split: split to read (TFDS split syntax for TFDS sources; a folder has
      one split unless `config.holdout_fraction` holds some images out;
      arrays have a single split and ignore it).
    arrays: numpy arrays for the `arrays` scheme.

  Returns:
    The opened `Source`.
  """
  return SOURCES.get(spec.scheme)(spec, config, split=split, arrays=arrays)


# ----------------------------------------------------------------------------
# TFDS and the embedded shapes dataset.
# ----------------------------------------------------------------------------


def _first_line(error: Exception) -> str:
  return str(error).strip().split("\n", 1)[0]


def _open_error(name: str, error: Exception) -> ValueError:
  """One line for a TFDS name that does not open.

  TFDS's message for an unknown config ends "Here are 10 BuilderConfigs
  whose name closely match:" with the names on later lines (or none): the
  configs are listed here instead.
  """
  line = _first_line(error)
  base, _, config = name.partition("/")
  config = config.split(":")[0].split("/")[0]
  if "not found" in line and "BuilderConfig" not in line:
    # An unknown dataset: TFDS lists every registered one on later lines.
    close = difflib.get_close_matches(base.split(":")[0],
                                      tfds.list_builders(with_community_datasets=False),
                                      n=3)
    if close:
      line += f" Did you mean {' or '.join(map(repr, close))}?"
  elif config and "BuilderConfig" in line:
    try:
      names = [c.name for c in tfds.builder_cls(base).BUILDER_CONFIGS]
    except Exception:  # pylint: disable=broad-except  (no list to give)
      names = None
    if names == []:  # pylint: disable=g-explicit-bool-comparison
      line = f"it has no configs; name it {base!r} alone."
    elif names:
      close = difflib.get_close_matches(config, names, n=3, cutoff=0.5)
      line = (f"it has no config {config!r}"
              + (f" (did you mean {' or '.join(map(repr, close))}?)"
                 if close else "")
              + f"; its configs: {', '.join(names[:20])}"
              + (f" and {len(names) - 20} more" if len(names) > 20 else "")
              + ".")
  return ValueError(f"Cannot open TFDS dataset {name!r}: {line}")


def _tfds_source(name: str, split: str, data_dir: str | None) -> Source:
  """Opens a prepared TFDS dataset through `tfds.data_source`."""
  try:
    builder = tfds.builder(name, data_dir=data_dir)
  except ValueError as e:  # Includes tfds DatasetNotFoundError.
    raise _open_error(name, e) from None
  where = data_dir or tfds.core.constants.DATA_DIR
  how = (f"prepare it with `tfds build {name} --data_dir={where} "
         "--file_format=array_record` (jaxgen never downloads)")
  if not builder.is_prepared():
    raise ValueError(f"TFDS dataset {name!r} is not prepared in {where}; "
                     f"{how}.")
  formats = builder.info.available_file_formats()
  if tfds.core.FileFormat.ARRAY_RECORD not in formats:
    raise ValueError(f"TFDS dataset {name!r} in {where} is not in array_record "
                     f"format (random access needs it); {how}.")
  try:
    data = tfds.data_source(name, split=split, data_dir=data_dir,
                            download=False, try_gcs=False)
  except ValueError as e:  # Unknown split or bad slice syntax.
    raise ValueError(f"TFDS dataset {name!r}, split {split!r}: "
                     f"{_first_line(e)}") from None
  return dataclasses.replace(
      _describe_tfds(name, builder.info.features, data),
      identity=functools.partial(_files_identity, builder.data_dir, split))


def _files_identity(directory: str, split: str) -> str | None:
  """The files of a local prepared dataset with their sizes and modification
  times, and the split read from them; None for remote storage (listing a
  bucket per run is not worth what the disk cache saves)."""
  if not os.path.isdir(directory):
    return None
  entries = []
  for entry in sorted(os.scandir(directory), key=lambda e: e.name):
    if entry.is_file():
      st = entry.stat()
      entries.append(f"{entry.name}:{st.st_size}:{st.st_mtime_ns}")
  return "\n".join([os.path.abspath(directory), split] + entries)


def _describe_tfds(name: str, features, data) -> Source:
  """Finds the pixel and label features of a TFDS feature dict."""
  if "video" in features:
    pixel_key, image_shape = "video", features["video"].shape[1:]
    num_frames = features["video"].shape[0]
  elif "image" in features:
    pixel_key, image_shape = "image", features["image"].shape
    num_frames = None
  else:
    raise ValueError(f"TFDS dataset {name!r} has no 'image' or 'video' "
                     f"feature (it has: {', '.join(features)}).")
  label_key, num_classes = None, 0
  if "label" in features and isinstance(features["label"],
                                       tfds.features.ClassLabel):
    label_key, num_classes = "label", features["label"].num_classes
  height, width, channels = image_shape
  return Source(data=data, pixel_key=pixel_key, label_key=label_key,
                num_classes=num_classes, channels=channels or 3,
                num_frames=num_frames,
                image_size=height if height and height == width else None)


@SOURCES.register("tfds")
def _open_tfds(spec, config, *, split, arrays=None) -> Source:
  del arrays
  if spec.name.split("/")[0] == shapes.NAME:
    # The embedded dataset is generated rather than downloaded, so it can
    # be prepared here too.
    _, _, variant = spec.name.partition("/")
    variant = variant or shapes.JaxgenShapes.DEFAULT_CONFIG_NAME
    try:
      shapes.prepare(variant, config.data_dir)
    except ValueError as e:  # Unknown config.
      raise _open_error(spec.name, e) from None
    # Named in full: without a config, tfds reads the first one listed
    # (image_16), not the default just prepared.
    return _tfds_source(f"{shapes.NAME}/{variant}", split, config.data_dir)
  return _tfds_source(spec.name, split, config.data_dir)


def _smallest_at_least(value: int, choices: Sequence[int]) -> int:
  return min(c for c in choices if c >= value)


@SOURCES.register("jaxgen_shapes")
def _open_shapes(spec, config, *, split, arrays=None) -> Source:
  del spec, arrays
  # Sizes between the stored resolutions are resized down from the next one
  # up, which looks like data generated at that size.
  size = _smallest_at_least(config.image_size, shapes.IMAGE_SIZES)
  variant = shapes.image_config_name(size)
  shapes.prepare(variant, config.data_dir)
  return _tfds_source(f"{shapes.NAME}/{variant}", split, config.data_dir)


@SOURCES.register("jaxgen_shapes_video")
def _open_shapes_video(spec, config, *, split, arrays=None) -> Source:
  del spec, arrays
  size = _smallest_at_least(config.image_size, shapes.VIDEO_SIZES)
  frames = _smallest_at_least(max(config.num_frames, 1), shapes.VIDEO_FRAMES)
  variant = shapes.video_config_name(size, frames)
  shapes.prepare(variant, config.data_dir)
  return _tfds_source(f"{shapes.NAME}/{variant}", split, config.data_dir)


# ----------------------------------------------------------------------------
# In-memory arrays.
# ----------------------------------------------------------------------------


class ArraySource:
  """Examples from aligned numpy arrays: {key: array[i]}."""

  def __init__(self, arrays: Mapping[str, np.ndarray]):
    self._arrays = dict(arrays)
    self._length = len(next(iter(self._arrays.values())))

  def __len__(self) -> int:
    return self._length

  def __getitem__(self, index: int):
    return {key: value[index] for key, value in self._arrays.items()}

  def __repr__(self) -> str:
    return f"ArraySource({self._length} examples)"


@SOURCES.register("arrays")
def _open_arrays(spec, config, *, split, arrays=None) -> Source:
  """Pixels under "image" [N, H, W, C] or "video" [N, T, H, W, C], optional
  integer "label" [N]; uint8 pixels, or float ones used as they are."""
  del spec, config, split
  if arrays is None:
    raise ValueError("Dataset 'arrays' needs build_input(..., arrays={'image':"
                     " ..., 'label': ...}).")
  pixel_key = "video" if "video" in arrays else "image"
  if pixel_key not in arrays:
    raise ValueError("arrays need an 'image' or 'video' entry; got "
                     f"{sorted(arrays)}.")
  pixels = np.asarray(arrays[pixel_key])
  rank = 5 if pixel_key == "video" else 4
  if pixels.ndim != rank:
    raise ValueError(f"arrays[{pixel_key!r}] must have rank {rank} "
                     f"(N, {'T, ' * (rank == 5)}H, W, C); got {pixels.shape}.")
  if pixels.dtype != np.uint8 and not np.issubdtype(pixels.dtype,
                                                    np.floating):
    raise ValueError(f"arrays[{pixel_key!r}] must be uint8 or float; got "
                     f"{pixels.dtype}.")
  columns = {pixel_key: pixels}
  num_classes = 0
  if "label" in arrays:
    labels = np.asarray(arrays["label"])
    if labels.shape != (len(pixels),) or not np.issubdtype(labels.dtype,
                                                           np.integer):
      raise ValueError(f"arrays['label'] must be integers of shape "
                       f"({len(pixels)},); got {labels.dtype} {labels.shape}.")
    columns["label"] = labels
    num_classes = int(labels.max()) + 1 if len(labels) else 0
  height, width, channels = pixels.shape[-3:]
  return Source(data=ArraySource(columns), pixel_key=pixel_key,
                label_key="label" if "label" in columns else None,
                num_classes=num_classes, channels=channels,
                num_frames=pixels.shape[1] if pixel_key == "video" else None,
                image_size=height if height == width else None,
                float_pixels=pixels.dtype != np.uint8)


# ----------------------------------------------------------------------------
# Latents written by `python -m jaxgen.autoencoders.encode`.
# ----------------------------------------------------------------------------

LATENTS_META = "latents.json"


def encode_latent_record(latent: np.ndarray, label: int) -> bytes:
  """One array_record record: float32 latent bytes, then an int32 label."""
  return (np.ascontiguousarray(latent, np.float32).tobytes()
          + np.int32(label).tobytes())


class LatentSource:
  """Decoded latent records: {"image": f32[h, w, c] * scale, "label"}
  ({"video": f32[T, h, w, c] * scale, ...} for a video autoencoder's)."""

  def __init__(self, records, shape, scale: float):
    self._records, self._shape = records, tuple(shape)
    self.key = "video" if len(self._shape) == 4 else "image"
    self._scale = np.float32(scale)
    self._size = int(np.prod(self._shape)) * 4

  def __len__(self) -> int:
    return len(self._records)

  def __getitem__(self, index: int):
    raw = self._records[index]
    latent = np.frombuffer(raw[:self._size], np.float32).reshape(self._shape)
    label = np.frombuffer(raw[self._size:], np.int32)[0]
    return {self.key: latent * self._scale, "label": label}


# The split whose scaling factor every split of a latents directory uses
# (one factor for the whole dataset, as latent diffusion computes it).
REFERENCE_SPLIT = "train"
# What latents of two splits must share to be one dataset (holdout_fraction:
# a folder's train and held-out splits are complements only at one fraction).
ORIGIN_KEYS = ("autoencoder", "autoencoder_step", "autoencoder_weights",
               "image_size", "num_frames", "holdout_fraction")
# Recorded only by newer encodes: compared when both sides have it.
_OPTIONAL_ORIGIN_KEYS = ("autoencoder_weights",)


def latents_origin(meta: Dict[str, Any]) -> Dict[str, Any]:
  """What produced a split's latents: the `ORIGIN_KEYS` of its metadata.

  Args:
    meta: a latents.json (or shard .json) dict; older ones without a
      "producer" record give what their top level holds.

  Returns:
    {key: value}; the autoencoder run as a resolved path.
  """
  producer = meta.get("producer") or {}
  origin = {k: producer.get(k, meta.get(k)) for k in ORIGIN_KEYS}
  if origin["num_frames"] is None:
    origin["num_frames"] = 0
  # Recorded only when set (encodes before the option held nothing out).
  origin["holdout_fraction"] = float(origin["holdout_fraction"] or 0.0)
  if origin["autoencoder"] and "://" not in str(origin["autoencoder"]):
    # Local runs resolved (two spellings of one run are one origin); an
    # object-store path is already absolute.
    origin["autoencoder"] = os.path.realpath(str(origin["autoencoder"]))
  return origin


def origin_differences(a: Dict[str, Any], b: Dict[str, Any], a_name: str,
                       b_name: str) -> str:
  """The keys two `latents_origin`s differ in, for a message.

  Args:
    a: one origin.
    b: the other.
    a_name: what `a` belongs to (e.g. its split).
    b_name: what `b` belongs to.

  Returns:
    "key: A (a_name) vs B (b_name), ..."; '' if they agree.
  """
  return ", ".join(f"{k}: {a.get(k)!r} ({a_name}) vs {b.get(k)!r} ({b_name})"
                   for k in ORIGIN_KEYS if a.get(k) != b.get(k)
                   and not (k in _OPTIONAL_ORIGIN_KEYS
                            and None in (a.get(k), b.get(k))))


def latents_split_folder(split: str) -> str:
  """The folder of DIR that holds a split's latents: the split's name
  without a TFDS slice ("train[:512]" and "train" both go to DIR/train;
  latents.json records which was encoded).

  Args:
    split: a split as the encode reads it.

  Returns:
    The folder name.

  Raises:
    ValueError: one line for a split that names no single folder (a union
      such as "train+test", or one with a path separator).
  """
  folder = re.sub(r"\[[^\]]*\]", "", split).strip()
  if (not folder or "+" in folder or "/" in folder or "\\" in folder
      or folder in (".", "..")):
    raise ValueError(f"split {split!r} names no single split folder; encode "
                     "one split (a slice such as train[:512] is fine) at a "
                     "time.")
  return folder


def _read_meta(root: str, split: str) -> Dict[str, Any]:
  meta_path = os.path.join(root, LATENTS_META)
  if not os.path.exists(meta_path):
    raise ValueError(f"{root} holds no {LATENTS_META}; write split {split!r} "
                     "with python -m jaxgen.autoencoders.encode --split="
                     f"{split} (an interrupted run finishes when rerun).")
  with open(meta_path, encoding="utf-8") as f:
    return json.load(f)


def latents_meta(directory: str, split: str) -> Dict[str, Any]:
  """The latents.json of one split of an encoded dataset (see
  `jaxgen.autoencoders.encode`): shape, shards, scaling factor, the
  autoencoder run.

  Every split is scaled by one factor: the train split's when DIR/train has
  a latents.json (its own otherwise). "scaling_factor" is that factor; the
  split's own, if different, stays under "split_scaling_factor". A split
  encoded by another autoencoder run, step, image size or clip length than
  DIR/train is refused.

  Args:
    directory: the DIR of `latents:DIR`.
    split: the split (its folder DIR/<split>).

  Returns:
    The metadata dict.

  Raises:
    ValueError: one line if the split was not (completely) written, does
      not match the train split, or is a slice (slices are taken when
      encoding).
  """
  directory = os.path.expanduser(directory)
  if not os.path.isdir(directory):
    # Moved or deleted (e.g. a run sampled after its latents moved): the
    # fix is the new path, not an encode into a folder that is gone.
    raise ValueError(
        f"latents:{directory} does not exist; pass where the latents are "
        "now (--config.dataset.name=latents:DIR) or write them with python "
        f"-m jaxgen.autoencoders.encode --out={directory}.")
  folder = latents_split_folder(split)
  if folder != split:
    # The slice is taken when encoding: DIR/<folder> holds what was encoded.
    raise ValueError(
        f"latents:{directory} reads whole split folders, not {split!r}; "
        "encode that slice (python -m jaxgen.autoencoders.encode "
        f"--split='{split}') and read split {folder!r}.")
  meta = _read_meta(os.path.join(directory, split), split)
  ref_root = os.path.join(directory, REFERENCE_SPLIT)
  if split == REFERENCE_SPLIT or not os.path.exists(
      os.path.join(ref_root, LATENTS_META)):
    return meta
  ref = _read_meta(ref_root, REFERENCE_SPLIT)
  theirs, ours = latents_origin(ref), latents_origin(meta)
  why = origin_differences(theirs, ours, REFERENCE_SPLIT, split)
  if why and theirs["holdout_fraction"] != ours["holdout_fraction"]:
    raise ValueError(
        f"{os.path.join(directory, split)} and {ref_root} hold a folder's "
        f"splits encoded at different holdout fractions ({why}): they are "
        "complements only at one (a train split encoded at 0 holds the "
        "held-out images too); encode both at one --holdout_fraction, or "
        "pass another latents:DIR.")
  if why:
    raise ValueError(
        f"{os.path.join(directory, split)} and {ref_root} hold latents of "
        f"different autoencoder runs/steps/weights/sizes ({why}); "
        f"re-encode split {split!r} with the train split's run, step and "
        "--image_size, or pass another latents:DIR.")
  own = meta.get("split_scaling_factor", meta["scaling_factor"])
  meta = dict(meta, scaling_factor=ref["scaling_factor"])
  if own != ref["scaling_factor"]:
    meta["split_scaling_factor"] = own
  return meta


def shard_problem(root: str, name: str) -> Optional[str]:
  """What is wrong with one written latent shard, or None.

  Args:
    root: the split's folder.
    name: the shard's file name (its stats are NAME.json beside it).

  Returns:
    "is missing", "is N bytes, not the M it was written with" (shards
    encoded before sizes were recorded are only checked to exist), or None.
  """
  path = os.path.join(root, name)
  if not os.path.exists(path):
    return "is missing"
  try:
    with open(path + ".json", encoding="utf-8") as f:
      expected = json.load(f).get("bytes")
  except (OSError, ValueError):
    return None
  size = os.path.getsize(path)
  if expected is not None and size != expected:
    return f"is {size} bytes, not the {expected} it was written with"
  return None


@SOURCES.register("latents")
def _open_latents(spec, config, *, split, arrays=None) -> Source:
  """Latents of an autoencoder, scaled by the train split's scaling factor
  (`latents_meta`).

  DIR/<split>/ holds one split (`encode --split=...` writes it there).
  """
  del config, arrays
  import grain  # pylint: disable=g-import-not-at-top
  root = os.path.join(os.path.expanduser(spec.name), split)
  meta = latents_meta(spec.name, split)
  for name in meta["shards"]:
    problem = shard_problem(root, name)
    if problem:
      # grain's own message is a traceback from the reader (open() failed,
      # or a Riegeli chunk-hash mismatch at the first read).
      raise ValueError(f"latent shard {os.path.join(root, name)} {problem}; "
                       "rerun the encode command that wrote it (it rewrites "
                       "that shard)")
  shards = [os.path.join(root, s) for s in meta["shards"]]
  records = grain.sources.ArrayRecordDataSource(shards)
  h, w, c = meta["shape"][-3:]
  data = LatentSource(records, meta["shape"], meta["scaling_factor"])
  return Source(data=data, pixel_key=data.key, label_key="label",
                num_classes=int(meta.get("num_classes", 0)), channels=c,
                num_frames=(meta["shape"][0] if data.key == "video"
                            else None),
                image_size=h if h == w else None, float_pixels=True)


# Openers defined in their own modules register on import.
from jaxgen.data import folders  # pylint: disable=g-import-not-at-top,unused-import,wrong-import-position  # noqa: E402,F401
