"""A profiler trace of a few steps early in the run, never lost.

clu's `periodic_actions.Profile` stops its trace only after a minimum window
(steps and milliseconds); a run that ends sooner never writes it. This one
traces `num_steps` steps from `first_step` and `stop()` (called by the
trainer in `finally`) writes whatever was traced.
"""

from typing import Optional

from absl import logging
import jax


class StepProfiler:
  """Traces steps [first_step, first_step + num_steps) into `logdir`."""

  def __init__(self, logdir: str, first_step: int, num_steps: int):
    self.logdir = logdir
    self.first_step = first_step
    self.num_steps = num_steps
    self._started: Optional[int] = None
    self._last: Optional[int] = None

  def __call__(self, step: int) -> None:
    """Called before running `step`."""
    if self._started is None and step == self.first_step:
      jax.profiler.start_trace(self.logdir)
      self._started = step
    elif self._started is not None and step >= self.first_step + (
        self.num_steps):
      self.stop()
    if self._started is not None:
      self._last = step

  def stop(self) -> None:
    """Ends the trace (if running) and says where it went."""
    if self._started is None:
      return
    jax.profiler.stop_trace()
    logging.info("Profiler trace of steps %d-%d written under %s/plugins/"
                 "profile (open it with TensorBoard or Perfetto).",
                 self._started, self._last, self.logdir)
    self._started = None
