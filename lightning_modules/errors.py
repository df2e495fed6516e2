"""The one exception family for bad user input.

It lives in the lowest layer because data and network specs are checked where they enter, and
`search` (the CLI) turns any `TabslimInputError` into exit code 2 and one line.
"""

from __future__ import annotations


class TabslimInputError(ValueError):
    """Bad user input: a file, column, config key or value. The message is one line for a person."""
