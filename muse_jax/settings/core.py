"""The one exception type for a config value that cannot be used, and the helpers that raise it."""

import dataclasses
import math


class ConfigError(ValueError):
    """A config value is out of range, of an unknown choice, or inconsistent with another value.

    Raised only by `muse_jax.settings` (every check happens when the settings are built, before
    anything is prepared or compiled). Messages name the key(s) (``optim.adamw.weight_decay
    must be >= 0, got -0.1``) so that `python -m muse_jax.main` reports them as one line
    and exit status 2, without a traceback. It is a ValueError, so library callers may catch either.
    """


class UnsupportedBackend(ValueError):
    """A value the settings accept that this machine's backend cannot run (e.g.
    `model.attention_impl=cudnn` without an NVIDIA GPU). The settings never import JAX, so the model
    raises it when it is built or first traced; the message names the key, and
    `python -m muse_jax.main` reports it as one line with exit status 2, like a ConfigError."""


def require(condition: bool, message: str) -> None:
    """ConfigError(message) unless `condition`."""
    if not condition:
        raise ConfigError(message)


def one_of(key: str, value, choices: tuple) -> None:
    require(value in choices, f"{key} must be one of {choices}, got {value!r}")


def read_section(cls, section, **nested):
    """`cls(...)` from a config section: every plain field (int, float, bool, str, tuple) read by
    its name and converted to its type; `nested` supplies the sub-settings fields."""
    values = {}
    for f in dataclasses.fields(cls):
        if f.name in nested:
            values[f.name] = nested[f.name]
        else:
            value = section[f.name]
            values[f.name] = tuple(value) if f.type is tuple else f.type(value)
    return cls(**values)


def require_finite_numbers(section, prefix: str = "") -> None:
    """ConfigError naming the first key (a.b.c, or a.b.c[i] in a tuple) of a config section
    whose float value is nan or ±inf: no key takes a non-finite number (an infinite learning
    rate or weight would reach the parameters as NaN)."""
    for key, value in section.items():
        name = f"{prefix}{key}"
        if hasattr(value, "items"):
            require_finite_numbers(value, name + ".")
            continue
        values = enumerate(value) if isinstance(value, (tuple, list)) else [(None, value)]
        for i, v in values:
            require(not isinstance(v, float) or math.isfinite(v),
                    f"{name}{'' if i is None else f'[{i}]'} must be a finite number, got {v}")
