"""Logs a person can read: library INFO chatter is dropped by default.

orbax writes ~40 INFO lines per checkpoint, TFDS a dataset-info line on
every evaluation, grain and JAX their own. They all log through absl's
handler, so a filter on that handler keeps jaxgen's own INFO lines (setup,
progress with ETA, metric rows, the result) and every WARNING and ERROR,
and drops INFO from the libraries unless `--verbosity=1` (or more) asks for
them.
"""

import logging as pylogging
import warnings

from absl import logging

# Path fragments of modules whose INFO lines are dropped.
CHATTY = ("/orbax/", "/tensorflow_datasets/", "/grain/", "/etils/",
          "/jax/_src/", "/tensorflow/", "/array_record/")


class QuietLibraries(pylogging.Filter):
  """Drops records below WARNING that come from `CHATTY` modules."""

  def filter(self, record: pylogging.LogRecord) -> bool:
    if record.levelno >= pylogging.WARNING:
      # TFDS' advice to install OpenCV for faster decoding, once per
      # process, and its note on a dataset folder that is not prepared
      # (jaxgen's own one-line error says what to do).
      try:
        message = record.getMessage()
      except Exception:  # pylint: disable=broad-except
        message = str(record.msg)  # A library's bad format arguments.
      return not any(text in message for text in (
          "OpenCV is not installed", "has no dataset_info.json"))
    return not any(part in (record.pathname or "") for part in CHATTY)


def quiet_libraries(verbosity: int) -> None:
  """Installs `QuietLibraries` on absl's handler unless verbosity >= 1.

  Args:
    verbosity: absl's `--verbosity` (0 by default).
  """
  if verbosity < 1:
    logging.get_absl_handler().addFilter(QuietLibraries())


class _ToolLines(pylogging.Formatter):
  """`warning: <message>` for WARNING and above, the bare message below."""

  def format(self, record: pylogging.LogRecord) -> str:
    message = record.getMessage()
    if record.exc_info:
      message += "\n" + self.formatException(record.exc_info)
    if record.levelno >= pylogging.WARNING:
      return f"{record.levelname.lower()}: {message}"
    return message


def tool_log_lines() -> None:
  """absl's log lines of a command-line tool read like its `warning:` and
  `error:` lines (no timestamp, file and line), as `one_line_warnings` does
  for Python warnings."""
  logging.get_absl_handler().python_handler.setFormatter(_ToolLines())


def one_line_warnings() -> None:
  """Python warnings print as `warning: <message>` (no file and source line).

  For command-line tools, whose warnings (e.g. a singular covariance) are
  addressed to the person running them, not to a developer.
  """
  warnings.formatwarning = lambda msg, *_, **__: f"warning: {msg}\n"


def format_duration(seconds: float) -> str:
  """"1h02m" from an hour on, else "3m04s" (also "0m12s")."""
  seconds = int(round(max(seconds, 0.0)))
  if seconds >= 3600:
    return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
  return f"{seconds // 60}m{seconds % 60:02d}s"


def log_progress(step: int, total_steps: int, steps_per_sec: float) -> None:
  """Logs "step s/N (p%), r steps/s, ETA t" at the rate the caller measured.

  Args:
    step: the step just finished.
    total_steps: the run's last step.
    steps_per_sec: the current training rate.
  """
  eta = (total_steps - step) / steps_per_sec if steps_per_sec > 0 else 0.0
  logging.info("step %d/%d (%.0f%%), %.3g steps/s, ETA %s", step,
               total_steps, 100.0 * step / max(total_steps, 1),
               steps_per_sec, format_duration(eta))
