"""What `python -m muse_jax.main --mode=...` does, one module per mode: train, evaluate, generate, chat
(dry_run: `muse_jax/train/dry_run.py`; prepare: `muse_jax/data/prepared.py`)."""
