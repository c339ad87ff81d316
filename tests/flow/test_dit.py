"""Packed layouts, block-causal attention, RoPE and the DiT's FLOP count."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.flow import dit
from jaxgen.flow import layout as layout_lib
from jaxgen.nn import rope

P = 2  # patch


def _video_layout():
  # Segments at stages 0 (1/4), 1 (1/2), 2 (full) of 16x16 frames, 3 lags.
  return layout_lib.build((0, 1, 2), num_stages=3, height=16, width=16,
                          patch=P, history=3)


def test_layout_token_counts_and_history_levels():
  lay = _video_layout()
  sizes = {(c.segment, c.lag): (c.level, c.size) for c in lay.chunks}
  # Full-resolution stage (segment 2): lag 1 full, lag 2 half, lag 3 quarter.
  assert [sizes[(2, lag)] for lag in (0, 1, 2, 3)] == [
      (0, 64), (0, 64), (1, 16), (2, 4)]
  assert [sizes[(1, lag)] for lag in (0, 1, 2, 3)] == [
      (1, 16), (1, 16), (2, 4), (2, 4)]
  assert [sizes[(0, lag)] for lag in (0, 1, 2, 3)] == [(2, 4)] * 4
  assert lay.length == 148 + 40 + 16
  assert [c.lag for c in lay.chunks if c.segment == 2] == [3, 2, 1, 0]


def test_coarse_history_sits_at_cell_centres():
  lay = _video_layout()
  half = [c for c in lay.chunks if c.segment == 2 and c.lag == 2][0]
  coords = lay.coords[half.offset:half.offset + half.size]
  # A 2x coarser grid covers cells (0, 1), (2, 3), ...: centres 0.5, 2.5, ...
  np.testing.assert_allclose(np.unique(coords[:, 1]), [0.5, 2.5, 4.5, 6.5])
  quarter = [c for c in lay.chunks if c.segment == 2 and c.lag == 3][0]
  coords = lay.coords[quarter.offset:quarter.offset + quarter.size]
  np.testing.assert_allclose(np.unique(coords[:, 2]), [1.5, 5.5])


def test_mask_is_segment_and_block_causal():
  lay = _video_layout()
  m = np.asarray(layout_lib.attention_mask(lay))[0, 0]
  seg, slot = lay.segment_ids, lay.slots
  want = (seg[:, None] == seg[None]) & (slot[:, None] >= slot[None])
  np.testing.assert_array_equal(m, want)
  # Validity: with the generated frame at position 1 only lag 1 exists.
  valid = layout_lib.validity(lay, jnp.ones((1, 3), jnp.int32))
  np.testing.assert_array_equal(np.asarray(valid)[0], lay.lags <= 1)
  m = np.asarray(layout_lib.attention_mask(lay, valid))[0, 0]
  invalid = np.flatnonzero(lay.lags > 1)
  for q in np.flatnonzero(lay.lags <= 1):
    assert not m[q, invalid].any()
  full = layout_lib.build((0,), num_stages=1, height=8, width=8, patch=P,
                          frames=3, causal=False)
  assert layout_lib.attention_mask(full) is None  # attend everywhere
  # One segment's span: its own block of the full mask.
  lay = _video_layout()
  a, b = lay.spans[1]
  np.testing.assert_array_equal(
      np.asarray(layout_lib.attention_mask(lay, span=(a, b)))[0, 0],
      np.asarray(layout_lib.attention_mask(lay))[0, 0, a:b, a:b])


def test_patchify_roundtrip_and_pack_take():
  x = jax.random.normal(jax.random.key(0), (2, 8, 12, 3))
  tok = layout_lib.patchify(x, P)
  assert tok.shape == (2, 24, 12)
  np.testing.assert_array_equal(tok[:, 1], x[:, :2, 2:4].reshape(2, -1))
  np.testing.assert_array_equal(layout_lib.unpatchify(tok, (4, 6), P), x)


def _model(positions="rope", **kw):
  return dit.DiT(token_dim=P * P * 3, width=32, depth=2, num_heads=2,
                 num_classes=4, positions=positions, freq_dim=16,
                 max_positions=(4, 8, 8), **kw)


def _perturbed_params(model, lay, key=0):
  """Parameters with every zero-initialised kernel made random (so the
  adaLN-zero identity at init does not hide information flow)."""
  tokens = jnp.zeros((1, lay.length, P * P * 3))
  s = len(lay.stages)
  params = model.init(jax.random.key(key), tokens, lay, jnp.zeros((1, s)),
                      jnp.zeros((1, s), jnp.int32))["params"]
  leaves, tree = jax.tree.flatten(params)
  keys = jax.random.split(jax.random.key(key + 1), len(leaves))
  leaves = [0.2 * jax.random.normal(k, l.shape) for k, l in zip(keys, leaves)]
  return jax.tree.unflatten(tree, leaves)


def test_adaln_zero_output_is_zero_at_init():
  lay = _video_layout()
  model = _model()
  tokens = jax.random.normal(jax.random.key(0), (2, lay.length, 12))
  params = model.init(jax.random.key(1), tokens, lay, jnp.ones((2, 3)),
                      jnp.zeros((2, 3), jnp.int32))
  out = model.apply(params, tokens, lay, jnp.ones((2, 3)),
                    jnp.zeros((2, 3), jnp.int32))
  np.testing.assert_array_equal(out, 0)


@pytest.mark.parametrize("positions", ["rope", "sincos", "learned"])
def test_causality_later_frames_and_other_segments_change_nothing(positions):
  lay = _video_layout()
  model = _model(positions)
  params = _perturbed_params(model, lay)
  ts = jnp.array([[100.0, 500.0, 900.0]])
  labels = jnp.array([[0, 1, 2]])
  valid = layout_lib.validity(lay, jnp.full((1, 3), 3))
  tokens = jax.random.normal(jax.random.key(2), (1, lay.length, 12))
  run = lambda t: np.asarray(model.apply({"params": params}, t, lay, ts,  # pylint: disable=g-long-lambda
                                         labels, valid))
  base = run(tokens)
  # Change the generated frame of segment 2 (its last slot): the history
  # tokens of segment 2 and every token of segments 0 and 1 are unchanged.
  cur = lay.current(2)
  changed = run(tokens.at[:, cur.offset:cur.offset + cur.size].add(1.0))
  earlier = (lay.segment_ids != 2) | (lay.slots < cur.slot)
  np.testing.assert_allclose(changed[0, earlier], base[0, earlier], atol=1e-5)
  assert np.abs(changed[0, ~earlier] - base[0, ~earlier]).max() > 1e-3
  # Changing the lag-1 history of segment 2 changes its generated frame
  # but not its older history.
  lag1 = [c for c in lay.chunks if c.segment == 2 and c.lag == 1][0]
  changed = run(tokens.at[:, lag1.offset:lag1.offset + lag1.size].add(1.0))
  older = (lay.segment_ids == 2) & (lay.lags > 1)
  np.testing.assert_allclose(changed[0, older], base[0, older], atol=1e-5)
  assert np.abs(changed[0, cur.offset:cur.offset + cur.size]
                - base[0, cur.offset:cur.offset + cur.size]).max() > 1e-3


def test_segment_attention_equals_one_masked_call_and_the_reference():
  lay = _video_layout()
  model = _model()
  params = _perturbed_params(model, lay)
  ts, labels = jnp.array([[1.0, 2.0, 3.0]]), jnp.array([[0, 1, 2]])
  valid = layout_lib.validity(lay, jnp.array([[1, 2, 3]]))
  tokens = jax.random.normal(jax.random.key(3), (1, lay.length, 12))
  out = [np.asarray(_model(segment_attention=flag, attention_impl=impl).apply(
      {"params": params}, tokens, lay, ts, labels, valid))
         for flag, impl in ((True, "auto"), (False, "auto"),
                            (False, "einsum"))]
  np.testing.assert_allclose(out[0], out[1], rtol=1e-5, atol=1e-5)
  # jax.nn.dot_product_attention with the packed mask = the einsum reference.
  np.testing.assert_allclose(out[1], out[2], rtol=1e-5, atol=1e-5)


def test_empty_history_slots_are_invisible():
  lay = _video_layout()
  model = _model()
  params = _perturbed_params(model, lay)
  ts, labels = jnp.array([[1.0, 2.0, 3.0]]), jnp.array([[0, 1, 2]])
  valid = layout_lib.validity(lay, jnp.zeros((1, 3), jnp.int32))  # first frame
  tokens = jax.random.normal(jax.random.key(3), (1, lay.length, 12))
  base = model.apply({"params": params}, tokens, lay, ts, labels, valid)
  noisy = tokens + jnp.where(jnp.asarray(lay.lags > 0)[None, :, None], 5.0, 0)
  out = model.apply({"params": params}, noisy, lay, ts, labels, valid)
  cur = lay.lags == 0
  np.testing.assert_allclose(np.asarray(out)[0, cur], np.asarray(base)[0, cur],
                             atol=1e-5)


def test_rope_matches_numpy_and_is_relative():
  rng = np.random.default_rng(0)
  q = rng.normal(size=(1, 5, 1, 8)).astype(np.float32)
  coords = rng.uniform(0, 6, size=(5, 3)).astype(np.float32)
  dims = (2, 4, 2)
  ang = rope.rope_angles(jnp.asarray(coords)[None], dims)
  out = np.asarray(rope.apply_rope(jnp.asarray(q), ang))
  # numpy: pairs (i, i + 4) rotate by the angle of frequency i, the
  # frequencies of each axis in turn.
  theta = np.concatenate([np.outer(coords[:, a],
                                   10000.0 ** (-np.arange(0, d, 2) / d))
                          for a, d in enumerate(dims)], axis=1)
  x1, x2 = q[0, :, 0, :4], q[0, :, 0, 4:]
  want = np.concatenate([x1 * np.cos(theta) - x2 * np.sin(theta),
                         x2 * np.cos(theta) + x1 * np.sin(theta)], axis=1)
  np.testing.assert_allclose(out[0, :, 0], want, rtol=1e-5, atol=1e-5)
  # q·k depends on position differences only.
  k = rng.normal(size=(1, 5, 1, 8)).astype(np.float32)
  dots = lambda c: np.einsum(  # pylint: disable=g-long-lambda
      "qd,kd->qk",
      *(np.asarray(rope.apply_rope(jnp.asarray(a), rope.rope_angles(
          jnp.asarray(c)[None], dims)))[0, :, 0] for a in (q, k)))
  np.testing.assert_allclose(dots(coords), dots(coords + 3.7), rtol=1e-4,
                             atol=1e-4)
  assert rope.axes_dims(64) == (16, 24, 24)


def _compiled_flops(fn, *args):
  compiled = jax.jit(fn).lower(*args).compile()
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, (list, tuple)) else cost
  return float(cost["flops"])


@pytest.mark.parametrize("kind,segmented", [("image", True),
                                            ("image", False),
                                            ("video", True)])
def test_forward_flops_match_xla(kind, segmented):
  if kind == "image":
    lay = layout_lib.build((0, 1, 1, 2), num_stages=3, height=32, width=32,
                           patch=P)
  else:
    lay = _video_layout()
  kw = dict(token_dim=12, width=128, depth=2, num_heads=4, freq_dim=32,
            mlp_ratio=4.0, segment_attention=segmented)
  model = dit.DiT(**kw)
  s = len(lay.stages)
  tokens = jnp.zeros((2, lay.length, 12))
  params = model.init(jax.random.key(0), tokens, lay, jnp.zeros((2, s)))
  fwd = lambda p, x: model.apply(p, x, lay, jnp.ones((2, s)))  # pylint: disable=g-long-lambda
  xla = _compiled_flops(fwd, params, tokens)
  analytic = 2 * dit.forward_flops(kw, lay)
  assert analytic == pytest.approx(xla, rel=0.05)
