"""Kill a short training run at random moments, corrupt its checkpoints, and check that nothing
is lost (issue 19).

    python -m experiments.fault_soak                      # → results/fault_soak.json
    python -m experiments.fault_soak --kills 3 --flips 1 --steps 60 --out /tmp/soak.json   # quick

1. The data is prepared and a first run fills the XLA cache; then the reference run goes
   uninterrupted (its start-up time S, to the first metrics row, bounds the start-up kills).
2. The same run in another workdir, started again and again, each start killed by SIGKILL or
   SIGTERM (chosen at random; SIGTERM must end it with 143 after saving, or earlier during
   start-up) at a random moment: a third during start-up (a delay up to S: import, data,
   restore, compile), the rest once a random step up to 2·steps/kills past the newest
   checkpoint has logged, plus up to three steps' time (in a step or a save), until `--kills`
   starts were killed. After `--flips` of
   the kills, 1–64 random bytes of a random file of the newest checkpoint are flipped: a later
   start must set that step aside (`checkpoints_unusable/`) and resume from the one before.
   Then one last start runs to the end.
3. Checks: every metrics row (loss, lr, grad norms, val_loss, ...; not tokens/s) equals the
   reference's; every checkpoint left (all are kept) restores with finite values and matches its
   checksum manifest; every corruption was detected.
"""

import argparse
import collections
import glob
import json
import os
import random
import signal
import subprocess
import time

from experiments.provenance import write_json
from experiments.sweep import ROOT, RunSpec, read_jsonl

EXPECTED_EXITS = {0, 143, -signal.SIGKILL, -signal.SIGTERM}  # finished, SIGTERM handled, killed
NOT_COMPARED = ("tokens_per_sec", "device_peak_gib", "device_peak_estimate_gib")


def run_spec(args) -> RunSpec:
    return RunSpec("soak", os.path.join(ROOT, "configs", "tiny_ja.py"), (
        ("model.d_model", args.d_model), ("model.n_layers", 1), ("model.bk.channels", 8), ("data.vocab_size", 1024),
        ("train.steps", args.steps), ("train.batch_size", 4), ("train.seq_len", 32), ("train.log_every", 1),
        ("train.eval_every", args.eval_every), ("train.eval_batches", 2), ("train.checkpoint_every", args.checkpoint_every),
        ("train.keep_checkpoints", args.steps), ("optim.warmup_steps", 10), ("sample.max_new_tokens", 4)))


def start(spec: RunSpec, workdir: str, workroot: str, log_path: str) -> subprocess.Popen:
    env = {**os.environ, "PYTHONUNBUFFERED": "1", "JAX_COMPILATION_CACHE_DIR": os.path.join(workroot, "xla_cache"),
           "JAX_PERSISTENT_CACHE_MIN_COMPILE_TIME_SECS": "0"}
    log = open(log_path, "w", encoding="utf-8")
    return subprocess.Popen(spec.command(workdir, os.path.join(workroot, "data_cache")), cwd=ROOT, env=env,
                            stdout=log, stderr=subprocess.STDOUT, text=True)


def timed_run(spec: RunSpec, workdir: str, workroot: str) -> tuple[float, float]:
    """Runs to the end: (wall seconds, seconds to the first metrics row)."""
    t0, first_row = time.perf_counter(), None
    log = f"{workdir}.log"
    child = start(spec, workdir, workroot, log)
    while child.poll() is None:
        if first_row is None and any("loss" in r for r in read_jsonl(os.path.join(workdir, "metrics.jsonl"))):
            first_row = time.perf_counter() - t0
        time.sleep(0.05)
    if child.returncode != 0:
        raise SystemExit(f"error: {os.path.basename(workdir)} failed (exit {child.returncode}): {log}")
    total = time.perf_counter() - t0
    return total, first_row or total


def reference_run(spec: RunSpec, workroot: str) -> tuple[float, float]:
    """Prepares the data, fills the XLA cache with a first run, then times the reference run as
    every soak start will go (data prepared, steps compiled): (wall seconds, start-up seconds)."""
    prepare = subprocess.run([*spec.command(os.path.join(workroot, "reference"), os.path.join(workroot, "data_cache")),
                              "--mode=prepare"], cwd=ROOT, capture_output=True, text=True)
    if prepare.returncode != 0:
        raise SystemExit(f"error: preparing the data failed: {prepare.stderr.strip()[-2000:]}")
    timed_run(spec, os.path.join(workroot, "warm_up"), workroot)
    return timed_run(spec, os.path.join(workroot, "reference"), workroot)


def flip_random_bytes(workdir: str, rng: random.Random) -> dict | None:
    """Flips 1–64 random bytes of a random file of the newest checkpoint; None if there is none."""
    steps = sorted(int(os.path.basename(p)) for p in glob.glob(os.path.join(workdir, "checkpoints", "*"))
                   if os.path.basename(p).isdigit())
    if not steps:
        return None
    step_dir = os.path.join(workdir, "checkpoints", str(steps[-1]))
    files = sorted(p for p in glob.glob(os.path.join(step_dir, "**"), recursive=True) if os.path.isfile(p))
    path = rng.choice(files)
    data = bytearray(open(path, "rb").read())
    count = rng.randint(1, 64)
    for _ in range(count if data else 0):
        data[rng.randrange(len(data))] ^= rng.randint(1, 255)
    if not data:
        data = bytearray(b"\x00")  # an empty file: a byte more is a change too
    open(path, "wb").write(bytes(data))
    return {"step": steps[-1], "file": os.path.relpath(path, step_dir), "bytes_flipped": count}


def logged_step(workdir: str) -> int:
    """The last step with a metrics row (0 before the first)."""
    return max((r["step"] for r in read_jsonl(os.path.join(workdir, "metrics.jsonl"))), default=0)


def newest_checkpoint(workdir: str) -> int:
    directory = os.path.join(workdir, "checkpoints")
    return max((int(n) for n in os.listdir(directory) if n.isdigit()), default=0) if os.path.isdir(directory) else 0


def kill_moment(rng: random.Random, workdir: str, steps: int, kills: int, timing: tuple[float, float]) -> tuple:
    """A third of the kills in the start-up (import, data, restore, compile: a delay up to the
    reference's start-up), the rest once a random step up to 2·steps/kills past the newest
    checkpoint has logged (so the kills spread over the whole run), plus up to three steps' time
    (so some land in the next step, or in a save)."""
    total, startup = timing
    resume = newest_checkpoint(workdir)
    if rng.random() < 1 / 3 or resume >= steps - 1:
        return ("after", round(rng.uniform(0.2, startup), 3))
    return ("step", resume + rng.randint(1, min(max(1, 2 * steps // kills), steps - 1 - resume)),
            round(rng.uniform(0.0, 3 * (total - startup) / steps), 3))


def run_once(child: subprocess.Popen, signum: int | None, moment: tuple, workdir: str,
             timeout: float) -> tuple[int, bool]:
    """Sends `signum` at `moment` — ("after", seconds) or ("step", step, then seconds) — if the
    child still runs; (exit status, whether the signal was sent). A child that outlives its
    signal by `timeout` seconds is killed."""
    t0 = time.perf_counter()
    while signum is not None and child.poll() is None:
        if moment[0] == "after" and time.perf_counter() - t0 >= moment[1]:
            break
        if moment[0] == "step" and logged_step(workdir) >= moment[1]:
            time.sleep(moment[2])
            break
        time.sleep(0.05)
    sent = signum is not None and child.poll() is None
    if sent:
        child.send_signal(signum)
    try:
        return child.wait(timeout=timeout), sent
    except subprocess.TimeoutExpired:
        child.kill()
        return child.wait(), sent


def soak(spec: RunSpec, args, workroot: str, timing: tuple[float, float]) -> dict:
    """The kills and flips of step 2. A flip waits until the previous one was detected (a start
    set its step aside), so each set-aside step answers exactly one flip. A start that finishes
    before its kill ends the soak early (too few --steps for the kills)."""
    rng = random.Random(args.seed)
    workdir = os.path.join(workroot, "soak")
    unusable = os.path.join(workdir, "checkpoints_unusable")
    flip_after = set(rng.sample(range(args.kills), min(args.flips, args.kills)))
    kills, exits, unexpected, flips = collections.Counter(), collections.Counter(), [], []
    owed, outstanding, set_aside, attempt = 0, None, 0, 0
    while True:
        made = sum(kills.values())
        signum = rng.choice([signal.SIGKILL, signal.SIGTERM]) if made < args.kills else None
        log_path = os.path.join(workroot, "attempts", f"{attempt:03d}.log")
        moment = kill_moment(rng, workdir, args.steps, args.kills, timing)
        code, sent = run_once(start(spec, workdir, workroot, log_path), signum, moment, workdir, args.timeout)
        exits[str(code)] += 1
        if sent:
            kills[signal.Signals(signum).name] += 1
        if code not in EXPECTED_EXITS or (not sent and code != 0):
            unexpected.append({"attempt": attempt, "exit": code, "log": log_path})
        now_aside = len(os.listdir(unusable)) if os.path.isdir(unusable) else 0
        if outstanding is not None and now_aside > set_aside:
            outstanding["detected_by_attempt"], outstanding = attempt, None
        set_aside = now_aside
        print(f"attempt {attempt}: {signal.Signals(signum).name if sent else 'no signal'} at {moment}, exit {code}; "
              f"flips {len(flips)}", flush=True)
        if not sent:
            break
        owed += made in flip_after
        if owed and outstanding is None:
            outstanding = flip_random_bytes(workdir, rng)
            if outstanding is not None:
                flips.append(outstanding)
                owed -= 1
        attempt += 1
    for f in flips:
        f["detected"] = "detected_by_attempt" in f
    return {"kills": dict(kills), "exit_codes": dict(exits), "unexpected_exits": unexpected, "flips": flips,
            "flips_not_made": owed}


def comparable(rows: list[dict]) -> dict:
    """{(step, keys): values} of every metrics row, without the timing fields."""
    out = {}
    for r in rows:
        values = {k: v for k, v in r.items() if k not in NOT_COMPARED and k != "step"}
        out[(r["step"], tuple(sorted(values)))] = values
    return out


def checkpoint_checks(spec: RunSpec, workdir: str, workroot: str) -> dict:
    """Every checkpoint left: restored, all values finite, files as in its manifest."""
    from configs.tiny_ja import get_config
    from muse_jax.settings import Settings
    from muse_jax.train.checkpoint import all_finite
    from muse_jax.train.checksums import manifest_problem
    from muse_jax.train.run import Run

    cfg = get_config()
    for key, value in (*spec.overrides, ("workdir", workdir), ("data.cache_dir", os.path.join(workroot, "data_cache"))):
        *path, leaf = key.split(".")
        node = cfg
        for part in path:
            node = node[part]
        node[leaf] = value
    run = Run(Settings.from_config(cfg))
    steps = run.checkpointer.steps()
    non_finite = [s for s in steps if not all_finite(run.checkpointer.restore(s, run.setup.abstract)[0])]
    mismatched = [s for s in steps if manifest_problem(run.checkpointer.step_dir(s)) is not None]
    return {"checkpoints_checked": len(steps), "nan_checkpoints_written": len(non_finite),
            "manifest_mismatches": len(mismatched)}


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m experiments.fault_soak", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kills", type=int, default=20)
    p.add_argument("--flips", type=int, default=5)
    p.add_argument("--steps", type=int, default=300)
    p.add_argument("--checkpoint-every", type=int, default=10)
    p.add_argument("--eval-every", type=int, default=50)
    p.add_argument("--d-model", type=int, default=32)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--timeout", type=float, default=600.0, help="seconds a start may take after its signal")
    p.add_argument("--workroot", default=os.path.join(ROOT, "workdirs", "fault_soak"))
    p.add_argument("--out", default=os.path.join(ROOT, "results", "fault_soak.json"))
    args = p.parse_args()
    if os.path.exists(os.path.join(args.workroot, "soak")) or os.path.exists(os.path.join(args.workroot, "reference")):
        raise SystemExit(f"error: {args.workroot} holds an earlier soak; remove it or pass another --workroot")
    os.makedirs(os.path.join(args.workroot, "attempts"))
    spec = run_spec(args)
    total, startup = reference_run(spec, args.workroot)
    print(f"reference: {total:.1f} s, first row after {startup:.1f} s", flush=True)
    result = soak(spec, args, args.workroot, (total, startup))
    reference = comparable(read_jsonl(os.path.join(args.workroot, "reference", "metrics.jsonl")))
    soaked = comparable(read_jsonl(os.path.join(args.workroot, "soak", "metrics.jsonl")))
    checks = checkpoint_checks(spec, os.path.join(args.workroot, "soak"), args.workroot)
    kills = sum(v for k, v in result["kills"].items() if k.startswith("SIG"))
    report = {
        "config": {"command": " ".join(spec.command("<workdir>", "<data_cache>")[1:]), "seed": args.seed},
        "reference": {"seconds": round(total, 1), "first_row_seconds": round(startup, 1)},
        "kills": kills, "kills_by_signal": result["kills"], "exit_codes": result["exit_codes"],
        "kills_survived": kills if not result["unexpected_exits"] and soaked == reference else None,
        "unexpected_exits": result["unexpected_exits"],
        "corruptions": len(result["flips"]), "corruptions_detected": sum(f["detected"] for f in result["flips"]),
        "corruptions_not_made": result["flips_not_made"],
        "corruption_details": result["flips"],
        "final_metrics_equal": soaked == reference, "metrics_rows_compared": len(reference),
        **checks,
    }
    write_json(args.out, report)
    print(json.dumps({k: v for k, v in report.items() if k != "corruption_details"}, indent=1))
    ok = (report["final_metrics_equal"] and not report["unexpected_exits"] and checks["nan_checkpoints_written"] == 0
          and report["corruptions_detected"] == report["corruptions"] and checks["manifest_mismatches"] == 0)
    raise SystemExit(0 if ok else 1)


if __name__ == "__main__":
    main()
