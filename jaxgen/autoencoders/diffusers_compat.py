"""Weight mapping from diffusers' `AutoencoderDC` modules to `ops` modules.

Each function takes one diffusers block's state dict (name -> numpy array,
NCHW conv kernels) with the block's prefix removed and returns the params
tree of the matching `jaxgen.autoencoders.ops` module. Conv kernels go from
OIHW to HWIO; diffusers' separate `to_q` / `to_k` / `to_v` linear layers
become the one 1x1 q/k/v conv whose channels are their concatenation, which
is the layout the reference's attention reshapes into heads.
"""

from typing import Any, Dict, Mapping

import numpy as np

Params = Dict[str, Dict[str, np.ndarray]]


def _conv(w: np.ndarray) -> np.ndarray:
  return np.asarray(w, np.float32).transpose(2, 3, 1, 0)


def _linear_as_conv(w: np.ndarray) -> np.ndarray:
  return np.asarray(w, np.float32).T[None, None]


def _norm(state: Mapping[str, np.ndarray], prefix: str) -> Dict[str, np.ndarray]:
  return {"scale": np.asarray(state[f"{prefix}.weight"], np.float32),
          "bias": np.asarray(state[f"{prefix}.bias"], np.float32)}


def _take(state, key):
  if key not in state:
    raise ValueError(f"missing tensor {key!r} in the diffusers weights.")
  return state[key]


def resblock(state: Mapping[str, np.ndarray]) -> Params:
  """diffusers `ResBlock` (rms_norm) -> `ops.ResBlock` params."""
  return {"conv1": {"kernel": _conv(_take(state, "conv1.weight")),
                    "bias": np.asarray(_take(state, "conv1.bias"), np.float32)},
          "conv2": {"kernel": _conv(_take(state, "conv2.weight"))},
          "norm": _norm(state, "norm")}


def glumbconv(state: Mapping[str, np.ndarray]) -> Params:
  """diffusers / SANA `GLUMBConv` -> `ops.GLUMBConv` params."""
  return {
      "conv_inverted": {
          "kernel": _conv(_take(state, "conv_inverted.weight")),
          "bias": np.asarray(state["conv_inverted.bias"], np.float32)},
      "conv_depth": {"kernel": _conv(_take(state, "conv_depth.weight")),
                     "bias": np.asarray(state["conv_depth.bias"],
                                        np.float32)},
      "conv_point": {"kernel": _conv(_take(state, "conv_point.weight"))},
      "norm": _norm(state, "norm")}


def lite_mla(state: Mapping[str, np.ndarray], scales=(5,)) -> Params:
  """diffusers `SanaMultiscaleLinearAttention` -> `ops.LiteMLA` params."""
  qkv = np.concatenate([_take(state, f"to_{n}.weight") for n in "qkv"], 0)
  out = {"qkv": {"kernel": _linear_as_conv(qkv)},
         "proj": {"kernel": _linear_as_conv(_take(state, "to_out.weight"))},
         "norm": _norm(state, "norm_out")}
  for i, s in enumerate(scales):
    base = f"to_qkv_multiscale.{i}"
    out[f"aggreg_{s}_depth"] = {
        "kernel": _conv(_take(state, f"{base}.proj_in.weight"))}
    out[f"aggreg_{s}_group"] = {
        "kernel": _conv(_take(state, f"{base}.proj_out.weight"))}
  return out


def efficientvit_block(state: Mapping[str, np.ndarray],
                       scales=(5,)) -> Params:
  """diffusers `EfficientViTBlock` -> `ops.EfficientViTBlock` params."""
  sub = lambda p: {k[len(p) + 1:]: v for k, v in state.items()
                   if k.startswith(p + ".")}
  return {"attn": lite_mla(sub("attn"), scales),
          "conv_out": glumbconv(sub("conv_out"))}


def _plain_conv(state, prefix):
  out = {"kernel": _conv(_take(state, f"{prefix}.weight"))}
  if f"{prefix}.bias" in state:
    out["bias"] = np.asarray(state[f"{prefix}.bias"], np.float32)
  return out


def convert_state_dict(state: Mapping[str, np.ndarray], arch
                       ) -> Dict[str, Any]:
  """A whole diffusers `AutoencoderDC` state dict -> `dc_ae.DCAE` variables.

  Args:
    state: diffusers' state dict as numpy arrays ("encoder.conv_in.weight",
      ...).
    arch: the matching `dc_ae.Arch` (`Arch.from_diffusers(config)`).

  Returns:
    {"params": ..., "batch_stats": ...} (batch_stats empty without
    batch-norm decoders).

  Raises:
    ValueError: one line for a missing tensor, tensors left over, or a
      shape that differs from the configured model.
  """
  from jaxgen.autoencoders import dc_ae  # pylint: disable=g-import-not-at-top
  import flax.linen as nn  # pylint: disable=g-import-not-at-top
  import jax  # pylint: disable=g-import-not-at-top
  side = 2 * arch.compression
  abstract = nn.unbox(jax.eval_shape(lambda: dc_ae.DCAE(arch).init(
      jax.random.key(0), np.zeros((1, side, side, arch.in_channels),
                                  np.float32))))
  variables = {"params": {}, "batch_stats": {}}
  consumed = []
  for part in ("encoder", "decoder"):
    for name, tree in abstract["params"][part].items():
      prefix = f"{part}.{name}"
      if name.startswith(("down_blocks_", "up_blocks_")):
        kind, i, j = name.rsplit("_", 2)
        prefix = f"{part}.{kind}.{i}.{j}"
      consumed.append(prefix + ".")
      sub = {k[len(prefix) + 1:]: v for k, v in state.items()
             if k.startswith(prefix + ".")}
      if "conv1" in tree:
        converted = resblock(sub)
        if "norm.running_mean" in sub:
          variables["batch_stats"].setdefault(part, {})[name] = {"norm": {
              "mean": np.asarray(sub["norm.running_mean"], np.float32),
              "var": np.asarray(sub["norm.running_var"], np.float32)}}
      elif "attn" in tree:
        scales = tuple(int(k.split("_")[1]) for k in tree["attn"]
                       if k.startswith("aggreg_") and k.endswith("_depth"))
        converted = efficientvit_block(sub, scales)
      elif "conv" in tree:
        converted = {"conv": _plain_conv(sub, "conv")}
      elif name == "norm_out":
        converted = {
            "scale": np.asarray(_take(state, f"{prefix}.weight"), np.float32),
            "bias": np.asarray(_take(state, f"{prefix}.bias"), np.float32)}
      else:
        converted = _plain_conv(state, prefix)
      variables["params"].setdefault(part, {})[name] = converted
  left = sorted(k for k in state if not k.startswith(tuple(consumed)))
  if left:
    raise ValueError(f"{len(left)} diffusers tensors have no place in the "
                     f"configured DC-AE, e.g. {left[0]!r}; is config.json "
                     "the one of these weights?")
  want = jax.tree_util.tree_flatten_with_path(abstract["params"])[0]
  got = dict(jax.tree_util.tree_flatten_with_path(variables["params"])[0])
  for path, leaf in want:
    have = got.get(path)
    if have is None or tuple(have.shape) != tuple(leaf.shape):
      name = "/".join(str(getattr(p, "key", p)) for p in path)
      raise ValueError(f"DC-AE parameter {name} is "
                       f"{'missing' if have is None else tuple(have.shape)}"
                       f", the config makes it {tuple(leaf.shape)}.")
  return variables


class LoadedDCAE:
  """A converted diffusers DC-AE: jitted `encode(x)` and `decode(z)`.

  Images are NHWC float32 in [-1, 1]; latents NHWC, unscaled (multiply by
  `scaling_factor` before a diffusion model, divide before decoding, as
  diffusers does outside the model). `conv_impl` ("auto": Winograd on CPU)
  is the 3x3 convs' `jaxgen.nn.linear.Conv.impl`.
  """

  def __init__(self, arch, variables, scaling_factor: float = 1.0,
               conv_impl: str = "auto"):
    import jax  # pylint: disable=g-import-not-at-top
    from jaxgen.autoencoders import dc_ae  # pylint: disable=g-import-not-at-top
    from jaxgen.nn import linear  # pylint: disable=g-import-not-at-top
    self.arch, self.variables = arch, variables
    self.scaling_factor = float(scaling_factor)
    model = dc_ae.DCAE(arch, conv_impl=linear.resolve_conv_impl(conv_impl))
    self._encode = jax.jit(lambda x: model.apply(self.variables, x,
                                                 method=model.encode))
    self._decode = jax.jit(lambda z: model.apply(self.variables, z,
                                                 method=model.decode))

  def _check(self, x, channels: int, multiple: int, what: str) -> None:
    """One line before tracing for a batch of the wrong layout or size."""
    shape = tuple(getattr(x, "shape", ()))
    if (len(shape) != 4 or shape[-1] != channels
        or shape[1] % multiple or shape[2] % multiple):
      raise ValueError(
          f"DC-AE {what} of shape {shape}: pass NHWC [N, H, W, {channels}]"
          + (f" with H and W multiples of {multiple}" if multiple > 1
             else "") + " (a torch NCHW batch is x.transpose(0, 2, 3, 1)).")

  def encode(self, x):
    """Images [N, H, W, C] in [-1, 1] -> latents [N, H/f, W/f, c]."""
    self._check(x, self.arch.in_channels, self.arch.compression, "images")
    return self._encode(x)

  def decode(self, z):
    """Latents [N, h, w, c] -> images [N, h·f, w·f, C]."""
    self._check(z, self.arch.latent_channels, 1, "latents")
    return self._decode(z)


def load_dc_ae(directory: str) -> LoadedDCAE:
  """Loads a diffusers `AutoencoderDC` folder (config.json + safetensors).

  Args:
    directory: e.g. a local copy of mit-han-lab/dc-ae-f32c32-in-1.0-diffusers.

  Returns:
    A `LoadedDCAE`.

  Raises:
    ValueError: one line for a missing file, an unsupported config field or
      missing / misshapen tensors.
  """
  import json  # pylint: disable=g-import-not-at-top
  import os  # pylint: disable=g-import-not-at-top
  from safetensors.numpy import load_file  # pylint: disable=g-import-not-at-top
  from jaxgen.autoencoders import dc_ae  # pylint: disable=g-import-not-at-top
  config_path = os.path.join(directory, "config.json")
  weights = [f for f in sorted(os.listdir(directory)) if f.endswith(
      ".safetensors")] if os.path.isdir(directory) else []
  if not os.path.exists(config_path) or not weights:
    raise ValueError(f"{directory} is not a diffusers AutoencoderDC folder "
                     "(config.json and *.safetensors); pass the folder "
                     "from save_pretrained or the hub snapshot.")
  with open(config_path, encoding="utf-8") as f:
    config = json.load(f)
  arch = dc_ae.Arch.from_diffusers(config)
  state = {}
  for name in weights:
    state.update(load_file(os.path.join(directory, name)))
  return LoadedDCAE(arch, convert_state_dict(state, arch),
                    config.get("scaling_factor", 1.0))
