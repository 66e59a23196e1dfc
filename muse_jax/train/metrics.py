"""Metrics to `workdir/metrics.jsonl` and TensorBoard, and a progress line with ETA."""

import contextlib
import json
import os
import sys
import time

import jax
from tensorboardX import SummaryWriter

from muse_jax.data.errors import DataError
from muse_jax.train import device_memory
from muse_jax.train.errors import WriteError


def kept_rows(path: str, keep_through_step: int) -> list[str]:
    """The rows of a metrics.jsonl logged up to `keep_through_step` (a resumed run re-logs the
    later ones). A cut-off last row (the run was killed while writing it, or the disk was full)
    is dropped with a warning; a damaged row before the last is a DataError naming its line."""
    with open(path, encoding="utf-8") as f:
        lines = [line for line in f if line.strip()]
    rows = []
    for number, line in enumerate(lines, start=1):
        try:
            step = json.loads(line)["step"]
        except (ValueError, KeyError, TypeError) as e:
            if number < len(lines):
                raise DataError(f"{path}:{number}: damaged row ({type(e).__name__}: {e}); remove that line") from None
            print(f"warning: {path}:{number}: dropped a cut-off last row", file=sys.stderr, flush=True)
            continue
        if step <= keep_through_step:
            rows.append(line if line.endswith("\n") else line + "\n")
    return rows


def truncate_jsonl(path: str, keep_through_step: int) -> None:
    """Keep only `kept_rows`; atomic rewrite (a temporary file renamed over it)."""
    if not os.path.exists(path):
        return
    write_text(path, "".join(kept_rows(path, keep_through_step)))


def write_text(path: str, text: str) -> None:
    """`path` holds `text` (written to a temporary file, then renamed: never half-written)."""
    with writing(path):
        with open(path + ".tmp", "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(path + ".tmp", path)


@contextlib.contextmanager
def writing(path: str):
    """An OSError while writing `path` (disk full, read-only, quota) as a WriteError naming it."""
    try:
        yield
    except OSError as e:
        raise WriteError(f"{path}: cannot write ({e.strerror or e})") from None


class MetricsLog:
    """One JSON object per logged step in metrics.jsonl, the same scalars in TensorBoard; on GPU
    and TPU each row also carries the allocator's peak so far (`device_peak_gib`)."""

    def __init__(self, workdir: str, resume_step: int):
        self.path = os.path.join(workdir, "metrics.jsonl")
        truncate_jsonl(self.path, resume_step)
        with writing(self.path):
            self._file = open(self.path, "a", encoding="utf-8")
        self._tb = SummaryWriter(os.path.join(workdir, "tensorboard"))

    def write(self, step: int, values: dict) -> None:
        values = device_memory.with_device_peak(values)
        row = {"step": int(step), **{k: float(v) for k, v in values.items()}}
        with writing(self.path):
            self._file.write(json.dumps(row) + "\n")
            self._file.flush()
        for key, value in values.items():
            self._tb.add_scalar(key, float(value), int(step))

    def close(self) -> None:
        self._file.close()
        self._tb.close()


def format_duration(seconds: float) -> str:
    seconds = int(max(seconds, 0))
    h, rem = divmod(seconds, 3600)
    m, s = divmod(rem, 60)
    return f"{h}h{m:02d}m{s:02d}s" if h else f"{m}m{s:02d}s"


class Progress:
    """`step 100/600 loss 5.123 lr 2.9e-03 | 12.3k tok/s | ETA 3m20s` on stdout."""

    def __init__(self, start_step: int, total_steps: int):
        self.total = total_steps
        self._t0 = time.perf_counter()
        self._s0 = start_step

    def line(self, step: int, values: dict) -> str:
        rate = (step - self._s0) / max(time.perf_counter() - self._t0, 1e-9)
        eta = (self.total - step) / rate if rate > 0 else 0.0
        shown = " ".join(f"{k} {v:.4g}" for k, v in values.items() if k != "tokens_per_sec")
        speed = f" | {values['tokens_per_sec'] / 1e3:.1f}k tok/s" if "tokens_per_sec" in values else ""
        return f"step {step}/{self.total} {shown}{speed} | ETA {format_duration(eta)}"

    def print(self, step: int, values: dict) -> None:
        print(self.line(step, values), file=sys.stdout, flush=True)


class SilentLog:
    """The MetricsLog and Progress of processes other than 0: a multi-host run logs once."""

    def write(self, step: int, values: dict) -> None:
        pass

    def print(self, step: int, values: dict) -> None:
        pass

    def close(self) -> None:
        pass


def console(primary: bool):
    """`print(..., flush=True)` on process 0, nothing elsewhere."""
    return (lambda text: print(text, flush=True)) if primary else (lambda text: None)


class DelayedLog:
    """Holds a step's device metrics until the next step is dispatched, then logs them with the
    host-measured tokens/s since the previous log.

    Only completed work is timed: the clock restarts at the last step known to be complete. When
    the dispatch of step k+1 itself waited for it to finish (a synchronous backend, host
    transfers), step k+1 is counted in the interval that saw it complete — it is never left for
    a next interval of near-zero time (the impossible last-step throughput of issue 15)."""

    def __init__(self, metrics: MetricsLog | SilentLog, progress: Progress | SilentLog, tokens_per_step: int,
                 step: int, clock=time.perf_counter):
        self.metrics, self.progress, self.tokens_per_step, self.clock = metrics, progress, tokens_per_step, clock
        self.pending = None
        self.latest = None  # (step, an output of the latest dispatched step)
        self.rate = None  # tokens/s of the last interval that completed work
        self.restart_clock(step)

    def restart_clock(self, step: int) -> None:
        self.clock_time, self.clock_step = self.clock(), step

    def dispatched(self, step: int, output: jax.Array) -> None:
        self.latest = (step, output)

    def defer(self, step: int, device_metrics: dict) -> None:
        self.pending = (step, device_metrics)

    def flush(self) -> None:
        if self.pending is None:
            return
        step, device_metrics = self.pending
        values = {k: float(v) for k, v in jax.device_get(device_metrics).items()}
        done = step
        if self.latest is not None and self.latest[0] > step and self.latest[1].is_ready():
            done = self.latest[0]
        if done > self.clock_step:
            elapsed = max(self.clock() - self.clock_time, 1e-9)
            self.rate = (done - self.clock_step) * self.tokens_per_step / elapsed
            self.restart_clock(done)
        if self.rate is not None:
            values["tokens_per_sec"] = self.rate
        self.metrics.write(step, values)
        self.progress.print(step, values)
        self.pending = None
