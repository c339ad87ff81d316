r"""jaxgen against its PyTorch peers, side by side on one CPU core.

  python -m experiments.performance.peers [--parts=blocks,uvit,r3gan,dcae]

Rows (each: jaxgen's time, the peer's, and their ratio; < 1 = jaxgen faster):

  blocks  Pre-norm transformer block stacks (2 blocks, batch 32, 64 tokens,
          widths 64 / 256 / 512), forward + backward of the parameters:
          jaxgen's `TransformerBlock` against the same block assembled from
          diffusers' `Attention` (RMS QK-norm, SDPA) and `FeedForward`
          (tanh GELU). The parameter counts are asserted equal.
  uvit    The simple-diffusion train step at `simple_diffusion:tiny`
          (32 px, batch 32: jaxgen's compiled trainer step with Adam and EMA)
          against lucidrains' `denoising_diffusion_pytorch` U-ViT + its
          `GaussianDiffusion` loss + Adam, configured alike (32 -> 16 px,
          a 2-block width-64 transformer at 16x16, 4 heads). The two
          networks are not identical (the peer has two ResBlocks and a linear
          attention per level), so parameters and FLOPs of both are given.
  r3gan   One R3GAN step (D with R1 + R2, then G) at the `cifar10` preset's
          network shapes (widths 768 x4, 32 px, conditional) at batch 8 (D and
          G each read their own 8 real images), augmentation off on both
          sides:
          jaxgen's compiled trainer step against `torch_r3gan`, a PyTorch
          replica of the same networks (tested equal in
          tests/gan/test_torch_peer.py).
  dcae    DC-AE encode and decode (inference) against diffusers'
          `AutoencoderDC` of the same config with the same weights: a small
          config at 64 px, batch 4, and the released `f32c32_in` at 256 px,
          batch 1.

Method: one process pinned to one core (`--core`), torch with one thread,
XLA single-threaded (flags set before JAX starts); each row alternates the
two sides `--rounds` times and reports medians of the per-call times, after
a warm-up call each (compilation excluded). Needs the `parity` extra and,
for `uvit`, `denoising_diffusion_pytorch` (loaded without its package
`__init__`, which needs accelerate). Writes peers.json next to this file.
"""

import os
import sys

# One core and one thread per side, fixed before JAX or torch start;
# $EXTRA_XLA_FLAGS adds XLA flags to jaxgen's side (e.g. the YNN fusion
# experiment in report.md).
os.environ["JAX_PLATFORMS"] = "cpu"
os.environ["XLA_FLAGS"] = " ".join(
    ["--xla_cpu_multi_thread_eigen=false"]
    + os.environ.get("EXTRA_XLA_FLAGS", "").split())
os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import importlib.util  # pylint: disable=g-import-not-at-top,wrong-import-position
import json  # pylint: disable=g-import-not-at-top,wrong-import-position
import statistics  # pylint: disable=g-import-not-at-top,wrong-import-position
import time  # pylint: disable=g-import-not-at-top,wrong-import-position
import types  # pylint: disable=g-import-not-at-top,wrong-import-position

from absl import app  # pylint: disable=g-import-not-at-top,wrong-import-position
from absl import flags  # pylint: disable=g-import-not-at-top,wrong-import-position

HERE = os.path.dirname(os.path.abspath(__file__))

FLAGS = flags.FLAGS
flags.DEFINE_list("parts", ["blocks", "uvit", "r3gan", "dcae"],
                  "Rows to measure.")
flags.DEFINE_integer("rounds", 5, "Alternations per row (medians).")
flags.DEFINE_integer("core", 0, "CPU core both sides are pinned to.")
flags.DEFINE_string("out", os.path.join(HERE, "peers.json"), "Results.")


def interleaved(sides, rounds, reps):
  """Median seconds per call of each side, alternating the sides.

  Args:
    sides: {name: zero-argument callable that runs one call to completion}.
    rounds: alternations.
    reps: calls per side per round.

  Returns:
    {name: median seconds per call}.
  """
  for fn in sides.values():
    fn()  # Warm-up: compilation, allocator, caches.
  times = {name: [] for name in sides}
  for _ in range(rounds):
    for name, fn in sides.items():
      start = time.perf_counter()
      for _ in range(reps):
        fn()
      times[name].append((time.perf_counter() - start) / reps)
  return {name: statistics.median(t) for name, t in times.items()}


def _row(name, shape, t_jax, t_torch, **extra):
  row = {"row": name, "shape": shape, "jaxgen_ms": 1e3 * t_jax,
         "torch_ms": 1e3 * t_torch, "ratio": t_jax / t_torch, **extra}
  print(f"{name:28s} jaxgen {row['jaxgen_ms']:9.2f} ms  torch "
        f"{row['torch_ms']:9.2f} ms  ratio {row['ratio']:.2f}", flush=True)
  return row


def _torch():
  """torch (one thread), with torchvision's CUDA-only registrations stubbed."""
  sys.modules.setdefault("torchvision._meta_registrations",
                         types.ModuleType("torchvision._meta_registrations"))
  import torch  # pylint: disable=g-import-not-at-top
  torch.set_num_threads(1)
  return torch


def _num(tree):
  import jax  # pylint: disable=g-import-not-at-top
  return sum(int(v.size) for v in jax.tree.leaves(tree))


def blocks(rounds):
  """Transformer block stacks at three widths, forward + backward."""
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import jax.numpy as jnp  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jaxgen.nn import transformer  # pylint: disable=g-import-not-at-top
  torch = _torch()
  from diffusers.models.attention import FeedForward  # pylint: disable=g-import-not-at-top
  from diffusers.models.attention_processor import Attention  # pylint: disable=g-import-not-at-top

  class Stack(nn.Module):
    width: int
    heads: int
    depth: int

    @nn.compact
    def __call__(self, x):
      for i in range(self.depth):
        x = transformer.TransformerBlock(self.heads, 4 * self.width,
                                         zero_init=False, name=f"block{i}")(x)
      return x

  class TorchBlock(torch.nn.Module):
    """LN -> Attention(QK RMS-norm) -> + ; LN -> FeedForward -> +."""

    def __init__(self, width, heads):
      super().__init__()
      self.norm1 = torch.nn.LayerNorm(width, eps=1e-6)
      self.norm2 = torch.nn.LayerNorm(width, eps=1e-6)
      self.attn = Attention(width, heads=heads, dim_head=width // heads,
                            qk_norm="rms_norm", eps=1e-6, bias=False,
                            out_bias=True)
      self.ff = FeedForward(width, inner_dim=4 * width,
                            activation_fn="gelu-approximate", bias=True)

    def forward(self, x):
      x = x + self.attn(self.norm1(x))
      return x + self.ff(self.norm2(x))

  rows, depth, batch, tokens = [], 2, 32, 64
  for width, heads in ((64, 2), (256, 4), (512, 8)):
    x = np.random.default_rng(0).normal(size=(batch, tokens, width)).astype(
        np.float32)
    model = Stack(width, heads, depth)
    params = jax.jit(model.init)(jax.random.key(0), x[:1])
    grad = jax.jit(jax.grad(lambda p, x: jnp.mean(model.apply(p, x) ** 2)))
    xj = jnp.asarray(x)
    peer = torch.nn.Sequential(*[TorchBlock(width, heads)
                                 for _ in range(depth)])
    xt = torch.from_numpy(x)
    assert _num(params) == sum(p.numel() for p in peer.parameters())

    def torch_step():
      peer.zero_grad(set_to_none=True)
      (peer(xt) ** 2).mean().backward()

    t = interleaved({
        "jax": lambda: jax.block_until_ready(grad(params, xj)),  # pylint: disable=cell-var-from-loop
        "torch": torch_step}, rounds, reps=max(1, 2048 // (width * 8)))
    rows.append(_row(f"blocks w{width}", f"{depth} blocks, {heads} heads, "
                     f"batch {batch}, {tokens} tokens", t["jax"], t["torch"],
                     params=_num(params)))
  return rows


def _jaxgen_step(config):
  """jaxgen's compiled trainer step on a synthetic batch.

  Returns:
    (run one step, the trainer setup, the parameter count).
  """
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  from jaxgen import bench  # pylint: disable=g-import-not-at-top
  from jaxgen import families  # pylint: disable=g-import-not-at-top,unused-import
  from jaxgen.data import pipeline as data_pipeline  # pylint: disable=g-import-not-at-top
  from jaxgen.parallel import sharding as sharding_lib  # pylint: disable=g-import-not-at-top
  from jaxgen.train import trainer  # pylint: disable=g-import-not-at-top

  config.mesh.data = 1
  s = trainer.setup(config,
                    data_info=data_pipeline.DatasetInfo.synthetic(
                        config.dataset))
  init_rng, base_rng = jax.random.split(jax.random.key(config.seed))
  with jax.set_mesh(s.mesh), nn.logical_axis_rules(s.rules):
    init_fn, _, shardings, step, batch_sh = trainer.compile_step(s, base_rng)
    holder = [sharding_lib.create_sharded(init_fn, shardings, init_rng)]
    batch = bench.synthetic_batch(s, batch_sh)
  params = s.objective.num_params(holder[0])

  def run():
    holder[0], metrics = step(holder[0], batch)
    jax.block_until_ready(metrics)

  return run, s, params


def _load_lucidrains():
  """denoising_diffusion_pytorch's simple_diffusion module, without the
  package's __init__ (which imports accelerate, ema-pytorch, ...)."""
  spec = importlib.util.find_spec("denoising_diffusion_pytorch")
  if spec is None:
    raise SystemExit("the uvit row needs `pip install --no-deps "
                     "denoising_diffusion_pytorch`")
  path = os.path.join(spec.submodule_search_locations[0],
                      "simple_diffusion.py")
  mod_spec = importlib.util.spec_from_file_location("lucidrains_sd", path)
  module = importlib.util.module_from_spec(mod_spec)
  mod_spec.loader.exec_module(module)
  return module


def uvit(rounds):
  """simple_diffusion:tiny train step against lucidrains' U-ViT step."""
  from configs import simple_diffusion  # pylint: disable=g-import-not-at-top
  torch = _torch()
  from torch.utils import flop_counter  # pylint: disable=g-import-not-at-top
  sd = _load_lucidrains()

  config = simple_diffusion.get_config("tiny")
  run, s, params = _jaxgen_step(config)
  batch, size = config.batch_size, config.dataset.image_size
  net = sd.UViT(dim=32, dim_mults=(2,), channels=3, vit_depth=2,
                vit_dropout=0.0, attn_dim_head=16, attn_heads=4)
  diffusion = sd.GaussianDiffusion(net, image_size=size)
  opt = torch.optim.Adam(net.parameters(), lr=1e-4, betas=(0.9, 0.99))
  images = torch.rand(batch, 3, size, size)

  def torch_step():
    opt.zero_grad(set_to_none=True)
    diffusion(images).backward()
    opt.step()

  with flop_counter.FlopCounterMode(display=False) as counter:
    torch_step()
  t = interleaved({"jax": run, "torch": torch_step}, rounds, reps=2)
  return [_row("simple diffusion U-ViT step", f"tiny, {size} px, batch "
               f"{batch}", t["jax"], t["torch"],
               params=params.get("params", params), torch_params=sum(
                   p.numel() for p in net.parameters()),
               gflops_per_step=s.flops_per_example * batch / 1e9,
               torch_gflops_per_step=counter.get_total_flops() / 1e9)]


def r3gan(rounds):
  """R3GAN G+D step at the cifar10 preset's shapes."""
  from configs import r3gan as r3gan_config  # pylint: disable=g-import-not-at-top
  from experiments.performance import torch_r3gan  # pylint: disable=g-import-not-at-top
  torch = _torch()

  config = r3gan_config.get_config("cifar10")
  config.batch_size = 8
  config.gan.augment_p = 0.0  # The replica has no augmentation.
  config.dtype = "float32"  # As the replica computes.
  run, _, params = _jaxgen_step(config)
  size = config.dataset.image_size
  g, d = torch_r3gan.build(config.model, config.dataset.num_classes, size)
  step = torch_r3gan.make_step(g, d, config)
  # With g_own_real_batch (on in the presets) each phase reads its own real
  # batch: jaxgen's step takes 2 x batch_size images, as the peer does here.
  images_per_step = config.batch_size * (2 if config.gan.g_own_real_batch
                                         else 1)
  gen = torch.Generator().manual_seed(0)
  images = torch.rand(images_per_step, 3, size, size, generator=gen) * 2 - 1
  labels = torch.randint(0, config.dataset.num_classes, (images_per_step,),
                         generator=gen)
  z = torch.randn(2, config.batch_size, config.model.noise_dim, generator=gen)
  t = interleaved({"jax": run, "torch": lambda: step(images, labels, z)},
                  rounds, reps=1)
  return [_row("R3GAN G+D step", f"cifar10 nets (widths 768 x4), {size} px, "
               f"batch {config.batch_size}", t["jax"], t["torch"],
               params=params)]


def dcae(rounds):
  """DC-AE encode / decode against diffusers' AutoencoderDC."""
  import dataclasses  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  import numpy as np  # pylint: disable=g-import-not-at-top
  from jaxgen.autoencoders import dc_ae  # pylint: disable=g-import-not-at-top
  from jaxgen.autoencoders import diffusers_compat  # pylint: disable=g-import-not-at-top
  from jaxgen.nn import linear  # pylint: disable=g-import-not-at-top
  torch = _torch()
  from diffusers.models.autoencoders.autoencoder_dc import AutoencoderDC  # pylint: disable=g-import-not-at-top

  small = dc_ae.Arch(
      latent_channels=16, attention_head_dim=16,
      encoder_block_types=("ResBlock",) * 2 + ("EfficientViTBlock",) * 2,
      decoder_block_types=("ResBlock",) * 2 + ("EfficientViTBlock",) * 2,
      encoder_block_out_channels=(32, 64, 128, 128),
      decoder_block_out_channels=(32, 64, 128, 128),
      encoder_layers_per_block=(0, 2, 2, 2),
      decoder_layers_per_block=(0, 2, 2, 2),
      encoder_qkv_multiscales=((),) * 4, decoder_qkv_multiscales=((),) * 4,
      upsample_block_type="pixel_shuffle",
      downsample_block_type="pixel_unshuffle",
      decoder_norm_types=("batch_norm",) * 2 + ("rms_norm",) * 2,
      decoder_act_fns=("relu",) * 2 + ("silu",) * 2).normalized()
  rows = []
  for label, arch, size, batch in (("small", small, 64, 4),
                                   ("f32c32_in", dc_ae.released("f32c32_in"),
                                    256, 1)):
    kwargs = {f.name: getattr(arch, f.name) for f in dataclasses.fields(arch)
              if f.name != "stage_shortcuts"}
    peer = AutoencoderDC(**kwargs).eval()
    variables = diffusers_compat.convert_state_dict(
        {k: v.numpy() for k, v in peer.state_dict().items()}, arch)
    # As the trainer and `load_dc_ae` build it: Winograd 3x3 convs on CPU.
    model = dc_ae.DCAE(arch, conv_impl=linear.resolve_conv_impl("auto"))
    x = np.random.default_rng(0).uniform(-1, 1, (batch, size, size, 3)).astype(
        np.float32)
    encode = jax.jit(lambda v, x: model.apply(v, x, method=model.encode))
    decode = jax.jit(lambda v, z: model.apply(v, z, method=model.decode))
    z = encode(variables, x)
    xt = torch.from_numpy(x.transpose(0, 3, 1, 2).copy())
    zt = torch.from_numpy(np.asarray(z).transpose(0, 3, 1, 2).copy())
    with torch.inference_mode():
      for what, jax_fn, torch_fn in (
          ("encode", lambda: jax.block_until_ready(encode(variables, x)),  # pylint: disable=cell-var-from-loop
           lambda: peer.encode(xt)),  # pylint: disable=cell-var-from-loop
          ("decode", lambda: jax.block_until_ready(decode(variables, z)),  # pylint: disable=cell-var-from-loop
           lambda: peer.decode(zt))):  # pylint: disable=cell-var-from-loop
        t = interleaved({"jax": jax_fn, "torch": torch_fn}, rounds,
                        reps=1 if size > 64 else 3)
        rows.append(_row(f"DC-AE {label} {what}",
                         f"{size} px, batch {batch}", t["jax"], t["torch"],
                         params=dc_ae.num_params(arch)))
  return rows


PARTS = {"blocks": blocks, "uvit": uvit, "r3gan": r3gan, "dcae": dcae}


def main(argv):
  del argv
  unknown = set(FLAGS.parts) - set(PARTS)
  if unknown:
    raise app.UsageError(f"unknown part(s) {sorted(unknown)}; choose from "
                         f"{sorted(PARTS)}")
  os.sched_setaffinity(0, {FLAGS.core})
  # jaxgen's entry points set these malloc options on CPU; in this one
  # process they apply to torch's side too.
  from jaxgen.train import host_malloc  # pylint: disable=g-import-not-at-top
  print("malloc settings (jaxgen.train.host_malloc):",
        "on" if host_malloc.configure() else "off", flush=True)
  results = {}
  if os.path.exists(FLAGS.out):
    with open(FLAGS.out) as f:
      results = json.load(f)
  for part in FLAGS.parts:
    results[part] = PARTS[part](FLAGS.rounds)
    with open(FLAGS.out, "w") as f:  # After each part: a long run keeps rows.
      json.dump(results, f, indent=1)
  print("\n| row | shape | jaxgen ms | torch ms | ratio |\n| --- | --- | "
        "---: | ---: | ---: |")
  for part in PARTS:
    for r in results.get(part, ()):
      print(f"| {r['row']} | {r['shape']} | {r['jaxgen_ms']:.1f} | "
            f"{r['torch_ms']:.1f} | {r['ratio']:.2f} |")


if __name__ == "__main__":
  app.run(main)
