"""The first loss against the width: what the tied head's read-out scale does at init (issue 16).

    python -m experiments.first_loss            # → results/first_loss.json

configs/dense_8gb.py (vocab 32768) at 2 layers, float32, for d_model in --widths, each model kind
and embedding: the loss of the untrained model on random tokens (2 × 128), the mean logit of
the input token itself (the "self-logit") and the std of all logits, under
  sqrt   logits = h·E/√D  (model.output_mult = √D: the read-out before issue 16)
  muP    logits = α·h·E/D (α = the config's model.output_mult)
The hyperbolic head scores by distance and has no α: it is measured once, as configured.
"""

import argparse
import math
import os

import jax
import jax.numpy as jnp
from flax import nnx

from configs import dense_8gb
from experiments.provenance import write_json
from experiments.sweep import ROOT
from muse_jax.model.lm import LanguageModel
from muse_jax.settings import ModelSettings

VOCAB = 32768


def measure(model_cfg, tokens) -> dict:
    model = LanguageModel(ModelSettings.from_config(model_cfg), VOCAB, rngs=nnx.Rngs(0))
    logits = jax.jit(lambda m, t: m(t))(model, tokens[:, :-1])
    loss = -jnp.mean(jnp.take_along_axis(jax.nn.log_softmax(logits), tokens[:, 1:, None], -1))
    own = jnp.take_along_axis(logits, tokens[:, :-1, None], -1)
    return {"first_loss": float(loss), "self_logit": float(own.mean()), "logit_std": float(logits.std())}


def main() -> None:
    p = argparse.ArgumentParser(prog="python -m experiments.first_loss", description=__doc__,
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--widths", default="64,256,1024,1792,4096")
    p.add_argument("--out", default=os.path.join(ROOT, "results", "first_loss.json"))
    args = p.parse_args()
    tokens = jax.random.randint(jax.random.key(1), (2, 129), 0, VOCAB)
    base = dense_8gb.get_config().model
    rows = []
    for width in (int(w) for w in args.widths.split(",")):
        for kind in ("bk", "transformer"):
            for embedding in ("euclidean", "htt", "hyperbolic"):
                heads = {"sqrt": math.sqrt(width), "muP": base.output_mult} if not embedding.startswith("hyperbolic") \
                    else {"distance": base.output_mult}
                for head, alpha in heads.items():
                    c = base.copy_and_resolve_references()
                    c.kind, c.embedding, c.d_model, c.n_layers = kind, embedding, width, 2
                    c.n_heads, c.output_mult = max(1, width // 64), alpha
                    row = {"d_model": width, "kind": kind, "embedding": embedding, "head": head,
                           "output_mult": alpha, **measure(c, tokens)}
                    rows.append(row)
                    print(row, flush=True)
    write_json(args.out, {"vocab": VOCAB, "ln_vocab": math.log(VOCAB), "config": "configs/dense_8gb.py, 2 layers",
                          "rows": rows})


if __name__ == "__main__":
    main()
