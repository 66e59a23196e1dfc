"""One reader per kind of source: a chunk of a file → its documents (strings).

| kind | file | a document is |
|---|---|---|
| ``wikipedia`` | JSONL, ``{"title", "text", ...}`` (wikiextractor) | ``title`` line (if any) + ``text`` |
| ``cc100`` | plain text, one paragraph a line | paragraphs up to the next blank line (stripped) |
| ``dolly`` | JSONL, ``{"instruction", "context", "response"}`` | :func:`instruction_document` |
| ``alpaca`` | JSONL, ``{"instruction", "input", "output"}`` | :func:`instruction_document` |
| ``jsonl`` | JSONL with a string field (``text`` unless the source names another) | that field |
| ``text`` | plain text | the whole file |

Blank JSONL lines are skipped. A record whose text is blank gives an empty
document (counted and dropped by cleaning). A bad line (invalid UTF-8,
malformed JSON, a record that is not an object, a missing or non-string
field) is handed to a :class:`BadLines`, which raises it as a
:class:`DataError` naming file, line and byte offset, or counts and skips it.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Callable, Iterator

from muse_jax.data.chunks import Boundary, Chunk
from muse_jax.data.errors import DataError

__all__ = ["KINDS", "Kind", "BadLines", "MAX_BAD_LINE_EXAMPLES", "chunk_documents", "instruction_document",
           "INSTRUCTION_HEADING", "INPUT_HEADING", "RESPONSE_HEADING"]

INSTRUCTION_HEADING = "### 指示:"
INPUT_HEADING = "### 入力:"
RESPONSE_HEADING = "### 回答:"
_BLANK_LINES = re.compile(r"\n(?:[^\S\n]*\n)+")  # "\n" then lines of nothing but whitespace
MAX_BAD_LINE_EXAMPLES = 5  # per chunk and per source, in the report


def instruction_document(instruction: str, input_text: str, response: str) -> str:
    """The one template for instruction records (Dolly, Alpaca)::

        ### 指示:
        <instruction>

        ### 入力:          (only when there is an input / context)
        <input>

        ### 回答:
        <response>

    A record without an instruction or a response is an empty document.
    """
    instruction, input_text, response = instruction.strip(), input_text.strip(), response.strip()
    if not instruction or not response:
        return ""
    parts = [f"{INSTRUCTION_HEADING}\n{instruction}"]
    if input_text:
        parts.append(f"{INPUT_HEADING}\n{input_text}")
    parts.append(f"{RESPONSE_HEADING}\n{response}")
    return "\n\n".join(parts)


class BadLines:
    """What to do with a bad line: ``raise`` its DataError, or ``skip`` and count it."""

    def __init__(self, policy: str):
        if policy not in ("raise", "skip"):
            raise DataError(f"data.on_error must be 'raise' or 'skip', got {policy!r}")
        self.policy = policy
        self.count = 0
        self.examples: list[str] = []

    def __call__(self, error: DataError) -> None:
        if self.policy == "raise":
            raise error
        self.count += 1
        if len(self.examples) < MAX_BAD_LINE_EXAMPLES:
            self.examples.append(str(error))


def _decoded(chunk: Chunk) -> str | None:
    """The chunk as text, or None if it is not valid UTF-8 (then read line by line)."""
    try:
        return chunk.data.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _lines(chunk: Chunk, bad: BadLines) -> Iterator[tuple[int, str]]:
    """(index within the chunk, line without its "\\n") for every valid UTF-8 line."""
    text = _decoded(chunk)
    if text is not None:
        lines = text.split("\n")
        if lines[-1] == "":
            lines.pop()
        yield from enumerate(lines)
        return
    raw_lines = chunk.data.split(b"\n")
    if raw_lines[-1] == b"":
        raw_lines.pop()
    for i, raw in enumerate(raw_lines):
        try:
            line = raw.decode("utf-8")
        except UnicodeDecodeError as e:
            bad(chunk.error(i, f"invalid UTF-8 (byte 0x{raw[e.start]:02x})", e.start))
            continue
        yield i, line


def _records(chunk: Chunk, bad: BadLines) -> Iterator[tuple[int, dict]]:
    """(line index, JSON object) for every non-blank line that parses to an object."""
    for i, line in _lines(chunk, bad):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as e:
            bad(chunk.error(i, f"malformed JSON ({e.msg} at column {e.colno})",
                            len(line[: e.pos].encode("utf-8"))))
            continue
        if not isinstance(record, dict):
            bad(chunk.error(i, f"expected a JSON object, got {type(record).__name__}"))
            continue
        yield i, record


def _fields(chunk: Chunk, i: int, record: dict, names: tuple[str, ...],
            required: tuple[str, ...], bad: BadLines) -> tuple[str, ...] | None:
    """The string fields ``names`` of a record ("" when optional and absent); None if bad."""
    values = []
    for name in names:
        value = record.get(name)
        if value is None and name not in required:
            value = ""
        if value is None:
            bad(chunk.error(i, f"missing {name!r} field"))
            return None
        if not isinstance(value, str):
            bad(chunk.error(i, f"{name!r} field must be a string, got {type(value).__name__}"))
            return None
        values.append(value)
    return tuple(values)


def _wikipedia(chunk: Chunk, bad: BadLines, field: str) -> Iterator[str]:
    for i, record in _records(chunk, bad):
        values = _fields(chunk, i, record, (field, "title"), (field,), bad)
        if values is None:
            continue
        text, title = values
        if not text.strip():
            yield ""
        else:
            yield f"{title}\n{text}" if title.strip() else text


def _jsonl(chunk: Chunk, bad: BadLines, field: str) -> Iterator[str]:
    for i, record in _records(chunk, bad):
        values = _fields(chunk, i, record, (field,), (field,), bad)
        if values is not None:
            yield values[0]


def _instructions(names: tuple[str, str, str]):
    def read(chunk: Chunk, bad: BadLines, field: str) -> Iterator[str]:
        required = (names[0], names[2])
        for i, record in _records(chunk, bad):
            values = _fields(chunk, i, record, names, required, bad)
            if values is not None:
                yield instruction_document(*values)
    return read


def _cc100(chunk: Chunk, bad: BadLines, field: str) -> Iterator[str]:
    text = _decoded(chunk)
    if text is not None:  # fast path: one regular-expression split, no loop over lines
        for document in _BLANK_LINES.split(text):
            if document := document.strip():
                yield document
        return
    paragraphs: list[str] = []
    for _, line in _lines(chunk, bad):
        if line.strip():
            paragraphs.append(line)
        elif paragraphs:
            yield "\n".join(paragraphs).strip()
            paragraphs = []
    if paragraphs:
        yield "\n".join(paragraphs).strip()


def _whole_file(chunk: Chunk, bad: BadLines, field: str) -> Iterator[str]:
    yield "\n".join(line for _, line in _lines(chunk, bad))


@dataclasses.dataclass(frozen=True)
class Kind:
    """How a kind of source is cut into chunks and read."""

    boundary: Boundary
    read: Callable[[Chunk, BadLines, str], Iterator[str]]
    has_field: bool = False  # the manifest may name the text field


KINDS: dict[str, Kind] = {
    "wikipedia": Kind(Boundary.LINE, _wikipedia),
    "cc100": Kind(Boundary.BLANK_LINE, _cc100),
    "dolly": Kind(Boundary.LINE, _instructions(("instruction", "context", "response"))),
    "alpaca": Kind(Boundary.LINE, _instructions(("instruction", "input", "output"))),
    "jsonl": Kind(Boundary.LINE, _jsonl, has_field=True),
    "text": Kind(Boundary.FILE, _whole_file),
}


def chunk_documents(kind: str, chunk: Chunk, bad: BadLines, field: str = "text") -> Iterator[str]:
    """The documents of a chunk of a source of ``kind`` (see the module docstring)."""
    return KINDS[kind].read(chunk, bad, field)
