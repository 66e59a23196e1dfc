"""Streaming readers that turn corpus files into documents (strings).

Two formats are understood, chosen by file extension:

* ``.jsonl``: one JSON object a line, ``{"id": ..., "title": ..., "text": ...}``
  (the shape of a Wikipedia dump after wikiextractor). A document is the
  ``text`` field, preceded by the ``title`` line when there is a non-empty
  title. Blank lines are skipped, as are records whose ``text`` is empty.
* ``.txt``: one paragraph a line, documents separated by one or more blank
  lines (the shape of CC-100). A document is its paragraphs joined by "\\n".

Files are read line by line, so memory use does not grow with file size.
Bad input raises a single :class:`DataError` naming the file, the line and
the problem.
"""

from __future__ import annotations

import json
import os
from typing import Iterator

from muse_jax.data.errors import DataError

__all__ = ["DataError", "read_documents", "SUPPORTED_EXTENSIONS"]

SUPPORTED_EXTENSIONS = (".jsonl", ".txt")


def read_documents(path: str) -> Iterator[str]:
    """Returns an iterator over the documents of the corpus file ``path``.

    The extension and the file's existence are checked at once (not on the
    first ``next``); decoding errors surface while iterating.

    Raises:
      DataError: unknown extension, missing/unreadable file, or (while
        iterating) invalid UTF-8, malformed JSON, a record that is not an
        object or lacks a string ``text`` field.
    """
    path = os.fspath(path)
    ext = os.path.splitext(path)[1].lower()
    if ext not in SUPPORTED_EXTENSIONS:
        raise DataError(
            f"{path}: unsupported file extension {ext!r} "
            f"(expected one of {', '.join(SUPPORTED_EXTENSIONS)})"
        )
    try:
        f = open(path, "rb")
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as e:
        raise DataError(f"{path}: cannot open ({e.strerror or e})") from None
    reader = _jsonl_documents if ext == ".jsonl" else _txt_documents
    return reader(path, f)


def _decoded_lines(path: str, f) -> Iterator[tuple[int, str]]:
    """Yields (1-based line number, line without its line ending); closes f."""
    with f:
        for lineno, raw in enumerate(f, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as e:
                raise DataError(
                    f"{path}:{lineno}: invalid UTF-8 (byte 0x{raw[e.start]:02x} "
                    f"at column {e.start + 1})"
                ) from None
            yield lineno, line.rstrip("\r\n")


def _jsonl_documents(path: str, f) -> Iterator[str]:
    for lineno, line in _decoded_lines(path, f):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataError(f"{path}:{lineno}: malformed JSON ({e})") from None
        if not isinstance(record, dict):
            raise DataError(
                f"{path}:{lineno}: expected a JSON object, got {type(record).__name__}"
            )
        if "text" not in record:
            raise DataError(f"{path}:{lineno}: missing 'text' field")
        text = record["text"]
        if not isinstance(text, str):
            raise DataError(
                f"{path}:{lineno}: 'text' field must be a string, "
                f"got {type(text).__name__}"
            )
        if not text.strip():
            continue
        title = record.get("title")
        if isinstance(title, str) and title.strip():
            text = title + "\n" + text
        yield text


def _txt_documents(path: str, f) -> Iterator[str]:
    paragraphs: list[str] = []
    for _, line in _decoded_lines(path, f):
        if line.strip():
            paragraphs.append(line)
        elif paragraphs:
            yield "\n".join(paragraphs)
            paragraphs = []
    if paragraphs:
        yield "\n".join(paragraphs)
