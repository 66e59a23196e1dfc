"""What a benchmark records for a row that failed, so that the run goes on without it.

A compile that crashes, an allocation that does not fit (XLA's RESOURCE_EXHAUSTED, raised as
jax.errors.JaxRuntimeError), a kernel that does not lower: any exception of one model or impl
at one length becomes this record in that row, and the benchmark moves on to the next.
"""


def failure_record(exc: BaseException) -> dict:
    """{"error": the exception's type, "message": the first non-empty line of its message}."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return {"error": type(exc).__name__, "message": lines[0] if lines else ""}


def describe(record: dict) -> str:
    """One line for the progress log: "JaxRuntimeError: RESOURCE_EXHAUSTED: ..."."""
    return f"{record['error']}: {record['message']}"
