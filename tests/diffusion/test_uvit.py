"""Tests of the U-ViT: shapes, init identity, partitioning, dropout, FLOPs."""

import functools
import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from jaxgen.diffusion import uvit
from jaxgen.nn import stack
from jaxgen.nn import partitioning as pt


# The rules the config uses by default (weights, then activations).
RULES = (
    ("embed", "fsdp"), ("mlp", "tensor"), ("heads", "tensor"),
    ("conv_in", "fsdp"), ("conv_out", "tensor"), ("cond", "fsdp"),
    ("act_batch", ("data", "fsdp")), ("act_mlp", "tensor"),
    ("act_channels", "tensor"),
)


def _kw(**overrides):
  """A small U-ViT: conv levels (16, 32), one transformer block of width 32."""
  kw = dict(channels=(16, 32), num_res_blocks=(1, 1), transformer_width=32,
            transformer_depth=1, num_heads=2, cond_dim=32, freq_dim=16,
            num_groups=8)
  kw.update(overrides)
  return kw


def _inputs(size, batch=2, num_classes=0):
  x = jax.random.uniform(jax.random.key(1), (batch, size, size, 3),
                         minval=-1, maxval=1)
  logsnr = jnp.linspace(-5.0, 5.0, batch)
  labels = (jnp.arange(batch, dtype=jnp.int32) % num_classes
            if num_classes else None)
  return x, logsnr, labels


def _init(model, x, logsnr, labels):
  return jax.jit(functools.partial(model.init, train=False))(
      jax.random.key(0), x, logsnr, labels)


def _boxed_leaves(tree):
  return jax.tree_util.tree_leaves_with_path(
      tree, is_leaf=lambda a: isinstance(a, nn.LogicallyPartitioned))


# One "functional" model shared by several tests, so each program is compiled
# once: 32px, patch 2 -> conv levels at 16 and 8, transformer at 4x4, dropout
# at <= 8 (level 1 and the transformer), class-conditional, random residuals.
FUNCTIONAL = _kw(channels=(64, 128), transformer_width=128, patch_size=2,
                 num_heads=4, num_classes=10, zero_init=False,
                 dropout_rate=0.5, dropout_max_res=8)


@pytest.fixture(scope="module")
def functional():
  """(model, variables, inputs, compiled eval fn, compiled train fn)."""
  model = uvit.UViT(**FUNCTIONAL)
  inputs = _inputs(32, num_classes=10)
  variables = _init(model, *inputs)

  def run(train, params, x, logsnr, labels, key):
    out, state = model.apply(params, x, logsnr, labels, train=train,
                             rngs={"dropout": key},
                             mutable=["intermediates"])
    return out, state["intermediates"]

  params = nn.unbox(variables)
  key = jax.random.key(7)
  compiled = {
      train: jax.jit(functools.partial(run, train)).lower(
          params, *inputs, key).compile()
      for train in (False, True)}
  return model, variables, inputs, compiled


def test_output_shape_runs(functional):
  _, variables, (x, logsnr, labels), compiled = functional
  out, _ = compiled[False](nn.unbox(variables), x, logsnr, labels,
                           jax.random.key(0))
  assert out.shape == x.shape and out.dtype == jnp.float32
  assert np.all(np.isfinite(out)) and float(jnp.std(out)) > 1e-3


@pytest.mark.parametrize("size,kw", [
    (128, _kw(patch_size=2)),
    (256, _kw(patch_size=4, downsample="haar", skip_style="residual")),
    (512, _kw(patch_size=4, channels=(8, 16, 16), num_res_blocks=(1, 1, 1),
              dtype=jnp.bfloat16, position_embedding="sincos")),
])
def test_output_shape_abstract(size, kw):
  model = uvit.UViT(**kw)
  x = jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32)
  s = jax.ShapeDtypeStruct((1,), jnp.float32)

  def run(key, x, s):
    variables = model.init(key, x, s, train=False)
    return model.apply(variables, x, s, train=False)

  out = jax.eval_shape(run, jax.random.key(0), x, s)
  assert out.shape == x.shape and out.dtype == jnp.float32


def test_bad_sizes_and_fields_raise():
  def init(kw, size, labels=None):
    x, logsnr, _ = _inputs(size)
    jax.eval_shape(functools.partial(uvit.UViT(**kw).init, train=False),
                   jax.random.key(0), x, logsnr, labels)
  with pytest.raises(ValueError, match="divisible"):
    init(_kw(), 30)   # needs a multiple of patch_size * 2**levels = 4
  with pytest.raises(ValueError, match="skip_style"):
    init(_kw(skip_style="dense"), 32)
  with pytest.raises(ValueError, match="unconditional"):
    init(_kw(), 32, jnp.zeros((2,), jnp.int32))
  # Was "sincos_2d_positions needs dim % 4 == 0" when the model was built.
  with pytest.raises(ValueError, match=(
      r"^config\.model\.transformer_width=66 is not a multiple of 4, which "
      r"position_embedding='sincos' needs")):
    init(_kw(transformer_width=66, num_heads=6, position_embedding="sincos"),
         32)
  init(_kw(transformer_width=64, num_heads=4, position_embedding="sincos"), 32)


def test_residual_uvit_is_identity_between_stem_and_head_at_init():
  """What holds exactly at init with zero_init and skip_style="residual".

  Every ResBlock and transformer block is the identity (zero output convs /
  projections), learned positions are zero and Up has no bias, so each level
  gives Up(h - neg) + pos = Up(0) + pos = pos: the map entering the head
  equals the stem output. The head is zero-initialised, so v_hat == 0.
  (The stem, head and conditioning weights themselves are random.)
  """
  model = uvit.UViT(**_kw(patch_size=2, downsample="haar",
                          skip_style="residual", num_classes=4))
  x, logsnr, labels = _inputs(64, num_classes=4)
  variables = nn.unbox(_init(model, x, logsnr, labels))
  out, state = jax.jit(functools.partial(
      model.apply, train=False, mutable=["intermediates"]))(
          variables, x, logsnr, labels)
  inter = state["intermediates"]
  stem, head_in = inter["stem_out"][0], inter["head_in"][0]
  assert float(jnp.std(stem)) > 0.1
  np.testing.assert_allclose(head_in, stem, atol=1e-5)
  assert out.shape == x.shape
  np.testing.assert_array_equal(out, 0.0)
  # The same holds per level: each up level returns its down level's input.
  np.testing.assert_allclose(inter["up1_out"][0], inter["down1_out"][0],
                             atol=1e-5)


def _abstract_params(kw, size=32):
  model = uvit.UViT(**kw)
  x, logsnr, labels = _inputs(size, num_classes=kw.get("num_classes", 0))
  return jax.eval_shape(
      functools.partial(model.init, train=False), jax.random.key(0), x,
      logsnr, labels)["params"]


@pytest.mark.parametrize("kw,size", [
    (_kw(patch_size=2, num_classes=10), 32),
    (_kw(patch_size=2, downsample="haar", skip_style="residual"), 32),
    (uvit.uvit_kwargs("imagenet512"), 512),
])
def test_every_param_is_named_and_big_kernels_shard_over_fsdp(kw, size):
  params = _abstract_params(kw, size)
  total = sum(math.prod(a.shape) for a in jax.tree.leaves(params))
  exempt = 0
  for path, leaf in _boxed_leaves(params):
    name = jax.tree_util.keystr(path)
    assert isinstance(leaf, nn.LogicallyPartitioned), name
    assert len(leaf.names) == len(leaf.value.shape), name
    spec = nn.logical_to_mesh_axes(leaf.names, RULES)  # No duplicate names.
    # A scanned stack's leading layer axis does not make a vector a kernel.
    dims = [n for n in leaf.names if n != stack.LAYERS]
    if len(dims) < 2 or name.endswith("['bias']"):
      continue
    if "fsdp" not in jax.tree.leaves(tuple(spec)):
      # Only the stem, whose input is 3 or 3*p*p pixel channels, which no
      # mesh axis divides; its output dim is still tensor-sharded.
      assert name == "['stem']['kernel']", (name, leaf.names)
      assert leaf.names[2:] == (None, pt.CONV_OUT)
      exempt += math.prod(leaf.value.shape)
  assert exempt < (0.03 if size < 512 else 1e-4) * total


def test_sharded_apply_matches_single_device(functional):
  model, variables, (x, logsnr, labels), compiled = functional
  key = jax.random.key(0)
  expected, _ = compiled[False](nn.unbox(variables), x, logsnr, labels, key)
  mesh = jax.make_mesh((1, 2, 4), ("data", "fsdp", "tensor"),
                       axis_types=(jax.sharding.AxisType.Auto,) * 3)
  shardings = nn.logical_to_mesh_sharding(
      nn.get_partition_spec(variables), mesh, RULES)
  params = jax.device_put(nn.unbox(variables), shardings)
  with jax.set_mesh(mesh), nn.logical_axis_rules(RULES):
    out = jax.jit(functools.partial(model.apply, train=False))(
        params, x, logsnr, labels)
  np.testing.assert_allclose(out, expected, atol=2e-4, rtol=1e-4)
  kernel = params["params"]["transformer0"]["mlp"]["dense_in"]["kernel"]
  assert kernel.sharding.spec == jax.P("fsdp", "tensor")


def test_dropout_only_in_low_resolution_stages(functional):
  _, variables, (x, logsnr, labels), compiled = functional
  params, key = nn.unbox(variables), jax.random.key(3)
  out_t, int_t = compiled[True](params, x, logsnr, labels, key)
  out_e, int_e = compiled[False](params, x, logsnr, labels, key)
  # Level 0 (16x16) has no dropout: train and eval agree exactly up to there.
  np.testing.assert_array_equal(int_t["down0_out"][0],
                                int_e["down0_out"][0])
  # Level 1 (8x8) and the transformer (4x4) do, and so does the output.
  assert not np.allclose(int_t["down1_out"][0], int_e["down1_out"][0])
  assert not np.allclose(int_t["transformer_out"][0],
                         int_e["transformer_out"][0])
  assert not np.allclose(out_t, out_e)
  # Different dropout keys, different outputs; eval ignores the key.
  out_t2, _ = compiled[True](params, x, logsnr, labels, jax.random.key(4))
  assert not np.allclose(out_t, out_t2)
  out_e2, _ = compiled[False](params, x, logsnr, labels, jax.random.key(4))
  np.testing.assert_array_equal(out_e, out_e2)
  # Every dropout the forward applies, on the way down and up: those with a
  # rate act on maps (or token grids) of side <= dropout_max_res = 8 only
  # (the up path's and the head's were not seen by the checks above).
  applied = []

  def record(next_fun, args, kwargs, context):
    if isinstance(context.module, nn.Dropout) and context.method_name == (
        "__call__"):
      h = args[0]
      side = h.shape[1] if h.ndim == 4 else math.isqrt(h.shape[1])
      applied.append((side, context.module.rate))
    return next_fun(*args, **kwargs)

  model = uvit.UViT(**FUNCTIONAL)
  with nn.intercept_methods(record):
    jax.eval_shape(lambda: model.apply(variables, x, logsnr, labels,
                                       train=True, rngs={"dropout": key}))
  # (A rate of 0 builds no Dropout.) Level 1 down and up, the transformer.
  assert all(rate == 0.5 for _, rate in applied), applied
  assert {side for side, _ in applied} == {8, 4}, applied
  assert sum(side == 8 for side, _ in applied) == 2, applied


def test_class_and_logsnr_conditioning_and_null_label(functional):
  _, variables, (x, logsnr, _), compiled = functional
  params, key = nn.unbox(variables), jax.random.key(0)
  apply = lambda s, y: compiled[False](params, x, s, y, key)[0]
  out_a = apply(logsnr, jnp.array([1, 2]))
  out_b = apply(logsnr, jnp.array([3, 4]))
  out_null = apply(logsnr, jnp.array([10, 10]))  # num_classes = null label
  assert np.all(np.isfinite(out_null))
  assert not np.allclose(out_a, out_b, atol=1e-4)
  assert not np.allclose(out_a, out_null, atol=1e-4)
  assert not np.allclose(apply(logsnr + 3.0, jnp.array([1, 2])), out_a,
                         atol=1e-4)


def _compiled_flops(fn, *args):
  cost = jax.jit(fn).lower(*args).compile().cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0]
  return float(cost["flops"])


def test_forward_flops_match_cost_analysis(functional):
  compiled = functional[3][False]
  cost = compiled.cost_analysis()
  if isinstance(cost, (list, tuple)):
    cost = cost[0]
  analytic = 2 * uvit.uvit_flops_per_example(FUNCTIONAL, 32)
  # The compiled count also includes elementwise ops (a few %).
  assert abs(float(cost["flops"]) / analytic - 1) < 0.05


@pytest.mark.parametrize("kw", [
    FUNCTIONAL,   # patch stem, unet skips, class embedding
    _kw(channels=(64, 128), transformer_width=128, patch_size=2,
        downsample="haar", skip_style="residual"),
])
def test_training_flops_are_three_times_forward(kw):
  batch, size = 2, 32
  model = uvit.UViT(**kw)
  x, logsnr, labels = _inputs(size, batch, kw.get("num_classes", 0))
  params = jax.tree.map(
      lambda a: jnp.zeros(a.shape, a.dtype),
      nn.unbox(jax.eval_shape(functools.partial(model.init, train=False),
                              jax.random.key(0), x, logsnr, labels)))
  loss = lambda p: jnp.sum(jnp.square(
      model.apply(p, x, logsnr, labels, train=False)))
  analytic = batch * uvit.uvit_flops_per_example(kw, size)
  # XLA's count is the same with or without optimisations (checked), so
  # conftest's JAX_DISABLE_MOST_OPTIMIZATIONS does not change what this
  # measures.
  train = _compiled_flops(jax.value_and_grad(loss), params)
  assert abs(train / (3 * analytic) - 1) < 0.05, (train, 3 * analytic)


def test_the_objective_counts_the_datas_channels():
  # 32-channel latents were counted as RGB (13% too few FLOPs for tiny).
  from configs import simple_diffusion  # pylint: disable=g-import-not-at-top
  from jaxgen.diffusion import objective as sd_objective  # pylint: disable=g-import-not-at-top
  config = simple_diffusion.get_config("tiny")
  config.dataset.channels = 32
  obj = sd_objective.SimpleDiffusion(config, total_steps=1)
  size = int(config.dataset.image_size)
  forward = uvit.uvit_flops_per_example(obj.kwargs, size, in_channels=32)
  assert forward > uvit.uvit_flops_per_example(obj.kwargs, size) * 1.05
  assert obj.flops_per_example() == pytest.approx(3 * forward)
  # And it is what XLA counts for a 32-channel forward.
  model = uvit.UViT(**dict(_kw(), patch_size=2))
  x = jnp.zeros((1, 16, 16, 32))
  params = nn.unbox(jax.eval_shape(functools.partial(model.init, train=False),
                                   jax.random.key(0), x, jnp.zeros((1,))))
  compiled = _compiled_flops(
      lambda p: model.apply(p, x, jnp.zeros((1,)), train=False), params)
  analytic = uvit.uvit_flops_per_example(dict(_kw(), patch_size=2), 16,
                                         in_channels=32)
  assert abs(compiled / analytic - 1) < 0.05, (compiled, analytic)


def test_flops_hand_count_of_transformer_and_resblock():
  # 64px, p=2, two levels -> transformer on 8x8 = 64 tokens.
  kw = _kw(channels=(16, 32), transformer_width=32, num_heads=4,
           mlp_ratio=4, cond_dim=32, patch_size=2)
  t, d, dc = 64, 32, 32
  per_block = 2 * (4 * t * d * d + 2 * t * t * d + 2 * t * d * 4 * d
                   + dc * 2 * 4 * d)
  f = lambda **o: uvit.uvit_flops_per_example(dict(kw, **o), 64)
  assert f(transformer_depth=3) - f(transformer_depth=1) == 2 * per_block
  # One more ResBlock per level 0 (32x32, 16 channels) adds one down block
  # (16 -> 16) and one unet up block (32 -> 16 with a 1x1 skip conv).
  taps = (3 * 32 - 2) ** 2  # non-padding taps of a 3x3 SAME conv on 32x32
  down = taps * 16 * 16 * 2 + dc * 2 * 16
  up = taps * 32 * 16 + taps * 16 * 16 + dc * 2 * 16 + 32 * 32 * 32 * 16
  assert (f(num_res_blocks=(2, 1)) - f(num_res_blocks=(1, 1))
          == 2 * (down + up))


def test_param_count_matches_hand_count():
  kw = dict(channels=(8, 16), num_res_blocks=(1, 1), transformer_width=16,
            transformer_depth=1, num_heads=2, mlp_ratio=2, cond_dim=8,
            freq_dim=4, num_classes=3, patch_size=2, skip_style="unet",
            position_embedding="learned")
  dc = 8

  def res_block(ci, co):
    n = 2 * ci + 9 * ci * co + co + 2 * co + dc * 2 * co + 2 * co
    n += 9 * co * co + co
    return n + (ci * co + co if ci != co else 0)

  expected = (
      (4 * dc + dc) + (dc * dc + dc) + 4 * dc         # logSNR MLP, classes
      + (2 * 2 * 3 * 8 + 8)                           # stem, patch 2
      + res_block(8, 8) + (4 * 8 * 16 + 16)           # level 0, Down
      + res_block(16, 16) + (4 * 16 * 16 + 16)        # level 1, Down
      + 4 * 16                                        # positions (2x2)
      + 2 * 2 * 16 + 3 * 16 * 16 + 2 * 8              # LNs, qkv, QK-norm
      + (16 * 16 + 16)                                # attention out
      + (16 * 32 + 32) + (dc * 2 * 32 + 2 * 32)       # MLP in, FiLM
      + (32 * 16 + 16)                                # MLP out
      + 4 * 16 * 16 + res_block(32, 16)               # Up, level 1
      + 4 * 16 * 8 + res_block(16, 8)                 # Up, level 0
      + 2 * 8 + (4 * 8 * 3 + 3))                      # head
  assert uvit.uvit_num_params(kw, 16) == expected


def test_presets():
  assert set(uvit.UVIT_PRESETS) >= {"tiny", "imagenet128", "imagenet256",
                                    "imagenet512"}
  assert uvit.uvit_num_params("tiny", 32) < 2e6
  for name, size in (("imagenet256", 256), ("imagenet512", 512)):
    assert 2.0e9 < uvit.uvit_num_params(name, size) < 2.6e9
    # First feature map 128x128 at both sizes, so the same forward cost.
    flops = uvit.uvit_flops_per_example(name, size)
    assert 1.0e12 < flops < 1.2e12, flops
  model = uvit.uvit_from_preset("imagenet128", dtype=jnp.bfloat16)
  assert model.patch_size == 1 and model.dtype == jnp.bfloat16
  with pytest.raises(ValueError, match="preset"):
    uvit.uvit_kwargs("imagenet1024")


def test_a_fractional_mlp_ratio_is_a_one_line_error():
  # It reached the MLP as a float width: "'float' object is not iterable".
  with pytest.raises(ValueError, match=r"^config\.model\.mlp_ratio=2\.5 must "
                     r"be an integer >= 1"):
    uvit.UViT(**_kw(mlp_ratio=2.5)).check_fields()
