"""Questions about user-given paths that never raise.

On Python 3.11, `Path.is_file()` and `Path.is_dir()` raise OSError for a name the system refuses
(ENAMETOOLONG for a 5,000-character argument, for instance) instead of answering False; a path typed
by a user must end in a one-line error naming it, not in a traceback.
"""

from __future__ import annotations

from pathlib import Path


def is_file(path: Path | str) -> bool:
    try:
        return Path(path).is_file()
    except (OSError, ValueError):  # ValueError: an embedded NUL byte
        return False


def is_dir(path: Path | str) -> bool:
    try:
        return Path(path).is_dir()
    except (OSError, ValueError):
        return False
