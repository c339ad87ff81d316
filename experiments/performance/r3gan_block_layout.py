r"""R1's double backprop through R3GAN residual blocks: NHWC vs channels first.

  python -m experiments.performance.r3gan_block_layout --size=32

A stack of two blocks of the `cifar10` shape (768 -> 1536 -> 768, 96 groups
of 16, batch 8), random weights, loss = D + |grad_x D|^2 with D = sum(out *
r), gradients with respect to every weight. Three layouts of the same
function: NHWC with `_conv_taps`, channels first through the whole stack,
and channels first inside each block with NHWC between blocks (what
`ResidualBlock` does with `conv_impl="taps"` on an NHWC input; the networks
keep the stream channels first throughout, the second layout). One process pinned to one
core, XLA single-threaded, the malloc settings on; medians of --rounds
interleaved calls. Prints the times and the largest relative gradient
difference from the NHWC stack (float32 summation order only).
"""

import os

os.environ["JAX_PLATFORMS"] = "cpu"
os.environ["XLA_FLAGS"] = "--xla_cpu_multi_thread_eigen=false"

import time  # pylint: disable=g-import-not-at-top,wrong-import-position

from absl import app  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags  # pylint: disable=g-import-not-at-top,wrong-import-position

flags.DEFINE_integer("size", 32, "Image side in pixels.")
flags.DEFINE_integer("rounds", 5, "Interleaved calls per layout (medians).")
flags.DEFINE_integer("core", 0, "CPU core to pin to.")
FLAGS = flags.FLAGS

BATCH, WIDTH, HIDDEN, GROUPS = 8, 768, 1536, 96


def main(argv):
  del argv
  os.sched_setaffinity(0, {FLAGS.core})
  from jaxgen.train import host_malloc  # pylint: disable=g-import-not-at-top
  host_malloc.configure()
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jaxgen.gan import layers  # pylint: disable=g-import-not-at-top

  def act(x, b, axis):
    shape = [1] * x.ndim
    shape[axis] = -1
    return layers._leaky_relu(x + b.reshape(shape))  # pylint: disable=protected-access

  def nhwc(p, x):
    h = act(layers.matmul(x, p["w1"]), p["b1"], -1)  # pylint: disable=protected-access
    h = act(layers._conv_taps(h, p["k"], GROUPS), p["b2"], -1)  # pylint: disable=protected-access
    return x + layers.matmul(h, p["w3"])  # pylint: disable=protected-access

  def channels_first(p, x):  # x: [C, B, H, W]
    h = act(layers._matmul_cf(x, p["w1"]), p["b1"], 0)  # pylint: disable=protected-access
    h = act(layers._conv_taps_cf(h, p["k"], GROUPS), p["b2"], 0)  # pylint: disable=protected-access
    return x + layers._matmul_cf(h, p["w3"])  # pylint: disable=protected-access

  def inside(p, x):
    return jnp.moveaxis(channels_first(p, jnp.moveaxis(x, -1, 0)), 0, -1)

  def step(block):
    def d(ps, x, r):
      for p in ps:
        x = block(p, x)
      return jnp.sum(x * r)

    def loss(ps, x, r):
      g = jax.grad(d, 1)(ps, x, r)
      return jnp.sum(g * g) + d(ps, x, r)
    return jax.jit(jax.value_and_grad(loss))

  rng = np.random.default_rng(0)
  gi = HIDDEN // GROUPS

  def normal(shape, scale):
    return jnp.asarray(rng.normal(size=shape) * scale, jnp.float32)
  ps = [{"w1": normal((WIDTH, HIDDEN), WIDTH ** -0.5),
         "b1": normal((HIDDEN,), 0.1),
         "k": normal((3, 3, gi, HIDDEN), 1 / 12),
         "b2": normal((HIDDEN,), 0.1),
         "w3": normal((HIDDEN, WIDTH), 0.3 * HIDDEN ** -0.5)}
        for _ in range(2)]
  s = FLAGS.size
  x, r = normal((BATCH, s, s, WIDTH), 1.0), normal((BATCH, s, s, WIDTH), 1.0)
  to_cf = lambda a: jnp.moveaxis(a, -1, 0)
  runs = {"nhwc": (step(nhwc), (ps, x, r)),
          "channels first": (step(channels_first), (ps, to_cf(x), to_cf(r))),
          "channels first inside blocks": (step(inside), (ps, x, r))}
  ref = jax.tree.leaves(runs["nhwc"][0](*runs["nhwc"][1])[1])
  for name, (fn, args) in runs.items():
    got = jax.tree.leaves(fn(*args)[1])
    diff = max(float(jnp.max(jnp.abs(a - b)) / jnp.max(jnp.abs(a)))
               for a, b in zip(ref, got))
    print(f"{name}: largest relative gradient difference {diff:.1e}")
  times = {name: [] for name in runs}
  for _ in range(FLAGS.rounds):
    for name, (fn, args) in runs.items():
      t = time.perf_counter()
      jax.block_until_ready(fn(*args))
      times[name].append(time.perf_counter() - t)
  for name, ts in times.items():
    print(f"{s} px, {name}: {1e3 * np.median(ts):.0f} ms")


if __name__ == "__main__":
  app.run(main)
