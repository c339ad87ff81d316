"""Static layouts of packed token sequences (Patch n' Pack over pyramid stages).

One packed row holds several *segments*, one stage sample each (Sec. 3.4 of
the paper: the K stages of a batch train in one sequence). A segment is a
list of *chunks*: the history frames of the temporal pyramid (oldest first,
each at its compressed level) and then the frame being generated. Every
chunk is a patchified grid of tokens.

Everything here is numpy and static: a layout is fixed by the config, so the
jitted step sees fixed shapes, and per token it gives
  segment  the segment id (tokens of different segments never attend),
  slot     the chunk's place in its segment's frame order (block-causal
           attention: a token sees slots <= its own),
  lag      0 for the generated frame, L for the history frame at lag L
           (invalid while the frame being generated has position < L),
  coords   (slot, h, w) positions in the generated frame's patch grid: a
           history frame at a coarser level takes the centres of the cells it
           covers (0.5, 2.5, ... for a 2x coarser grid), as the official code
           interpolates its position ids.
"""

import dataclasses
from typing import List, Sequence, Tuple

import einops
import jax
import jax.numpy as jnp
import numpy as np

from jaxgen.flow import pyramid


@dataclasses.dataclass(frozen=True)
class Chunk:
  """One frame's tokens inside a segment.

  Attributes:
    segment: index of the segment in the row.
    level: resolution level (0 = full).
    lag: 0 for the generated frame, L >= 1 for history at lag L.
    slot: order within the segment (history oldest first, generated last).
    grid: (rows, cols) of patches.
    offset: first token in the row.
  """
  segment: int
  level: int
  lag: int
  slot: int
  grid: Tuple[int, int]
  offset: int

  @property
  def size(self) -> int:
    """Tokens in the chunk."""
    return self.grid[0] * self.grid[1]


@dataclasses.dataclass(frozen=True)
class Layout:
  """A packed row: its segments' stages, chunks and per-token arrays.

  Attributes:
    stages: stage index (0 = lowest resolution) of every segment.
    chunks: all chunks in row order.
    causal: block-causal attention over slots (False: bidirectional within
      a segment, as in full-sequence video diffusion).
    segment_ids: i32[L].
    slots: i32[L].
    lags: i32[L].
    coords: f32[L, 3] (slot, row, column) positions.
  """
  stages: Tuple[int, ...]
  chunks: Tuple[Chunk, ...]
  causal: bool
  segment_ids: np.ndarray
  slots: np.ndarray
  lags: np.ndarray
  coords: np.ndarray

  @property
  def length(self) -> int:
    """Tokens in the packed row."""
    return int(self.segment_ids.shape[0])

  @property
  def spans(self) -> Tuple[Tuple[int, int], ...]:
    """(first, end) token of every segment (segments are contiguous)."""
    out = []
    for j in range(len(self.stages)):
      idx = np.flatnonzero(self.segment_ids == j)
      out.append((int(idx[0]), int(idx[-1]) + 1))
    return tuple(out)

  def current(self, segment: int) -> Chunk:
    """The generated-frame chunk of a segment (full sequence: its last)."""
    return [c for c in self.chunks if c.segment == segment][-1]

  def targets(self) -> List[Chunk]:
    """Chunks whose tokens are in the loss (lag 0), in row order."""
    return [c for c in self.chunks if c.lag == 0]


def build(stages: Sequence[int], *, num_stages: int, height: int, width: int,
          patch: int, history: int = 0, frames: int = 1,
          causal: bool = True) -> Layout:
  """Builds the layout of one packed row.

  Args:
    stages: stage index of each segment (0 = lowest resolution).
    num_stages: K.
    height: full-resolution height of a frame (pixels or latent cells).
    width: full-resolution width.
    patch: patch side.
    history: temporal pyramid: history slots per segment (max lag); 0 for
      images or full-sequence video.
    frames: full-sequence video: frames per segment, all generated together
      at the stage's level (then `history` must be 0).
    causal: block-causal attention over slots.

  Returns:
    The Layout.
  """
  if history and frames > 1:
    raise ValueError("a layout is either autoregressive (history) or "
                     "full-sequence (frames), not both.")
  chunks, offset = [], 0
  seg, slot_ids, lag_ids, coords = [], [], [], []
  for j, stage in enumerate(stages):
    k = num_stages - 1 - stage
    items = [(pyramid.history_level(k, lag, num_stages), lag)
             for lag in range(history, 0, -1)]
    items += [(k, 0)] * frames
    for slot, (level, lag) in enumerate(items):
      f = 2 ** level
      grid = (height // f // patch, width // f // patch)
      chunk = Chunk(j, level, lag, slot, grid, offset)
      chunks.append(chunk)
      offset += chunk.size
      # Centres of the cells of a coarser grid, in the generated grid's
      # units: a 2^d-times coarser cell a covers cells a·2^d ... a·2^d+2^d-1.
      r = 2 ** (level - k)
      rows, cols = np.meshgrid(np.arange(grid[0]) * r + (r - 1) / 2,
                               np.arange(grid[1]) * r + (r - 1) / 2,
                               indexing="ij")
      coords.append(np.stack([np.full(chunk.size, slot, np.float32),
                              rows.reshape(-1), cols.reshape(-1)], axis=1))
      seg.append(np.full(chunk.size, j, np.int32))
      slot_ids.append(np.full(chunk.size, slot, np.int32))
      lag_ids.append(np.full(chunk.size, lag, np.int32))
  return Layout(tuple(stages), tuple(chunks), causal,
                np.concatenate(seg), np.concatenate(slot_ids),
                np.concatenate(lag_ids),
                np.concatenate(coords).astype(np.float32))


def validity(layout: Layout, positions: jax.Array) -> jax.Array:
  """Which tokens hold a real frame, given each segment's frame position.

  Args:
    layout: the row layout.
    positions: i32[B, S] position (frame index) of each segment's generated
      frame; history at lag L exists only when L <= position.

  Returns:
    bool[B, L].
  """
  pos = jnp.take(positions, jnp.asarray(layout.segment_ids), axis=1)
  return jnp.asarray(layout.lags)[None] <= pos


def attention_mask(layout: Layout, valid: jax.Array = None,
                   span: Tuple[int, int] = None) -> jax.Array:
  """(same segment) ∧ (slot_q >= slot_k) ∧ (key valid or key = query).

  An invalid (empty history) token is never seen by another token; it sees
  itself so its softmax is defined (its output is never used).

  Args:
    layout: the row layout.
    valid: optional bool[B, L] from `validity`.
    span: optional (first, end) token range (one segment's `spans` entry):
      the mask among those tokens only.

  Returns:
    bool[B or 1, 1, n, n] for `jax.nn.dot_product_attention`, n = L or the
    span's length; None when every token may attend to every other.
  """
  a, b = span or (0, layout.length)
  seg, slots = layout.segment_ids[a:b], layout.slots[a:b]
  allowed = seg[:, None] == seg[None, :]
  if layout.causal:
    allowed &= slots[:, None] >= slots[None, :]
  if valid is None and allowed.all():
    return None  # no mask: the fused kernels' fastest path
  allowed = jnp.asarray(allowed)[None, None]
  if valid is not None:
    eye = jnp.eye(b - a, dtype=bool)
    allowed = allowed & (valid[:, None, None, a:b] | eye[None, None])
  return allowed


def patchify(x: jax.Array, patch: int) -> jax.Array:
  """f[B, h, w, C] -> f[B, (h/p)(w/p), p·p·C] (row-major patches)."""
  return einops.rearrange(x, "b (h i) (w j) c -> b (h w) (i j c)",
                          i=patch, j=patch)


def unpatchify(tokens: jax.Array, grid: Tuple[int, int],
               patch: int) -> jax.Array:
  """Inverse of `patchify` for a (rows, cols) patch grid."""
  return einops.rearrange(tokens, "b (h w) (i j c) -> b (h i) (w j) c",
                          h=grid[0], w=grid[1], i=patch, j=patch)


def pack(frames: Sequence[jax.Array], patch: int) -> jax.Array:
  """Patchifies the chunks' frames (row order) into one token sequence.

  Args:
    frames: one f[B, h, w, C] per chunk, in `layout.chunks` order.
    patch: patch side.

  Returns:
    f[B, L, p·p·C].
  """
  return jnp.concatenate([patchify(f, patch) for f in frames], axis=1)


def take(tokens: jax.Array, chunk: Chunk, patch: int) -> jax.Array:
  """The frame of one chunk out of a packed sequence, f[B, h, w, C]."""
  part = jax.lax.slice_in_dim(tokens, chunk.offset, chunk.offset + chunk.size,
                              axis=1)
  return unpatchify(part, chunk.grid, patch)
