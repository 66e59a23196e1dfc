"""``prepare`` end to end on tiny corpora of every kind: contents, report, split,
determinism, bad input, atomic replacement, and finding prepared data for training."""

import gzip
import json
import os
from concurrent.futures.process import BrokenProcessPool

import numpy as np
import pytest
import zstandard

from muse_jax.data import prepare as prepare_module
from muse_jax.data import prepared as prepared_module
from muse_jax.data.cleaning import clean_document, document_key, validation_threshold
from muse_jax.data.demo import DEMO_DIR
from muse_jax.data.errors import DataError
from muse_jax.data.parallel import WorkerPool
from muse_jax.data.prepare import prepare
from muse_jax.data.prepared import load_prepared, out_dir_for, prepared_for_training
from muse_jax.settings import DataSettings
from muse_jax.data.shards import read_records, record_ids
from muse_jax.data.tokenizer import EOS_ID, load_tokenizer, train_tokenizer

VAL = 0.2


def demo_texts(count):
    """Short real Japanese texts: the first lines of demo-corpus documents."""
    texts = []
    with open(os.path.join(DEMO_DIR, "manpages_ja.jsonl"), encoding="utf-8") as f:
        for line in f:
            text = json.loads(line)["text"]
            texts.extend(t.strip() for t in text.split("\n\n") if len(t.strip()) > 30)
            if len(texts) >= count:
                return [t[:300].strip() for t in texts[:count]]
    raise AssertionError("demo corpus too small")


@pytest.fixture(scope="module")
def texts():
    return demo_texts(120)


@pytest.fixture(scope="module")
def tokenizer(tmp_path_factory, texts):
    return train_tokenizer(texts, str(tmp_path_factory.mktemp("tok") / "tok.model"), 600)


def write_lines(path, lines, compress=None):
    data = "".join(line + "\n" for line in lines).encode("utf-8")
    if compress == "gz":
        data = gzip.compress(data)
    elif compress == "zst":
        data = zstandard.ZstdCompressor().compress(data)
    path.write_bytes(data)
    return path.name


def write_manifest(directory, sources):
    path = directory / "manifest.json"
    path.write_text(json.dumps({"sources": sources}), encoding="utf-8")
    return str(path)


def settings(manifest, tokenizer_path, tmp_path, **changes):
    values = dict(manifest=manifest, source_files=(), out_dir=str(tmp_path / "out"),
                  cache_dir=str(tmp_path / "cache"), vocab_size=600, tokenizer_path=tokenizer_path,
                  tokenizer_sample_lines=1000, val_fraction=VAL, normalize_nfkc=True, min_chars=8,
                  on_error="raise", workers=1)
    values.update(changes)
    return DataSettings(**values)


@pytest.fixture
def every_kind(tmp_path, texts):
    """A manifest with one source of every kind; returns it and each source's expected documents."""
    t = texts
    wiki = [{"title": f"題{i}", "text": t[i]} for i in range(20)]
    wiki += [{"title": "題0", "text": t[0]}, {"text": ""}, {"text": "短い"}]  # a duplicate, empty, short
    dolly = [{"instruction": "要約して", "context": t[i], "response": t[i + 1][:40]} for i in range(20, 30)]
    alpaca = [{"instruction": "説明して", "input": "", "output": t[i]} for i in range(30, 40)]
    generic = [{"body": t[i]} for i in range(40, 50)] + [{"body": t[1]}]  # t[1] repeats a cc100 doc
    (tmp_path / "books").mkdir()
    for i in range(50, 53):
        write_lines(tmp_path / "books" / f"{i}.txt.zst", [t[i], "", "第二段落。"], "zst")
    write_lines(tmp_path / "wiki.jsonl", [json.dumps(r, ensure_ascii=False) for r in wiki])
    write_lines(tmp_path / "cc.txt", [line for i in range(1, 15) for line in (t[i], "")])
    write_lines(tmp_path / "dolly.jsonl.gz", [json.dumps(r, ensure_ascii=False) for r in dolly], "gz")
    write_lines(tmp_path / "alpaca.jsonl", [json.dumps(r, ensure_ascii=False) for r in alpaca])
    write_lines(tmp_path / "generic.jsonl", [json.dumps(r, ensure_ascii=False) for r in generic])
    manifest = write_manifest(tmp_path, [
        {"kind": "wikipedia", "path": "wiki.jsonl", "weight": 0.5},
        {"kind": "cc100", "path": "cc.txt", "weight": 0.2},
        {"kind": "dolly", "path": "dolly.jsonl.gz", "weight": 0.1},
        {"kind": "alpaca", "path": "alpaca.jsonl", "weight": 0.1},
        {"kind": "jsonl", "path": "generic.jsonl", "field": "body", "weight": 0.05},
        {"kind": "text", "path": "books/*.txt.zst", "weight": 0.05},
    ])
    expected = {
        "wikipedia": [f"題{i}\n{t[i]}" for i in range(20)],
        "cc100": [t[i] for i in range(1, 15)],
        "dolly": [f"### 指示:\n要約して\n\n### 入力:\n{t[i]}\n\n### 回答:\n{t[i + 1][:40].strip()}" for i in range(20, 30)],
        "alpaca": [f"### 指示:\n説明して\n\n### 回答:\n{t[i]}" for i in range(30, 40)],
        "jsonl": [t[i] for i in range(40, 50)],
        "text": [f"{t[i]}\n\n第二段落。" for i in range(50, 53)],
    }
    return manifest, {k: [clean_document(d, True) for d in v] for k, v in expected.items()}


def decoded(data, sp, source, split):
    """The documents of a source's split, decoded; each record must end with EOS."""
    shards = data.split(source, split)["shards"]
    records = read_records(shards) if shards else []
    ids = [record_ids(records[i], data.dtype) for i in range(len(records))]
    assert all(r[-1] == EOS_ID and EOS_ID not in r[:-1] for r in ids)
    return [sp.decode(r[:-1].tolist()) for r in ids]


def test_every_kind_prepared_once_per_document(tmp_path, tokenizer, every_kind):
    manifest, expected = every_kind
    meta = prepare(settings(manifest, tokenizer, tmp_path), str(tmp_path / "out"))
    data = load_prepared(str(tmp_path / "out"))
    sp = load_tokenizer(data.tokenizer_path)
    threshold = validation_threshold(VAL)
    for i, name in enumerate(data.source_names):
        train, val = decoded(data, sp, i, "train"), decoded(data, sp, i, "val")
        assert sorted(train + val) == sorted(expected[name]), name
        assert sorted(val) == sorted(d for d in expected[name] if document_key(d) < threshold)
    assert sum(len(decoded(data, sp, i, "val")) for i in range(6)) > 0
    with open(tmp_path / "out" / "report.json") as f:
        report = {s["name"]: s for s in json.load(f)["sources"]}
    assert report["wikipedia"]["documents_read"] == 23
    assert report["wikipedia"]["dropped"] == {"empty": 1, "too_short": 1, "duplicate": 1, "bad_lines": 0}
    assert report["jsonl"]["dropped"]["duplicate"] == 1  # the same text as a cc100 document
    assert report["text"]["documents_kept"] == 3
    assert meta["train_tokens"] == sum(s["train"]["tokens"] for s in meta["sources"])
    assert meta["tokenizer"]["given"] == tokenizer and meta["tokenizer"]["eos_id"] == EOS_ID
    files = meta["sources"][5]["files"]
    assert [os.path.basename(f["path"]) for f in files] == ["50.txt.zst", "51.txt.zst", "52.txt.zst"]
    assert all(len(f["sha256"]) == 64 and f["bytes"] > 0 for f in files)
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no temporary folders left


def test_output_does_not_depend_on_workers(tmp_path, tokenizer, every_kind, monkeypatch):
    manifest, _ = every_kind
    monkeypatch.setattr(prepare_module, "SHARD_MAX_TOKENS", 300)  # several shards per source
    outputs = []
    for workers, block in ((1, 1 << 18), (2, 200)):  # small blocks: many chunks in flight
        monkeypatch.setattr("muse_jax.data.chunks.BLOCK_BYTES", block)
        monkeypatch.setattr("muse_jax.data.chunks.ChunkReader.__init__.__defaults__", (block,))
        out = tmp_path / f"out{workers}"
        prepare(settings(manifest, tokenizer, tmp_path, workers=workers), str(out),
                shard_max_tokens=300)
        outputs.append({os.path.relpath(os.path.join(d, f), out): open(os.path.join(d, f), "rb").read()
                        for d, _, fs in os.walk(out) for f in fs if f != "report.json"})
    assert len([p for p in outputs[0] if p.startswith("train/wikipedia-")]) > 1
    assert outputs[0] == outputs[1]


def test_split_is_stable_when_sources_are_added(tmp_path, tokenizer, texts):
    write_lines(tmp_path / "a.jsonl", [json.dumps({"text": t}, ensure_ascii=False) for t in texts[:60]])
    write_lines(tmp_path / "b.jsonl", [json.dumps({"text": t}, ensure_ascii=False) for t in texts[60:]])
    val = []
    for name, sources in (("one", ["a.jsonl"]), ("two", ["b.jsonl", "a.jsonl"])):
        manifest = write_manifest(tmp_path, [{"kind": "wikipedia", "path": p, "name": p[0]} for p in sources])
        prepare(settings(manifest, tokenizer, tmp_path), str(tmp_path / name))
        data = load_prepared(str(tmp_path / name))
        a = data.source_names.index("a")
        val.append(decoded(data, load_tokenizer(data.tokenizer_path), a, "val"))
    assert val[0] == val[1] and len(val[0]) > 0


def test_tiny_val_fraction_still_gives_one_validation_document(tmp_path, tokenizer, texts):
    write_lines(tmp_path / "a.jsonl", [json.dumps({"text": t}, ensure_ascii=False) for t in texts[:30]])
    manifest = write_manifest(tmp_path, [{"kind": "wikipedia", "path": "a.jsonl"}])
    smallest = min(texts[:30], key=lambda t: document_key(clean_document(t, True)))
    prepare(settings(manifest, tokenizer, tmp_path, val_fraction=1e-12), str(tmp_path / "out"))
    data = load_prepared(str(tmp_path / "out"))
    assert decoded(data, load_tokenizer(data.tokenizer_path), 0, "val") == [clean_document(smallest, True)]
    assert data.split(0, "train")["documents"] == 29


def test_bad_input_leaves_nothing_and_keeps_the_previous_output(tmp_path, tokenizer, texts, monkeypatch):
    lines = [json.dumps({"text": t}, ensure_ascii=False) for t in texts[:20]]
    write_lines(tmp_path / "a.jsonl", lines)
    manifest = write_manifest(tmp_path, [{"kind": "wikipedia", "path": "a.jsonl"}])
    s = settings(manifest, tokenizer, tmp_path)
    bad_line = '{"text": "壊れた" '
    write_lines(tmp_path / "a.jsonl", lines[:12] + [bad_line] + lines[12:])
    byte = sum(len(line.encode()) + 1 for line in lines[:12]) + len(bad_line.encode())
    with pytest.raises(DataError, match=rf"a\.jsonl:13 \(byte {byte}\): malformed JSON"):
        prepare(s, str(tmp_path / "out"))
    assert not os.path.exists(tmp_path / "out") and not [p for p in os.listdir(tmp_path) if p.startswith(".")]

    write_lines(tmp_path / "a.jsonl", lines)
    prepare(s, str(tmp_path / "out"))
    before = (tmp_path / "out" / "meta.json").read_bytes()
    write_lines(tmp_path / "a.jsonl", lines[:12] + [bad_line] + lines[12:])
    with pytest.raises(DataError, match="malformed JSON"):
        prepare(s, str(tmp_path / "out"))
    original_add = prepare_module._SplitShards.add

    def interrupted(self, *args):
        raise KeyboardInterrupt

    write_lines(tmp_path / "a.jsonl", lines[::-1])
    monkeypatch.setattr(prepare_module._SplitShards, "add", interrupted)
    with pytest.raises(KeyboardInterrupt):
        prepare(s, str(tmp_path / "out"))
    monkeypatch.setattr(prepare_module._SplitShards, "add", original_add)
    assert (tmp_path / "out" / "meta.json").read_bytes() == before
    assert load_prepared(str(tmp_path / "out")).meta["train_tokens"] > 0
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]


def test_skip_mode_counts_bad_lines(tmp_path, tokenizer, texts):
    lines = [json.dumps({"text": t}, ensure_ascii=False) for t in texts[:10]]
    bad = b'{"text": \n\xff\n'  # malformed JSON, then invalid UTF-8
    (tmp_path / "a.jsonl").write_bytes("\n".join(lines[:5]).encode() + b"\n" + bad + "\n".join(lines[5:]).encode())
    manifest = write_manifest(tmp_path, [{"kind": "wikipedia", "path": "a.jsonl"}])
    prepare(settings(manifest, tokenizer, tmp_path, on_error="skip"), str(tmp_path / "out"))
    with open(tmp_path / "out" / "report.json") as f:
        source = json.load(f)["sources"][0]
    assert source["dropped"]["bad_lines"] == 2 and source["documents_kept"] == 10
    assert "a.jsonl:6 (byte" in source["bad_line_examples"][0] and "malformed JSON" in source["bad_line_examples"][0]
    assert "a.jsonl:7 (byte" in source["bad_line_examples"][1] and "invalid UTF-8" in source["bad_line_examples"][1]


@pytest.mark.parametrize("content, message", [
    ("", r"source 'wikipedia' \(.*a\.jsonl\): no documents left: 0 read"),
    ('{"text": "短い"}\n{"text": ""}\n', r"no documents left: 2 read, 1 empty, 1 shorter than min_chars"),
])
def test_empty_source_is_an_error(tmp_path, tokenizer, content, message):
    (tmp_path / "a.jsonl").write_text(content, encoding="utf-8")
    manifest = write_manifest(tmp_path, [{"kind": "wikipedia", "path": "a.jsonl"}])
    with pytest.raises(DataError, match=message):
        prepare(settings(manifest, tokenizer, tmp_path), str(tmp_path / "out"))
    assert not os.path.exists(tmp_path / "out")


def test_refuses_to_replace_a_folder_that_is_not_prepared_data(tmp_path, tokenizer, texts):
    write_lines(tmp_path / "a.jsonl", [json.dumps({"text": t}, ensure_ascii=False) for t in texts[:5]])
    manifest = write_manifest(tmp_path, [{"kind": "wikipedia", "path": "a.jsonl"}])
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "thesis.tex").write_text("important")
    with pytest.raises(DataError, match="exists and is not prepared data"):
        prepare(settings(manifest, tokenizer, tmp_path), str(tmp_path / "home"))
    assert (tmp_path / "home" / "thesis.tex").read_text() == "important"


def test_trains_a_tokenizer_on_a_bounded_sample(tmp_path, texts):
    write_lines(tmp_path / "a.jsonl", [json.dumps({"text": t}, ensure_ascii=False) for t in texts])
    manifest = write_manifest(tmp_path, [{"kind": "wikipedia", "path": "a.jsonl"}])
    meta = prepare(settings(manifest, "", tmp_path, vocab_size=400, tokenizer_sample_lines=150),
                   str(tmp_path / "out"))
    assert meta["tokenizer"]["given"] is None and meta["tokenizer"]["vocab_size"] == 400
    assert meta["settings"]["tokenizer_sample_lines"] == 150
    data = load_prepared(str(tmp_path / "out"))
    train = decoded(data, load_tokenizer(data.tokenizer_path), 0, "train")
    assert set(train) <= {clean_document(t, True) for t in texts} and len(train) > 60


def test_a_tokenizer_that_cannot_be_trained_is_a_data_error_naming_out_dir(tmp_path, texts):
    """More pieces than the text can give: one line naming the tokenizer in out_dir (not the
    temporary folder it is trained in) and the key to change; nothing is left behind."""
    write_lines(tmp_path / "a.jsonl", [json.dumps({"text": t}, ensure_ascii=False) for t in texts[:10]])
    manifest = write_manifest(tmp_path, [{"kind": "wikipedia", "path": "a.jsonl"}])
    with pytest.raises(DataError) as error:
        prepare(settings(manifest, "", tmp_path, vocab_size=30000), str(tmp_path / "out"))
    message = str(error.value)
    assert message.startswith(f"{tmp_path / 'out' / 'tokenizer.model'}: cannot train a tokenizer of 30000 pieces")
    assert message.endswith("; change data.vocab_size") and ".tmp-" not in message
    assert sorted(os.listdir(tmp_path)) == ["a.jsonl", "manifest.json"]


def test_prepared_for_training_prepares_once_and_checks_settings(tmp_path, tokenizer, texts, monkeypatch):
    write_lines(tmp_path / "a.jsonl", [json.dumps({"text": t}, ensure_ascii=False) for t in texts[:30]])
    write_lines(tmp_path / "b.txt", [line for t in texts[30:60] for line in (t, "")])
    manifest = write_manifest(tmp_path, [{"kind": "wikipedia", "path": "a.jsonl", "weight": 3},
                                         {"kind": "cc100", "path": "b.txt", "weight": 1}])
    auto = settings(manifest, tokenizer, tmp_path, out_dir="")
    first = prepared_for_training(auto)
    assert first.directory == out_dir_for(auto) and first.directory.startswith(str(tmp_path / "cache"))
    assert first.weights == (3.0, 1.0)

    def no_prepare(*args, **kwargs):
        raise AssertionError("prepared again")

    monkeypatch.setattr(prepared_module, "prepare", no_prepare)
    manifest = write_manifest(tmp_path, [{"kind": "wikipedia", "path": "a.jsonl", "weight": 1},
                                         {"kind": "cc100", "path": "b.txt", "weight": 1}])
    again = prepared_for_training(auto)  # new weights take effect without a new prepare
    assert again.directory == first.directory and again.weights == (1.0, 1.0)
    other = settings(manifest, tokenizer, tmp_path, out_dir="", min_chars=20)
    assert out_dir_for(other) != first.directory
    with pytest.raises(AssertionError, match="prepared again"):
        prepared_for_training(other)
    # An explicit out_dir is used as it is (its dumps may be gone), if its settings match.
    explicit = settings(manifest, tokenizer, tmp_path, out_dir=first.directory)
    os.remove(tmp_path / "b.txt")
    assert prepared_for_training(explicit).directory == first.directory
    with pytest.raises(DataError, match=r"prepared with other data settings \(min_chars: prepared 8, configured 20\)"):
        prepared_for_training(settings(manifest, tokenizer, tmp_path, out_dir=first.directory, min_chars=20))
    np.testing.assert_array_equal(first.split(0, "train")["shards"], again.split(0, "train")["shards"])


def square_slowly_first(x):
    """Task for the pool: early tasks finish last."""
    import time

    time.sleep(0.05 if x < 3 else 0)
    return x * x


def die(x):
    os._exit(1)


def test_worker_pool_keeps_task_order_and_fails_when_a_worker_dies():
    for processes in (1, 2):
        with WorkerPool(processes, tasks_per_process=2) as pool:
            assert list(pool.ordered_map(square_slowly_first, range(12))) == [x * x for x in range(12)]
    with pytest.raises(BrokenProcessPool):
        with WorkerPool(2) as pool:
            list(pool.ordered_map(die, range(4)))
