"""Errors that the command-line tools print as one line (no traceback)."""

from typing import Iterable


class ConfigError(ValueError):
    """A configuration value or key is wrong; the message names it and says what to do."""


def check_known_keys(section: str, given: Iterable[str], valid: Iterable[str]) -> None:
    """Raise ConfigError naming the first key of ``given`` that is not in ``valid``."""
    valid = sorted(valid)
    unknown = sorted(set(given) - set(valid))
    if unknown:
        raise ConfigError(f"{section}: unknown key {unknown[0]!r}; valid keys: {', '.join(valid)}")


def check_dropout_rate(option: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ConfigError(f"{option} must be in [0, 1), got {value!r}")
