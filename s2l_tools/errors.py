"""User-facing errors and warnings.

An :class:`S2LError` carries one line that names the offending file or value
and says how to fix it. Command-line tools print it as ``error: <message>``
and exit with status 1, without a traceback (``--debug`` shows one).
"""

from collections.abc import Sequence


class S2LError(Exception):
    """A problem with the user's input: one line naming the file and the fix."""


class S2LWarning(UserWarning):
    """Legal but suspicious input (e.g. a scribble partly outside its image)."""


def first_names(names: Sequence[str], limit: int) -> str:
    """The first ``limit`` of ``names``, comma-separated, with `` ...`` when there are more
    (the lists of files in errors, warnings and notes).

    >>> first_names(["a", "b", "c"], 2), first_names(["a"], 2)
    ('a, b ...', 'a')
    """
    return ", ".join(names[:limit]) + (" ..." if len(names) > limit else "")
