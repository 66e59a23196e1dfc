"""Tests of muse_jax.data: readers, tokenizer, token cache and batch pipeline.

Fixtures are small slices of the shipped demo corpus written to tmp dirs.
Japanese needs ~1,000 character pieces at character_coverage=0.9995 plus the
261 special, byte and newline pieces, so most vocabularies here are
1,280-2,048; smaller ones (tested too) make the trainer drop rare characters.
"""

import itertools
import json
import os
from pathlib import Path

import numpy as np
import pytest

from muse_jax.data import token_cache as token_cache_module
from muse_jax.data.documents import read_documents
from muse_jax.data.errors import DataError
from muse_jax.data.pipeline import eval_batches, train_dataset
from muse_jax.data.token_cache import (
    build_token_cache,
    is_validation,
    split_fraction,
    token_dtype,
)
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

DEMO = Path(__file__).resolve().parents[1] / "muse_jax" / "data" / "demo_corpus"
CACHE_VOCAB = 1280


# ---------------------------------------------------------------- fixtures


@pytest.fixture(scope="module")
def demo_docs():
    """(manpage documents, debian-docs documents) of the shipped corpus."""
    return (
        list(read_documents(DEMO / "manpages_ja.jsonl")),
        list(read_documents(DEMO / "debian_docs_ja.txt")),
    )


def write_jsonl(path, docs):
    with open(path, "w", encoding="utf-8") as f:
        for i, text in enumerate(docs):
            f.write(json.dumps({"id": str(i), "text": text}, ensure_ascii=False) + "\n")
    return str(path)


def write_txt(path, docs):
    with open(path, "w", encoding="utf-8") as f:
        f.write("\n\n".join(docs) + "\n")
    return str(path)


@pytest.fixture
def small_sources(tmp_path, demo_docs):
    """Two tiny sources (30 docs each, <= 400 chars) and their documents."""
    man, deb = demo_docs
    man_docs = [d[:400].strip() for d in man[:30]]
    # txt paragraphs are lines; a blank line would split the document.
    deb_docs = ["\n".join(l for l in d[:400].split("\n") if l.strip()) for d in deb[:30]]
    a = write_jsonl(tmp_path / "a.jsonl", man_docs)
    b = write_txt(tmp_path / "b.txt", deb_docs)
    assert list(read_documents(a)) == man_docs
    assert list(read_documents(b)) == deb_docs
    return [a, b], man_docs + deb_docs


def split_documents(sp, tokens):
    """Decodes an EOS-terminated token array back into its documents."""
    tokens = np.asarray(tokens)
    assert len(tokens) > 0 and tokens[-1] == EOS_ID
    ends = np.flatnonzero(tokens == EOS_ID)
    starts = np.concatenate([[0], ends[:-1] + 1])
    return [sp.decode(tokens[s:e].tolist()) for s, e in zip(starts, ends)]


# ------------------------------------------------------------- documents


def test_read_jsonl_documents(tmp_path):
    path = tmp_path / "c.jsonl"
    path.write_text(
        '{"id": "1", "title": "ls.1", "text": "名前\\nls - 一覧"}\n'
        "\n"
        '{"id": "2", "text": "タイトルなし"}\n'
        '{"id": "3", "title": "空", "text": ""}\n'
        '{"id": "4", "title": "", "text": "空のタイトル"}\n',
        encoding="utf-8",
    )
    assert list(read_documents(str(path))) == ["ls.1\n名前\nls - 一覧", "タイトルなし", "空のタイトル"]


def test_read_txt_documents(tmp_path):
    path = tmp_path / "c.txt"
    path.write_bytes("\n一つ目の段落。\n二つ目の段落。\n\n\n\r\n二番目の文書。\r\n三行目\n\n最後".encode())
    assert list(read_documents(path)) == [
        "一つ目の段落。\n二つ目の段落。",
        "二番目の文書。\n三行目",
        "最後",
    ]


def test_malformed_json_names_file_and_line(tmp_path):
    path = tmp_path / "bad.jsonl"
    path.write_text('{"text": "良い"}\n\n{"text": "悪い"\n{"text": "x"}\n', encoding="utf-8")
    docs = read_documents(path)
    assert next(docs) == "良い"
    with pytest.raises(DataError, match=r"bad\.jsonl:3: malformed JSON \(") as e:
        next(docs)
    assert str(path) in str(e.value)


@pytest.mark.parametrize(
    "line, problem",
    [('{"title": "t"}', "missing 'text' field"), ('["text"]', "expected a JSON object"),
     ('{"text": 5}', "'text' field must be a string")],
)
def test_bad_jsonl_record(tmp_path, line, problem):
    path = tmp_path / "rec.jsonl"
    path.write_text('{"text": "a"}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"rec\.jsonl:2: {problem}"):
        list(read_documents(path))


@pytest.mark.parametrize("name", ["u.jsonl", "u.txt"])
def test_invalid_utf8_names_file_and_line(tmp_path, name):
    path = tmp_path / name
    good = '{"text": "日本語"}\n' if name.endswith("jsonl") else "日本語\n"
    path.write_bytes(good.encode() * 2 + b'{"text": "\xe6\x97"}\n')
    with pytest.raises(DataError, match=rf"{name.replace('.', r'[.]')}:3: invalid UTF-8") as e:
        list(read_documents(path))
    assert str(path) in str(e.value)


def test_missing_file_and_unknown_extension(tmp_path):
    with pytest.raises(DataError, match=r"nope\.jsonl: file not found"):
        read_documents(tmp_path / "nope.jsonl")  # raised at call time, not on next()
    (tmp_path / "x.csv").write_text("a,b\n")
    with pytest.raises(DataError, match=r"x\.csv: unsupported file extension '\.csv'"):
        read_documents(tmp_path / "x.csv")


def test_demo_corpus_is_shipped_intact(demo_docs):
    man, deb = demo_docs
    assert (len(man), len(deb)) == (261, 94)
    assert man[0].startswith("achfile.1\n名前\n")
    assert (DEMO / "SOURCES.md").is_file()


# ------------------------------------------------------------- tokenizer


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
def test_tiny_vocab_drops_rare_characters(tmp_path, small_sources, capsys, vocab_size):
    _, docs = small_sources
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


def test_train_tokenizer_is_deterministic(tmp_path, small_sources):
    _, docs = small_sources
    a = train_tokenizer(docs, str(tmp_path / "x" / "a.model"), CACHE_VOCAB, max_sentences=500)
    b = train_tokenizer(iter(docs), str(tmp_path / "y" / "a.model"),
                        CACHE_VOCAB, max_sentences=500)
    assert Path(a).read_bytes() == Path(b).read_bytes()
    with pytest.raises(ValueError, match=r"\.model"):
        train_tokenizer(docs, str(tmp_path / "z.bin"), CACHE_VOCAB)
    with pytest.raises(DataError, match="no text"):
        train_tokenizer(["", "  \n"], str(tmp_path / "e.model"), CACHE_VOCAB)


# ----------------------------------------------------------- token cache


def test_cache_contents(tmp_path, small_sources):
    sources, docs = small_sources
    cache = build_token_cache(sources, str(tmp_path / "cache"), CACHE_VOCAB, val_fraction=0.2)
    sp = load_tokenizer(cache.tokenizer_path)
    assert cache.train.dtype == np.uint16 and cache.val.dtype == np.uint16
    assert cache.train.ndim == 1 and len(cache.val) > 0
    train_docs = split_documents(sp, cache.train)  # asserts: ends with EOS
    val_docs = split_documents(sp, cache.val)
    # Every document exactly once, each followed by EOS, split by its hash.
    assert sorted(train_docs + val_docs) == sorted(docs)
    assert sorted(val_docs) == sorted(d for d in docs if is_validation(d, 0.2))
    assert 0 < len(val_docs) < len(docs)
    m = cache.meta
    assert m["vocab_size"] == CACHE_VOCAB
    assert (m["train_documents"], m["val_documents"]) == (len(train_docs), len(val_docs))
    assert (m["train_tokens"], m["val_tokens"]) == (len(cache.train), len(cache.val))
    assert {s["path"] for s in m["sources"]} == set(sources)
    assert all(len(s["sha256"]) == 64 for s in m["sources"]) and len(m["tokenizer_sha256"]) == 64
    json.dumps(m)


def test_second_call_loads_without_rebuilding(tmp_path, small_sources, monkeypatch, capsys):
    sources, _ = small_sources
    cache_dir = str(tmp_path / "cache")
    first = build_token_cache(sources, cache_dir, CACHE_VOCAB, 0.2)
    assert "built token cache" in capsys.readouterr().err
    mtime = os.stat(first.tokenizer_path).st_mtime_ns

    def no_training(*args, **kwargs):
        raise AssertionError("tokenizer retrained")

    monkeypatch.setattr(token_cache_module, "train_tokenizer", no_training)
    second = build_token_cache(list(reversed(sources)), cache_dir, CACHE_VOCAB, 0.2)
    assert "loaded token cache" in capsys.readouterr().err
    assert second.tokenizer_path == first.tokenizer_path
    assert os.stat(second.tokenizer_path).st_mtime_ns == mtime
    assert isinstance(second.train, np.memmap)
    np.testing.assert_array_equal(second.train, first.train)
    np.testing.assert_array_equal(second.val, first.val)
    assert len(os.listdir(cache_dir)) == 1  # just <key>/, no temp dirs

    # Other inputs are another cache (and need the trainer).
    with pytest.raises(AssertionError, match="retrained"):
        build_token_cache(sources, cache_dir, CACHE_VOCAB, 0.3)


def test_split_is_stable_across_order_and_corpora(tmp_path, small_sources, demo_docs):
    sources, docs = small_sources
    c1 = build_token_cache(sources, str(tmp_path / "c1"), CACHE_VOCAB, 0.2)
    c2 = build_token_cache(sources[::-1], str(tmp_path / "c2"), CACHE_VOCAB, 0.2)
    assert c1.meta["key"] == c2.meta["key"]
    np.testing.assert_array_equal(c1.val, c2.val)
    np.testing.assert_array_equal(c1.train, c2.train)
    assert c1.meta["tokenizer_sha256"] == c2.meta["tokenizer_sha256"]
    # Adding a source does not move the existing documents between splits.
    extra = [d[:300].strip() for d in demo_docs[0][100:120]]
    c3 = build_token_cache(sources + [write_jsonl(tmp_path / "extra.jsonl", extra)],
                           str(tmp_path / "c3"), CACHE_VOCAB, 0.2)
    val1 = set(split_documents(load_tokenizer(c1.tokenizer_path), c1.val))
    val3 = set(split_documents(load_tokenizer(c3.tokenizer_path), c3.val))
    assert val3 & set(docs) == val1
    assert split_fraction("同じ文書") == split_fraction("同じ文書")
    assert 0.0 <= split_fraction("x") < 1.0


def test_tiny_val_fraction_still_gives_val_tokens(tmp_path, small_sources):
    sources, docs = small_sources
    fractions = sorted(split_fraction(d) for d in docs)
    cache = build_token_cache(sources, str(tmp_path / "c"), CACHE_VOCAB, fractions[0] / 2)
    assert cache.meta["val_documents"] == 1 and len(cache.val) > 0


def test_interrupted_build_leaves_nothing(tmp_path, small_sources, monkeypatch):
    sources, _ = small_sources
    cache_dir = tmp_path / "cache"

    def crash(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(token_cache_module, "_encode", crash)
    with pytest.raises(KeyboardInterrupt):
        build_token_cache(sources, str(cache_dir), CACHE_VOCAB, 0.2)
    assert os.listdir(cache_dir) == []
    monkeypatch.undo()
    cache = build_token_cache(sources, str(cache_dir), CACHE_VOCAB, 0.2)
    assert len(cache.train) > 0


def test_cache_input_errors(tmp_path, small_sources):
    sources, _ = small_sources
    with pytest.raises(DataError, match=r"missing\.txt: file not found"):
        missing = str(tmp_path / "missing.txt")
        build_token_cache(sources + [missing], str(tmp_path), CACHE_VOCAB, 0.1)
    with pytest.raises(ValueError, match="val_fraction"):
        build_token_cache(sources, str(tmp_path), CACHE_VOCAB, 1.0)
    assert token_dtype(65536) == np.uint16 and token_dtype(65537) == np.uint32


# -------------------------------------------------------------- pipeline

SEQ, BATCH = 16, 4


@pytest.fixture(scope="module")
def ramp():
    """Tokens whose value is their position, so windows are recognisable."""
    return np.arange(5000, dtype=np.uint16)


def take(iterator, n):
    return [next(iterator) for _ in range(n)]


def assert_same_batches(xs, ys):
    assert len(xs) == len(ys)
    for x, y in zip(xs, ys):
        assert x.keys() == y.keys() == {"inputs", "targets"}
        np.testing.assert_array_equal(x["inputs"], y["inputs"])
        np.testing.assert_array_equal(x["targets"], y["targets"])


def test_train_batches_are_shifted_windows(ramp):
    batches = take(iter(train_dataset(ramp, SEQ, BATCH, seed=0)), 20)
    starts = set()
    for b in batches:
        assert b["inputs"].shape == b["targets"].shape == (BATCH, SEQ)
        assert b["inputs"].dtype == b["targets"].dtype == np.int32
        np.testing.assert_array_equal(b["targets"][:, :-1], b["inputs"][:, 1:])
        first = b["inputs"][:, :1]
        np.testing.assert_array_equal(b["inputs"], first + np.arange(SEQ))  # contiguous
        np.testing.assert_array_equal(b["targets"], first + 1 + np.arange(SEQ))
        starts.update(first.ravel().tolist())
    assert min(starts) >= 0 and max(starts) <= len(ramp) - SEQ - 1
    assert len(starts) > 60  # random starts, not a fixed few


def test_train_windows_reach_both_ends():
    tokens = np.arange(SEQ + 3, dtype=np.uint16)  # only 3 possible starts
    batches = take(iter(train_dataset(tokens, SEQ, 8, seed=1)), 10)
    assert {int(s) for b in batches for s in b["inputs"][:, 0]} == {0, 1, 2}


def test_train_dataset_is_deterministic_by_seed(ramp):
    a = take(iter(train_dataset(ramp, SEQ, BATCH, seed=7)), 5)
    b = take(iter(train_dataset(ramp, SEQ, BATCH, seed=7)), 5)
    c = take(iter(train_dataset(ramp, SEQ, BATCH, seed=8)), 5)
    assert_same_batches(a, b)
    stack = lambda batches: np.stack([x["inputs"] for x in batches])  # noqa: E731
    assert not np.array_equal(stack(a), stack(c))


@pytest.mark.parametrize("k", [0, 1, 7])
def test_resume_from_state_continues_exactly(ramp, k):
    uninterrupted = take(iter(train_dataset(ramp, SEQ, BATCH, seed=3)), k + 6)
    it = iter(train_dataset(ramp, SEQ, BATCH, seed=3))
    take(it, k)
    state = json.loads(json.dumps(it.get_state()))
    resumed = iter(train_dataset(ramp, SEQ, BATCH, seed=3))
    resumed.set_state(state)
    assert_same_batches(take(resumed, 6), uninterrupted[k:])


def test_train_dataset_on_cache_memmap(tmp_path, small_sources):
    sources, _ = small_sources
    cache = build_token_cache(sources, str(tmp_path), CACHE_VOCAB, 0.2)
    batch = next(iter(train_dataset(cache.train, 32, 2, seed=0)))
    assert batch["inputs"].shape == (2, 32) and batch["inputs"].max() < CACHE_VOCAB


def test_eval_batches(ramp):
    batches = eval_batches(ramp, SEQ, BATCH, max_batches=3)
    assert len(batches) == 3
    assert_same_batches(batches, eval_batches(ramp, SEQ, BATCH, max_batches=3))
    inputs = np.concatenate([b["inputs"] for b in batches])
    targets = np.concatenate([b["targets"] for b in batches])
    np.testing.assert_array_equal(inputs.ravel(), np.arange(3 * BATCH * SEQ))  # consecutive
    np.testing.assert_array_equal(targets, inputs + 1)
    assert all(b["inputs"].dtype == np.int32 and b["inputs"].shape == (BATCH, SEQ) for b in batches)
    # Short split: fewer, equally shaped batches; the partial tail is dropped.
    short = np.arange(SEQ * 9 + 1)  # 9 windows -> 2 full batches of 4
    assert [b["inputs"].shape for b in eval_batches(short, SEQ, BATCH, 10)] == [(BATCH, SEQ)] * 2
    # Fewer windows than a batch: one smaller batch.
    tiny = eval_batches(np.arange(SEQ + 2), SEQ, BATCH, 10)
    assert len(tiny) == 1 and tiny[0]["inputs"].shape == (1, SEQ)
    with pytest.raises(DataError, match="too short"):
        eval_batches(np.arange(SEQ), SEQ, BATCH, 10)
    with pytest.raises(DataError, match="too short"):
        train_dataset(np.arange(SEQ), SEQ, BATCH, 0)
