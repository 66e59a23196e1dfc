"""The one exception type raised for a config value that cannot be used."""


class ConfigError(ValueError):
    """A config value is out of range, of an unknown choice, or inconsistent with another value.

    Messages name the key(s) (``optim.warmup_steps must be in [0, train.steps), got 700``) so
    that `python -m muse_jax.main` can report them as one line and exit status 2, without a
    traceback. It is a ValueError, so callers of the library functions may catch either.
    """
