"""The wizard's two kinds of failure: a bad option (exit status 2) and anything else (1)."""

from __future__ import annotations


class BadOption(Exception):
    """A problem with the command line, attributed to one option."""

    def __init__(self, option: str, message: str) -> None:
        super().__init__(f"{option}: {message}")
        self.option = option
        self.message = message


class Failure(Exception):
    """A problem that is not the user's options (API call, helm, output file): exit status 1."""
