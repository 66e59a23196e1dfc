"""The data manifest: which sources to prepare, of which kind, mixed with which weight.

A JSON (``.json``) or YAML (``.yaml``/``.yml``) file::

    {"sources": [
      {"kind": "wikipedia", "path": "dumps/jawiki/*.jsonl.gz", "weight": 0.5},
      {"kind": "cc100", "path": "dumps/cc100_ja.txt.zst", "weight": 0.4, "name": "cc100"},
      {"kind": "dolly", "path": "dolly_ja.jsonl", "weight": 0.1}
    ]}

Keys of a source: ``kind`` (one of :data:`muse_jax.data.sources.KINDS`),
``path`` (a file or a glob, ``**`` included; relative paths are relative to
the manifest's folder), ``weight`` (finite, > 0, default 1: the source's share of
training tokens is weight / sum of weights), ``name`` (letters, digits,
``_.-``; default: the kind, numbered when a kind repeats) and, for kind
``jsonl`` only, ``field`` (the text field, default ``text``). Any other key
is an error, so a misspelt key never goes unnoticed.
"""

from __future__ import annotations

import collections
import dataclasses
import glob
import json
import math
import os
import re
from typing import Any, Sequence

from muse_jax.data.errors import DataError
from muse_jax.data.sources import KINDS

__all__ = ["SourceSpec", "read_manifest", "sources_from_files"]

_KEYS = ("kind", "path", "weight", "name", "field")
_NAME = re.compile(r"^[A-Za-z0-9_.-]+$")
_GLOB_CHARS = re.compile(r"[*?\[]")
_EXTENSION_KINDS = {".jsonl": "wikipedia", ".txt": "cc100"}


@dataclasses.dataclass(frozen=True)
class SourceSpec:
    """One source. ``files`` is empty when the manifest was read without checking files."""

    name: str
    kind: str
    weight: float
    path: str  # as resolved: absolute, may be a glob
    field: str = "text"
    files: tuple[str, ...] = ()


def _load(path: str) -> Any:
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise DataError(f"{path}: manifest not found") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read manifest ({e.strerror or e})") from None
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise DataError(f"{path}: invalid UTF-8 at byte {e.start}") from None
    if path.endswith((".yaml", ".yml")):
        import yaml

        try:
            return yaml.safe_load(text)
        except yaml.YAMLError as e:
            mark = getattr(e, "problem_mark", None)
            where = f":{mark.line + 1}" if mark else ""
            raise DataError(f"{path}{where}: malformed YAML ({getattr(e, 'problem', e)})") from None
    try:
        return json.loads(text)
    except json.JSONDecodeError as e:
        raise DataError(f"{path}:{e.lineno} (byte {len(text[:e.pos].encode())}): "
                        f"malformed JSON ({e.msg})") from None


def _files(where: str, pattern: str) -> tuple[str, ...]:
    if _GLOB_CHARS.search(pattern):
        files = tuple(p for p in sorted(glob.glob(pattern, recursive=True)) if os.path.isfile(p))
        if not files:
            raise DataError(f"{where}: no file matches {pattern}")
        return files
    if not os.path.exists(pattern):
        raise DataError(f"{where}: file not found: {pattern}")
    if not os.path.isfile(pattern):
        raise DataError(f"{where}: not a file: {pattern}")
    return (pattern,)


def _check_names(specs: list[SourceSpec], where: str) -> None:
    counts = collections.Counter(s.name for s in specs)
    repeated = sorted(n for n, c in counts.items() if c > 1)
    if repeated:
        raise DataError(f"{where}: source names must be unique, repeated: {', '.join(repeated)}")


def read_manifest(path: str, check_files: bool = True) -> list[SourceSpec]:
    """The sources of a manifest file (see the module docstring).

    With ``check_files`` every path is expanded to its files, and a path that
    matches no file is an error; without, only the manifest itself is checked
    (enough to read the names and weights of already prepared data).

    Raises:
      DataError: naming the manifest (and the source) for every problem.
    """
    path = os.fspath(path)
    data = _load(path)
    entries = data.get("sources") if isinstance(data, dict) else None
    if not isinstance(entries, list) or not entries:
        raise DataError(f"{path}: expected an object with a non-empty list 'sources'")
    base = os.path.dirname(os.path.abspath(path))
    kinds = collections.Counter(e.get("kind") for e in entries if isinstance(e, dict) and "name" not in e)
    seen_kinds: collections.Counter = collections.Counter()
    specs = []
    for number, entry in enumerate(entries, start=1):
        where = f"{path}: source {number}"
        if not isinstance(entry, dict):
            raise DataError(f"{where}: expected an object, got {type(entry).__name__}")
        unknown = sorted(set(entry) - set(_KEYS))
        if unknown:
            raise DataError(f"{where}: unknown key {unknown[0]!r} (expected {', '.join(_KEYS)})")
        kind = entry.get("kind")
        if kind not in KINDS:
            raise DataError(f"{where}: unknown kind {kind!r} (expected one of {', '.join(KINDS)})")
        if not isinstance(entry.get("path"), str) or not entry["path"]:
            raise DataError(f"{where}: 'path' must be a non-empty string")
        weight = entry.get("weight", 1.0)
        if isinstance(weight, bool) or not isinstance(weight, (int, float)) or not 0 < weight < math.inf:
            raise DataError(f"{where}: 'weight' must be a finite number > 0, got {weight!r}")
        field = entry.get("field", "text")
        if "field" in entry and not KINDS[kind].has_field:
            raise DataError(f"{where}: 'field' is only for kind jsonl")
        if not isinstance(field, str) or not field:
            raise DataError(f"{where}: 'field' must be a non-empty string")
        if "name" in entry:
            name = entry["name"]
        else:
            seen_kinds[kind] += 1
            name = kind if kinds[kind] == 1 else f"{kind}_{seen_kinds[kind]}"
        if not isinstance(name, str) or not _NAME.match(name):
            raise DataError(f"{where}: 'name' must be letters, digits, '_', '.' or '-', got {name!r}")
        pattern = os.path.normpath(os.path.join(base, os.path.expanduser(entry["path"])))
        files = _files(f"{where} ({name})", pattern) if check_files else ()
        specs.append(SourceSpec(name, kind, float(weight), pattern, field, files))
    _check_names(specs, path)
    return specs


def sources_from_files(paths: Sequence[str], check_files: bool = True) -> list[SourceSpec]:
    """Sources without a manifest: one per file, weight 1, kind from the extension
    (``.jsonl`` → wikipedia, ``.txt`` → cc100; ``.gz``/``.zst`` after it allowed)."""
    specs = []
    for path in paths:
        path = os.path.abspath(os.fspath(path))
        stem = re.sub(r"\.(gz|zst)$", "", os.path.basename(path))
        stem, ext = os.path.splitext(stem)
        if ext not in _EXTENSION_KINDS:
            raise DataError(f"{path}: cannot tell the kind of source from the extension "
                            f"{ext!r} (expected .jsonl or .txt); list it in a manifest instead")
        files = _files(path, path) if check_files else ()
        name = re.sub(r"[^A-Za-z0-9_.-]", "_", stem) or "source"
        specs.append(SourceSpec(name, _EXTENSION_KINDS[ext], 1.0, path, "text", files))
    if not specs:
        raise DataError("no sources: data.sources and data.manifest are both empty")
    _check_names(specs, "data.sources")
    return specs


def configured_sources(settings, check_files: bool = True) -> list[SourceSpec]:
    """`data.sources` when given, else the manifest's sources (`settings`: a DataSettings)."""
    if settings.source_files:
        return sources_from_files(settings.source_files, check_files)
    return read_manifest(settings.manifest, check_files)
