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


def log_progress(step: int, total_steps: int, steps_per_sec: float,
                 evaluations: float = 0.0) -> None:
  """Logs "step s/N (p%), r steps/s, ETA t" at the rate the caller measured.

  Args:
    step: the step just finished.
    total_steps: the run's last step.
    steps_per_sec: the current training rate.
    evaluations: seconds the evaluations still ahead will take
      (`EvaluationTimes.ahead`), added to the ETA.
  """
  eta = (total_steps - step) / steps_per_sec if steps_per_sec > 0 else 0.0
  logging.info("step %d/%d (%.0f%%), %.3g steps/s, ETA %s", step,
               total_steps, 100.0 * step / max(total_steps, 1),
               steps_per_sec, format_duration(eta + evaluations))


def evaluations_from(step: int, total_steps: int, every: int) -> int:
  """How many of the steps step..total_steps evaluate: the multiples of
  `every` (0: none) and the last step, which always does."""
  if step > total_steps:
    return 0
  count = (total_steps // every - (step - 1) // every) if every > 0 else 0
  return count + int(every <= 0 or total_steps % every != 0)


class EvaluationTimes:
  """Mean wall time of each kind of periodic evaluation (held-out loss,
  sample metrics), so that the ETA counts the ones still ahead: with a
  minutes-long FID every few thousand steps the steps alone say little."""

  def __init__(self):
    self._seconds, self._count = {}, {}

  def add(self, kind: str, seconds: float) -> None:
    """Records one evaluation of `kind` that took `seconds`."""
    self._seconds[kind] = self._seconds.get(kind, 0.0) + seconds
    self._count[kind] = self._count.get(kind, 0) + 1

  def ahead(self, step: int, total_steps: int, every: dict) -> float:
    """Seconds the evaluations of steps step..total_steps will take at the
    mean times measured so far (0 for a kind not measured yet).

    Args:
      step: the first step still to evaluate.
      total_steps: the run's last step.
      every: {kind: its interval in steps (0: the last step only)}.

    Returns:
      The estimate in seconds.
    """
    return sum(self._seconds[k] / self._count[k]
               * evaluations_from(step, total_steps, int(every.get(k, 0)))
               for k in self._count)
