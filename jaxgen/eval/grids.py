"""Sample grids as PNG: images tile into a square-ish grid, videos one per row."""

import io
import math

import etils.epath as epath
import numpy as np
from PIL import Image


def to_uint8(x: np.ndarray) -> np.ndarray:
  """Maps [-1, 1] floats to uint8 [0, 255], clipping out-of-range values."""
  return np.round((np.clip(np.asarray(x, np.float32), -1, 1) + 1) * 127.5
                  ).astype(np.uint8)


def make_grid(samples: np.ndarray, ncols: int = 0, pad: int = 1) -> np.ndarray:
  """Tiles samples into one uint8 HWC image.

  Args:
    samples: [N, H, W, C] images or [N, T, H, W, C] videos in [-1, 1]. Videos
      are laid out one clip per row, frames left to right.
    ncols: images per row (default: ceil(sqrt(N))); ignored for videos.
    pad: pixels of white border between tiles.

  Returns:
    uint8 array [rows*(H+pad)+pad, cols*(W+pad)+pad, C].
  """
  x = to_uint8(samples)
  if x.ndim == 5:
    n, t = x.shape[:2]
    x = x.reshape((n * t,) + x.shape[2:])
    ncols = t
  n, h, w, c = x.shape
  ncols = ncols or int(math.ceil(math.sqrt(n)))
  nrows = int(math.ceil(n / ncols))
  grid = np.full((nrows * (h + pad) + pad, ncols * (w + pad) + pad, c), 255,
                 np.uint8)
  for i in range(n):
    r, col = divmod(i, ncols)
    y0, x0 = pad + r * (h + pad), pad + col * (w + pad)
    grid[y0:y0 + h, x0:x0 + w] = x[i]
  return grid


def save_grid(samples: np.ndarray, path: str, ncols: int = 0,
              scale: int = 1) -> str:
  """Writes `make_grid(samples)` to `path` as PNG, optionally upscaled.

  Args:
    samples: images or videos in [-1, 1].
    path: output file.
    ncols: images per row.
    scale: nearest-neighbour upscaling so tiny images are visible.

  Returns:
    The path written.
  """
  grid = make_grid(samples, ncols)
  if scale > 1:
    grid = grid.repeat(scale, 0).repeat(scale, 1)
  img = Image.fromarray(grid[..., 0] if grid.shape[-1] == 1 else grid)
  buffer = io.BytesIO()
  img.save(buffer, format="PNG")
  # Through epath, so gs://... workdirs work; written whole, then renamed.
  out = epath.Path(path)
  out.parent.mkdir(parents=True, exist_ok=True)
  tmp = out.parent / (out.name + ".tmp")
  tmp.write_bytes(buffer.getvalue())
  tmp.replace(out)
  return path
