"""The token calculator: the paper's numbers, from the official history rule."""

import subprocess
import sys

import pytest

from jaxgen.flow import tokens


def test_paper_token_counts():
  c = tokens.token_counts(768, 1280, 241)
  assert (c["latent_frames"], c["tokens_per_frame"]) == (31, 3840)
  assert (c["full_sequence"], c["pyramid_worst_case"]) == (119_040, 15_360)
  c = tokens.token_counts(768, 1280, 121)
  assert (c["full_sequence"], c["pyramid_worst_case"]) == (61_440, 11_760)
  assert c["token_step_fraction"] == pytest.approx(0.4375)
  assert c["attention_fraction"] == pytest.approx(0.355, abs=5e-4)
  with pytest.raises(ValueError, match="not divisible"):
    tokens.token_counts(760, 1280, 241)
  with pytest.raises(ValueError, match="not 1 \\+ a multiple"):
    tokens.token_counts(768, 1280, 240)


def test_command_line():
  out = subprocess.run(
      [sys.executable, "-m", "jaxgen.flow.tokens", "--height=768",
       "--width=1280", "--frames=241", "--vae_spatial=8", "--vae_temporal=8",
       "--patch=2", "--stages=3"], capture_output=True, text=True, check=True,
      timeout=60).stdout
  assert "119,040" in out and "15,360" in out and "0.4375" in out
  bad = subprocess.run([sys.executable, "-m", "jaxgen.flow.tokens",
                        "--frames=240"], capture_output=True, text=True,
                       timeout=60)
  assert bad.returncode != 0 and ("not 1 + a multiple of vae_temporal=8; "
                                  "use 233 or 241.") in bad.stderr
