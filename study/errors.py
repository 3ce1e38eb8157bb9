"""The error a user can fix: reported as one line, exit code 2, before any trial starts."""

from __future__ import annotations


class StudyInputError(Exception):
    """A problem with what the user asked for (a flag, a space, a study folder)."""
