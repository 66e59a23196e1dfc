"""The training loop and the checkpoint-reading modes (eval, generate)."""

import json
import os
import time

import jax
import ml_collections
from flax import nnx

from muse_jax.data.mixture import train_dataset, validation_tokens
from muse_jax.data.packing import eval_batches
from muse_jax.data.prepared import PreparedData, prepared_for_training
from muse_jax.data.settings import DataSettings
from muse_jax.data.tokenizer import load_tokenizer
from muse_jax.generate import generate_tokens
from muse_jax.model.lm import build_model
from muse_jax.model.param_count import describe_parameter_counts, parameter_counts
from muse_jax.train.checkpoint import Checkpointer
from muse_jax.train.metrics import MetricsLog, Progress
from muse_jax.train.optimizer import build_optimizer
from muse_jax.train.step import TrainState, evaluate, make_eval_step, make_train_step


class Run:
    """Everything a mode needs, built once from the config: data, model, optimizer, checkpoints."""

    def __init__(self, cfg: ml_collections.ConfigDict):
        self.cfg = cfg
        self.workdir = cfg.workdir
        os.makedirs(self.workdir, exist_ok=True)
        self.seed = int(cfg.seed)
        self.data: PreparedData = prepared_for_training(DataSettings.from_config(cfg.data, self.workdir))
        self.vocab_size = self.data.vocab_size
        t = cfg.train  # validation reads only the tokens its batches use, once
        self.val_tokens = validation_tokens(self.data, t.eval_batches * t.batch_size * t.seq_len + 1)
        model = build_model(cfg, self.vocab_size, nnx.Rngs(self.seed))
        self.graphdef, state = nnx.split(model)
        params = nnx.to_pure_dict(state)
        self.steps = int(cfg.train.steps)
        self.tx = build_optimizer(cfg.optim, self.steps, self.seed)
        init_state, self.train_step = make_train_step(self.graphdef, self.tx, cfg.train)
        self.state: TrainState = init_state(params, jax.random.PRNGKey(self.seed))
        self.eval_use_ema = bool(cfg.train.eval_use_ema)
        if self.eval_use_ema and self.state.ema_params is None:
            raise ValueError("train.eval_use_ema needs train.ema_decay > 0")
        self.checkpointer = Checkpointer(os.path.join(self.workdir, "checkpoints"), cfg.train.keep_checkpoints)
        self.data_state = None

    def restore_latest(self) -> bool:
        step = self.checkpointer.latest_step()
        if step is None:
            return False
        self.state, self.data_state = self.checkpointer.restore(step, self.state)
        return True

    def eval_params(self, state: TrainState):
        """The weights that evaluation and sampling use: the EMA if train.eval_use_ema."""
        return state.ema_params if self.eval_use_ema else state.params

    def validation(self, params) -> dict:
        t = self.cfg.train
        batches = eval_batches(self.val_tokens, t.seq_len, t.batch_size, t.eval_batches)
        return evaluate(make_eval_step(self.graphdef), params, batches)

    def sample(self, prompt: str) -> str:
        s = self.cfg.sample
        sp = load_tokenizer(self.data.tokenizer_path)
        ids = [self.data.eos_id] + sp.encode(prompt)  # documents are EOS-separated in training
        key = jax.random.fold_in(self.state.rng, 1)
        out = generate_tokens(self.graphdef, self.eval_params(self.state), ids, s.max_new_tokens, key,
                              s.temperature, s.top_k, s.top_p)
        return prompt + sp.decode(out)


class DelayedLog:
    """Holds a step's device metrics until the next step is dispatched, then logs them with
    the host-measured tokens/s since the previous log."""

    def __init__(self, metrics: MetricsLog, progress: Progress, tokens_per_step: int, step: int):
        self.metrics, self.progress, self.tokens_per_step = metrics, progress, tokens_per_step
        self.pending = None
        self.restart_clock(step)

    def restart_clock(self, step: int) -> None:
        self.clock_time, self.clock_step = time.perf_counter(), step

    def defer(self, step: int, device_metrics: dict) -> None:
        self.pending = (step, device_metrics)

    def flush(self) -> None:
        if self.pending is None:
            return
        step, device_metrics = self.pending
        values = {k: float(v) for k, v in jax.device_get(device_metrics).items()}
        now = time.perf_counter()
        values["tokens_per_sec"] = (step - self.clock_step) * self.tokens_per_step / max(now - self.clock_time, 1e-9)
        self.restart_clock(step)
        self.metrics.write(step, values)
        self.progress.print(step, values)
        self.pending = None


def train(cfg: ml_collections.ConfigDict, prompt: str) -> dict:
    """Train (resuming from the latest checkpoint in workdir if any), then print a sample."""
    run = Run(cfg)
    t = cfg.train
    resumed = run.restore_latest()
    start = int(run.state.step)
    with open(os.path.join(run.workdir, "config.json"), "w", encoding="utf-8") as f:
        f.write(cfg.to_json(indent=2))
    param_counts = parameter_counts(cfg.model, run.vocab_size)
    print(f"model {cfg.model.kind}: {describe_parameter_counts(param_counts)}; vocab {run.vocab_size}; "
          f"train tokens {run.data.meta['train_tokens']:,}, val tokens {run.data.meta['val_tokens']:,}", flush=True)
    print(f"resumed from step {start}" if resumed else "starting from step 0", flush=True)

    iterator = iter(train_dataset(run.data, t.seq_len, t.batch_size, run.seed))
    if run.data_state is not None:
        iterator.set_state(run.data_state)
    train_step = run.train_step
    log = DelayedLog(MetricsLog(run.workdir, resume_step=start), Progress(start, run.steps),
                     t.batch_size * t.seq_len, start)
    if not resumed:  # a step-0 row: stored and dense-equivalent parameter counts
        log.metrics.write(start, {f"params_{k}": v for k, v in param_counts.items()})
    state = run.state
    for step in range(start + 1, run.steps + 1):
        state, metrics = train_step(state, next(iterator))
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
                print(f"step {step}: val_loss {val['val_loss']:.4f} val_ppl {val['val_ppl']:.2f}", flush=True)
            if is_save:
                run.checkpointer.save(step, state, iterator.get_state())
            log.restart_clock(step)
    log.metrics.close()
    run.checkpointer.close()
    run.state = state
    final = run.validation(run.eval_params(state))
    print(f"sample: {run.sample(prompt)}", flush=True)
    return final


def _restored_run(cfg: ml_collections.ConfigDict) -> Run:
    run = Run(cfg)
    if not run.restore_latest():
        raise SystemExit(f"error: no checkpoint in {os.path.join(cfg.workdir, 'checkpoints')}; train first")
    return run


def evaluate_checkpoint(cfg: ml_collections.ConfigDict) -> dict:
    run = _restored_run(cfg)
    result = {"step": int(run.state.step), **run.validation(run.eval_params(run.state))}
    print(json.dumps(result))
    return result


def generate_from_checkpoint(cfg: ml_collections.ConfigDict, prompt: str) -> str:
    text = _restored_run(cfg).sample(prompt)
    print(text)
    return text
