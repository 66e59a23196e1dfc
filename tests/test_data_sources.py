"""Readers per kind, chunking, compression, bad lines, and the manifest."""

import gzip
import json

import pytest
import zstandard

from muse_jax.data.chunks import ChunkReader
from muse_jax.data.errors import DataError
from muse_jax.data.manifest import read_manifest, sources_from_files
from muse_jax.data.sources import KINDS, BadLines, chunk_documents, instruction_document


def documents(path, kind, policy="raise", field="text", block_bytes=1 << 18):
    """All documents of a file, and the BadLines that saw it."""
    bad = BadLines(policy)
    reader = ChunkReader(str(path), KINDS[kind].boundary, block_bytes)
    return [d for chunk in reader for d in chunk_documents(kind, chunk, bad, field)], bad


def jsonl(path, records):
    path.write_text("".join(json.dumps(r, ensure_ascii=False) + "\n" for r in records), encoding="utf-8")
    return path


# ------------------------------------------------------------------ kinds


def test_wikipedia_keeps_title_and_skips_blank_lines(tmp_path):
    path = jsonl(tmp_path / "wiki.jsonl", [
        {"id": "1", "title": "東京", "text": "東京は日本の首都である。"},
        {"id": "2", "text": "タイトルのない記事。"},
        {"id": "3", "title": "空", "text": "  "},
        {"id": "4", "title": "", "text": "空のタイトル。"},
    ])
    path.write_text(path.read_text(encoding="utf-8") + "\n\n", encoding="utf-8")
    docs, _ = documents(path, "wikipedia")
    assert docs == ["東京\n東京は日本の首都である。", "タイトルのない記事。", "", "空のタイトル。"]


def test_cc100_documents_end_at_blank_lines(tmp_path):
    path = tmp_path / "cc.txt"
    path.write_bytes("\n一つ目の段落。\n二つ目の段落。\n\n \t\n\r\n二番目の文書。\r\n三行目\n\n最後".encode())
    docs, _ = documents(path, "cc100")
    assert docs == ["一つ目の段落。\n二つ目の段落。", "二番目の文書。\r\n三行目", "最後"]  # cleaning drops "\r"
    # A chunk with invalid UTF-8 is read line by line: the same documents, less the bad line.
    path.write_bytes(path.read_bytes() + b"\n\n\xff\n")
    assert documents(path, "cc100", policy="skip")[0] == docs


def test_instruction_kinds_share_one_template(tmp_path):
    dolly = jsonl(tmp_path / "dolly.jsonl", [
        {"instruction": "要約して", "context": "長い文章。", "response": "短い文章。", "category": "summarization"},
        {"instruction": "挨拶して", "context": "", "response": "こんにちは。"},
        {"instruction": "答えのない質問", "context": "", "response": " "},
    ])
    alpaca = jsonl(tmp_path / "alpaca.jsonl", [
        {"instruction": "要約して", "input": "長い文章。", "output": "短い文章。"},
        {"instruction": "挨拶して", "output": "こんにちは。"},
    ])
    expected = "### 指示:\n要約して\n\n### 入力:\n長い文章。\n\n### 回答:\n短い文章。"
    assert documents(dolly, "dolly")[0] == [expected, "### 指示:\n挨拶して\n\n### 回答:\nこんにちは。", ""]
    assert documents(alpaca, "alpaca")[0] == documents(dolly, "dolly")[0][:2]
    assert instruction_document("要約して", "長い文章。", "短い文章。") == expected


def test_generic_jsonl_field_and_whole_file_text(tmp_path):
    path = jsonl(tmp_path / "g.jsonl", [{"content": "本文一"}, {"content": "本文二", "text": 3}])
    assert documents(path, "jsonl", field="content")[0] == ["本文一", "本文二"]
    book = tmp_path / "book.txt"
    book.write_text("第一章\n\n吾輩は猫である。\n", encoding="utf-8")
    assert documents(book, "text")[0] == ["第一章\n\n吾輩は猫である。"]


@pytest.mark.parametrize("kind, name", [("wikipedia", "w.jsonl"), ("cc100", "c.txt"), ("text", "t.txt")])
def test_small_chunks_give_the_same_documents_and_places(tmp_path, kind, name):
    path = tmp_path / name
    if kind == "wikipedia":
        jsonl(path, [{"title": f"題{i}", "text": "本文。" * (i % 7 + 1)} for i in range(40)])
    else:
        path.write_text("\n\n".join("段落。\n" * (i % 5 + 1) for i in range(40)), encoding="utf-8")
    whole, _ = documents(path, kind)
    for block in (5, 64, 1000):
        assert documents(path, kind, block_bytes=block)[0] == whole
        data = path.read_bytes()
        for chunk in ChunkReader(str(path), KINDS[kind].boundary, block):
            assert data[chunk.first_offset:chunk.first_offset + len(chunk.data)] == chunk.data
            assert chunk.first_line == 1 + data[:chunk.first_offset].count(b"\n")


def test_gzip_and_zstandard_are_read_transparently(tmp_path):
    plain = jsonl(tmp_path / "w.jsonl", [{"text": f"文書{i}。" * 50} for i in range(200)])
    (tmp_path / "w.jsonl.gz").write_bytes(gzip.compress(plain.read_bytes()))
    (tmp_path / "w.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(plain.read_bytes()))
    expected, _ = documents(plain, "wikipedia")
    for name in ("w.jsonl.gz", "w.jsonl.zst"):
        reader = ChunkReader(str(tmp_path / name), KINDS["wikipedia"].boundary, 1000)
        bad = BadLines("raise")
        assert [d for c in reader for d in chunk_documents("wikipedia", c, bad)] == expected
        assert reader.bytes == (tmp_path / name).stat().st_size and len(reader.sha256) == 64
    (tmp_path / "bad.jsonl.gz").write_bytes(gzip.compress(plain.read_bytes())[:-30] + b"garbage")
    with pytest.raises(DataError, match=r"bad\.jsonl\.gz: corrupt compressed data"):
        documents(tmp_path / "bad.jsonl.gz", "wikipedia")


# ------------------------------------------------------------- bad lines


@pytest.mark.parametrize("block", [1 << 18, 16])
def test_malformed_json_names_file_line_and_byte(tmp_path, block):
    lines = ['{"text": "良い"}', "", '{"text": "悪い", }', '{"text": "x"}']
    path = tmp_path / "bad.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    error_byte = len(("\n".join(lines[:2]) + "\n").encode()) + len('{"text": "悪い", '.encode())
    with pytest.raises(DataError) as e:
        documents(path, "wikipedia", block_bytes=block)
    assert str(e.value).startswith(f"{path}:3 (byte {error_byte}): malformed JSON (")


@pytest.mark.parametrize("kind, good", [("wikipedia", '{"text": "日本語"}\n'), ("cc100", "日本語\n")])
def test_invalid_utf8_names_file_line_and_byte(tmp_path, kind, good):
    path = tmp_path / "u.data"
    prefix = good.encode() * 2 + b'{"text": "'
    path.write_bytes(prefix + b'\xe6\x97"}\n' + good.encode())
    with pytest.raises(DataError, match=rf"u\.data:3 \(byte {len(prefix)}\): invalid UTF-8 \(byte 0xe6\)"):
        documents(path, kind)


@pytest.mark.parametrize("line, problem", [
    ('{"title": "t"}', "missing 'text' field"),
    ('["text"]', "expected a JSON object, got list"),
    ('{"text": 5}', "'text' field must be a string, got int"),
])
def test_bad_records(tmp_path, line, problem):
    path = tmp_path / "rec.jsonl"
    path.write_text('{"text": "a"}\n' + line + "\n", encoding="utf-8")
    with pytest.raises(DataError, match=rf"rec\.jsonl:2 \(byte 14\): {problem}"):
        documents(path, "wikipedia")


def test_skip_policy_counts_bad_lines(tmp_path):
    path = tmp_path / "mixed.jsonl"
    path.write_bytes(b'{"text": "a"}\n{oops\n{"text": "\xff"}\n[1]\n{"text": "b"}\n')
    docs, bad = documents(path, "wikipedia", policy="skip")
    assert docs == ["a", "b"] and bad.count == 3
    assert [m.split(": ")[0] for m in bad.examples] == [f"{path}:{i} (byte {b})" for i, b in
                                                          ((2, 15), (3, 30), (4, 34))]
    with pytest.raises(DataError, match="on_error"):
        BadLines("ignore")


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match=r"nope\.jsonl: file not found"):
        documents(tmp_path / "nope.jsonl", "wikipedia")


# --------------------------------------------------------------- manifest


def write_manifest(path, sources):
    path.write_text(json.dumps({"sources": sources}), encoding="utf-8")
    return str(path)


def test_manifest_defaults_globs_and_yaml(tmp_path):
    (tmp_path / "dumps").mkdir()
    for name in ("b.jsonl", "a.jsonl", "skip.txt"):
        (tmp_path / "dumps" / name).write_text('{"text": "x"}\n')
    (tmp_path / "cc.txt").write_text("x\n")
    manifest = write_manifest(tmp_path / "m.json", [
        {"kind": "wikipedia", "path": "dumps/*.jsonl", "weight": 3},
        {"kind": "cc100", "path": "cc.txt"},
        {"kind": "cc100", "path": "cc.txt", "name": "again"},
        {"kind": "cc100", "path": "dumps/skip.txt"},
    ])
    specs = read_manifest(manifest)
    assert [(s.name, s.kind, s.weight) for s in specs] == [
        ("wikipedia", "wikipedia", 3.0), ("cc100_1", "cc100", 1.0), ("again", "cc100", 1.0),
        ("cc100_2", "cc100", 1.0)]
    assert specs[0].files == (str(tmp_path / "dumps" / "a.jsonl"), str(tmp_path / "dumps" / "b.jsonl"))
    yaml_manifest = tmp_path / "m.yaml"
    yaml_manifest.write_text("sources:\n  - {kind: cc100, path: cc.txt, weight: 0.5}\n")
    assert [(s.name, s.files) for s in read_manifest(str(yaml_manifest))] == [("cc100", (str(tmp_path / "cc.txt"),))]
    # Without checking files, a manifest whose dumps are gone still gives names and weights.
    gone = write_manifest(tmp_path / "gone.json", [{"kind": "cc100", "path": "gone/*.txt", "weight": 2}])
    assert [(s.name, s.weight, s.files) for s in read_manifest(gone, check_files=False)] == [("cc100", 2.0, ())]


@pytest.mark.parametrize("entry, message", [
    ({"kind": "wiki", "path": "x"}, r"source 1: unknown kind 'wiki' \(expected one of wikipedia, cc100"),
    ({"kind": "cc100", "path": "x.txt", "wieght": 1}, r"source 1: unknown key 'wieght'"),
    ({"kind": "cc100", "path": "missing.txt"}, r"source 1 \(cc100\): file not found: .*missing\.txt"),
    ({"kind": "cc100", "path": "none/*.txt"}, r"source 1 \(cc100\): no file matches .*none/\*\.txt"),
    ({"kind": "cc100", "path": "x.txt", "weight": 0}, r"source 1: 'weight' must be a finite number > 0, got 0"),
    ({"kind": "cc100", "path": "x.txt", "field": "body"}, r"source 1: 'field' is only for kind jsonl"),
    ({"kind": "cc100", "path": "x.txt", "name": "a/b"}, r"source 1: 'name' must be letters"),
])
def test_manifest_errors_name_the_source(tmp_path, entry, message):
    (tmp_path / "x.txt").write_text("x\n")
    manifest = write_manifest(tmp_path / "m.json", [entry])
    with pytest.raises(DataError, match=r"m\.json: " + message):
        read_manifest(manifest)


def test_manifest_file_errors(tmp_path):
    with pytest.raises(DataError, match=r"nope\.json: manifest not found"):
        read_manifest(str(tmp_path / "nope.json"))
    (tmp_path / "bad.json").write_text('{"sources": [\n  {"kind": "cc100",}\n]}')
    with pytest.raises(DataError, match=r"bad\.json:2 \(byte \d+\): malformed JSON"):
        read_manifest(str(tmp_path / "bad.json"))
    (tmp_path / "x.txt").write_text("x\n")
    twice = write_manifest(tmp_path / "twice.json", [{"kind": "cc100", "path": "x.txt", "name": "a"}] * 2)
    with pytest.raises(DataError, match="source names must be unique, repeated: a"):
        read_manifest(twice)
    with pytest.raises(DataError, match="non-empty list 'sources'"):
        read_manifest(write_manifest(tmp_path / "empty.json", []))


def test_sources_from_files_kind_by_extension(tmp_path):
    for name in ("a.jsonl", "b.txt.gz"):
        (tmp_path / name).write_text("")
    specs = sources_from_files([str(tmp_path / "a.jsonl"), str(tmp_path / "b.txt.gz")])
    assert [(s.name, s.kind, s.weight) for s in specs] == [("a", "wikipedia", 1.0), ("b", "cc100", 1.0)]
    with pytest.raises(DataError, match=r"x\.csv: cannot tell the kind"):
        sources_from_files([str(tmp_path / "x.csv")])
