"""Input files as chunks of whole lines or whole documents, compressed or not.

A :class:`Chunk` is the unit of work of one tokenising process: a run of
complete lines of one file (about :data:`BLOCK_BYTES`), with the number of its
first line and the byte offset where it starts, so that an error found inside
it names the exact place in the file. ``.gz`` and ``.zst`` files are
decompressed on the fly (offsets then count bytes of the decompressed text).

Files are read block by block: memory holds one block plus, at most, the
longest document (a ``text`` file is one document). While reading,
:class:`ChunkReader` also takes the sha256 and size of the file as stored.
"""

from __future__ import annotations

import dataclasses
import enum
import gzip
import hashlib
import io
import os
import re
import zlib
from typing import Iterator

from muse_jax.data.errors import DataError, error_at

__all__ = ["BLOCK_BYTES", "Boundary", "Chunk", "ChunkReader", "file_sha256"]

BLOCK_BYTES = 1 << 20
_BLANK_LINE = re.compile(rb"\n[ \t\r\f\v]*\n")


class Boundary(enum.Enum):
    """Where a file may be cut into chunks without splitting a document."""

    LINE = "line"  # one document (or record) a line
    BLANK_LINE = "blank_line"  # documents separated by blank lines
    FILE = "file"  # the whole file is one document


@dataclasses.dataclass(frozen=True)
class Chunk:
    """Complete lines of ``path``: ``data`` starts at line ``first_line`` (1-based),
    ``first_offset`` bytes into the (decompressed) file."""

    path: str
    first_line: int
    first_offset: int
    data: bytes

    def error(self, line_index: int, problem: str, byte_in_line: int = 0) -> DataError:
        """A DataError naming line ``line_index`` (0-based, within the chunk)."""
        start = 0
        for _ in range(line_index):
            start = self.data.index(b"\n", start) + 1
        return error_at(self.path, self.first_line + line_index,
                        self.first_offset + start + byte_in_line, problem)


class _HashingReader(io.RawIOBase):
    """A raw file that hashes and counts the bytes read through it."""

    def __init__(self, raw):
        self._raw = raw
        self.sha256 = hashlib.sha256()
        self.bytes_read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = self._raw.readinto(buffer)
        if n:
            self.sha256.update(memoryview(buffer)[:n])
            self.bytes_read += n
        return n

    def read(self, size: int = -1) -> bytes:
        """Up to ``size`` bytes (fewer only at the end of the file)."""
        if size < 0:
            return self.readall()
        parts, missing = [], size
        while missing > 0 and (part := self._raw.read(missing)):
            parts.append(part)
            missing -= len(part)
        data = b"".join(parts) if len(parts) != 1 else parts[0]
        self.sha256.update(data)
        self.bytes_read += len(data)
        return data

    def close(self) -> None:
        self._raw.close()
        super().close()


def _open_decompressed(path: str, raw: io.RawIOBase):
    """A binary stream of the file's text, and the exceptions that mean corrupt data."""
    corrupt = (OSError, EOFError, zlib.error)  # gzip.BadGzipFile is an OSError
    if path.endswith(".gz"):
        return gzip.GzipFile(fileobj=io.BufferedReader(raw, BLOCK_BYTES), mode="rb"), corrupt
    if path.endswith(".zst"):
        try:
            import zstandard
        except ImportError:
            raise DataError(f"{path}: reading .zst needs the zstandard package "
                            "(pip install -r requirements.txt)") from None
        stream = zstandard.ZstdDecompressor().stream_reader(raw, read_across_frames=True)
        return stream, corrupt + (zstandard.ZstdError,)
    return raw, corrupt  # reads of BLOCK_BYTES need no buffer of their own


def _cut(block: bytes, boundary: Boundary) -> int:
    """Index just past the last place in ``block`` where a chunk may end; 0 if none."""
    if boundary is Boundary.LINE:
        return block.rfind(b"\n") + 1
    if boundary is Boundary.BLANK_LINE:
        i = block.rfind(b"\n\n")
        if i >= 0:
            return i + 2
        last = None
        for last in _BLANK_LINE.finditer(block):
            pass
        return last.end() if last else 0
    return 0


class ChunkReader:
    """Iterates over the chunks of one file; afterwards ``sha256`` and ``bytes``
    describe the file as stored (compressed, if it is).

    Raises:
      DataError: the file is missing or unreadable, or its compressed data is corrupt.
    """

    def __init__(self, path: str, boundary: Boundary, block_bytes: int = BLOCK_BYTES):
        self.path = os.fspath(path)
        self.boundary = boundary
        self.block_bytes = block_bytes
        self.sha256: str | None = None
        self.bytes: int | None = None

    def __iter__(self) -> Iterator[Chunk]:
        try:
            raw = _HashingReader(open(self.path, "rb", buffering=0))
        except FileNotFoundError:
            raise DataError(f"{self.path}: file not found") from None
        except OSError as e:
            raise DataError(f"{self.path}: cannot open ({e.strerror or e})") from None
        line, offset, parts = 1, 0, []
        stream, corrupt = _open_decompressed(self.path, raw)
        with stream:
            while block := self._read(stream, corrupt, offset + sum(map(len, parts))):
                cut = _cut(block, self.boundary)
                if cut == 0:
                    parts.append(block)
                    continue
                parts.append(block[:cut])
                data = b"".join(parts)
                parts = [block[cut:]] if cut < len(block) else []
                yield Chunk(self.path, line, offset, data)
                line += data.count(b"\n")
                offset += len(data)
            if parts:
                yield Chunk(self.path, line, offset, b"".join(parts))
            self.sha256, self.bytes = raw.sha256.hexdigest(), raw.bytes_read

    def _read(self, stream, corrupt: tuple, offset: int) -> bytes:
        try:
            return stream.read(self.block_bytes)
        except corrupt as e:
            raise DataError(f"{self.path}: corrupt compressed data after {offset} "
                            f"decompressed bytes ({e or type(e).__name__})") from None


def file_sha256(path: str) -> str:
    """Hex sha256 of a file as stored; DataError if it cannot be read."""
    h = hashlib.sha256()
    try:
        with open(path, "rb") as f:
            for block in iter(lambda: f.read(BLOCK_BYTES), b""):
                h.update(block)
    except FileNotFoundError:
        raise DataError(f"{path}: file not found") from None
    except OSError as e:
        raise DataError(f"{path}: cannot read ({e.strerror or e})") from None
    return h.hexdigest()
