"""The base of errors that are the user's to fix (bad config, data or weights), not bugs.

Command-line entry points print them as one line and exit non-zero, without a traceback.
"""

from __future__ import annotations


class TrialError(Exception):
    """An error with a one-line message meant for the user."""
