"""R3GAN generator / discriminator: shapes, fix-up init, names, resampling."""

import math

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from configs import r3gan as r3gan_config
from jaxgen import config_lib
from jaxgen.gan import layers
from jaxgen.gan import networks
from jaxgen.gan import objective as gan_objective
from jaxgen.parallel import sharding as sharding_lib
from tests.train import common

WIDTHS = (32, 32, 16)  # 16 px: stages 4, 8, 16.
VOCAB = {"conv_in", "conv_out", "kernel_h", "kernel_w", "embed", "cond",
         "classes", "mlp", None}


def _nets(num_classes=0, **kw):
  common = dict(widths=WIDTHS, blocks_per_stage=2, num_classes=num_classes)
  common.update(kw)
  return (networks.Generator(cond_dim=8, **common),
          networks.Discriminator(**common))


def _inputs(b=3, num_classes=5):
  z = jax.random.normal(jax.random.key(2), (b, 64))
  x = jnp.ones((b, 16, 16, 3))
  labels = jnp.arange(b) % num_classes if num_classes else None
  return z, x, labels


@pytest.fixture(scope="module")
def conditional_nets():
  """bf16 top stages, 5 classes; (G, D, boxed G vars, boxed D vars)."""
  g, d = _nets(5, low_precision_stages=2, dtype=jnp.bfloat16)
  z, x, labels = _inputs()
  gv = jax.jit(g.init)(jax.random.key(0), z, labels)
  dv = jax.jit(d.init)(jax.random.key(1), x, labels)
  return g, d, gv, dv


def test_output_shapes_and_dtypes(conditional_nets):
  g, d, gv, dv = conditional_nets
  z, _, labels = _inputs()

  @jax.jit
  def forward(gp, dp):
    img = g.apply(gp, z, labels)
    return img, d.apply(dp, img, labels)
  img, logits = forward(nn.unbox(gv), nn.unbox(dv))
  assert img.shape == (3, 16, 16, 3) and img.dtype == jnp.float32
  assert logits.shape == (3,) and logits.dtype == jnp.float32
  assert np.all(np.isfinite(logits)) and np.all(np.isfinite(img))
  # Without labels: one line naming what to pass, not a sharding error.
  for net, params, x in ((g, gv, z), (d, dv, img)):
    with pytest.raises(ValueError, match=(
        r"^a class-conditional network \(5 classes\) needs labels")):
      net.apply(nn.unbox(params), x, None)
  # Parameters stay float32 whatever the compute dtype.
  for leaf in jax.tree.leaves(nn.unbox((gv, dv))):
    assert leaf.dtype == jnp.float32
  # Unconditional nets: shapes only.
  gu, du = _nets(0)
  zu, xu, _ = _inputs(num_classes=0)
  gvu = jax.eval_shape(gu.init, jax.random.key(0), zu)
  dvu = jax.eval_shape(du.init, jax.random.key(0), xu)
  assert jax.eval_shape(gu.apply, nn.unbox(gvu), zu).shape == (3, 16, 16, 3)
  assert jax.eval_shape(du.apply, nn.unbox(dvu), xu).shape == (3,)


def test_fixup_init_last_conv_zero_and_blocks_are_identity(conditional_nets):
  _, _, gv, dv = conditional_nets
  for params in (nn.unbox(gv)["params"], nn.unbox(dv)["params"]):
    blocks = [k for k in params if "_block" in k]
    assert len(blocks) == 2 * len(WIDTHS)
    for k in blocks:
      assert not np.any(params[k]["conv_project"]["kernel"])
      assert np.any(params[k]["conv_expand"]["kernel"])
  # A block at init is exactly the identity; the first two convs are
  # N(0, (gain/√fan_in)²) with gain = √(2/1.04)·L^(−1/4).
  block = networks.ResidualBlock(group_width=16, num_blocks=6)
  x = jax.random.normal(jax.random.key(3), (2, 4, 4, 256))
  bv = jax.jit(block.init)(jax.random.key(4), x)
  np.testing.assert_array_equal(jax.jit(block.apply)(bv, x), x)
  kv = nn.unbox(bv)["params"]
  gain = math.sqrt(2 / 1.04) * 6 ** -0.25
  expand = kv["conv_expand"]["kernel"]  # fan-in 256
  group = kv["conv_group"]["kernel"]  # fan-in 9 · 16
  assert group.shape == (3, 3, 16, 512)
  np.testing.assert_allclose(np.std(expand), gain / 16, rtol=0.02)
  np.testing.assert_allclose(np.std(group), gain / 12, rtol=0.02)


def test_generator_at_init_is_linear_in_z(conditional_nets):
  # Identity blocks: G(z) = to_rgb(upsampled transitions of basis · mod(z)),
  # linear in (z, class embedding): no bias anywhere on that path.
  g, _, gv, _ = conditional_nets
  z1, z2 = jax.random.normal(jax.random.key(6), (2, 2, 64))
  labels = jnp.array([1, 3])

  @jax.jit
  def check(v):
    lhs = g.apply(v, 2.0 * z1 - z2, labels)
    rhs = 2.0 * g.apply(v, z1, labels) - g.apply(v, z2, labels)
    return lhs, rhs
  lhs, rhs = check(nn.unbox(gv))
  # bf16 stages: compare at bf16 precision.
  np.testing.assert_allclose(lhs, rhs, rtol=0.05, atol=0.05)


def test_every_parameter_has_logical_names_and_an_fsdp_dim():
  rules = dict(sharding_lib.rules_from_config(
      config_lib.default_logical_axis_rules()))
  for num_classes in (0, 5):
    g, d = _nets(num_classes)
    z, x, labels = _inputs(num_classes=num_classes)
    gv = jax.eval_shape(g.init, jax.random.key(0), z, labels)
    dv = jax.eval_shape(d.init, jax.random.key(0), x, labels)
    boxes = jax.tree.leaves(
        (gv, dv), is_leaf=lambda x: isinstance(x, nn.LogicallyPartitioned))
    assert boxes
    for box in boxes:
      assert isinstance(box, nn.LogicallyPartitioned), box
      assert len(box.names) == box.value.ndim, box.names
      assert set(box.names) <= VOCAB, box.names
      mapped = [rules.get(n) for n in box.names]
      if box.value.ndim >= 2:
        assert "fsdp" in mapped, (box.names, box.value.shape)
      # No mesh axis twice in one parameter.
      used = [m for m in mapped if m]
      assert len(used) == len(set(used)), box.names


def _upfirdn_reference(x, up):
  """Depthwise upfirdn2d with the [1,3,3,1] filter via lax (NHWC)."""
  f = np.array([1, 3, 3, 1], np.float32)
  f = np.outer(f, f) / np.sum(f) ** 2
  c = x.shape[-1]
  k = jnp.asarray(np.tile(f[:, :, None, None], (1, 1, 1, c)))
  if up:
    # lhs_dilation leaves out upfirdn's trailing inserted zero: pad (2, 2).
    return jax.lax.conv_general_dilated(
        x, k * 4, (1, 1), ((2, 2), (2, 2)), lhs_dilation=(2, 2),
        dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=c)
  return jax.lax.conv_general_dilated(
      x, k, (2, 2), ((1, 1), (1, 1)),
      dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=c)


def test_resampling_is_upfirdn_with_the_1331_filter():
  x = jax.random.normal(jax.random.key(7), (2, 6, 8, 3))
  up, down = jax.jit(layers.upsample_2x), jax.jit(layers.downsample_2x)
  np.testing.assert_allclose(up(x), _upfirdn_reference(x, True), atol=1e-5)
  np.testing.assert_allclose(down(x), _upfirdn_reference(x, False),
                             atol=1e-5)
  # Channels first: the same filters along that layout's H and W.
  for f in (layers.upsample_2x, layers.downsample_2x):
    np.testing.assert_allclose(
        jnp.moveaxis(f(jnp.moveaxis(x, -1, 0), True), 0, -1), f(x),
        atol=1e-6)
  # Bilinear: a constant image stays constant away from the zero border.
  up = up(jnp.ones((1, 4, 4, 1)))
  np.testing.assert_allclose(up[0, 1:-1, 1:-1, 0], 1.0, rtol=1e-6)


def _r1_grads(apply, params, x):
  """Gradients of an R1-style penalty |d/dx sum(tanh(f(x)))|^2 (second
  order in f) with respect to f's parameters."""
  def r1(p):
    gx = jax.grad(lambda y: jnp.sum(jnp.tanh(apply(p, y))))(x)
    return jnp.sum(gx ** 2)
  return jax.jit(jax.grad(r1))(params)


@pytest.mark.parametrize("shape,kernel,groups", [
    ((2, 5, 5, 32), 3, 2), ((1, 4, 6, 32), 3, 4), ((2, 6, 3, 16), 5, 8),
    ((1, 3, 4, 16), 1, 4)])
def test_taps_and_lax_grouped_convs_agree_to_second_order(shape, kernel,
                                                          groups):
  # Non-square images and several kernel sizes: a row / column mix-up in the
  # shifted views would show.
  x = jax.random.normal(jax.random.key(8), shape)
  conv = {impl: layers.Conv(32, kernel, groups=groups, impl=impl)
          for impl in ("lax", "taps")}
  v = jax.jit(conv["lax"].init)(jax.random.key(9), x)
  np.testing.assert_allclose(jax.jit(conv["taps"].apply)(v, x),
                             jax.jit(conv["lax"].apply)(v, x), atol=1e-5)

  a, b = (_r1_grads(conv[impl].apply, nn.unbox(v), x)
          for impl in ("lax", "taps"))
  jax.tree.map(lambda p, q: np.testing.assert_allclose(p, q, rtol=1e-4,
                                                       atol=1e-5), a, b)
  # The channels-first form of the same conv: [C, B, H, W] in and out.
  cf = layers.Conv(32, kernel, groups=groups, impl="taps",
                     channels_first=True)
  got = jax.jit(cf.apply)(v, jnp.moveaxis(x, -1, 0))
  np.testing.assert_allclose(jnp.moveaxis(got, 0, -1),
                             jax.jit(conv["lax"].apply)(v, x), atol=1e-5)


def test_float32_layers_ask_for_full_precision_and_bf16_ones_do_not():
  # XLA's default is TF32 on GPUs (one bf16 pass on TPUs); the reference
  # turns TF32 off. CPU is exact either way, so the request is checked in
  # the lowered program: every dot / conv of a float32 layer, including
  # those of R1's double backprop (transposes keep the precision).
  def r1(impl, cf, dtype):
    conv = layers.Conv(8, 3, groups=2, impl=impl, channels_first=cf,
                       dtype=dtype)
    dense = layers.Conv(8, channels_first=cf, dtype=dtype)
    x = jnp.ones((4, 2, 6, 6) if cf else (2, 6, 6, 4))
    params = [m.init(jax.random.key(0), x if m is conv else
                     jnp.ones(x.shape[:-1] + (8,) if not cf else
                              (8,) + x.shape[1:]))
              for m in (conv, dense)]

    def d(v):
      return jnp.sum(jnp.tanh(dense.apply(params[1], jnp.tanh(
          conv.apply(params[0], v)))))

    def loss(v):
      return jnp.sum(jax.grad(d)(v) ** 2)

    return jax.jit(jax.grad(loss)).lower(x).as_text()

  for impl, cf in (("lax", False), ("taps", False), ("taps", True)):
    text = r1(impl, cf, jnp.float32)
    ops = [ln for ln in text.splitlines()
           if "stablehlo.dot_general" in ln or "stablehlo.convolution" in ln]
    assert len(ops) >= 6, (impl, cf, len(ops))
    assert all("HIGHEST" in ln for ln in ops), (impl, cf)
    assert "HIGHEST" not in r1(impl, cf, jnp.bfloat16), (impl, cf)


def test_channels_first_block_matches_the_lax_block_to_second_order():
  """The CPU block runs channels first; same parameters, same values and
  R1-style second-order gradients as the NHWC lax block."""
  x = jax.random.normal(jax.random.key(10), (2, 6, 4, 32))
  blocks = {impl: networks.ResidualBlock(group_width=8, conv_impl=impl)
            for impl in ("lax", "taps")}
  v = nn.unbox(jax.jit(blocks["lax"].init)(jax.random.key(11), x))
  # Away from init (the projection is zero there, the biases too).
  leaves, tree = jax.tree.flatten(v)
  keys = jax.random.split(jax.random.key(12), len(leaves))
  v = jax.tree.unflatten(tree, [p + 0.3 * jax.random.normal(k, p.shape)
                                for p, k in zip(leaves, keys)])
  np.testing.assert_allclose(jax.jit(blocks["taps"].apply)(v, x),
                             jax.jit(blocks["lax"].apply)(v, x), atol=1e-5)

  a, b = (_r1_grads(blocks[impl].apply, v, x) for impl in ("lax", "taps"))
  # Float32 summation order: entries near zero of a leaf whose others are
  # O(100) differ by ~1e-3, so the tolerance scales with the leaf.
  jax.tree.map(lambda p, q: np.testing.assert_allclose(
      p, q, rtol=1e-4, atol=1e-5 * float(np.abs(q).max())), a, b)


def _perturbed(variables, seed, scale=0.3):
  """Unboxed variables moved away from init (zero projections, biases)."""
  leaves, tree = jax.tree.flatten(nn.unbox(variables))
  keys = jax.random.split(jax.random.key(seed), len(leaves))
  return jax.tree.unflatten(tree, [p + scale * jax.random.normal(k, p.shape)
                                   for p, k in zip(leaves, keys)])


def test_channels_first_networks_match_the_lax_networks():
  """On the CPU form the whole stream is channels first (G and D); same
  parameters, same images, logits and R1 gradients as the NHWC lax form."""
  z, x, labels = _inputs(b=2)
  x = jax.random.normal(jax.random.key(13), x.shape)
  for make in (networks.Generator, networks.Discriminator):
    kw = dict(widths=(32, 16, 16), blocks_per_stage=1, num_classes=5,
              group_width=8)
    kw.update({"cond_dim": 8} if make is networks.Generator else {})
    nets = {impl: make(conv_impl=impl, **kw) for impl in ("lax", "taps")}
    inputs = (z if make is networks.Generator else x, labels)
    v = _perturbed(jax.jit(nets["lax"].init)(jax.random.key(14), *inputs),
                   15, scale=0.1)
    outs = {i: jax.jit(nets[i].apply)(v, *inputs) for i in nets}
    np.testing.assert_allclose(outs["taps"], outs["lax"], rtol=1e-4,
                               atol=1e-4 * float(np.abs(outs["lax"]).max()))
  # R1 through the discriminator (second order in every layer's weights).
  apply = {i: (lambda p, y, i=i: nets[i].apply(p, y, labels)) for i in nets}
  a, b = (_r1_grads(apply[i], v, x) for i in ("lax", "taps"))
  jax.tree.map(lambda p, q: np.testing.assert_allclose(
      p, q, rtol=1e-4, atol=1e-4 * float(np.abs(q).max())), a, b)


@pytest.mark.parametrize("preset,g_m,d_m", [
    ("cifar10", 20.78, 21.28), ("ffhq64", 22.43, 22.38),
    ("ffhq256", 23.06, 23.01), ("imagenet32", 82.91, 86.55),
    ("imagenet64", 103.57, 107.21)])
def test_paper_presets_have_the_papers_parameter_counts(preset, g_m, d_m):
  config = r3gan_config.get_config(preset)
  obj = gan_objective.R3GAN(config)
  size = config.dataset.image_size
  batch = {"image": jax.ShapeDtypeStruct((1, size, size, 3), jnp.float32),
           "label": jax.ShapeDtypeStruct((1,), jnp.int32)}
  state = nn.unbox(jax.eval_shape(obj.init, jax.random.key(0), batch))
  counts = obj.num_params(state)
  # The paper (App. D) reports G / D millions of parameters to 2 decimals.
  assert round(counts["generator_params"] / 1e6, 2) == g_m
  assert round(counts["discriminator_params"] / 1e6, 2) == d_m


def test_block_layout_experiment_runs_on_the_layers_it_times():
  # The README's `experiments.performance.r3gan_block_layout` called
  # helpers that had moved to jaxgen.gan.layers: an AttributeError.
  proc = common.run_module("experiments.performance.r3gan_block_layout",
                           "--size=4", "--rounds=1")
  assert proc.returncode == 0, proc.stderr[-2000:]
  diffs = [float(line.rsplit(" ", 1)[1]) for line in proc.stdout.splitlines()
           if "largest relative gradient difference" in line]
  assert len(diffs) == 3 and max(diffs) < 1e-4, proc.stdout
