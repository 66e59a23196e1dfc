"""Errors of the modes that read a run's checkpoints (JAX-free, so the command line can catch them)."""


class NoCheckpoint(Exception):
    """A mode that reads a checkpoint found none (one line, exit status 2)."""
