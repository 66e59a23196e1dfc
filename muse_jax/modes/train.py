"""`--mode=train`: train, resuming from the latest checkpoint in the workdir, then print a sample.

Only process 0 writes metrics.jsonl, TensorBoard, config.json and the console, and holds the
workdir's lock; every process takes part in Orbax's sharded checkpoint saves. Faults (README
"Fault tolerance"): the newest usable checkpoint is resumed from, `train.max_skipped_in_a_row`
skipped steps in a row stop the run (exit 3) without saving, SIGTERM / SIGINT finish the step
and save it (exit 143 / 130).
"""

import contextlib
import signal

import jax
import optax

from muse_jax.model.param_count import describe_parameter_counts, parameter_counts
from muse_jax.modes.generate import Sampler
from muse_jax.settings import Settings
from muse_jax.train import device_memory
from muse_jax.train.divergence import SkipStreak
from muse_jax.train.dry_run import compile_train_step, memory_fields
from muse_jax.train.errors import Diverged, Interrupted
from muse_jax.train.metrics import DelayedLog, MetricsLog, Progress, SilentLog, console
from muse_jax.train.preemption import StopSignals
from muse_jax.train.profiling import StepProfiler
from muse_jax.train.run import Run
from muse_jax.train.sharding import initialize_distributed
from muse_jax.train.workdir_config import record_start
from muse_jax.train.workdir_lock import WorkdirLock


def train(settings: Settings, prompt: str, config_json: str = "") -> dict:
    """Train (resuming from the latest checkpoint in the workdir if any), then print a sample.
    `config_json`: the config as given, written to workdir/config.json and, per start, to
    workdir/configs/ (`train/workdir_config.py`). Process 0 holds the workdir's lock throughout
    (`WorkdirBusy` if another run holds it)."""
    initialize_distributed()
    with WorkdirLock(settings.workdir) if jax.process_index() == 0 else contextlib.nullcontext():
        return train_locked(settings, prompt, config_json)


def train_locked(settings: Settings, prompt: str, config_json: str) -> dict:
    run = Run(settings)
    t = settings.train
    resumed = run.restore_latest(set_aside=True)
    start = int(run.state.step)
    primary = jax.process_index() == 0
    say = console(primary)
    if primary and config_json:
        record_start(run.workdir, start, config_json)
    param_counts = parameter_counts(settings.model, run.vocab_size)
    say(f"model {settings.model.kind}: {describe_parameter_counts(param_counts)}; vocab {run.vocab_size}; "
        f"{run.describe_data()}; mesh {dict(run.setup.mesh.shape)} over {jax.process_count()} process(es)")
    say(f"resumed from step {start}" if resumed else "starting from step 0")
    if start >= t.steps:
        say(f"nothing to train: the latest checkpoint is at step {start} and train.steps is {t.steps} "
            "(raise train.steps to train further); sampling only")

    iterator = run.train_batches()
    if run.data_state is not None:
        iterator.set_state(run.data_state)
    train_step = run.setup.train_step
    log = DelayedLog(MetricsLog(run.workdir, resume_step=start) if primary else SilentLog(),
                     Progress(start, t.steps) if primary else SilentLog(), t.tokens_per_step, start)
    if not resumed:  # a step-0 row: stored and dense-equivalent parameter counts
        log.metrics.write(start, {f"params_{k}": v for k, v in param_counts.items()})
    state = run.state
    if device_memory.device_peak_gib() is not None:  # an accelerator: the compiled step's prediction beside the measured peaks
        compiled = compile_train_step(run.setup, t.batch_size, t.seq_len)
        log.metrics.write(start, {"device_peak_estimate_gib": memory_fields(compiled)["peak_bytes"] / device_memory.GIB})
        train_step = compiled
    profiler = StepProfiler(t, run.workdir, primary)
    if skipped := profiler.skipped_window(start, t.steps):
        say(skipped)
    streak = SkipStreak(t.max_skipped_in_a_row, int(optax.tree.get(state.opt_state, "skipped_steps")))
    saved = start if resumed else None

    def close():
        log.flush()
        log.metrics.close()
        run.checkpointer.close()

    def stop(error: Exception):
        close()
        return error

    final = None  # the validation at train.steps, once the loop has run it

    with StopSignals(agree_every=t.log_every) as signals:
        for step in range(start + 1, t.steps + 1):
            profiler.before_step(step)
            state, metrics = train_step(state, run.setup.place_batch(next(iterator)))
            log.dispatched(step, metrics["loss"])
            diverged = streak.dispatched(step, metrics["skipped_steps"])
            if diverged is None and step == t.steps:
                diverged = streak.finish()
            if diverged is not None:
                raise stop(diverged_error(t.max_skipped_in_a_row, diverged, saved))
            profiler.after_step(step, state)
            log.flush()  # the previous step's metrics: reading them now never stalls the device
            if step % t.log_every == 0 or step == t.steps:
                log.defer(step, metrics)
            is_eval = step % t.eval_every == 0 or step == t.steps
            is_save = step % t.checkpoint_every == 0 or step == t.steps
            if is_eval or is_save:
                log.flush()
                if is_eval:
                    val = run.validation(run.eval_params(state))
                    log.metrics.write(step, val)
                    accuracy = f" val_accuracy {val['val_accuracy']:.4f}" if "val_accuracy" in val else ""
                    say(f"step {step}: val_loss {val['val_loss']:.4f} val_ppl {val['val_ppl']:.2f}{accuracy}")
                    final = val if step == t.steps else None
                if is_save:
                    run.checkpointer.save(step, state, iterator.get_state())
                    saved = step
                log.restart_clock(step)
            if (signum := signals.requested(step)) is not None:
                if saved != step:
                    run.checkpointer.save(step, state, iterator.get_state())
                raise stop(Interrupted(f"{signal.Signals(signum).name}: stopped after step {step}, its checkpoint "
                                       "saved; the same command resumes", signum))
    profiler.stop(state)
    close()
    run.state = state
    params = run.eval_params(state)
    if final is None:  # nothing left to train: the checkpoint's validation
        final = run.validation(params)
    if run.data is not None:  # a synthetic task has no text to sample
        say(f"sample: {Sampler(run.setup, params, run.data, settings).complete(prompt)}")
    return final


def diverged_error(limit: int, step: int, saved: int | None) -> Diverged:
    last = f"the last checkpoint is step {saved}" if saved is not None else "no checkpoint was saved"
    return Diverged(f"diverged: {limit} optimizer steps in a row skipped up to step {step} (non-finite or "
                    f"spiking gradient, loss or update); stopped without saving ({last}). Lower the learning "
                    "rate, or raise train.max_skipped_in_a_row")
