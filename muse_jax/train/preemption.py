"""SIGTERM / SIGINT while training: finish the step, save a checkpoint, exit 143 / 130.

A preempted cloud job gets SIGTERM and some seconds before SIGKILL; Ctrl-C sends SIGINT. The
first signal only sets a flag that the train loop reads after each step; the loop then saves
a checkpoint of that step and raises `Interrupted` (exit status 128 + the signal's number). A
second signal ends the process at once, without saving. Outside the train loop the handlers
of the command line apply (`muse_jax/main.py`: SIGTERM and SIGINT end the process through
Python's exception handling, so temporary files are removed).

Multi-host: each process may get the signal at a different step, so the processes agree on it
every `agree_every` steps (an allgather of the flag) and all save the same step.
"""

import os
import signal
import sys

import numpy as np

import jax
from jax.experimental import multihost_utils

SIGNALS = (signal.SIGTERM, signal.SIGINT)


class StopSignals:
    """`with StopSignals() as stop:` ... `stop.requested(step)`: the signal to stop for, or None."""

    def __init__(self, agree_every: int = 1):
        self.agree_every = agree_every
        self.signum: int | None = None
        self._previous = {}

    def __enter__(self) -> "StopSignals":
        self._previous = {s: signal.signal(s, self._handle) for s in SIGNALS}
        return self

    def __exit__(self, *exc) -> None:
        for s, handler in self._previous.items():
            signal.signal(s, handler)

    def _handle(self, signum: int, frame) -> None:
        name = signal.Signals(signum).name
        if self.signum is not None:
            print(f"\n{name} again: exiting now, without saving", file=sys.stderr, flush=True)
            os._exit(128 + signum)
        self.signum = signum
        print(f"\n{name}: finishing this step and saving a checkpoint ({name} again to exit at once)",
              file=sys.stderr, flush=True)

    def requested(self, step: int) -> int | None:
        if jax.process_count() == 1:
            return self.signum
        if step % self.agree_every:
            return None
        flags = multihost_utils.process_allgather(np.int32(self.signum or 0))
        return int(np.max(flags)) or None
