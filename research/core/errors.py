"""Errors in what the user gave us (files, columns, config keys, shapes), as opposed to bugs.

Raise `InputError` with a one-line message that names the problem (the file, the column, the key, both
shapes). Entry points in `scripts/` print it as `error: MESSAGE` and exit non-zero, without a traceback.
"""


class InputError(ValueError):
    """Bad input from the user; the message is one line and names the file, column, key or shape."""
