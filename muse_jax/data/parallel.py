"""An ordered, bounded parallel map over worker processes.

Results come back in the order of the tasks, whatever the number of
processes, so the output of ``prepare`` does not depend on it. At most
``max_pending`` tasks are in flight (``Pool.imap`` would read the whole,
possibly huge, task iterator ahead), so memory stays bounded. A worker that
dies (killed for memory, say) fails the map with ``BrokenProcessPool``
instead of hanging it.

Workers are forked (instant) when the calling process runs nothing but its
main thread and has not loaded JAX, and spawned otherwise: JAX's threads (as
when training prepares its data) would be copied by ``fork`` in an unusable
state. Workers die with the process that started them, however it ends (on
Linux the kernel kills them, elsewhere a watchdog thread notices within a
second), and leave SIGINT to it: Ctrl-C interrupts the calling process once.
"""

from __future__ import annotations

import collections
import ctypes
import multiprocessing
import os
import signal
import sys
import threading
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Callable, Iterable, Iterator, TypeVar

__all__ = ["WorkerPool"]

T = TypeVar("T")
R = TypeVar("R")


def _start_method() -> str:
    safe_to_fork = threading.active_count() == 1 and "jax" not in sys.modules
    return "fork" if safe_to_fork and "fork" in multiprocessing.get_all_start_methods() else "spawn"


_PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(1.0)
    os._exit(1)


def _init_worker(parent: int) -> None:
    """Runs first in every worker: die with `parent`, ignore SIGINT (the parent handles it), end
    at SIGTERM (a forked worker inherits the parent's handler, which would only raise SystemExit
    into the pool's loop)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    try:
        if ctypes.CDLL(None, use_errno=True).prctl(_PR_SET_PDEATHSIG, signal.SIGKILL) != 0:
            raise OSError
    except (OSError, AttributeError):  # not Linux
        threading.Thread(target=_watch_parent, args=(parent,), daemon=True).start()
    if os.getppid() != parent:  # the parent died before prctl took effect
        os._exit(1)


class WorkerPool:
    """``with WorkerPool(n) as pool: for r in pool.ordered_map(fn, tasks): ...``

    With ``processes == 1`` the tasks run in the calling process.
    """

    def __init__(self, processes: int, tasks_per_process: int = 3):
        self.processes = max(1, int(processes))
        self.max_pending = self.processes * tasks_per_process
        self._executor: ProcessPoolExecutor | None = None

    def __enter__(self) -> "WorkerPool":
        if self.processes > 1:
            context = multiprocessing.get_context(_start_method())
            self._executor = ProcessPoolExecutor(self.processes, mp_context=context, initializer=_init_worker,
                                                 initargs=(os.getpid(),))
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True, cancel_futures=exc_type is not None)
            self._executor = None

    def ordered_map(self, fn: Callable[[T], R], tasks: Iterable[T]) -> Iterator[R]:
        """``fn(task)`` for every task, in task order (``fn`` must be importable)."""
        if self._executor is None:
            yield from map(fn, tasks)
            return
        pending: collections.deque = collections.deque()
        try:
            for task in tasks:
                pending.append(self._executor.submit(fn, task))
                if len(pending) >= self.max_pending:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for future in pending:  # on an error or an abandoned map
                future.cancel()
