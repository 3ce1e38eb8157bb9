"""The error a user can fix: reported as one line, exit code 2, before any trial starts."""

from __future__ import annotations


class StudyInputError(Exception):
    """A problem with what the user asked for (a flag, a space, a study folder)."""


def first_line(err: BaseException) -> str:
    """An exception's first line (its type's name when it says nothing), for a one-line error."""
    text = str(err).strip().splitlines()
    return text[0] if text else type(err).__name__
