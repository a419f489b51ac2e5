"""User-facing errors: each one says what is wrong, where, and what to do, and maps to an exit code."""

from __future__ import annotations


class AutomlError(Exception):
    """An error caused by the user's input or environment, reported without a traceback.

    `exit_code` follows the CLI convention: 2 for bad input (recipe, arguments, data), 1 otherwise.
    """

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return f"{self.message}\n  hint: {self.hint}" if self.hint else self.message


class InputError(AutomlError):
    """Bad input that the user must fix (a recipe, a dataset folder, a command-line argument)."""

    exit_code = 2


class RecipeError(InputError):
    """A recipe that does not validate; the message names file:line, the key, and the allowed values."""


class DatasetError(InputError):
    """A dataset folder that cannot be used as it is."""


class CacheError(AutomlError):
    """The bottleneck cache cannot serve a request: a part is damaged, or features were never computed."""
