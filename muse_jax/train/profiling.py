"""An optional `jax.profiler` trace of a window of training steps (`train.profile_*`).

    train.profile_start = k > 0, train.profile_steps = n:  steps k .. k+n-1 are traced into
    workdir/profile/plugins/profile/<date>/ (`*.xplane.pb` for TensorBoard's profile plugin /
    xprof, `*.trace.json.gz` for Perfetto). Step k is normally past the first step's compilation.

Only process 0 traces. The trace ends after step k+n-1's results are ready (so its device work is
inside the window), or when training ends first.
"""

import os

import jax

from muse_jax.settings import TrainSettings


class StepProfiler:
    def __init__(self, train: TrainSettings, workdir: str, primary: bool):
        self.start, self.steps = train.profile_start, train.profile_steps
        self.enabled = primary and self.start > 0
        self.directory = os.path.join(workdir, "profile")
        self.active = False

    def skipped_window(self, done: int, last: int) -> str | None:
        """A warning when the window does not start within this run's steps done+1 .. last."""
        if self.enabled and not done < self.start <= last:
            return (f"warning: train.profile_start={self.start} is not among the steps this run takes "
                    f"({done + 1}..{last}): no profile")
        return None

    def before_step(self, step: int) -> None:
        if self.enabled and step == self.start:
            jax.profiler.start_trace(self.directory)
            self.active = True

    def after_step(self, step: int, state) -> None:
        if self.active and step == self.start + self.steps - 1:
            self.stop(state)

    def stop(self, state) -> None:
        """End the trace (if one is running) once `state` is computed."""
        if self.active:
            jax.block_until_ready(state)
            jax.profiler.stop_trace()
            self.active = False
