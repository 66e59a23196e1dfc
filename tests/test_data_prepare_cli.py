"""``--mode=prepare`` from the command line: output, one-line errors, and peak memory
independent of corpus size (prepare runs in a subprocess whose max RSS, workers
included, is read with getrusage(RUSAGE_CHILDREN))."""

import json
import os
import subprocess
import sys

from muse_jax.data.demo import DEMO_DIR

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# Runs the command given as arguments, then prints the peak RSS (KiB) of it and its workers.
PEAK_RSS_DRIVER = ("import resource, subprocess, sys; r = subprocess.run(sys.argv[1:]); "
                   "print(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss); sys.exit(r.returncode)")


def prepare_cli(*overrides):
    command = [sys.executable, "-m", "muse_jax.main", "--config", "configs/tiny_ja.py", "--mode=prepare",
               *[f"--config.data.{k}={v}" for k, v in overrides]]
    return subprocess.run([sys.executable, "-c", PEAK_RSS_DRIVER, *command], cwd=ROOT,
                          capture_output=True, text=True, timeout=300)


def write_corpus(directory, megabytes):
    """The demo manpages as wikipedia JSONL, repeated (each copy made unique) to ``megabytes``."""
    with open(os.path.join(DEMO_DIR, "manpages_ja.jsonl"), encoding="utf-8") as f:
        records = [json.loads(line) for line in f]
    os.makedirs(directory, exist_ok=True)
    written, copy = 0, 0
    with open(os.path.join(directory, "wiki.jsonl"), "w", encoding="utf-8") as out:
        while written < megabytes * 2**20:
            copy += 1
            for r in records:
                line = json.dumps({"title": f"{r['title']} ({copy})", "text": r["text"]}, ensure_ascii=False) + "\n"
                out.write(line)
                written += len(line.encode())
                if written >= megabytes * 2**20:
                    break
    manifest = os.path.join(directory, "manifest.json")
    with open(manifest, "w") as f:
        json.dump({"sources": [{"kind": "wikipedia", "path": "wiki.jsonl"}]}, f)
    return manifest


def test_peak_memory_does_not_grow_with_the_corpus(tmp_path):
    peaks = {}
    for megabytes in (3, 30):  # 3 MB already fills the pipeline (6 chunks of 1 MB in flight)
        manifest = write_corpus(str(tmp_path / f"c{megabytes}"), megabytes)
        r = prepare_cli(("manifest", manifest), ("out_dir", tmp_path / f"out{megabytes}"),
                        ("vocab_size", 400), ("tokenizer_sample_lines", 1500), ("workers", 2))
        assert r.returncode == 0, r.stderr
        peaks[megabytes] = int(r.stdout.strip().splitlines()[-1])
        with open(tmp_path / f"out{megabytes}" / "meta.json") as f:
            assert f"{json.load(f)['train_tokens']:,}" in r.stderr
    print(f"peak RSS: 3 MB corpus {peaks[3] / 1024:.0f} MiB, 30 MB corpus {peaks[30] / 1024:.0f} MiB")
    assert peaks[30] <= 1.5 * peaks[3], peaks


def test_cli_prepares_into_out_dir_and_reports_bad_input_in_one_line(tmp_path):
    manifest = write_corpus(str(tmp_path / "c"), 0.2)
    out = tmp_path / "out"
    good = prepare_cli(("manifest", manifest), ("out_dir", out), ("vocab_size", 400),
                       ("tokenizer_sample_lines", 500), ("workers", 1))
    assert good.returncode == 0, good.stderr
    assert good.stdout.strip().splitlines()[-2] == str(out) and (out / "meta.json").is_file()

    with open(tmp_path / "c" / "wiki.jsonl", "ab") as f:
        f.write(b'{"text": "\xe6\x97"}\n')
    lines = (tmp_path / "c" / "wiki.jsonl").read_bytes().count(b"\n")
    bad = prepare_cli(("manifest", manifest), ("out_dir", tmp_path / "new"), ("vocab_size", 400),
                      ("tokenizer_sample_lines", 500), ("workers", 2))
    assert bad.returncode != 0 and "Traceback" not in bad.stderr
    errors = [line for line in bad.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and f"wiki.jsonl:{lines} (byte " in errors[0] and "invalid UTF-8" in errors[0]
    assert not (tmp_path / "new").exists() and not [p for p in os.listdir(tmp_path) if p.startswith(".")]

    (tmp_path / "m.json").write_text('{"sources": [{"kind": "wiki", "path": "c/wiki.jsonl"}]}')
    unknown = prepare_cli(("manifest", tmp_path / "m.json"), ("out_dir", out))
    assert unknown.returncode != 0
    assert [line for line in unknown.stderr.splitlines() if line.startswith("error:")] == [
        f"error: {tmp_path / 'm.json'}: source 1: unknown kind 'wiki' (expected one of wikipedia, "
        "cc100, dolly, alpaca, jsonl, text)"]
    assert (out / "meta.json").is_file()  # the earlier output is untouched
