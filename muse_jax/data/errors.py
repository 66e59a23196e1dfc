"""The one exception type raised for bad or unusable input data."""


class DataError(ValueError):
    """Input data is missing, malformed or too small for the requested use.

    Messages name the file (and line, where there is one) so that the
    problem can be found without a traceback, e.g.
    ``corpus.jsonl:12: malformed JSON (Expecting value: ...)``.
    """
