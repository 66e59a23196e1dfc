"""The one exception type raised for bad or unusable input data."""


class DataError(ValueError):
    """Input data is missing, malformed or too small for the requested use.

    Messages name the file (and line and byte offset, where there is one) so
    that the problem can be found without a traceback, e.g.
    ``corpus.jsonl:12 (byte 3071): malformed JSON (Expecting value: ...)``.
    """


def error_at(path: str, line: int, byte_offset: int, problem: str) -> DataError:
    """A DataError for a place in a file: 1-based line, 0-based byte offset."""
    return DataError(f"{path}:{line} (byte {byte_offset}): {problem}")
