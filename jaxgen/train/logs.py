"""Logs a person can read: library INFO chatter is dropped by default.

orbax writes ~40 INFO lines per checkpoint, TFDS a dataset-info line on
every evaluation, grain and JAX their own. They all log through absl's
handler, so a filter on that handler keeps jaxgen's own INFO lines (setup,
progress with ETA, metric rows, the result) and every WARNING and ERROR,
and drops INFO from the libraries unless `--verbosity=1` (or more) asks for
them.
"""

import logging as pylogging
import time
import warnings

from absl import logging

# Path fragments of modules whose INFO lines are dropped.
CHATTY = ("/orbax/", "/tensorflow_datasets/", "/grain/", "/etils/",
          "/jax/_src/", "/tensorflow/", "/array_record/")


class QuietLibraries(pylogging.Filter):
  """Drops records below WARNING that come from `CHATTY` modules."""

  def filter(self, record: pylogging.LogRecord) -> bool:
    if record.levelno >= pylogging.WARNING:
      # TFDS' advice to install OpenCV for faster decoding, once per process.
      return "OpenCV is not installed" not in str(record.msg)
    return not any(part in (record.pathname or "") for part in CHATTY)


def quiet_libraries(verbosity: int) -> None:
  """Installs `QuietLibraries` on absl's handler unless verbosity >= 1.

  Args:
    verbosity: absl's `--verbosity` (0 by default).
  """
  if verbosity < 1:
    logging.get_absl_handler().addFilter(QuietLibraries())


def one_line_warnings() -> None:
  """Python warnings print as `warning: <message>` (no file and source line).

  For command-line tools, whose warnings (e.g. a singular covariance) are
  addressed to the person running them, not to a developer.
  """
  warnings.formatwarning = lambda msg, *_, **__: f"warning: {msg}\n"


def format_duration(seconds: float) -> str:
  """"1h02m", "3m04s" or "12s"."""
  seconds = int(round(max(seconds, 0.0)))
  hours, rest = divmod(seconds, 3600)
  minutes, secs = divmod(rest, 60)
  if hours:
    return f"{hours}h{minutes:02d}m"
  return f"{minutes}m{secs:02d}s" if minutes else f"{secs}s"


class Progress:
  """Logs "step s/N (p%), r steps/s, ETA t" every `every_steps` steps.

  The rate is measured over the steps since the previous line, so the ETA
  follows the run's current speed (the first line includes compilation
  only if the caller starts it before compiling; the trainer does not).
  """

  def __init__(self, total_steps: int, every_steps: int, start_step: int = 0,
               clock=time.monotonic):
    self.total, self.every, self.clock = total_steps, every_steps, clock
    self.last_step, self.last_time = start_step, clock()

  def __call__(self, step: int) -> None:
    if step % self.every and step != self.total:
      return
    now = self.clock()
    rate = (step - self.last_step) / max(now - self.last_time, 1e-9)
    self.last_step, self.last_time = step, now
    eta = (self.total - step) / rate if rate > 0 else 0.0
    logging.info("step %d/%d (%.0f%%), %.3g steps/s, ETA %s", step,
                 self.total, 100.0 * step / max(self.total, 1), rate,
                 format_duration(eta))
