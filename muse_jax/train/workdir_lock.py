"""One training run per workdir: an exclusive `fcntl.flock` on `workdir/.lock`.

The run's process 0 takes it before anything is prepared or written (the other processes of a
multi-host run write only checkpoint shards, in step with process 0). The file holds the
holder's pid and host, so a second run exits at once naming them (`WorkdirBusy`, exit status 4).
The kernel releases the lock when the holder ends, however it ends (kill -9 included): a lock
file left behind never blocks anyone.
"""

import fcntl
import os
import socket

from muse_jax.train.errors import WorkdirBusy

LOCK_FILE = ".lock"


class WorkdirLock:
    """`with WorkdirLock(workdir): ...` holds the lock for the block."""

    def __init__(self, workdir: str):
        self.workdir = workdir
        self.path = os.path.join(workdir, LOCK_FILE)
        self._fd: int | None = None

    def __enter__(self) -> "WorkdirLock":
        os.makedirs(self.workdir, exist_ok=True)
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = os.read(fd, 200).decode(errors="replace").strip() or "unknown"
            os.close(fd)
            raise WorkdirBusy(f"{self.workdir} is in use by another run (process {holder}, lock {self.path}); "
                              "wait for it to end or choose another --config.workdir") from None
        os.ftruncate(fd, 0)
        os.write(fd, f"{os.getpid()} on {socket.gethostname()}\n".encode())
        self._fd = fd
        return self

    def __exit__(self, *exc) -> None:
        if self._fd is not None:
            fcntl.flock(self._fd, fcntl.LOCK_UN)
            os.close(self._fd)
            self._fd = None
