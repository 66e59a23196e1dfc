"""The training loop and the checkpoint-reading modes (eval, generate).

Multi-host: every process runs this same loop (`sharding.initialize_distributed` joins them);
each walks the same data stream and hands its devices only their rows of every batch, so the
data order and the loader's checkpointed position do not depend on the process count. Only
process 0 writes metrics.jsonl, TensorBoard, config.json and the console; every process takes
part in Orbax's sharded checkpoint saves.
"""

import json
import os
import time

import jax
import ml_collections
from jax.experimental import multihost_utils

from muse_jax.config_error import ConfigError
from muse_jax.data.errors import DataError
from muse_jax.data.mixture import train_dataset, validation_tokens
from muse_jax.data.packing import eval_batches, window_batches
from muse_jax.data.prepared import PreparedData, prepared_for_training
from muse_jax.data.settings import DataSettings
from muse_jax.data.tokenizer import load_tokenizer
from muse_jax.generate import Generator
from muse_jax.model.param_count import describe_parameter_counts, parameter_counts
from muse_jax.sampling import SamplingSettings
from muse_jax.train.checkpoint import Checkpointer
from muse_jax.train import device_memory
from muse_jax.train.dry_run import compile_train_step, memory_fields
from muse_jax.train.metrics import MetricsLog, Progress
from muse_jax.train.profiling import StepProfiler
from muse_jax.train.sharding import initialize_distributed
from muse_jax.train.state import TrainSetup
from muse_jax.train.step import TrainState, evaluate


def prepared_once(settings: DataSettings) -> PreparedData:
    """The prepared data; with several processes, process 0 prepares it (when missing) while the
    others wait, then they read it (the data folder must be on a filesystem they share)."""
    if jax.process_count() == 1:
        return prepared_for_training(settings)
    data = prepared_for_training(settings) if jax.process_index() == 0 else None
    multihost_utils.sync_global_devices("muse_jax: data prepared")
    return data or prepared_for_training(settings)


COUNTS = ("steps", "batch_size", "seq_len", "eval_batches", "log_every", "eval_every", "checkpoint_every",
          "keep_checkpoints")


def check_counts(t: ml_collections.ConfigDict) -> None:
    """The train.* counts that size batches or divide step numbers: each must be >= 1."""
    for key in COUNTS:
        if int(t[key]) < 1:
            raise ConfigError(f"train.{key} must be >= 1, got {t[key]}")


class Run:
    """Everything a mode needs, built once from the config: data, model, optimizer, mesh, checkpoints.
    The state exists after `restore_latest()`: restored from the latest checkpoint, or created."""

    def __init__(self, cfg: ml_collections.ConfigDict):
        check_counts(cfg.train)  # before anything is prepared or written
        initialize_distributed()  # before JAX touches a device
        self.cfg = cfg
        self.workdir = cfg.workdir
        self.profiler = StepProfiler(cfg.train, self.workdir, jax.process_index() == 0)
        os.makedirs(self.workdir, exist_ok=True)
        self.seed = int(cfg.seed)
        self.data: PreparedData = prepared_once(DataSettings.from_config(cfg.data, self.workdir))
        self.vocab_size = self.data.vocab_size
        t = cfg.train  # validation reads only the tokens its batches use, once
        self.val_tokens = validation_tokens(self.data, t.eval_batches * t.batch_size * t.seq_len + 1)
        self.steps = int(cfg.train.steps)
        self.setup = TrainSetup(cfg, self.vocab_size)
        self.graphdef, self.train_step = self.setup.graphdef, self.setup.train_step
        self.state: TrainState | None = None
        self.eval_use_ema = bool(cfg.train.eval_use_ema)
        if self.eval_use_ema and self.setup.abstract.ema_params is None:
            raise ConfigError("train.eval_use_ema needs train.ema_decay > 0")
        self.checkpointer = Checkpointer(os.path.join(self.workdir, "checkpoints"), cfg.train.keep_checkpoints)
        self.data_state = None

    def restore_latest(self) -> bool:
        """The state from the latest checkpoint, onto this run's mesh (True), or a new one (False)."""
        step = self.checkpointer.latest_step()
        if step is None:
            self.state = self.setup.create()
            return False
        self.state, self.data_state = self.checkpointer.restore(step, self.setup.abstract)
        return True

    def eval_params(self, state: TrainState):
        """The weights that evaluation and sampling use: the EMA if train.eval_use_ema; in device
        memory (a copy when train.offload_params keeps them on the host)."""
        return self.setup.on_device(state.ema_params if self.eval_use_ema else state.params)

    def validation(self, params, tokens=None) -> dict:
        """Mean loss on the validation split (train.eval_batches batches), or on every window of
        `tokens`."""
        t = self.cfg.train
        if tokens is None:
            batches = eval_batches(self.val_tokens, t.seq_len, t.batch_size, t.eval_batches)
        else:
            batches = window_batches(tokens, t.seq_len, t.batch_size)
        return evaluate(self.setup.eval_step, params, (self.setup.place_batch(b) for b in batches))

    def sample(self, prompt: str) -> str:
        """The prompt and its continuation (prefill, then recurrent decoding: muse_jax/generate.py)."""
        sp = load_tokenizer(self.data.tokenizer_path)
        ids = self.data.prompt_ids(sp, prompt)
        generator = Generator(self.graphdef, SamplingSettings.from_config(self.cfg.sample), self.data.eos_id)
        out = generator.generate(self.eval_params(self.state), [ids], jax.random.fold_in(self.state.rng, 1))
        return prompt + sp.decode(out[0])


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


def train(cfg: ml_collections.ConfigDict, prompt: str) -> dict:
    """Train (resuming from the latest checkpoint in workdir if any), then print a sample."""
    run = Run(cfg)
    t = cfg.train
    run.setup.check_batch_size(t.batch_size)
    resumed = run.restore_latest()
    start = int(run.state.step)
    primary = jax.process_index() == 0
    say = console(primary)
    if primary:
        with open(os.path.join(run.workdir, "config.json"), "w", encoding="utf-8") as f:
            f.write(cfg.to_json(indent=2))
    param_counts = parameter_counts(cfg.model, run.vocab_size)
    say(f"model {cfg.model.kind}: {describe_parameter_counts(param_counts)}; vocab {run.vocab_size}; "
        f"train tokens {run.data.meta['train_tokens']:,}, val tokens {run.data.meta['val_tokens']:,}; "
        f"mesh {dict(run.setup.mesh.shape)} over {jax.process_count()} process(es)")
    say(f"resumed from step {start}" if resumed else "starting from step 0")

    iterator = iter(train_dataset(run.data, t.seq_len, t.batch_size, run.seed))
    if run.data_state is not None:
        iterator.set_state(run.data_state)
    train_step = run.train_step
    log = DelayedLog(MetricsLog(run.workdir, resume_step=start) if primary else SilentLog(),
                     Progress(start, run.steps) if primary else SilentLog(), t.batch_size * t.seq_len, start)
    if not resumed:  # a step-0 row: stored and dense-equivalent parameter counts
        log.metrics.write(start, {f"params_{k}": v for k, v in param_counts.items()})
    state = run.state
    if device_memory.device_peak_gib() is not None:  # an accelerator: the compiled step's prediction beside the measured peaks
        compiled = compile_train_step(run.setup, t.batch_size, t.seq_len)
        log.metrics.write(start, {"device_peak_estimate_gib": memory_fields(compiled)["peak_bytes"] / device_memory.GIB})
        train_step = compiled
    profiler = run.profiler
    if skipped := profiler.skipped_window(start, run.steps):
        say(skipped)
    for step in range(start + 1, run.steps + 1):
        profiler.before_step(step)
        state, metrics = train_step(state, run.setup.place_batch(next(iterator)))
        log.dispatched(step, metrics["loss"])
        profiler.after_step(step, state)
        log.flush()  # the previous step's metrics: reading them now never stalls the device
        if step % t.log_every == 0 or step == run.steps:
            log.defer(step, metrics)
        is_eval = step % t.eval_every == 0 or step == run.steps
        is_save = step % t.checkpoint_every == 0 or step == run.steps
        if is_eval or is_save:
            log.flush()
            if is_eval:
                val = run.validation(run.eval_params(state))
                log.metrics.write(step, val)
                say(f"step {step}: val_loss {val['val_loss']:.4f} val_ppl {val['val_ppl']:.2f}")
            if is_save:
                run.checkpointer.save(step, state, iterator.get_state())
            log.restart_clock(step)
    profiler.stop(state)
    log.metrics.close()
    run.checkpointer.close()
    run.state = state
    final = run.validation(run.eval_params(state))
    say(f"sample: {run.sample(prompt)}")
    return final


def _restored_run(cfg: ml_collections.ConfigDict) -> Run:
    run = Run(cfg)
    if run.checkpointer.latest_step() is None:
        raise SystemExit(f"error: no checkpoint in {os.path.join(cfg.workdir, 'checkpoints')}; train first")
    run.restore_latest()
    return run


def evaluate_checkpoint(cfg: ml_collections.ConfigDict, eval_file: str | None = None) -> dict:
    """Loss of the latest checkpoint on the validation split, or on every window of `eval_file`
    (a UTF-8 text, one document: `PreparedData.text_file_ids`); printed as one JSON line."""
    run = _restored_run(cfg)
    if eval_file is None:
        result = run.validation(run.eval_params(run.state))
    else:
        tokens = run.data.text_file_ids(load_tokenizer(run.data.tokenizer_path), eval_file)
        seq_len = cfg.train.seq_len
        if len(tokens) < seq_len + 1:
            raise DataError(f"{eval_file}: {len(tokens)} tokens, too few for one window of train.seq_len + 1 = "
                            f"{seq_len + 1}")
        result = {"eval_file": eval_file, "targets": (len(tokens) - 1) // seq_len * seq_len,
                  **run.validation(run.eval_params(run.state), tokens)}
    result = {"step": int(run.state.step), **result}
    if jax.process_index() == 0:
        print(json.dumps(result, ensure_ascii=False))
    return result


def generate_from_checkpoint(cfg: ml_collections.ConfigDict, prompt: str) -> str:
    text = _restored_run(cfg).sample(prompt)
    print(text)
    return text
