"""User-facing errors: bad input ends in one line and exit code 2, never a traceback."""
from __future__ import annotations

import argparse
import functools
import sys
from typing import Callable, NoReturn, TypeVar

F = TypeVar("F", bound=Callable[..., object])

EXIT_BAD_INPUT = 2


class UserInputError(Exception):
    """Bad config, file, path or flag. The message is one line naming the key or file, the value and what is allowed."""


def fail(message: str) -> NoReturn:
    """Print one line to stderr and exit 2."""
    print(f"error: {message}", file=sys.stderr)
    raise SystemExit(EXIT_BAD_INPUT)


def exits_on_bad_input(main: F) -> F:
    """Decorate a CLI entry point so a UserInputError becomes one stderr line and exit 2."""

    @functools.wraps(main)
    def wrapper(*args, **kwargs):
        try:
            return main(*args, **kwargs)
        except UserInputError as err:
            fail(str(err).replace("\n", " "))

    return wrapper  # type: ignore[return-value]


class ArgumentParser(argparse.ArgumentParser):
    """argparse with a one-line error (no usage dump) and exit code 2."""

    def error(self, message: str) -> NoReturn:
        fail(f"{self.prog}: {message} (see --help)")
