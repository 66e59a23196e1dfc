"""SentencePiece tokenizer for Japanese text: training and loading.

The tokenizer is a unigram model with byte fallback, so every string
(including characters never seen in training) encodes without ``<unk>``
and decodes back to exactly the same string: no normalisation is applied
(``identity`` rule), whitespace is kept as is, no dummy-prefix space is
added, and "\\n" is a piece of its own.

Special ids are fixed: PAD_ID=0, UNK_ID=1, BOS_ID=2, EOS_ID=3. The 256
byte pieces and the "\\n" piece take the next 257 ids (``RESERVED_PIECES``
= 261 in all). The rest of the vocabulary must hold one piece per character
needed for ``CHARACTER_COVERAGE`` of the training text: roughly 1,000-2,000
characters for a few hundred KB of Japanese. Character pieces may take at
most 3/4 of those free slots; when ``vocab_size`` is too small for that (tiny
test or smoke-run vocabularies), training keeps only that many of the most
frequent characters, the rarer ones being spelt with byte pieces, and one
line saying so is printed to stderr (see :func:`restrict_characters`).
``vocab_size`` must be at least ``MIN_VOCAB_SIZE`` = 300.
"""

from __future__ import annotations

import collections
import os
import random
import sys
from typing import Iterable, Sequence

import sentencepiece as spm

from muse_jax.data.errors import DataError
from muse_jax.settings.data import MIN_VOCAB_SIZE

__all__ = [
    "PAD_ID",
    "UNK_ID",
    "BOS_ID",
    "EOS_ID",
    "CHARACTER_COVERAGE",
    "DEFAULT_MAX_SENTENCES",
    "DEFAULT_VOCAB_SIZE",
    "RESERVED_PIECES",
    "MIN_VOCAB_SIZE",
    "restrict_characters",
    "sample_sentences",
    "train_tokenizer",
    "load_tokenizer",
]

PAD_ID = 0
UNK_ID = 1
BOS_ID = 2
EOS_ID = 3

CHARACTER_COVERAGE = 0.9995
DEFAULT_MAX_SENTENCES = 300_000
DEFAULT_VOCAB_SIZE = 32768
NUM_THREADS = 2
USER_DEFINED_SYMBOLS = ("\n",)
RESERVED_PIECES = 4 + 256 + len(USER_DEFINED_SYMBOLS)  # specials, bytes, "\n"
_CHAR_SHARE_OF_FREE_SLOTS = 0.75
_SAMPLE_SEED = 0
_MODEL_EXT = ".model"


def sample_sentences(
    documents: Iterable[str], max_sentences: int, seed: int = _SAMPLE_SEED
) -> list[str]:
    """Returns a uniform sample of at most ``max_sentences`` non-blank lines.

    Lines ("sentences" for SentencePiece) are the documents split on "\\n".
    Reservoir sampling with a fixed seed: one pass, bounded memory and the
    same sample for the same input.
    """
    rng = random.Random(seed)
    sample: list[str] = []
    seen = 0
    for doc in documents:
        for line in doc.split("\n"):
            if not line.strip():
                continue
            if seen < max_sentences:
                sample.append(line)
            else:
                j = rng.randrange(seen + 1)
                if j < max_sentences:
                    sample[j] = line
            seen += 1
    return sample


def restrict_characters(
    sentences: Sequence[str], vocab_size: int, character_coverage: float
) -> tuple[list[str], str | None]:
    """Makes the training text fit a small vocabulary; returns it and a note.

    SentencePiece keeps as "required" pieces the most frequent characters
    until they cover ``character_coverage`` of all characters, and fails if
    those plus the reserved pieces exceed ``vocab_size`` (it also refuses a
    coverage below 0.98, so lowering it is no way out). Character pieces
    may take at most 3/4 of the free slots (``vocab_size -
    RESERVED_PIECES``), so that some room is left for multi-character
    pieces. When more would be needed, only that many of the most frequent
    characters are kept: each sentence is cut at the other characters into
    runs of kept ones, and the dropped characters are spelt with byte
    pieces when encoding. Otherwise the sentences come back unchanged and
    the note is None.
    """
    counts = collections.Counter()
    for sentence in sentences:
        counts.update(sentence)
    total = sum(counts.values())
    ranked = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    needed, covered = 0, 0
    for _, c in ranked:
        if covered >= character_coverage * total:
            break
        covered += c
        needed += 1
    free = vocab_size - RESERVED_PIECES
    budget = max(1, int(free * _CHAR_SHARE_OF_FREE_SLOTS))
    if needed <= budget:
        return list(sentences), None
    kept = {ch for ch, _ in ranked[:budget]}
    share = sum(c for _, c in ranked[:budget]) / total
    runs = []
    for sentence in sentences:
        start = 0
        for i, ch in enumerate(sentence):
            if ch not in kept:
                runs.append(sentence[start:i])
                start = i + 1
        runs.append(sentence[start:])
    runs = [run for run in runs if run.strip()]
    note = (
        f"vocab_size {vocab_size} has room for {budget} character pieces, not the "
        f"{needed} needed for character_coverage {character_coverage}: trained on "
        f"the {budget} most frequent characters ({share:.1%} of the text), the "
        f"others will be byte pieces"
    )
    return runs, note


def train_tokenizer(
    documents: Iterable[str],
    model_path: str,
    vocab_size: int = DEFAULT_VOCAB_SIZE,
    max_sentences: int = DEFAULT_MAX_SENTENCES,
    *,
    character_coverage: float = CHARACTER_COVERAGE,
) -> str:
    """Trains a unigram SentencePiece model and writes it atomically.

    Args:
      documents: the training text; split into lines and sampled down to
        ``max_sentences`` lines (see :func:`sample_sentences`).
      model_path: where to write the model; must end in ".model". A
        ".vocab" file (piece and score a line) is written beside it.
      vocab_size: exact number of pieces, special and byte pieces included.
      max_sentences: bound on the lines the trainer sees (its
        ``input_sentence_size``), which bounds training time and memory.
      character_coverage: share of characters covered by character pieces;
        the rest are spelt with byte pieces. When ``vocab_size`` is too small
        for it, rare characters are left out of training instead (see
        :func:`restrict_characters`).

    Both files are trained under a temporary prefix in the target directory
    and then moved into place with ``os.replace`` (".vocab" first, ".model"
    last), so a reader never sees a half-written model. Training is
    deterministic: the same documents give byte-identical files.

    Returns:
      ``model_path``.
    """
    model_path = os.fspath(model_path)
    if not model_path.endswith(_MODEL_EXT):
        raise ValueError(f"model_path must end in {_MODEL_EXT!r}: {model_path}")
    if vocab_size < MIN_VOCAB_SIZE:
        raise ValueError(
            f"vocab_size must be at least {MIN_VOCAB_SIZE} ({RESERVED_PIECES} "
            f"special, byte and newline pieces, and some characters), got {vocab_size}"
        )
    if max_sentences < 1:
        raise ValueError(f"max_sentences must be positive, got {max_sentences}")
    sentences = sample_sentences(documents, max_sentences)
    if not sentences:
        raise DataError(f"{model_path}: no text to train the tokenizer on")
    sentences, note = restrict_characters(sentences, vocab_size, character_coverage)
    if note:
        print(f"[muse_jax.data] tokenizer: {note}", file=sys.stderr, flush=True)

    prefix = model_path[: -len(_MODEL_EXT)]
    directory = os.path.dirname(os.path.abspath(model_path))
    os.makedirs(directory, exist_ok=True)
    tag = f"{os.getpid()}-{os.urandom(4).hex()}"
    tmp_prefix = os.path.join(directory, f".{os.path.basename(prefix)}.tmp-{tag}")
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences),
            model_prefix=tmp_prefix,
            model_type="unigram",
            vocab_size=vocab_size,
            character_coverage=character_coverage,
            byte_fallback=True,
            pad_id=PAD_ID,
            unk_id=UNK_ID,
            bos_id=BOS_ID,
            eos_id=EOS_ID,
            user_defined_symbols=list(USER_DEFINED_SYMBOLS),
            normalization_rule_name="identity",
            remove_extra_whitespaces=False,
            add_dummy_prefix=False,
            input_sentence_size=max_sentences,
            shuffle_input_sentence=False,
            num_threads=NUM_THREADS,
            minloglevel=2,
        )
        _strip_tmp_prefix(tmp_prefix + _MODEL_EXT, os.path.basename(prefix))
        os.replace(tmp_prefix + ".vocab", prefix + ".vocab")
        os.replace(tmp_prefix + _MODEL_EXT, model_path)
    except RuntimeError as e:  # SentencePiece's own checks, e.g. more pieces than the text can give
        raise DataError(f"{model_path}: cannot train a tokenizer of {vocab_size} pieces on this text "
                        f"({str(e).split('] ')[-1]}); change data.vocab_size") from None
    finally:
        for leftover in (tmp_prefix + _MODEL_EXT, tmp_prefix + ".vocab"):
            if os.path.exists(leftover):
                os.remove(leftover)
    return model_path


def _strip_tmp_prefix(model_file: str, name: str) -> None:
    """Records ``name`` instead of the random temporary prefix in the model.

    SentencePiece stores its ``model_prefix`` inside the model; without this
    the file (and its sha256) would differ from one training to the next.
    """
    from sentencepiece import sentencepiece_model_pb2  # needs protobuf

    proto = sentencepiece_model_pb2.ModelProto()
    with open(model_file, "rb") as f:
        proto.ParseFromString(f.read())
    proto.trainer_spec.model_prefix = name
    with open(model_file, "wb") as f:
        f.write(proto.SerializeToString(deterministic=True))


def load_tokenizer(path: str) -> spm.SentencePieceProcessor:
    """Loads a SentencePiece model file; DataError if it is missing or bad."""
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise DataError(f"{path}: tokenizer model not found")
    sp = spm.SentencePieceProcessor()
    try:
        sp.Load(model_file=path)
    except (OSError, RuntimeError) as e:
        raise DataError(f"{path}: cannot load tokenizer model ({e})") from None
    return sp
