"""Per-example crop / resize / flip, and per-batch scaling to [-1, 1].

Examples arrive as uint8 images [H, W, C] or clips [T, H, W, C] of any size;
`Preprocess` turns them into squares of the configured size (the centre, or
a random crop in training) and mirrors them at random. A clip gets one crop
and one flip for all its frames, so motion stays consistent. Float arrays
(e.g. autoencoder latents given as `arrays`) are taken as already prepared:
they are only flipped.
"""

import numpy as np
from PIL import Image

_PIL_MODES = {1: "L", 3: "RGB", 4: "RGBA"}


def crop_box(height: int, width: int, *, scale: float = 1.0,
             rng: np.random.Generator | None = None):
  """Returns the square source region (left, top, right, bottom) to resize.

  The shorter side, enlarged by `scale`, fills the output, so the region's
  side is min(height, width) / scale source pixels.

  Args:
    height: source height.
    width: source width.
    scale: enlargement before cropping (1 = the largest square).
    rng: None for the centre region, else the generator placing it at random.

  Returns:
    A 4-tuple of floats in source pixel coordinates.
  """
  side = min(height, width) / scale
  free_x, free_y = width - side, height - side
  if rng is None:
    left, top = free_x / 2, free_y / 2
  else:
    left, top = rng.uniform(0, free_x), rng.uniform(0, free_y)
  return (left, top, left + side, top + side)


def resize_frames(frames: np.ndarray, size: int, box) -> np.ndarray:
  """Crops `box` from each uint8 frame [..., H, W, C] and resizes to size^2.

  Args:
    frames: uint8 array [H, W, C] or [T, H, W, C].
    size: output height and width.
    box: source region (left, top, right, bottom), as from `crop_box`.

  Returns:
    uint8 array [..., size, size, C].
  """
  height, width, channels = frames.shape[-3:]
  if tuple(box) == (0, 0, width, height) and height == width == size:
    return frames  # Already the right square: keep the pixels exact.
  if channels not in _PIL_MODES:
    raise ValueError(f"Cannot resize images with {channels} channels; "
                     f"supported: {sorted(_PIL_MODES)}.")
  flat = frames.reshape((-1, height, width, channels))
  out = np.empty((len(flat), size, size, channels), np.uint8)
  for i, frame in enumerate(flat):
    image = Image.fromarray(frame[..., 0] if channels == 1 else frame,
                            _PIL_MODES[channels])
    # PIL crops and resizes in one step (sub-pixel box), antialiasing when
    # it shrinks.
    resized = image.resize((size, size), Image.Resampling.BICUBIC, box=box)
    out[i] = np.asarray(resized).reshape((size, size, channels))
  return out.reshape(frames.shape[:-3] + (size, size, channels))


class Preprocess:
  """Maps a source example to {pixel_key: array, "label": int32}.

  Usable as a grain `map` (deterministic centre crop, no flip) or
  `random_map` (called with a generator: random crop / flip as configured).
  A plain class rather than a closure so that pipelines stay picklable for
  grain worker processes.
  """

  def __init__(self, *, pixel_key: str, label_key: str | None, size: int,
               num_frames: int | None = None, random_crop: bool = False,
               crop_scale: float = 1.0, random_flip: bool = False):
    """Creates the transform.

    Args:
      pixel_key: "image" or "video": the source's key, also the output key.
      label_key: the source's label key, or None to emit label 0.
      size: output height and width.
      num_frames: keep only the first num_frames frames of clips.
      random_crop: with a generator, crop a random region of an enlargement
        by `crop_scale` instead of the centre.
      crop_scale: see `random_crop`.
      random_flip: with a generator, mirror left-right half of the time.
    """
    self.pixel_key = pixel_key
    self.label_key = label_key
    self.size = size
    self.num_frames = num_frames
    self.random_crop = random_crop
    self.crop_scale = crop_scale
    self.random_flip = random_flip

  def __call__(self, example, rng: np.random.Generator | None = None):
    pixels = np.asarray(example[self.pixel_key])
    if pixels.dtype != np.uint8 and not np.issubdtype(pixels.dtype,
                                                       np.floating):
      # Neither scaled to [-1, 1] nor resized: a uint16 image reached the
      # model as values up to 65535 at its own size.
      raise ValueError(f"dataset examples of dtype {pixels.dtype}: jaxgen "
                       "reads uint8 images, or float arrays (latents) as "
                       "they are; convert them to uint8.")
    if self.num_frames is not None:
      if len(pixels) < self.num_frames:
        # Found here, not as a shape error when the batch is stacked.
        raise ValueError(f"a clip of {len(pixels)} frames, fewer than "
                         f"dataset.num_frames={self.num_frames}; lower it or "
                         "drop the shorter clips.")
      pixels = pixels[:self.num_frames]
    if pixels.dtype == np.uint8:
      height, width = pixels.shape[-3:-1]
      if rng is not None and self.random_crop:
        box = crop_box(height, width, scale=self.crop_scale, rng=rng)
      else:
        box = crop_box(height, width)
      pixels = resize_frames(pixels, self.size, box)
    if rng is not None and self.random_flip and rng.uniform() < 0.5:
      pixels = pixels[..., ::-1, :]
    label = 0 if self.label_key is None else example[self.label_key]
    return {self.pixel_key: np.ascontiguousarray(pixels),
            "label": np.int32(label)}


def to_model_input(batch):
  """Scales uint8 pixels to float32 in [-1, 1]; float pixels pass through.

  Args:
    batch: dict of numpy arrays with "image" or "video" and "label".

  Returns:
    A new dict with float32 pixels and int32 labels.
  """
  out = {}
  for key, value in batch.items():
    if key == "label":
      out[key] = value.astype(np.int32)
    elif value.dtype == np.uint8:
      # Division by 127.5 maps 0 and 255 exactly to -1 and 1.
      out[key] = value.astype(np.float32) / np.float32(127.5) - np.float32(1)
    else:
      out[key] = value.astype(np.float32)
  return out
