"""Tiny Japanese ResNet-BK: the demo configuration (about 10 minutes on 2 CPU cores; longer when they are shared).

Trains on the demo corpus bundled in `muse_jax/data/demo_corpus/`. Every key below is
read by exactly one place in the code; the config is locked, so an unknown key is an error.
"""

import os

import ml_collections

# The demo corpus as a manifest (README "Data"); prepared automatically on the first run.
DEMO_MANIFEST = os.path.join(os.path.dirname(os.path.abspath(__file__)), "manifest_ja_demo.json")


def get_config() -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.workdir = "workdirs/tiny_ja"
    c.seed = 0

    c.model = ml_collections.ConfigDict()
    c.model.kind = "bk"  # bk | transformer
    c.model.d_model = 128
    c.model.n_layers = 4
    c.model.ffn_mult = 3  # hidden width of the gated MLP = ffn_mult * d_model
    c.model.n_heads = 4  # transformer only
    c.model.attention_impl = "auto"  # auto | xla | cudnn: transformer attention (auto: cuDNN flash on GPU with bf16/fp16)
    c.model.output_mult = 4.0  # α of the tied head: logits = α h·E/d_model (euclidean, htt; μP read-out, docs/architecture.md)
    c.model.embedding = "euclidean"  # euclidean | hyperbolic | htt | hyperbolic_htt (tied head; docs/architecture.md)
    c.model.hyperbolic_c_min = 0.1  # hyperbolic*: ball curvature c = c_min + softplus(rho) >= c_min
    c.model.htt_rank = 16  # htt, hyperbolic_htt: tensor-train rank of the V x D embedding table
    c.model.low_rank = 0  # rank r of every block linear where r(d_in + d_out) < d_in d_out; 0 = dense
    c.model.ternary = False  # block linears use BitNet b1.58 absmean-ternary weights (straight-through)
    c.model.router = "none"  # none | scattering | learned: FFN = one gated MLP, or n_experts routed experts
    c.model.n_experts = 4  # scattering, learned: number of experts
    c.model.router_top_k = 1  # learned: experts per token
    c.model.router_balance_weight = 0.01  # learned: weight of the load-balancing loss added to the loss
    c.model.bk = ml_collections.ConfigDict()
    c.model.bk.channels = 64  # C resolvent channels per layer
    c.model.bk.lap_eta = 0.05  # > 0: Im z_c = lap_eta + softplus(rho_c) >= lap_eta (LAP); <= 0: Im z_c free
    c.model.bk.prime_bump = False  # Re z_c at the quantiles of the prime-bump potential instead of linspace
    c.model.bk.semiseparable = False  # also mix values with the full causal resolvent (O(N) scan)
    c.model.bk.scan_impl = "auto"  # auto | chunked | sequential | associative | pallas (auto: per backend, never pallas; muse_jax/model/bk_scan.py)

    c.data = ml_collections.ConfigDict()  # README "Data": manifest format, prepare, mixing
    c.data.manifest = DEMO_MANIFEST  # JSON/YAML list of sources {kind, path (file or glob), weight}
    c.data.sources = ()  # files used instead of the manifest: .jsonl as wikipedia, .txt as cc100, weight 1
    c.data.out_dir = ""  # prepared data; "" = <cache_dir>/prepared-<hash of inputs>, prepared on first use
    c.data.cache_dir = ""  # automatic out_dirs, shared by all workdirs; "" = $MUSE_JAX_CACHE_DIR or ~/.cache/muse_jax
    c.data.vocab_size = 4096  # SentencePiece pieces when training one (32768 for real corpora)
    c.data.tokenizer_path = ""  # an existing SentencePiece .model instead of training one
    c.data.tokenizer_sample_lines = 300_000  # tokenizer trained on a reservoir sample of this many lines
    c.data.val_fraction = 0.05  # share of documents in validation, chosen by a hash of the text
    c.data.normalize_nfkc = True  # Unicode NFKC (full-width ASCII -> ASCII, half-width kana -> full-width)
    c.data.min_chars = 16  # documents shorter than this after cleaning are dropped
    c.data.on_error = "raise"  # raise | skip: a bad line stops prepare, or is skipped and counted
    c.data.workers = 0  # tokenising processes; 0 = all cores, 1 = no extra process
    c.data.synthetic = ""  # "" = the corpus | mqar | passkey: a generated recall task instead (docs/long_context.md)
    c.data.mqar = ml_collections.ConfigDict()  # multi-query associative recall (muse_jax/data/synthetic.py)
    c.data.mqar.num_pairs = 8  # key-value pairs at the start of each sequence, each asked once later
    c.data.mqar.vocab_size = 128  # model vocabulary: token 0 blank, keys 1..K, values K+1..2K, K = (vocab_size-1)//2
    c.data.passkey = ml_collections.ConfigDict()  # passkey retrieval: a number hidden in random filler
    c.data.passkey.digits = 5  # digits of the passkey (the answer tokens)
    c.data.passkey.depth = -1.0  # where the key sits in the filler, 0 = start .. 1 = end; -1 = uniform per sequence
    c.data.passkey.vocab_size = 64  # model vocabulary: 1..10 digits, 11/12 markers, 13.. filler

    c.train = ml_collections.ConfigDict()
    c.train.steps = 600  # optimizer steps
    c.train.batch_size = 16  # sequences per optimizer step, all micro-batches together
    c.train.grad_accum_steps = 1  # 1..64 micro-batches of batch_size/grad_accum_steps, scanned in one jitted step
    c.train.seq_len = 128
    c.train.remat_policy = "none"  # none | full | minimal | offload (muse_jax/model/remat.py)
    c.train.offload_params = False  # params (and EMA) live in pinned host memory between steps (README "The 8 GB plan")
    c.train.offload_optimizer = False  # optimizer state lives in pinned host memory between steps
    c.train.param_dtype = "float32"  # float32 | bfloat16: stored layer weights (and so their optimizer state)
    c.train.compute_dtype = "auto"  # auto | float32 | bfloat16: forward/backward; auto = bfloat16 on GPU/TPU, float32 on CPU
    #                                  (BK resolvent complex64, logits and loss float32 whatever the choice)
    c.train.loss_chunk_tokens = 0  # > 0: tied head + loss over chunks of ~this many tokens, rematerialised (0 = off)
    c.train.label_smoothing = 0.0  # α: targets (1-α)·onehot + α/V; the logged loss stays the plain NLL
    c.train.ema_decay = 0.0  # EMA of params kept in the train state (checkpointed); 0 = off
    c.train.eval_use_ema = False  # evaluate and sample with the EMA params (needs ema_decay > 0)
    c.train.log_every = 25  # optimizer steps between metrics.jsonl rows
    c.train.eval_every = 200
    c.train.eval_batches = 8
    c.train.checkpoint_every = 200
    c.train.keep_checkpoints = 2  # the newest checkpoints kept (older verified ones are deleted, unusable ones never)
    c.train.max_skipped_in_a_row = 20  # this many skipped optimizer steps in a row stop the run (exit 3): diverged
    c.train.profile_start = 0  # > 0: jax.profiler trace of steps profile_start.. into workdir/profile (0 = off)
    c.train.profile_steps = 5  # how many steps the trace covers

    c.optim = ml_collections.ConfigDict()
    c.optim.name = "adamw"  # adamw | symplectic | bk_hyper_sgd (each reads its own section below)
    c.optim.lr_base_width = 128  # μP: hidden matrices train at lr * lr_base_width / d_model; 0 = off (optim/width_scaling.py)
    c.optim.embed_lr_mult = 32.0  # the embedding table (or TT cores) trains at lr * embed_lr_mult (μP: constant in width)
    c.optim.warmup_steps = 50  # linear warmup from 0 (0 = none), in optimizer steps; >= train.steps: 10% of train.steps
    c.optim.min_lr_ratio = 0.1  # cosine decays to lr * min_lr_ratio at train.steps
    c.optim.grad_clip = 1.0  # global-norm clip threshold after clip_warmup_steps
    c.optim.grad_clip_warmup = 1.0  # clip threshold for the first clip_warmup_steps
    c.optim.clip_warmup_steps = 0
    c.optim.grad_skip_threshold = 0.0  # raw grad norm above this skips the step (counted); 0 = off.
    #                                    Non-finite gradients or loss always skip the step.

    c.optim.adamw = ml_collections.ConfigDict()
    c.optim.adamw.lr = 3e-3
    c.optim.adamw.b1 = 0.9
    c.optim.adamw.b2 = 0.95
    c.optim.adamw.weight_decay = 0.1  # decoupled: x -= lr * weight_decay * x (matrices only)

    c.optim.symplectic = ml_collections.ConfigDict()  # leapfrog on H = |p|^2/2 + L(x), time step h = sqrt(lr)
    c.optim.symplectic.lr = 0.05
    c.optim.symplectic.friction = 0.1  # p <- (1 - friction) p each step; 0 = energy-conserving
    c.optim.symplectic.precondition = False  # Adam-style g/sqrt(v): scale-free, but no longer symplectic
    c.optim.symplectic.precondition_decay = 0.95  # EMA decay of v = E[g^2]

    c.optim.bk_hyper_sgd = ml_collections.ConfigDict()  # momentum SGD, one rule per parameter geometry
    c.optim.bk_hyper_sgd.lr = 0.05
    c.optim.bk_hyper_sgd.momentum = 0.9
    c.optim.bk_hyper_sgd.weight_decay = 1e-3  # decoupled, Euclidean matrices only: x -= lr * weight_decay * x
    c.optim.bk_hyper_sgd.poincare_params = ""  # regex on "a/b/c" param paths: rows on the Poincaré ball; "" = none
    c.optim.bk_hyper_sgd.poincare_lr_mult = 1.0
    c.optim.bk_hyper_sgd.orthogonal_params = ""  # regex: square orthogonal matrices (Cayley retraction); "" = none
    c.optim.bk_hyper_sgd.orthogonal_lr_mult = 1.0

    c.optim.aligner = ml_collections.ConfigDict()  # removes gradient parts opposing each leaf's EMA direction
    c.optim.aligner.enabled = False
    c.optim.aligner.min_alignment = 0.0  # in [-1, 0]: act where cos(g, reference) < min_alignment
    c.optim.aligner.strength = 1.0  # fraction of the opposing projection removed
    c.optim.aligner.warmup = 50  # optimizer steps of observing only
    c.optim.aligner.reference_decay = 0.9  # EMA decay of the reference direction

    c.optim.tsp = ml_collections.ConfigDict()  # moves along a path of (lr scale, clip scale) "cities"
    c.optim.tsp.enabled = False
    c.optim.tsp.lr_scales = (1.5, 1.2, 1.0, 0.8, 1.0)  # explore, active, stabilize, finetune, converge
    c.optim.tsp.clip_scales = (2.0, 1.5, 1.2, 1.0, 1.0)  # × the clip threshold
    c.optim.tsp.eval_interval = 25  # optimizer steps between decisions
    c.optim.tsp.window_size = 25  # optimizer steps of loss / grad norm statistics
    c.optim.tsp.loss_cv_threshold = 0.02  # detrended CV of the loss above this = oscillating: next city
    c.optim.tsp.grad_cv_threshold = 0.3  # same for the raw grad norm
    c.optim.tsp.epsilon = 0.1  # probability of a random city at a decision (seeded from `seed`)
    c.optim.tsp.min_dwell = 50  # optimizer steps in a city before it may move

    c.eval = ml_collections.ConfigDict()  # --mode=eval (docs/long_context.md)
    c.eval.seq_len = 0  # window evaluated; 0 = train.seq_len; longer = length extrapolation, the same tokens
    c.eval.position_buckets = 16  # the eval JSON's loss (and answer accuracy) by position: this many equal buckets

    c.sample = ml_collections.ConfigDict()
    c.sample.max_new_tokens = 48  # --mode=generate, --mode=chat (per reply), the end-of-training sample
    c.sample.temperature = 0.8  # 0 = greedy
    c.sample.top_k = 40  # 0 = off
    c.sample.top_p = 0.95  # nucleus: the smallest set of tokens with probability >= top_p; 1 = off
    c.sample.repetition_penalty = 1.1  # seen tokens: logit / p if > 0, logit * p if <= 0; 1 = off
    c.sample.seed = -1  # >= 0: a fixed sampling seed (the same text every call); -1: a fresh seed per call, printed

    c.mesh = ml_collections.ConfigDict()  # README "Scaling out": the devices of all processes as a data × fsdp grid
    c.mesh.data = 1  # batch split only: parameters replicated across it; -1 = the devices fsdp leaves
    c.mesh.fsdp = -1  # batch split, and parameters / optimizer state sharded FSDP-style; -1 = all the rest

    c.hardware = ml_collections.ConfigDict()
    c.hardware.device_memory_gb = 8.0  # --mode=dry_run: the budget the compiled step must fit

    return c
