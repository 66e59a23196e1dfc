"""`--mode=train`: train, resuming from the latest checkpoint in the workdir, then print a sample.

Only process 0 writes metrics.jsonl, TensorBoard, config.json and the console; every process
takes part in Orbax's sharded checkpoint saves.
"""

import jax

from muse_jax.model.param_count import describe_parameter_counts, parameter_counts
from muse_jax.modes.generate import Sampler
from muse_jax.settings import Settings
from muse_jax.train import device_memory
from muse_jax.train.dry_run import compile_train_step, memory_fields
from muse_jax.train.metrics import DelayedLog, MetricsLog, Progress, SilentLog, console
from muse_jax.train.profiling import StepProfiler
from muse_jax.train.run import Run
from muse_jax.train.workdir_config import record_start


def train(settings: Settings, prompt: str, config_json: str = "") -> dict:
    """Train (resuming from the latest checkpoint in the workdir if any), then print a sample.
    `config_json`: the config as given, written to workdir/config.json and, per start, to
    workdir/configs/ (`train/workdir_config.py`)."""
    run = Run(settings)
    t = settings.train
    resumed = run.restore_latest()
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
    for step in range(start + 1, t.steps + 1):
        profiler.before_step(step)
        state, metrics = train_step(state, run.setup.place_batch(next(iterator)))
        log.dispatched(step, metrics["loss"])
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
            if is_save:
                run.checkpointer.save(step, state, iterator.get_state())
            log.restart_clock(step)
    profiler.stop(state)
    log.metrics.close()
    run.checkpointer.close()
    run.state = state
    params = run.eval_params(state)
    final = run.validation(params)
    if run.data is not None:  # a synthetic task has no text to sample
        say(f"sample: {Sampler(run.setup, params, run.data, settings).complete(prompt)}")
    return final
