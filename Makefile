# Command names follow the original project's; each is one line of the README's CLI.
# User values (CONFIG, PROMPT, MANIFEST, OUT) reach the commands as environment variables, quoted
# by the shell ("$$PROMPT"), never pasted into the command line: a value is text, not shell code.
PYTHON ?= python3
CONFIG ?= configs/tiny_ja.py
export CONFIG PROMPT MANIFEST OUT

.PHONY: setup start-japanese resume-japanese generate chat eval test prepare-japanese-data dry-run

setup:
	$(PYTHON) -m pip install -r requirements.txt

# Train the Japanese config (resumes automatically if its workdir has a checkpoint).
start-japanese:
	$(PYTHON) -m muse_jax.main --config "$$CONFIG"

# The same run, continued from its latest checkpoint.
resume-japanese:
	$(PYTHON) -m muse_jax.main --config "$$CONFIG"

# Sample a continuation of PROMPT (required: make generate PROMPT="日本語の").
generate:
	$(if $(PROMPT),,$(error make generate needs a prompt: make generate PROMPT="日本語の"))
	$(PYTHON) -m muse_jax.main --config "$$CONFIG" --mode=generate --prompt="$$PROMPT"

# Multi-turn chat in the terminal (instruction template), replies streamed as they are sampled.
chat:
	$(PYTHON) -m muse_jax.main --config "$$CONFIG" --mode=chat

eval:
	$(PYTHON) -m muse_jax.main --config "$$CONFIG" --mode=eval

test:
	$(PYTHON) -m pytest -q tests

# Tokenise and shard a corpus: the demo manifest by default; MANIFEST=... OUT=... for your own dumps.
prepare-japanese-data:
	$(PYTHON) -m muse_jax.main --config "$$CONFIG" --mode=prepare $(if $(MANIFEST),--config.data.manifest="$$MANIFEST") $(if $(OUT),--config.data.out_dir="$$OUT")

# The original's "10B" configuration: AOT memory report, no parameter allocated.
dry-run:
	$(PYTHON) -m muse_jax.main --config configs/phase8_10b_japanese.py --mode=dry_run
