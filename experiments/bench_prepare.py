"""Throughput of ``prepare`` against SentencePiece's own encoding speed, in one run.

Target (issue 6): tokens/s of ``prepare`` on C cores >= 50 % of C x (tokens/s
of SentencePiece encoding on one core). Both are measured here on the same
corpus: the demo corpus repeated (each copy of a document made unique, so
deduplication keeps it) to ``--megabytes``, half as ``wikipedia`` JSONL, half
as ``cc100`` text, with a tokenizer trained beforehand and given to
``prepare`` as ``tokenizer_path`` (tokenizer training is reported apart).

* one-core encoding: ``sp.encode(documents, return_type="numpy", num_threads=1)``
  (SentencePiece's fastest output) over the cleaned documents held in memory:
  no reading, no cleaning, no writing;
* ``prepare``: wall time of the whole call (reading, cleaning, dedup,
  encoding on all cores, writing shards and metadata), tokens written / time.

Each is the best of ``--repeats`` runs, interleaved. CPU time per token is
reported too (all processes), as wall time depends on what else the machine runs.

    python -m experiments.bench_prepare [--megabytes 40] [--vocab-size 4096] [--repeats 5]

writes results/bench_prepare.json.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import sys
import tempfile
import time

from muse_jax.data.chunks import ChunkReader
from muse_jax.data.cleaning import clean_document
from muse_jax.data.demo import DEMO_DIR
from muse_jax.data.prepare import prepare
from muse_jax.data.sources import KINDS, BadLines, chunk_documents
from muse_jax.data.tokenizer import load_tokenizer, train_tokenizer
from muse_jax.settings import DataSettings
from muse_jax.settings.data import available_cores

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def demo_documents(kind: str, name: str) -> list[str]:
    path = os.path.join(DEMO_DIR, name)
    return [d for chunk in ChunkReader(path, KINDS[kind].boundary)
            for d in chunk_documents(kind, chunk, BadLines("raise"))]


def write_corpus(directory: str, megabytes: float) -> tuple[list[str], int]:
    """wiki.jsonl + cc.txt of about ``megabytes`` MB; returns the documents and bytes written."""
    wiki, cc = demo_documents("wikipedia", "manpages_ja.jsonl"), demo_documents("cc100", "debian_docs_ja.txt")
    target, written, copy, documents = megabytes * 2**20, 0, 0, []
    with open(os.path.join(directory, "wiki.jsonl"), "w", encoding="utf-8") as fw, \
            open(os.path.join(directory, "cc.txt"), "w", encoding="utf-8") as fc:
        while written < target:
            copy += 1
            for doc in wiki:
                text = f"第{copy}版\n{doc}"
                line = json.dumps({"text": text}, ensure_ascii=False) + "\n"
                fw.write(line)
                written += len(line.encode())
                documents.append(text)
            for doc in cc:
                text = f"第{copy}版\n{doc}"
                block = "\n".join(p for p in text.split("\n") if p.strip()) + "\n\n"
                fc.write(block)
                written += len(block.encode())
                documents.append(block.strip())
    return documents, written


def one_core_encode(sp, cleaned: list[str], return_type) -> tuple[float, float, int]:
    """(tokens/s wall, CPU seconds, tokens) of encoding ``cleaned`` on one core."""
    wall, cpu = time.perf_counter(), time.process_time()
    encoded = sp.encode(cleaned, return_type=return_type, num_threads=1)
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    tokens = sum(map(len, encoded))
    return tokens / wall, cpu, tokens


def timed_prepare(settings: DataSettings, out_dir: str) -> tuple[dict, float, float]:
    """(meta, wall seconds, CPU seconds of this process and its workers)."""
    before = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    start = time.perf_counter()
    meta = prepare(settings, out_dir)
    wall = time.perf_counter() - start
    after = [resource.getrusage(who) for who in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    cpu = sum(a.ru_utime + a.ru_stime - b.ru_utime - b.ru_stime for a, b in zip(after, before))
    return meta, wall, cpu


def settings_for(manifest: str, tokenizer: str, cache_dir: str, workers: int) -> DataSettings:
    return DataSettings(manifest=manifest, source_files=(), out_dir="", cache_dir=cache_dir,
                        vocab_size=0, tokenizer_path=tokenizer, tokenizer_sample_lines=1000,
                        val_fraction=0.01, normalize_nfkc=True, min_chars=16, on_error="raise",
                        workers=workers)


def main() -> None:
    parser = argparse.ArgumentParser(prog="python -m experiments.bench_prepare", description=__doc__.split("\n\n")[0])
    parser.add_argument("--megabytes", type=float, default=40.0)
    parser.add_argument("--vocab-size", type=int, default=4096)
    parser.add_argument("--repeats", type=int, default=5, help="best of this many runs of each")
    parser.add_argument("--out", default=os.path.join(ROOT, "results", "bench_prepare.json"))
    args = parser.parse_args()
    cores = available_cores()
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory() as tmp:
        documents, corpus_bytes = write_corpus(tmp, args.megabytes)
        manifest = os.path.join(tmp, "manifest.json")
        with open(manifest, "w") as f:
            json.dump({"sources": [{"kind": "wikipedia", "path": "wiki.jsonl", "weight": 0.6},
                                   {"kind": "cc100", "path": "cc.txt", "weight": 0.4}]}, f)
        model = train_tokenizer(documents[:400], os.path.join(tmp, "tok.model"), args.vocab_size)
        sp = load_tokenizer(model)
        cleaned = [clean_document(d, True) for d in documents]
        del documents
        settings = settings_for(manifest, model, tmp, cores)
        encode, encode_lists, runs = [], [], []
        for _ in range(args.repeats):
            encode.append(one_core_encode(sp, cleaned, "numpy"))
            encode_lists.append(one_core_encode(sp, cleaned, int))
            runs.append(timed_prepare(settings, os.path.join(tmp, "prepared")))
        with open(os.path.join(tmp, "prepared", "report.json"), encoding="utf-8") as f:
            phases = json.load(f)["seconds"]
    speed, encode_cpu, encode_tokens = max(encode)
    meta, wall, cpu = min(runs, key=lambda r: r[1])
    tokens = meta["train_tokens"] + meta["val_tokens"]
    target = 0.5 * cores * speed
    result = {
        "command": "python -m experiments.bench_prepare " + " ".join(sys.argv[1:]),
        "machine": f"{platform.machine()}, {cores} cores available, Python {platform.python_version()}",
        "load_average_1min_before_and_after": [round(load_before[0], 2), round(os.getloadavg()[0], 2)],
        "corpus_megabytes": round(corpus_bytes / 2**20, 1),
        "vocab_size": args.vocab_size,
        "repeats (best of)": args.repeats,
        "one_core_encode_tokens_per_s": round(speed),
        "one_core_encode_tokens_per_s_as_int_lists": round(max(encode_lists)[0]),
        "one_core_encode_tokens": encode_tokens,
        "prepare_workers": cores,
        "prepare_tokens (EOS included)": tokens,
        "prepare_seconds": round(wall, 2),
        "prepare_tokens_per_s": round(tokens / wall),
        "prepare_phase_seconds (last run)": phases,
        "target_tokens_per_s (50% of cores x one-core encode)": round(target),
        "prepare_over_cores_x_one_core": round(tokens / wall / (cores * speed), 3),
        "meets_target": tokens / wall >= target,
        "cpu_ns_per_token_one_core_encode": round(encode_cpu / encode_tokens * 1e9),
        "cpu_ns_per_token_prepare_all_processes": round(cpu / tokens * 1e9),
        # What prepare_over_cores_x_one_core becomes when prepare has the cores to itself and keeps
        # them busy: one-core encode CPU per token / prepare CPU per token (all processes).
        "prepare_over_cores_x_one_core_if_cpu_bound": round(encode_cpu / encode_tokens / (cpu / tokens), 3),
    }
    os.makedirs(os.path.dirname(args.out), exist_ok=True)
    with open(args.out, "w", encoding="utf-8") as f:
        json.dump(result, f, indent=1, ensure_ascii=False)
        f.write("\n")
    print(json.dumps(result, indent=1, ensure_ascii=False))


if __name__ == "__main__":
    main()
