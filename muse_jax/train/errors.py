"""Why a run stopped: each error is one line on stderr and its own exit status (JAX-free, so the
command line can catch them). README "Fault tolerance" lists the statuses."""


class RunError(Exception):
    """A run that cannot go on: `str(error)` is the line printed, `exit_code` the exit status."""

    exit_code = 1


class NoCheckpoint(RunError):
    """A mode that reads a checkpoint found none (exit status 2, like bad input)."""

    exit_code = 2


class NoUsableCheckpoint(NoCheckpoint):
    """Every checkpoint failed its checks (files, restore, finiteness); none was moved or deleted."""


class WriteError(RunError):
    """A file of the run could not be written (disk full, read-only, ...): the message names it."""


class Diverged(RunError):
    """`train.max_skipped_in_a_row` optimizer steps were skipped in a row (exit status 3)."""

    exit_code = 3


class WorkdirBusy(RunError):
    """Another process holds the workdir's lock (exit status 4)."""

    exit_code = 4


class Interrupted(RunError):
    """SIGTERM or SIGINT: the step finished and a checkpoint was saved; 128 + the signal's number
    (143, 130), as a shell reports a process ended by that signal."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.exit_code = 128 + signum
