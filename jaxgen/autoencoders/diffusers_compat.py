"""Weight mapping from diffusers' `AutoencoderDC` modules to `ops` modules.

Each function takes one diffusers block's state dict (name -> numpy array,
NCHW conv kernels) with the block's prefix removed and returns the params
tree of the matching `jaxgen.autoencoders.ops` module. Conv kernels go from
OIHW to HWIO; diffusers' separate `to_q` / `to_k` / `to_v` linear layers
become the one 1x1 q/k/v conv whose channels are their concatenation, which
is the layout the reference's attention reshapes into heads.
"""

from typing import Dict, Mapping

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
