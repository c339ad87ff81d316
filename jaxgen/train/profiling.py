"""A profiler trace of a few steps early in the run, never lost.

clu's `periodic_actions.Profile` stops its trace only after a minimum window
(steps and milliseconds); a run that ends sooner never writes it. This one
traces `num_steps` steps from `first_step`, ends the trace right after the
window's last step ran (before that step's evaluation, sampling or save, and
at the run's last step at the latest), and `stop()` (called by the trainer
in `finally`) writes whatever was traced.
"""

from typing import Any, Optional

from absl import logging
import jax


class StepProfiler:
  """Traces steps [first_step, first_step + num_steps) into `logdir`."""

  def __init__(self, logdir: str, first_step: int, num_steps: int,
               last_step: Optional[int] = None):
    """Args:
      logdir: the run's TensorBoard directory (the trace goes under
        plugins/profile).
      first_step: the first traced step.
      num_steps: how many steps to trace.
      last_step: the run's last step (the trace ends there at the latest).
    """
    self.logdir = logdir
    self.first_step = first_step
    self.num_steps = num_steps
    self.last_step = last_step
    self._started: Optional[int] = None
    self._last: Optional[int] = None

  def __call__(self, step: int) -> None:
    """Called before running `step`."""
    if self._started is None and step == self.first_step:
      jax.profiler.start_trace(self.logdir)
      self._started = step
    if self._started is not None:
      self._last = step

  def after(self, step: int, outputs: Any = None) -> None:
    """Called once `step` is dispatched, before anything else runs at it.

    Args:
      step: the step just dispatched.
      outputs: its outputs; the trace waits for them before it ends, so
        the last step's device work is in it.
    """
    if self._started is not None and (
        step >= self.first_step + self.num_steps - 1
        or step == self.last_step):
      jax.block_until_ready(outputs)
      self.stop()

  def stop(self) -> None:
    """Ends the trace (if running) and says where it went."""
    if self._started is None:
      return
    jax.profiler.stop_trace()
    logging.info("Profiler trace of steps %d-%d written under %s/plugins/"
                 "profile (open it with TensorBoard or Perfetto).",
                 self._started, self._last, self.logdir)
    self._started = None
