"""A diverged run stops: `train.max_skipped_in_a_row` optimizer steps skipped in a row."""

import jax


class SkipStreak:
    """Counts steps skipped in a row from the step guard's running total (`skipped_steps`).

    `dispatched(step, total)` hands over the total of the step just dispatched and reads the
    one handed over before it, which is computed by now (or nearly): reading it never waits for
    the step just dispatched, so the device stays busy. It returns the step at which the streak
    reached the limit, else None.
    """

    def __init__(self, limit: int, skipped_before: int):
        self.limit = limit
        self.total = skipped_before  # skipped steps before the first step read
        self.in_a_row = 0
        self.pending: tuple[int, jax.Array] | None = None

    def dispatched(self, step: int, total: jax.Array) -> int | None:
        previous, self.pending = self.pending, (step, total)
        return None if previous is None else self._read(*previous)

    def finish(self) -> int | None:
        """Reads the last step handed over (the run's end)."""
        previous, self.pending = self.pending, None
        return None if previous is None else self._read(*previous)

    def _read(self, step: int, total: jax.Array) -> int | None:
        total = int(total)
        self.in_a_row = self.in_a_row + 1 if total > self.total else 0
        self.total = total
        return step if self.in_a_row >= self.limit else None
