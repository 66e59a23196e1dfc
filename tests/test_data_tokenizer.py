"""SentencePiece training and loading (muse_jax.data.tokenizer).

Japanese needs ~1,000 character pieces at character_coverage=0.9995 plus the
261 special, byte and newline pieces, so the vocabularies here are
1,280-2,048; smaller ones (tested too) make the trainer drop rare characters.
"""

import itertools
import os
from pathlib import Path

import pytest

from muse_jax.data.chunks import ChunkReader
from muse_jax.data.demo import DEMO_DIR
from muse_jax.data.errors import DataError
from muse_jax.data.sources import KINDS, BadLines, chunk_documents
from muse_jax.data.tokenizer import (
    BOS_ID,
    EOS_ID,
    MIN_VOCAB_SIZE,
    PAD_ID,
    UNK_ID,
    load_tokenizer,
    restrict_characters,
    train_tokenizer,
)

VOCAB = 1280


def read_demo(kind, name):
    reader = ChunkReader(os.path.join(DEMO_DIR, name), KINDS[kind].boundary)
    return [d for chunk in reader for d in chunk_documents(kind, chunk, BadLines("raise"))]


@pytest.fixture(scope="module")
def demo_docs():
    """(manpage documents, debian-docs documents) of the shipped corpus."""
    return read_demo("wikipedia", "manpages_ja.jsonl"), read_demo("cc100", "debian_docs_ja.txt")


@pytest.fixture(scope="module")
def docs(demo_docs):
    """60 short documents (<= 400 characters)."""
    man, deb = demo_docs
    return [d[:400].strip() for d in man[:30]] + [d[:400].strip() for d in deb[:30]]


def test_demo_corpus_is_shipped_intact(demo_docs):
    man, deb = demo_docs
    assert (len(man), len(deb)) == (261, 94)
    assert man[0].startswith("achfile.1\n名前\n")
    assert os.path.isfile(os.path.join(DEMO_DIR, "SOURCES.md"))


def test_tokenizer_ids_and_japanese_round_trip(tmp_path, demo_docs):
    man, deb = demo_docs
    train, size = [], 0
    for doc in itertools.chain.from_iterable(zip(man, deb)):  # ~200 KB
        if size > 200_000:
            break
        train.append(doc)
        size += len(doc.encode())
    model = train_tokenizer(train, str(tmp_path / "tok.model"), vocab_size=2048)
    assert sorted(os.listdir(tmp_path)) == ["tok.model", "tok.vocab"]  # no temp files
    sp = load_tokenizer(model)
    assert sp.get_piece_size() == 2048
    assert (sp.pad_id(), sp.unk_id(), sp.bos_id(), sp.eos_id()) == (PAD_ID, UNK_ID, BOS_ID, EOS_ID)
    assert [sp.id_to_piece(i) for i in range(4)] == ["<pad>", "<unk>", "<s>", "</s>"]

    held_out = man[-1][:3000]  # never seen in training
    unseen = "𠮷野家で🍣を食べた。龘\n  全角ＡＢＣ　と  二重空白 \n"
    for text in (held_out, unseen, deb[0][:2000]):
        ids = sp.encode(text)
        assert UNK_ID not in ids
        assert sp.decode(ids) == text
    assert len(sp.encode(held_out)) < len(held_out)  # it learnt multi-char pieces
    assert any(sp.id_to_piece(i).startswith("<0x") for i in sp.encode("𠮷🍣"))  # byte fallback


@pytest.mark.parametrize("vocab_size", [MIN_VOCAB_SIZE, 512])
def test_tiny_vocab_drops_rare_characters(tmp_path, docs, capsys, vocab_size):
    model = train_tokenizer(docs, str(tmp_path / "t.model"), vocab_size)
    assert "most frequent characters" in capsys.readouterr().err
    sp = load_tokenizer(model)
    assert sp.get_piece_size() == vocab_size and sp.eos_id() == EOS_ID
    text = docs[0] + "\n𠮷🍣"
    ids = sp.encode(text)
    assert UNK_ID not in ids and sp.decode(ids) == text
    # Nothing changes when the vocabulary is large enough.
    assert restrict_characters(["あいう", "いう"], 2048, 0.9995) == (["あいう", "いう"], None)
    runs, note = restrict_characters(["ああいい", "あうい"] * 5 + ["かきく"], 262, 0.9995)
    assert note and runs == ["ああ", "あ"] * 5  # only "あ" kept (1 slot)
    with pytest.raises(ValueError, match="vocab_size must be at least"):
        train_tokenizer(docs, str(tmp_path / "u.model"), MIN_VOCAB_SIZE - 1)


def test_train_tokenizer_is_deterministic(tmp_path, docs):
    a = train_tokenizer(docs, str(tmp_path / "x" / "a.model"), VOCAB, max_sentences=500)
    b = train_tokenizer(iter(docs), str(tmp_path / "y" / "a.model"),
                        VOCAB, max_sentences=500)
    assert Path(a).read_bytes() == Path(b).read_bytes()
    with pytest.raises(ValueError, match=r"\.model"):
        train_tokenizer(docs, str(tmp_path / "z.bin"), VOCAB)
    with pytest.raises(DataError, match="no text"):
        train_tokenizer(["", "  \n"], str(tmp_path / "e.model"), VOCAB)
