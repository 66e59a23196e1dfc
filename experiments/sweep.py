"""Resumable sweeps of training runs: the machinery shared by the ablation study and the
learning-efficiency benchmark.

Every run is the project's own command line, `python -m muse_jax.main --config <file>
--config.key=value ...`, in a subprocess with its own workdir. A sweep appends one JSON row to
`runs.jsonl` when a run finishes; started again, it skips the runs that have a row and lets an
interrupted run resume from its latest checkpoint (the trainer does that by itself). Each row
records the exact command, the run's metrics, the git commit, the machine and the date.
"""

import dataclasses
import json
import math
import os
import subprocess
import sys
import time

from experiments.provenance import provenance

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """One training run: a unique name, a config file and its `--config.` overrides."""

    name: str
    config: str
    overrides: tuple[tuple[str, object], ...]

    def command(self, workdir: str, data_cache: str) -> list[str]:
        settings = (*self.overrides, ("workdir", workdir), ("data.cache_dir", data_cache))
        return [sys.executable, "-m", "muse_jax.main", f"--config={self.config}",
                *(f"--config.{key}={value}" for key, value in settings)]


def read_jsonl(path: str) -> list[dict]:
    """Rows of a JSONL file; a missing file is empty. A torn last line (a crash mid-write) is
    ignored; a bad line elsewhere is an error naming the file and line."""
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as f:
        lines = f.read().split("\n")
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            rows.append(json.loads(line))
        except json.JSONDecodeError as e:
            if number >= len(lines) - 1:  # the last line, unterminated: a crash while appending
                break
            raise SystemExit(f"error: {path}:{number}: not JSON ({e.msg})")
    return rows


def append_jsonl(path: str, row: dict) -> None:
    """Append one row and make it durable before the sweep goes on."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    with open(path, "a", encoding="utf-8") as f:
        f.write(json.dumps(row, ensure_ascii=False) + "\n")
        f.flush()
        os.fsync(f.fileno())


def run_training(spec: RunSpec, workdir: str, data_cache: str, echo: bool) -> tuple[list[dict], float]:
    """Run (or resume) one training run; returns (its metrics.jsonl rows, wall seconds).

    The child's output goes to `workdir/train.log` (and to stdout with `echo`). A failing run
    stops the sweep with the log's tail; finished runs are kept."""
    os.makedirs(workdir, exist_ok=True)
    log_path = os.path.join(workdir, "train.log")
    start = time.perf_counter()
    with open(log_path, "a", encoding="utf-8") as log:
        child = subprocess.Popen(spec.command(workdir, data_cache), cwd=ROOT, stdout=subprocess.PIPE,
                                 stderr=subprocess.STDOUT, text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
        for line in child.stdout:
            log.write(line)
            if echo:
                print(f"  {spec.name} | {line}", end="", flush=True)
        code = child.wait()
    if code != 0:
        with open(log_path, encoding="utf-8") as f:
            tail = "".join(f.readlines()[-15:])
        raise SystemExit(f"error: run {spec.name} failed (exit {code}); log {log_path}:\n{tail}")
    return read_jsonl(os.path.join(workdir, "metrics.jsonl")), time.perf_counter() - start


def evaluate_on_file(spec: RunSpec, workdir: str, data_cache: str, path: str) -> dict:
    """`--mode=eval --eval_file=path` on a finished run's latest checkpoint: its JSON result."""
    command = [*spec.command(workdir, data_cache), "--mode=eval", f"--eval_file={path}"]
    child = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if child.returncode != 0:
        raise SystemExit(f"error: evaluating run {spec.name} on {path} failed (exit {child.returncode}):\n"
                         f"{child.stderr.strip()[-2000:]}")
    return json.loads(child.stdout.strip().splitlines()[-1])


def run_sweep(specs: list[RunSpec], runs_path: str, workroot: str, data_cache: str, row_of, echo: bool = False,
              after=None) -> list[dict]:
    """Run every spec without a row in `runs_path`; `row_of(spec, metrics_rows)` makes its row
    (command, wall time and provenance are added here), `after(spec, workdir)` (optional) adds
    to it what needs the finished run's workdir. Returns all rows, in spec order."""
    done = {row["name"]: row for row in read_jsonl(runs_path)}
    todo = [s for s in specs if s.name not in done]
    print(f"{len(specs) - len(todo)} of {len(specs)} runs already done ({runs_path})", flush=True)
    started = time.perf_counter()
    for i, spec in enumerate(todo, 1):
        workdir = os.path.join(workroot, spec.name)
        metrics, wall = run_training(spec, workdir, data_cache, echo)
        row = {"name": spec.name, **row_of(spec, metrics), **(after(spec, workdir) if after else {}),
               "wall_s": round(wall, 1),
               "command": " ".join(spec.command(workdir, data_cache)[1:]), "provenance": provenance()}
        append_jsonl(runs_path, row)
        done[spec.name] = row
        elapsed = time.perf_counter() - started
        eta = elapsed / i * (len(todo) - i)
        print(f"[{i}/{len(todo)}] {spec.name}: val_loss {row.get('val_loss', float('nan')):.4f} "
              f"({wall:.0f} s; ETA {eta / 60:.0f} min)", flush=True)
    return [done[s.name] for s in specs]


def eval_rows(metrics: list[dict]) -> list[dict]:
    """The validation rows of a run's metrics.jsonl, in step order."""
    return [r for r in metrics if "val_loss" in r]


def stored_params(metrics: list[dict]) -> int:
    """Stored parameter count from the run's step-0 row."""
    return int(next(r["params_stored"] for r in metrics if "params_stored" in r))


def steps_for_tokens(tokens: int, tokens_per_step: int) -> int:
    return max(1, math.ceil(tokens / tokens_per_step))
