"""Image folders as a data source (`folder:DIR`): decoding, splits, labels.

Images lie directly in DIR (unlabeled) or in class sub-folders (labels in
sorted folder order). A folder has one split unless
`dataset.holdout_fraction` holds some images out, chosen by a hash of each
path so adding files never moves old ones between splits. Files decode on
access (`decode_image`); unreadable ones are skipped or refused.
"""

import errno
import os
import threading
import zlib
from typing import Any, Sequence

from absl import logging
import numpy as np
from PIL import Image

from jaxgen.data import sources

_IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg")


class BadImageError(ValueError):
  """An image file that cannot be decoded (and skipping is off).

  Attributes:
    path: the file (None when no file of the folder decodes).
    reason: the decoder's first line.
  """

  def __init__(self, message: str, path: str = None, reason: str = None):
    super().__init__(message)
    self.path, self.reason = path, reason


# What PIL raises for truncated, corrupt or unrecognised files.
DECODE_ERRORS = (OSError, ValueError, SyntaxError, Image.DecompressionBombError)
# OS errors that belong to one file (it is gone, not readable, a folder):
# skippable like an undecodable one. Any other OS error (EIO, EMFILE, ESTALE
# of a lost mount, ...) is the storage's: raised, never taken for a bad
# image (skipping made an outage try every file of the folder and leave
# files that read fine marked bad).
_FILE_ERRNOS = frozenset({errno.ENOENT, errno.EACCES, errno.EPERM,
                          errno.EISDIR, errno.ENAMETOOLONG})


def storage_error(error: BaseException) -> bool:
  """Whether `error` is an OS error of the storage, not of one file (PIL's
  decode failures are OSErrors without an errno)."""
  return (isinstance(error, OSError) and error.errno is not None
          and error.errno not in _FILE_ERRNOS)


# EXIF orientation (tag 0x0112) -> the transposition that makes it upright.
_ORIENTATIONS = {2: Image.Transpose.FLIP_LEFT_RIGHT,
                 3: Image.Transpose.ROTATE_180,
                 4: Image.Transpose.FLIP_TOP_BOTTOM,
                 5: Image.Transpose.TRANSPOSE,
                 6: Image.Transpose.ROTATE_270,
                 7: Image.Transpose.TRANSVERSE,
                 8: Image.Transpose.ROTATE_90}


def _upright(image: Image.Image) -> Image.Image:
  """`image` turned as its EXIF orientation says (unchanged without one).

  Not `ImageOps.exif_transpose`: that also rewrites the EXIF block, which
  raises on some malformed tags that decoding alone survives.
  """
  try:
    orientation = image.getexif().get(0x0112, 1)
  except Exception:  # pylint: disable=broad-except  (EXIF is optional)
    return image
  method = _ORIENTATIONS.get(orientation)
  return image.transpose(method) if method is not None else image


def decode_image(path: Any, channels: int = 3) -> np.ndarray:
  """An image file as uint8 [H, W, channels] (1: luma, 3: RGB).

  What `Image.convert` alone gets wrong: the EXIF orientation is applied
  (phone photos stand upright), 16-bit images are scaled to 8 bits (not
  clipped to white) and transparency is composited over white (not the
  hidden colour of transparent pixels).

  Args:
    path: the file (a path, or a binary file opened for reading).
    channels: 1 or 3.

  Returns:
    The pixels.
  """
  with Image.open(path) as image:
    image = _upright(image)
    if image.mode in ("I;16", "I;16B", "I;16L", "I"):
      # 16-bit greyscale PNGs load as "I" / "I;16": 0..65535.
      wide = np.asarray(image, np.float64)
      image = Image.fromarray(
          np.clip(np.round(wide / 257.0), 0, 255).astype(np.uint8))
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
      rgba = image.convert("RGBA")
      white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
      image = Image.alpha_composite(white, rgba)
    if channels == 1:
      return np.asarray(image.convert("L"))[..., None]
    return np.asarray(image.convert("RGB"))


def _reason(error: Exception) -> str:
  """A decode error's first line (its type where it has no text)."""
  return str(error).strip().split("\n", 1)[0] or type(error).__name__


class FolderSource:
  """Images in files, decoded to uint8 RGB (or luma) on access.

  A file that does not decode is either an error naming it
  (`skip_bad_files=False`) or skipped: the next readable file (in index
  order) takes its place, so batches keep their size and the order stays
  deterministic. Skipped files are warned about once each and listed by
  `skipped_files()`.
  """

  def __init__(self, files: Sequence[str], labels: Sequence[int],
               skip_bad_files: bool = True, channels: int = 3):
    self._channels = channels
    self._files = list(files)
    self._labels = np.asarray(labels, np.int64)
    self._skip = skip_bad_files
    self._bad: dict[str, str] = {}
    self._lock = threading.Lock()

  def __getstate__(self):
    # Grain's worker processes (dataset.worker_count) take the source
    # pickled; a lock is not picklable. Each worker then records (and warns
    # about) the files it skips itself.
    state = dict(self.__dict__)
    del state["_lock"]
    return state

  def __setstate__(self, state):
    self.__dict__.update(state)
    self._lock = threading.Lock()

  def __len__(self) -> int:
    return len(self._files)

  def __getitem__(self, index: int):
    for offset in range(len(self._files)):
      i = (index + offset) % len(self._files)
      path = self._files[i]
      try:
        pixels = decode_image(path, self._channels)
        return {"image": pixels, "label": self._labels[i]}
      except DECODE_ERRORS as e:
        if storage_error(e):
          raise
        reason = _reason(e)
        if not self._skip:
          raise BadImageError(
              f"cannot decode image {path}: {reason}; fix or remove it, or "
              "set --config.dataset.skip_bad_files=true to skip such "
              "files.", path, reason) from None
        self._record(path, reason)
    raise BadImageError(f"none of the {len(self._files)} images can be "
                        "decoded; check the folder.")

  def _record(self, path: str, reason: str) -> None:
    with self._lock:
      if path in self._bad:
        return
      self._bad[path] = reason
    logging.warning("Skipping unreadable image %s (%s); the next image takes "
                    "its place.", path, reason)

  def skipped_files(self) -> dict[str, str]:
    """{path: reason} of the files skipped so far by this process."""
    with self._lock:
      return dict(self._bad)

  def __repr__(self) -> str:
    return f"FolderSource({len(self)} files)"


def _listing(folder: str) -> tuple[list[str], list[str]]:
  """(image files, sub-folders) directly in `folder`, sorted.

  Hidden entries are not part of the set: macOS' "._x.jpg" AppleDouble
  metadata beside every copied image, ".ipynb_checkpoints", ".thumbnails".
  """
  files, folders = [], []
  with os.scandir(folder) as entries:
    for e in entries:
      if e.name.startswith("."):
        continue
      if e.is_dir():
        folders.append(e.path)
      elif e.name.lower().endswith(_IMAGE_EXTENSIONS) and e.is_file():
        files.append(e.path)
  return sorted(files), sorted(folders)


# root -> (signature, loose images, sub-folders, their listings, scratch):
# the held-out split is reopened at every evaluation, and listing an
# ImageNet-sized folder tree (1.3M files) again each time costs seconds,
# minutes on network storage.
_SCANS: dict = {}


def _signature(root: str, sub_folders: Sequence[str]) -> tuple:
  # Adding or removing a file (or folder) changes its folder's mtime.
  return (os.stat(root).st_mtime_ns,
          tuple(os.stat(d).st_mtime_ns for d in sub_folders))


def _scan(root: str) -> tuple[list[str], list[str], dict, dict]:
  """`_listing` of `root` and of each sub-folder, reused while none of these
  folders changed.

  Returns:
    (loose images, sub-folders, {sub-folder: its listing}, a scratch dict
    kept with them, e.g. for the probe's verdict).
  """
  cached = _SCANS.get(root)
  try:
    if cached is not None and cached[0] == _signature(root, cached[2]):
      return cached[1:]
  except FileNotFoundError:  # A sub-folder went away: list again.
    pass
  loose, sub_folders = _listing(root)
  cached = (_signature(root, sub_folders), loose, sub_folders,
            {d: _listing(d) for d in sub_folders}, {})
  _SCANS[root] = cached
  return cached[1:]


def _deeper_image(folders: Sequence[str]) -> str:
  """The first image file below `folders` (any depth), or ""."""
  for folder in folders:
    for path, dirs, names in os.walk(folder):
      dirs[:] = sorted(d for d in dirs if not d.startswith("."))
      for name in sorted(names):
        if name.lower().endswith(_IMAGE_EXTENSIONS) and name[0] != ".":
          return os.path.join(path, name)
  return ""


def _folder_split(root, files, labels, split, config):
  """The files of `split`: a folder has one split unless a fraction is held
  out (`dataset.holdout_fraction`), chosen by a hash of each file's path so
  that adding files never moves old ones between splits."""
  fraction = float(config.get("holdout_fraction", 0.0) or 0.0)
  train_split = config.get("split", "train")
  if "[" in split:
    # Any name but the train split's reads the held-out images: a slice of
    # train ("train[:10%]") would have read them as training images.
    raise ValueError(
        f"Image folder {root!r} has no split {split!r}: it takes whole "
        f"splits ({train_split!r}, and any other name for the images "
        "holdout_fraction holds out), not slices.")
  if not fraction:
    if split != train_split:
      raise ValueError(
          f"Image folder {root!r} has one split, so split {split!r} would "
          "be the training images; set --config.dataset.holdout_fraction="
          "0.05 (for example) to hold some out, or --config.eval_batches=0.")
    return files, labels
  hashes = [zlib.crc32(os.path.relpath(f, root).encode()) for f in files]
  held = [h % 10_000 < fraction * 10_000 for h in hashes]
  keep = [h != (split == train_split) for h in held]
  chosen = [(h, f, l) for h, f, l, k in zip(hashes, files, labels, keep) if k]
  if not chosen:
    raise ValueError(f"Image folder {root!r}: split {split!r} is empty with "
                     f"holdout_fraction={fraction}; change the fraction.")
  if split != train_split:
    # Read in order (no shuffle): by hash, not class by class, so the first
    # eval batches hold every class.
    chosen.sort()
  return [f for _, f, _ in chosen], [l for _, _, l in chosen]


@sources.SOURCES.register("folder")
def _open_folder(spec, config, *, split, arrays=None) -> sources.Source:
  """Images directly in the folder (unlabeled) or in class sub-folders."""
  del arrays
  root = os.path.expanduser(spec.name)
  if not os.path.isdir(root):
    raise ValueError(f"Image folder {root!r} " + (
        "is a file, not a folder." if os.path.exists(root)
        else "does not exist."))
  loose, sub_folders, listed, scratch = _scan(root)
  classes = [d for d in sub_folders if listed[d][0]]
  if classes and loose:
    raise ValueError(
        f"Image folder {root!r} mixes images and class sub-folders (e.g. "
        f"{os.path.basename(classes[0])}/); use one layout.")
  files, labels = list(loose), [0] * len(loose)  # The cache keeps its own.
  for label, name in enumerate(classes):
    files += listed[name][0]
    labels += [label] * len(listed[name][0])
  if not files:
    deeper = _deeper_image(sub_folders)
    raise ValueError(
        f"Image folder {root!r} has no {'/'.join(_IMAGE_EXTENSIONS)} files"
        + (f" directly in it or in a class sub-folder (e.g. {deeper} is "
           "deeper); point folder: at the folder that holds them or their "
           "class folders." if deeper else "."))
  if split == config.get("split", "train"):  # Once, not every evaluation.
    # Only images directly in a class folder carry its label.
    nested = [d for name in classes for d in listed[name][1]]
    if nested:
      logging.warning("Image folder %s: sub-folders of class folders are not "
                      "read (%d, e.g. %s).", root, len(nested), nested[0])
    deeper = classes and _deeper_image(
        [d for d in sub_folders if d not in classes])
    if deeper:
      logging.warning("Image folder %s: %s holds images only in sub-folders "
                      "(e.g. %s): it is no class.", root,
                      os.path.relpath(deeper, root).split(os.sep)[0], deeper)
    names = [os.path.basename(c) for c in classes]
    logging.info("Image folder %s: %d images%s.", root, len(files), (
        f" in {len(names)} classes (label: folder) "
        + ", ".join(f"{i}: {n}" for i, n in enumerate(names[:8]))
        + (", ..." if len(names) > 8 else "")) if names else ", unlabeled")
  files, labels = _folder_split(root, files, labels, split, config)
  channels = 1 if int(config.get("channels", 3)) == 1 else 3
  if not scratch.get(split):  # Once per split while the folder is as it was.
    _probe_decodes(root, files)
    scratch[split] = True
  data = FolderSource(files, labels,
                      skip_bad_files=bool(config.get("skip_bad_files", True)),
                      channels=channels)
  return sources.Source(data=data, pixel_key="image",
                label_key="label" if classes else None,
                num_classes=len(classes), channels=channels,
                skipped_files=data.skipped_files)


# Files tried when a folder is opened: one must decode.
_PROBE_FILES = 16


def _probe_decodes(root: str, files: Sequence[str]) -> None:
  """Refuses, before anything compiles, a folder where no probed file decodes.

  Decoding every file up front would cost as much as an epoch; up to 16
  files spread evenly over the sorted list show a folder of non-images
  (not one unlucky run of bad files at its start).
  """
  # Indices spread over the whole list (a stride of n // 16 covered only
  # its first 16 · (n // 16) files: for n < 32, the first 16).
  picks = sorted(set(np.linspace(0, len(files) - 1,
                                 min(_PROBE_FILES, len(files)))
                     .round().astype(int).tolist()))
  reasons = {}
  for path in [files[i] for i in picks]:
    try:
      decode_image(path)
      return
    except DECODE_ERRORS as e:
      if storage_error(e):
        raise
      reasons[path] = _reason(e)
  first = next(iter(reasons))
  raise ValueError(f"Image folder {root!r}: none of {len(reasons)} files "
                   f"tried decodes (e.g. {first}: {reasons[first]}); check "
                   "the folder.")
