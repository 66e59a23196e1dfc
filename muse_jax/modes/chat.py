"""--mode=chat: a multi-turn conversation in the terminal, streamed token by token.

Each line read from stdin is one user message (empty lines are skipped; `/reset` forgets the
conversation, `/exit` or end of input ends it). The model sees the whole conversation as one
document in the instruction template of the training data (`muse_jax/data/sources.py`):

    ### 指示:            every finished turn: instruction_document(message, "", reply)
    <message>

    ### 回答:
    <reply>

    ### 指示:            the new message, then an open response heading
    <message>

    ### 回答:

preceded by EOS (documents are EOS-separated in training) and NFKC-normalised when the training
text was (`PreparedData.prompt_ids`). The reply is sampled with the
`sample.*` settings until EOS or `sample.max_new_tokens`, printed as it is produced. Every turn
prefills the conversation again (parallel form), then decodes with the recurrent state
(`muse_jax/generate.py`). Weights: the EMA when `train.eval_use_ema`; only the weights are
restored (`modes/generate.py`).
"""

import sys
from typing import Callable, Iterable, TextIO

import jax

from muse_jax.data.sources import INSTRUCTION_HEADING, RESPONSE_HEADING, instruction_document
from muse_jax.generate import Generator
from muse_jax.modes.generate import restored_sampler
from muse_jax.settings import Settings

USER_PREFIX = "user> "
REPLY_PREFIX = "assistant> "


def chat_prompt(history: list[tuple[str, str]], message: str) -> str:
    """The conversation so far plus the new message, in the instruction template (module docstring)."""
    turns = [instruction_document(question, "", reply) for question, reply in history]
    turns.append(f"{INSTRUCTION_HEADING}\n{message.strip()}\n\n{RESPONSE_HEADING}\n")
    return "\n\n".join(t for t in turns if t)  # a turn with an empty reply is dropped


class TextStream:
    """Printable increments of the text of a growing token list. SentencePiece decodes whole
    pieces, but a character spelt with byte-fallback pieces arrives over several tokens: while the
    decoded text ends in U+FFFD (an incomplete character) nothing new is shown."""

    def __init__(self, sp):
        self.sp, self.ids, self.text = sp, [], ""

    def push(self, token: int) -> str:
        self.ids.append(token)
        text = self.sp.decode(self.ids)
        if text.endswith("\ufffd") or not text.startswith(self.text):
            return ""
        new, self.text = text[len(self.text):], text
        return new


def converse(generator: Generator, params, sp, encode: Callable[[str], list[int]], key: jax.Array, eos_id: int,
             lines: Iterable[str], write: Callable[[str], None], prompt_user: bool = False) -> list[tuple[str, str]]:
    """Answer every message of `lines`, writing each reply as it is produced; returns the history.
    `encode`: prompt text → the token ids the model sees (`PreparedData.prompt_ids`)."""
    history: list[tuple[str, str]] = []
    if prompt_user:
        write(USER_PREFIX)
    for turn, line in enumerate(lines):
        message = line.strip()
        if message in ("/exit", "/quit"):
            break
        if message == "/reset":
            history = []
        elif message:
            ids = encode(chat_prompt(history, message))
            stream = TextStream(sp)
            write(REPLY_PREFIX)
            for step in generator.stream(params, [ids], jax.random.fold_in(key, turn)):
                if int(step[0]) == eos_id:
                    break
                write(stream.push(int(step[0])))
            write("\n")
            history.append((message, sp.decode(stream.ids)))
        if prompt_user:
            write(USER_PREFIX)
    return history


def chat(settings: Settings, stdin: TextIO = sys.stdin, stdout: TextIO = sys.stdout) -> list:
    """Restore the latest checkpoint's weights and talk over stdin/stdout."""
    sampler = restored_sampler(settings)

    def write(text: str) -> None:
        stdout.write(text)
        stdout.flush()

    return converse(sampler.generator, sampler.params, sampler.sp, sampler.encode, sampler.key, sampler.data.eos_id,
                    stdin, write, prompt_user=stdin.isatty())
