r"""Token counts of full-sequence video diffusion and of the pyramids.

  python -m jaxgen.flow.tokens --height=768 --width=1280 --frames=241 \
      --vae_spatial=8 --vae_temporal=8 --patch=2 --stages=3

prints the full-sequence token count of a clip, the temporal pyramid's worst
case (the last frame generated at full resolution, its history compressed by
the official rule: 119,040 vs 15,360 for 10 s of 768p, 61,440 vs 11,760 at
121 frames, Sec. 1 of the paper) and the spatial pyramid's compute fraction
at equal steps per stage ((1 + 1/4 + 1/16)/3 = 0.4375 of the token-steps,
0.355 of the attention FLOPs for K = 3).
"""

import sys
from typing import Dict

from absl import app
from absl import flags

from jaxgen import config_lib
from jaxgen.flow import pyramid


def latent_frames(frames: int, vae_temporal: int) -> int:
  """Latent frames of a causal VAE: 1 + (frames - 1) / temporal factor."""
  if (frames - 1) % vae_temporal:
    below = 1 + (frames - 1) // vae_temporal * vae_temporal
    raise ValueError(f"frames={frames} is not 1 + a multiple of "
                     f"vae_temporal={vae_temporal}; use {below} or "
                     f"{below + vae_temporal}.")
  return 1 + (frames - 1) // vae_temporal


def token_counts(height: int, width: int, frames: int, *, vae_spatial: int = 8,
                 vae_temporal: int = 8, patch: int = 2,
                 stages: int = 3) -> Dict[str, float]:
  """Full-sequence vs pyramid token counts of one clip.

  Args:
    height: pixels.
    width: pixels.
    frames: video frames (1 + a multiple of vae_temporal).
    vae_spatial: the autoencoder's spatial factor.
    vae_temporal: its temporal factor.
    patch: DiT patch side in latent cells.
    stages: K.

  Returns:
    Dict with latent_frames, tokens_per_frame, full_sequence,
    pyramid_worst_case, reduction, and the spatial pyramid's
    token_step_fraction and attention_fraction at equal steps per stage.
  """
  factor = vae_spatial * patch * 2 ** (stages - 1)
  if height % factor or width % factor:
    raise ValueError(f"{height}x{width} is not divisible by vae_spatial x "
                     f"patch x 2^(stages-1) = {factor}.")
  t = latent_frames(frames, vae_temporal)
  n = (height // vae_spatial // patch) * (width // vae_spatial // patch)
  # Generated frame at full resolution (level 0) at the last position; the
  # history frame at lag L sits at level min(L - 1, K - 1).
  worst = n + sum(n // 4 ** pyramid.history_level(0, lag, stages)
                  for lag in range(1, t))
  levels = [4.0 ** -k for k in range(stages)]
  return {"latent_frames": t, "tokens_per_frame": n,
          "full_sequence": t * n, "pyramid_worst_case": worst,
          "reduction": t * n / worst,
          "token_step_fraction": sum(levels) / stages,
          "attention_fraction": sum(x * x for x in levels) / stages}


FLAGS = flags.FLAGS
flags.DEFINE_integer("height", 768, "Video height in pixels.", lower_bound=1)
flags.DEFINE_integer("width", 1280, "Video width in pixels.", lower_bound=1)
flags.DEFINE_integer("frames", 241, "Video frames (1 + k x vae_temporal).",
                     lower_bound=1)
flags.DEFINE_integer("vae_spatial", 8, "Autoencoder spatial factor.",
                     lower_bound=1)
flags.DEFINE_integer("vae_temporal", 8, "Autoencoder temporal factor.",
                     lower_bound=1)
flags.DEFINE_integer("patch", 2, "DiT patch side (latent cells).",
                     lower_bound=1)
flags.DEFINE_integer("stages", 3, "Pyramid stages K.", lower_bound=1)


def main(argv):
  del argv
  try:
    c = token_counts(FLAGS.height, FLAGS.width, FLAGS.frames,
                     vae_spatial=FLAGS.vae_spatial,
                     vae_temporal=FLAGS.vae_temporal, patch=FLAGS.patch,
                     stages=FLAGS.stages)
  except ValueError as e:
    print(f"error: {e}", file=sys.stderr)
    sys.exit(1)
  print(f"{FLAGS.width}x{FLAGS.height}, {FLAGS.frames} frames -> "
        f"{c['latent_frames']} latent frames of {c['tokens_per_frame']:,} "
        "tokens")
  print(f"full sequence:            {c['full_sequence']:,} tokens")
  print(f"temporal pyramid (worst): {c['pyramid_worst_case']:,} tokens "
        f"({c['reduction']:.2f}x fewer)")
  print(f"spatial pyramid at equal steps per stage: "
        f"{c['token_step_fraction']:.4f} of the token-steps, "
        f"{c['attention_fraction']:.3f} of the attention FLOPs")


if __name__ == "__main__":
  app.run(main, flags_parser=config_lib.parse_flags)
