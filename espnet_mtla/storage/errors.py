"""Errors that the command-line tools print as one line (no traceback)."""

import sys
from typing import Callable, Iterable, Tuple, Type


class ConfigError(ValueError):
    """A configuration value or key is wrong; the message names it and says what to do."""


class BatchDecodingError(ValueError):
    """Batched decoding (``--batch_frames``/``--batch_size N``) cannot decode with these options."""


class BadAudioError(ValueError):
    """An input file of an utterance cannot be read; the message names the file and the utterance."""


def first_line(err: BaseException) -> str:
    """The first line of an exception's message, or its type's name when it has none."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def check_known_keys(section: str, given: Iterable[str], valid: Iterable[str]) -> None:
    """Raise ConfigError naming the first key of ``given`` that is not in ``valid``."""
    valid = sorted(valid)
    unknown = sorted(set(given) - set(valid))
    if unknown:
        raise ConfigError(f"{section}: unknown key {unknown[0]!r}; valid keys: {', '.join(valid)}")


def check_dropout_rate(option: str, value) -> None:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value < 1.0:
        raise ConfigError(f"{option} must be in [0, 1), got {value!r}")


def one_line_errors(call: Callable[[], object], errors: Tuple[Type[BaseException], ...]) -> int:
    """Run ``call()`` for a command-line ``main``: 0, or 1 after printing an expected error as one line."""
    try:
        call()
    except errors as err:
        print(f"error: {err}", file=sys.stderr)
        return 1
    return 0
