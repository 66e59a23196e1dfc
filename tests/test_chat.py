"""--mode=chat and --mode=generate --prompt_file: the instruction template, multi-turn history, sample.seed,
streaming, and the real command driven by piped stdin on a tiny trained checkpoint."""

import os
import re
import subprocess
import sys

import jax
import numpy as np

from muse_jax.modes.chat import REPLY_PREFIX, TextStream, chat_prompt, converse
from muse_jax.modes.generate import restored_sampler
from muse_jax.data.prepared import PreparedData
from muse_jax.data.sources import instruction_document
from muse_jax.modes.train import train
from muse_jax.settings import Settings
from test_cli import config_module

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
EOS = 3


class CharTokenizer:
    """One token per character (ids 10+), enough to check what the chat loop sends and prints."""

    def encode(self, text):
        return [ord(c) + 10 for c in text]

    def decode(self, ids):
        return "".join(chr(i - 10) for i in ids)


class ScriptedGenerator:
    """Records the prompts; answers each with the next scripted reply, one token per step."""

    def __init__(self, replies):
        self.replies, self.prompts = list(replies), []

    def stream(self, params, prompts, key):
        self.prompts.append(CharTokenizer().decode(prompts[0][1:]))
        for token in CharTokenizer().encode(self.replies.pop(0)) + [EOS]:
            yield np.array([token])


def test_chat_prompt_is_the_instruction_template():
    assert chat_prompt([], "質問") == "### 指示:\n質問\n\n### 回答:\n"
    first = instruction_document("一つ目", "", "答え")
    assert chat_prompt([("一つ目", "答え")], "二つ目") == first + "\n\n### 指示:\n二つ目\n\n### 回答:\n"
    assert chat_prompt([("無視", "")], "次") == "### 指示:\n次\n\n### 回答:\n"  # an empty reply is dropped


def test_converse_keeps_the_history_and_streams_the_reply():
    generator = ScriptedGenerator(["はい", "いいえ", "また"])
    written = []
    lines = ["最初\n", "\n", "次に\n", "/reset\n", "新しく\n", "/exit\n", "読まれない\n"]
    sp = CharTokenizer()
    history = converse(generator, None, sp, lambda text: [EOS] + sp.encode(text), jax.random.key(0), EOS, lines,
                       written.append)
    assert history == [("新しく", "また")]
    assert generator.prompts == [chat_prompt([], "最初"), chat_prompt([("最初", "はい")], "次に"),
                                 chat_prompt([], "新しく")]
    assert "".join(written) == f"{REPLY_PREFIX}はい\n{REPLY_PREFIX}いいえ\n{REPLY_PREFIX}また\n"
    assert written.count("は") == 1  # one write per token: streamed


def test_prompts_are_normalised_like_the_training_text():
    def prepared(nfkc: bool) -> PreparedData:
        meta = {"settings": {"normalize_nfkc": nfkc}, "tokenizer": {"eos_id": EOS}}
        return PreparedData("unused", meta, ())

    sp = CharTokenizer()
    assert prepared(True).prompt_ids(sp, "ＡＢＣとｶﾅ") == [EOS] + sp.encode("ABCとカナ")
    assert prepared(False).prompt_ids(sp, "ＡＢＣとｶﾅ") == [EOS] + sp.encode("ＡＢＣとｶﾅ")


def test_text_stream_holds_back_an_incomplete_character():
    class ByteTokenizer:
        def decode(self, ids):
            return bytes(ids).decode("utf-8", errors="replace")

    stream = TextStream(ByteTokenizer())
    pieces = [stream.push(b) for b in "a語".encode()]
    assert pieces == ["a", "", "", "語"]


def cli(config_file: str, *args: str, stdin: str = "") -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "muse_jax.main", "--config", config_file, *args], cwd=ROOT,
                          input=stdin, capture_output=True, text=True, timeout=300)


def test_chat_prompt_file_and_sample_seed_on_a_trained_checkpoint(tiny_config, tmp_path):
    tiny_config.train.steps = 4
    tiny_config.sample.max_new_tokens = 6
    train(Settings.from_config(tiny_config), "日本")
    config_file = config_module(tmp_path, tiny_config)  # the same config, for the subprocesses

    r = cli(str(config_file), "--mode=chat", stdin="こんにちは\n日本の首都は？\n/exit\n")
    assert r.returncode == 0, r.stderr
    assert r.stdout.count(REPLY_PREFIX) == 2 and "Traceback" not in r.stderr

    prompt_file = tmp_path / "prompt.txt"
    prompt_file.write_text("### 指示:\n日本について\n\n### 回答:\n", encoding="utf-8")
    r = cli(str(config_file), "--mode=generate", f"--prompt_file={prompt_file}")
    assert r.returncode == 0, r.stderr
    assert r.stdout.startswith("### 指示:\n日本について\n\n### 回答:\n")
    # sample.seed = -1: a fresh seed, printed; given back, it repeats the sample; another seed does not
    seed = int(re.search(r"sampling with --config.sample.seed=(\d+)", r.stderr).group(1))
    again = cli(str(config_file), "--mode=generate", f"--prompt_file={prompt_file}", f"--config.sample.seed={seed}")
    assert again.returncode == 0 and again.stdout == r.stdout and "sampling with" not in again.stderr
    tiny_config.sample.seed = seed + 1
    assert restored_sampler(Settings.from_config(tiny_config)).complete(prompt_file.read_text()) + "\n" != r.stdout

    r = cli(str(config_file), "--mode=generate", f"--prompt_file={tmp_path / 'missing.txt'}")
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and lines[0].startswith("error: cannot read --prompt_file")
