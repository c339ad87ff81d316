"""Image sets the metric commands read: datasets, sample folders, .npz files.

A set is named by one string:

  stats.npz                 precomputed statistics (`jaxgen.eval.stats`)
  images.npz                an array "images" (or "samples"), [N, H, W, 3]
                            uint8 or floats in [-1, 1]
  DIR                       a folder of .png files, e.g. `jaxgen.sample`'s
                            output, read in name order at their own size
  jaxgen_shapes[:SPLIT], tfds:NAME[:SPLIT], folder:DIR
                            a dataset, through the training input pipeline
                            (resized and centre-cropped to --image_size)

`open_set` returns either statistics or a stream of image batches with the
number of images available.
"""

from concurrent import futures
import dataclasses
import os
import zipfile
from typing import Any, Dict, Iterator, List, Optional, Tuple

from absl import logging
import etils.epath as epath
import numpy as np
from PIL import Image

from jaxgen.data import config as data_config
from jaxgen.data import folders
from jaxgen.data import pipeline as data_pipeline
from jaxgen.eval import features
from jaxgen.eval import inception


@dataclasses.dataclass
class ImageSet:
  """What a set name resolved to.

  Attributes:
    name: the name as given.
    stats: for a statistics file, its arrays ("mu", "sigma", optionally
      "features", "weights_hash" and "image_size"); else None.
    batches: for images, an iterator of [B, H, W, 3] batches.
    available: images the set holds (None when unknown).
    size: (height, width) of its images, where known before any is read.
  """
  name: str
  stats: Optional[Dict[str, Any]] = None
  batches: Optional[Iterator[np.ndarray]] = None
  available: Optional[int] = None
  size: Optional[Tuple[int, int]] = None
  # Read class by class (a folder dataset with class subfolders): the first
  # images of it are a few classes.
  by_class: bool = False


def check_weights(image_set: ImageSet, weights_hash: str, fix: str) -> None:
  """Refuses statistics made with other Inception weights than `weights_hash`
  or of other features than Inception's pool3 (e.g. pytorch-fid --dims 768).

  Args:
    image_set: a statistics set (`stats` not None).
    weights_hash: hash of the weights the comparison uses.
    fix: what to do, ending the one-line error.

  Raises:
    ValueError: the statistics record another weights hash or dimension.
  """
  made_with = str(image_set.stats.get("weights_hash", ""))
  if made_with and made_with != weights_hash:
    raise ValueError(f"{image_set.name} was computed with Inception weights "
                     f"{made_with}, not {weights_hash}{fix}")
  dim = inception.FEATURE_DIM
  have = np.shape(image_set.stats["mu"])
  if have != (dim,) or np.shape(image_set.stats["sigma"]) != (dim, dim):
    raise ValueError(f"{image_set.name} holds statistics of shape {have}, "
                     f"not Inception's {dim}-d features{fix}")


def noting_size(batches: Iterator[np.ndarray], seen: List[Tuple[int, int]]
                ) -> Iterator[np.ndarray]:
  """`batches`, appending the first batch's (height, width) to `seen`."""
  for batch in batches:
    if not seen:
      seen.append(tuple(int(d) for d in np.shape(batch)[1:3]))
    yield batch


def check_size(image_set: ImageSet, size: Tuple[int, int], what: str) -> None:
  """Warns when statistics were made at another resolution than `what`.

  FID across resolutions is a valid number but not the published one, and
  usually means the wrong statistics file. Files written before the size
  was recorded are not checked.

  Args:
    image_set: a statistics set (`stats` not None).
    size: (height, width) of the images compared with it.
    what: how to name those images in the warning.
  """
  made_at = image_set.stats.get("image_size")
  if made_at is None or tuple(int(d) for d in made_at) == tuple(size):
    return
  h, w = (int(d) for d in made_at)
  logging.warning("%s holds statistics of %dx%d images but %s are %dx%d: "
                  "the FID is not comparable with published ones; compute "
                  "statistics at %dx%d (jaxgen.eval.stats --image_size).",
                  image_set.name, h, w, what, size[0], size[1], size[0],
                  size[1])


def count(image_set: ImageSet, num: int) -> int:
  """The number of images to use from a set, checked before any is read.

  Args:
    image_set: a set with batches (not statistics).
    num: images requested (0: all the set has).

  Returns:
    The count.

  Raises:
    ValueError: the set's size is unknown and `num` is 0, the set has fewer
      than `num` images, or the count is below 2 (no covariance).
  """
  have = image_set.available
  n = int(num) or have
  if not n:
    raise ValueError(f"{image_set.name}: pass --num (the set's size is not "
                     "known).")
  if have is not None and n > have:
    raise ValueError(f"{image_set.name}: only {have} images, {n} requested; "
                     f"pass --num={have} or a larger set.")
  if n < 2:
    raise ValueError(f"{image_set.name}: {n} image; statistics need at least "
                     "2 (FID thousands).")
  if image_set.by_class and have and n < have:
    logging.warning(
        "%s: the first %d of its %d images are read, class by class: the "
        "statistics then cover only its first classes; pass --num=%d (all) "
        "or a folder holding a sample of every class.", image_set.name, n,
        have, have)
  return n


# Images of an .npz handed on at a time.
_NPZ_SLICE = 1024


def _npz(path: str) -> ImageSet:
  try:
    with epath.Path(path).open("rb") as f:
      data = dict(np.load(f, allow_pickle=False))
  except (OSError, ValueError, zipfile.BadZipFile) as e:
    raise ValueError(f"{path} is not a readable .npz ({str(e)[:80]}); pass "
                     "a stats file (jaxgen.eval.stats) or an images .npz."
                     ) from None
  if "mu" in data and "sigma" in data:
    made_at = data.get("image_size")
    return ImageSet(path, stats=data, size=None if made_at is None else
                    tuple(int(d) for d in made_at))
  key = next((k for k in ("images", "samples") if k in data), None)
  if key is None:
    names = sorted(data)
    shown = ", ".join(names[:5]) + (f", … ({len(names)} arrays)"
                                    if len(names) > 5 else "")
    raise ValueError(f"{path} holds neither statistics (mu, sigma) nor an "
                     f"'images' array (it has {shown}); pass a stats file "
                     "(jaxgen.eval.stats) or an images .npz (jaxgen.sample).")
  images = data[key]
  if images.ndim != 4 or not len(images):
    # A scalar had no len(); an empty array asked for --num.
    raise ValueError(f"{path}: its '{key}' array has shape {images.shape}, "
                     "not [N, H, W, 3] images with N >= 1; pass an images "
                     ".npz (jaxgen.sample writes one).")
  # Checked now, before the other side's features are computed (minutes
  # for a 50,000-image reference).
  features.validate_images(images, path)
  # In slices: each is converted to float32 on its own (50,000 samples at
  # 256 px are 9.8 GB as uint8, 39 GB more as float32 in one piece).
  return ImageSet(path, batches=(images[i:i + _NPZ_SLICE]
                                 for i in range(0, len(images), _NPZ_SLICE)),
                  available=len(images),
                  size=tuple(int(d) for d in images.shape[1:3]))


def _png_folder(path: str, batch_size: int) -> ImageSet:
  files = sorted(p for p in epath.Path(path).iterdir()
                 if p.suffix.lower() == ".png")
  if not files:
    raise ValueError(f"{path} has no .png files; pass a folder of samples, "
                     "a .npz or a dataset spec.")

  def batches():
    # One size: every header was checked below.
    for i in range(0, len(files), batch_size):
      yield np.stack([_read_png(f, path) for f in files[i:i + batch_size]])

  # Every header now (~0.1 ms a file locally; read 32 at a time for remote
  # folders): a PNG of another size or an unreadable one is an error before
  # either side's features are computed, not after hours of a 50,000-image
  # reference. The first bad file in name order is the one named.
  def header(f):
    try:
      with f.open("rb") as fh:
        return Image.open(fh).size  # The header alone is read.
    except OSError as e:
      return e

  with futures.ThreadPoolExecutor(32) as pool:
    headers = list(pool.map(header, files))
  for f, size in zip(files, headers):
    if isinstance(size, OSError):
      raise damaged_png(f, path, size) from None
    if size != headers[0]:
      raise ValueError(
          f"{path}: {f.name} is {size[0]}x{size[1]}, {files[0].name} "
          f"{headers[0][0]}x{headers[0][1]}; a set's PNGs must have one "
          "size.")
  width, height = headers[0]
  return ImageSet(path, batches=batches(), available=len(files),
                  size=(height, width))


def _read_png(f: epath.Path, folder: str) -> np.ndarray:
  """One PNG of a sample folder as RGB; a damaged one is a one-line error.

  Decoded as `folder:` datasets decode (16-bit scaled to 8 bits, not
  clipped to white; transparency over white): the same files give the same
  statistics read either way.
  """
  try:
    with f.open("rb") as fh:
      return folders.decode_image(fh)
  except folders.DECODE_ERRORS as e:  # PIL's UnidentifiedImageError, ...
    raise damaged_png(f, folder, e) from None


def damaged_png(f: epath.Path, folder: str, e: Exception) -> ValueError:
  """The one-line error for a sample folder's PNG that does not decode."""
  return ValueError(f"{folder}: {f.name} is not a readable PNG ({e}); "
                    "remove it (jaxgen.sample then redraws its batch).")


def _dataset(spec: str, *, image_size: int, data_dir: Optional[str],
             split: Optional[str], batch_size: int) -> ImageSet:
  c = data_config.default_dataset_config()
  c.name = spec
  c.image_size = int(image_size)
  c.data_dir = data_dir
  c.random_flip = False
  c.num_threads = 4
  # `build_input(split=...)` replaces the spec's split, so the spec's
  # ("tfds:cifar10:test") is passed on explicitly unless --split names one.
  split = split or data_config.parse_spec(spec).split or c.split
  # A split smaller than --batch_size is read as one batch.
  batch_size = max(1, min(batch_size, data_pipeline.split_size(c, split)))
  it, info = data_pipeline.build_input(
      c, global_batch_size=batch_size, seed=0, process_index=0,
      process_count=1, split=split, train=False, repeat=False)
  if info.kind != "image":
    raise ValueError(f"{spec} holds video; the FID metrics take images.")

  def batches():
    # The pipeline's batches have one size; the rows they leave over at the
    # end are read after them, so every image of the split counts.
    yield from (b["image"] for b in it)
    full = info.num_examples // batch_size * batch_size
    if full < info.num_examples:
      yield data_pipeline.read_examples(c, split=split, start=full,
                                        stop=info.num_examples)["image"]
  return ImageSet(spec, batches=batches(), available=info.num_examples,
                  size=(int(image_size), int(image_size)),
                  # A held-out split of a folder is read by hash.
                  by_class=(spec.startswith("folder:") and split == c.split
                            and (info.num_classes or 0) > 1))


def is_dataset_spec(name: str) -> bool:
  """Whether a set name is a dataset, read at a chosen --image_size."""
  return name == "jaxgen_shapes" or name.startswith(
      ("jaxgen_shapes:", "tfds:", "folder:"))


def open_set(name: str, *, image_size: int = 32,
             data_dir: Optional[str] = None, split: Optional[str] = None,
             batch_size: int = 100) -> ImageSet:
  """Resolves a set name (see the module docstring).

  Args:
    name: the set.
    image_size: resolution datasets are read at (files keep their own).
    data_dir: TFDS data dir for dataset specs.
    split: dataset split; replaces the spec's (default: the spec's, else
      "train").
    batch_size: images per batch from datasets and folders.

  Returns:
    An `ImageSet`.

  Raises:
    ValueError: one line for a missing file or an unusable set.
  """
  if name.endswith(".npz"):
    if not epath.Path(name).exists():
      raise ValueError(f"{name} not found; pass a stats or images .npz.")
    return _npz(name)
  if name.startswith("latents:"):
    # Not an image folder that does not exist ("not found" for a folder
    # that was there).
    raise ValueError(f"{name} holds latents, not images; pass the images "
                     "they were encoded from (the dataset spec given to "
                     "encode --data).")
  is_spec = is_dataset_spec(name)
  if not is_spec and (os.path.isdir(name) or "://" in name):
    return _png_folder(name, batch_size)
  # A path (not a bare word such as "cifar10", likely a spec missing its
  # "tfds:") that does not exist.
  if not is_spec and os.sep in name and not os.path.exists(name):
    raise ValueError(f"{name} not found; pass a .npz file, a folder of PNGs "
                     "or a dataset spec (jaxgen_shapes[:SPLIT], "
                     "tfds:NAME[:SPLIT], folder:DIR).")
  if not is_spec:
    raise ValueError(f"{name!r} is not a .npz file, a folder or a dataset "
                     "spec (jaxgen_shapes[:SPLIT], tfds:NAME[:SPLIT], "
                     "folder:DIR).")
  return _dataset(name, image_size=image_size, data_dir=data_dir,
                  split=split, batch_size=batch_size)

