"""Exceptions that carry a message meant for the user.

The command line prints these as one line and exits non-zero; anything else escaping is a bug
and keeps its traceback.
"""


class PersonvlError(Exception):
    """A failure the user can act on (bad file, missing path, impossible setting)."""

    exit_code = 1


class UsageError(PersonvlError):
    """The request itself is malformed: wrong argument value, unknown config key."""

    exit_code = 2
