"""The one exception family for bad user input.

It lives in the lowest layer because data and network specs are checked where they enter, and
`search` (the CLI) turns any `TabslimInputError` into exit code 2 and one line.
"""

from __future__ import annotations


class TabslimInputError(ValueError):
    """Bad user input: a file, column, config key or value. The message is one line for a person."""


def shown(value: object) -> str:
    """`value` as a message shows it: the repr of the plain Python value, `0` and not
    `np.int64(0)` (NumPy 2 scalars' repr names their type), `'yes'` for text."""
    item = getattr(value, "item", None)
    if callable(item) and type(value).__module__ == "numpy":
        value = item()
    return repr(value)
