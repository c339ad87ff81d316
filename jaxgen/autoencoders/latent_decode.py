"""Decoding the samples of a latent-space run through its autoencoder.

A run on `config.dataset.name="latents:DIR"` (written by
`jaxgen.autoencoders.encode`) samples latents scaled by the dataset's
scaling factor. `make_decoder` restores the autoencoder run recorded in
DIR/<split>/latents.json, at the checkpoint that encoded them (the newest,
with a warning, once that one is gone), and returns a jitted function latents -> images in
[-1, 1], which the trainer applies to sample grids and sample metrics and
`jaxgen.sample` to the images it writes. The autoencoder's weights are
replicated on the latent run's mesh and passed as arguments (not baked into
the compiled function).
"""

import dataclasses
import hashlib
import json
from typing import Callable, Optional

from absl import logging
import etils.epath as epath
import jax
import jax.numpy as jnp
import ml_collections

from jaxgen.data import config as data_config
from jaxgen.data import sources
from jaxgen.parallel import mesh as mesh_lib
from jaxgen.parallel import sharding as sharding_lib
from jaxgen.train import fingerprint as fingerprint_lib
from jaxgen.train import state as state_lib


def latent_dir(dataset: ml_collections.ConfigDict) -> Optional[str]:
  """DIR of a `latents:DIR` dataset, else None."""
  spec = data_config.parse_spec(str(dataset.name))
  return spec.name if spec.scheme == "latents" else None


@dataclasses.dataclass(frozen=True)
class Decoder:
  """decode(z) of a latent-space run, and the checkpoint that decodes.

  Attributes:
    fn: f32[B, h, w, c] scaled latents -> f32[B, H, W, C] images clipped to
      [-1, 1].
    workdir: the autoencoder run.
    step: its checkpoint used (`jaxgen.sample` records it: samples decoded
      by another step are other images).
  """
  fn: Callable[[jax.Array], jax.Array]
  workdir: str
  step: int

  def __call__(self, z: jax.Array) -> jax.Array:
    return self.fn(z)


def weights_fingerprint(state: state_lib.TrainState) -> str:
  """A short digest of an autoencoder's weights (params and statistics),
  recorded by the encoder and checked before decoding.

  Args:
    state: the autoencoder run's restored state.

  Returns:
    16 hex digits.
  """
  prints, _ = fingerprint_lib.fingerprint({"params": state.params,
                                      "model_state": state.model_state})
  return hashlib.sha256(json.dumps(prints).encode()).hexdigest()[:16]


def _split_meta(dataset: ml_collections.ConfigDict):
  """(DIR, the run's split's latents.json) of a `latents:DIR` dataset, or
  None for pixel data."""
  directory = latent_dir(dataset)
  if directory is None:
    return None
  return directory, sources.latents_meta(
      directory, str(dataset.get("split") or "train"))


def check_source(dataset: ml_collections.ConfigDict):
  """The latents of a `latents:` dataset and the autoencoder run that can
  decode them, checked without restoring it (cheap: before compiling).

  Args:
    dataset: a run's `config.dataset`.

  Returns:
    (latents directory, its split's latents.json, the autoencoder run as a
    resolved path), or None for a pixel-space dataset.

  Raises:
    ValueError: one line if the latents do not name their run or it is
      gone.
  """
  found = _split_meta(dataset)
  if found is None:
    return None
  directory, meta = found
  workdir = sources.latents_origin(meta)["autoencoder"]
  if not workdir:
    raise ValueError(f"{directory} does not name its autoencoder run; "
                     "re-encode it with python -m jaxgen.autoencoders.encode.")
  if not epath.Path(workdir).is_dir():
    raise ValueError(f"{directory} was encoded by the autoencoder run "
                     f"{workdir}, which is gone; restore that run or "
                     "re-encode the latents with one you have.")
  return directory, meta, workdir


def origin(dataset: ml_collections.ConfigDict):
  """What made a `latents:` dataset's training latents (checkpointed, so a
  resume onto re-encoded latents is found), or None for pixel data.

  Args:
    dataset: a run's `config.dataset`.

  Returns:
    {"autoencoder", "autoencoder_step", "autoencoder_weights" (None for
    latents encoded before digests were recorded), "scaling_factor"}.
  """
  split_meta = _split_meta(dataset)
  if split_meta is None:
    return None
  meta = split_meta[1]
  found = sources.latents_origin(meta)
  return {"autoencoder": found["autoencoder"],
          "autoencoder_step": found["autoencoder_step"],
          "autoencoder_weights": meta.get("autoencoder_weights"),
          "scaling_factor": float(meta["scaling_factor"])}


def make_decoder(dataset: ml_collections.ConfigDict, mesh: jax.sharding.Mesh
                 ) -> Optional[Decoder]:
  """The latents -> images function of a latent-space run (None otherwise).

  Args:
    dataset: the run's `config.dataset`.
    mesh: the run's mesh (the decoder's weights are replicated on it).

  Returns:
    A `Decoder` (callable on scaled latents), or None for a pixel-space run.

  Raises:
    ValueError: one line if the latents or their autoencoder run are gone.
  """
  source = check_source(dataset)
  if source is None:
    return None
  directory, meta, workdir = source
  from jaxgen.autoencoders import runs as ae_runs  # pylint: disable=g-import-not-at-top
  # The checkpoint that encoded the latents: a newer one (the autoencoder
  # trained on) decodes them into other images.
  encoded_at = meta.get("autoencoder_step")
  try:
    _, s, step, state = ae_runs.restore_run(workdir, step=encoded_at)
  except ValueError:
    if encoded_at is None:
      raise
    _, s, step, state = ae_runs.restore_run(workdir)
    logging.warning("Decoding %s with step %d of %s: step %d, which encoded "
                    "them, is no longer kept or does not load.", directory, step, workdir,
                    encoded_at)
  recorded = meta.get("autoencoder_weights")
  if recorded and step == encoded_at and weights_fingerprint(state) != recorded:
    # Same path and step, other weights: the run was replaced (retrained,
    # or another autoencoder written there). Its decodes would be noise.
    raise ValueError(
        f"{workdir} step {step} is not the autoencoder that encoded "
        f"{directory} (its weights differ: the run was replaced); restore "
        "that run or re-encode the latents with this one.")
  ae = s.objective
  weights = {"params": state.params, "model_state": state.model_state}
  weights = sharding_lib.placed_as(
      weights, jax.tree.map(lambda x: x.dtype, weights),
      jax.tree.map(lambda _: mesh_lib.replicated(mesh), weights))
  scale = float(meta["scaling_factor"])

  @jax.jit
  def decode_fn(w, z):
    ae_state = state_lib.TrainState(
        step=jnp.zeros((), jnp.int32), params=w["params"], opt_state={},
        ema_params={}, model_state=w["model_state"])
    return jnp.clip(ae.decode(ae_state, z / scale), -1.0, 1.0)

  return Decoder(fn=lambda z: decode_fn(weights, z), workdir=workdir,
                 step=int(step))
