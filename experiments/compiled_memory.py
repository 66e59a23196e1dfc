"""XLA's compiled memory of a jitted function, in the benchmarks' JSON fields."""

from muse_jax.train.dry_run import memory_fields


def compiled_memory(compiled) -> dict:
    """argument / output / temp / alias bytes of `compiled.memory_analysis()` and their
    total = arguments + outputs + temporaries − aliases (the dry run's device peak,
    `memory_fields`); peak_memory_in_bytes where the backend reports it."""
    fields = memory_fields(compiled)
    out = {k: fields[k] for k in ("argument_bytes", "output_bytes", "temp_bytes", "alias_bytes")}
    out["total_bytes"] = fields["peak_bytes"]
    peak = getattr(compiled.memory_analysis(), "peak_memory_in_bytes", None)
    if peak is not None:
        out["peak_memory_in_bytes"] = int(peak)
    return out
